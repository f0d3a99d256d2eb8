//! The parsers of user input as fuzz targets: one function a target, each taking the raw bytes a
//! user could hand the tool. `fuzz/fuzz_targets/NAME.rs` calls `NAME` under cargo-fuzz
//! (`fuzz/run.sh`), and `cli/tests/fuzz_corpus.rs` replays `fuzz/corpus/NAME/` and
//! `fuzz/regressions/NAME/` through the same function under plain `cargo test`. Each may return
//! an error, never panic, abort or allocate more than its limits allow (libFuzzer stops at 2 GB).

use std::io::Cursor;

use wgpu_cnn::checkpoint::Checkpoint;
use wgpu_cnn::data;
use wgpu_cnn::filter::Kernel3x3;
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};

use crate::picture;

/// A fuzz target: takes any bytes, returns nothing (errors are expected; panics are bugs).
pub type Target = fn(&[u8]);

/// Every target, by the name of its folders.
pub const TARGETS: &[(&str, Target)] = &[
    ("cifar_batch", cifar_batch),
    ("cifar_archive", cifar_archive),
    ("image", image),
    ("kernel", kernel),
    ("architecture", architecture),
    ("checkpoint", checkpoint),
];

/// A CIFAR-10 binary batch file (`data_batch_N.bin`).
pub fn cifar_batch(bytes: &[u8]) {
    let _ = data::parse_batch(bytes, "fuzz");
}

/// A `.tar.gz` given as `--data`, with a small expansion limit so each run stays fast.
pub fn cifar_archive(bytes: &[u8]) {
    let _ = data::from_tar_gz(Cursor::new(bytes), "fuzz.tar.gz", 16 << 20);
}

/// A PNG or JPEG given to `convolve` or `predict` (limit: 4 megapixels).
pub fn image(bytes: &[u8]) {
    let _ = picture::decode_rgb(bytes, 4);
}

/// A `--kernel` value (as UTF-8; other bytes are not a string clap can pass).
pub fn kernel(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Kernel3x3::parse(text);
    }
}

/// A `--model` value: parsed, placed on CIFAR-10's input and summarised, as `summary` does.
pub fn architecture(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(model) = Architecture::parse(text).and_then(|a| Model::new(&a, CIFAR_INPUT)) {
            let _ = model.summary();
        }
    }
}

/// A checkpoint given to `evaluate`, `predict` or `--resume`: read, then its model built.
pub fn checkpoint(bytes: &[u8]) {
    if let Ok(checkpoint) = Checkpoint::from_bytes(bytes, "fuzz.safetensors") {
        let _ = checkpoint.model();
    }
}
