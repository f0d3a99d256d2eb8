//! Shared by the tool's integration tests: one GPU context per test binary, and the tool itself.
//!
//! GPU tests fail when no adapter is found — CI installs lavapipe so that they always run. To run
//! the CPU tests alone on a machine without any adapter, opt out explicitly with
//! `WGPU_CNN_SKIP_GPU_TESTS=1`.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use wgpu_cnn::gpu::GpuContext;

/// The GPU context for this test binary, or `None` if the user opted out of GPU tests
/// (`WGPU_CNN_SKIP_GPU_TESTS=1`); fails with instructions when no adapter is found.
pub fn gpu() -> Option<&'static GpuContext> {
    wgpu_cnn::selftest::test_context()
}

/// Runs the `wgpu-cnn` binary in `dir` (Mesa's harmless XDG_RUNTIME_DIR warning silenced).
pub fn wgpu_cnn(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpu-cnn"))
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the wgpu-cnn binary runs")
}
