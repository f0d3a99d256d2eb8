#![no_main]
// The body is wgpu_cnn_cli::fuzzing::checkpoint, which
// cli/tests/fuzz_corpus.rs also replays.
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wgpu_cnn_cli::fuzzing::checkpoint(bytes));
