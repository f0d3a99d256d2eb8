//! Shared by the integration tests: one GPU context per test binary, and the real CIFAR-10 subset.
//!
//! GPU tests fail when no adapter is found — CI installs lavapipe so that they always run. To run
//! the CPU tests alone on a machine without any adapter, opt out explicitly with
//! `WGPU_CNN_SKIP_GPU_TESTS=1`.

#![allow(dead_code)]

use std::sync::OnceLock;

use wgpu_cnn::data::{self, Cifar10};
use wgpu_cnn::gpu::GpuContext;

/// The GPU context for this test binary, or `None` if the user opted out of GPU tests
/// (`WGPU_CNN_SKIP_GPU_TESTS=1`); fails with instructions when no adapter is found.
pub fn gpu() -> Option<&'static GpuContext> {
    wgpu_cnn::selftest::test_context()
}

/// A deterministic xorshift generator for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `low..high`.
    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next_u64() % (high - low) as u64) as i64
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// The real CIFAR-10 subset of `assets/cifar10/` (4,660 + 846 images), read once per test binary:
/// the same files the tool embeds.
pub fn cifar_sample() -> &'static Cifar10 {
    static SAMPLE: OnceLock<Cifar10> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cifar10");
        data::load_dir(&folder).unwrap_or_else(|e| panic!("the tests read the CIFAR-10 subset in assets/: {e}"))
    })
}
