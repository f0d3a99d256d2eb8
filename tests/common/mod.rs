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

/// The biases of the layers right before a batch normalisation, as ranges of `params`: their
/// gradient is zero in exact arithmetic (the normalisation subtracts the channel's mean, bias
/// included), so in f32 it is rounding noise, which Adam's `m / √v` scales up to steps of the
/// learning rate's size. They change nothing the next layer sees (a shift the batch mean removes).
#[allow(dead_code)]
pub fn pre_norm_biases(model: &wgpu_cnn::model::Model) -> Vec<std::ops::Range<usize>> {
    let layers: Vec<_> = model.layers().collect();
    layers
        .windows(2)
        .filter(|pair| pair[1].0.token() == "bn")
        .flat_map(|pair| {
            pair[0].1.tensors.iter().filter(|t| t.spec.trainable && t.spec.name == "bias").map(|t| t.range())
        })
        .collect()
}

/// The largest difference between two parameter vectors of `model`, over every trainable tensor
/// but the [`pre_norm_biases`]: (the rest's difference, those biases' difference).
#[allow(dead_code)]
pub fn param_difference(model: &wgpu_cnn::model::Model, a: &[f32], b: &[f32]) -> (f32, f32) {
    let noise = pre_norm_biases(model);
    let (mut kept, mut noisy) = (0f32, 0f32);
    for (_, at) in model.layers() {
        for tensor in at.tensors.iter().filter(|t| t.spec.trainable) {
            let d = a[tensor.range()].iter().zip(&b[tensor.range()]).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            if noise.contains(&tensor.range()) {
                noisy = noisy.max(d);
            } else {
                kept = kept.max(d);
            }
        }
    }
    (kept, noisy)
}
