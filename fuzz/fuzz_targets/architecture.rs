#![no_main]
// The body is wgpu_cnn_cli::fuzzing::architecture, which
// cli/tests/fuzz_corpus.rs also replays.
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wgpu_cnn_cli::fuzzing::architecture(bytes));
