//! Every GPU kernel against its CPU reference (f32), through the checks `wgpu-cnn selftest`
//! runs (src/selftest.rs): random tensors, odd shapes, stride 1 and 2, partial batches, outputs
//! pre-filled with NaN. Each test fails with the kernel's first mismatches and max error.

mod common;

use common::gpu;
use wgpu_cnn::layers::conv2d::{self, CONV_CASES};
use wgpu_cnn::layers::{dense_softmax, dropout, maxpool2d, Tuning, REGISTRY};
use wgpu_cnn::selftest::{self, Check};

fn assert_all_pass(checks: Vec<Check>) {
    assert!(!checks.is_empty());
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed()).map(|c| c.to_string()).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

fn conv_cases(naive: bool) {
    let Some(ctx) = gpu() else { return };
    for case in &CONV_CASES {
        assert_all_pass(conv2d::case_checks(ctx, case, naive, Tuning::for_adapter(&ctx.info)).unwrap());
    }
}

#[test]
fn tiled_conv2d_kernels_match_the_cpu_reference() {
    conv_cases(false);
}

/// The weight gradients' chunking of a hardware GPU (√positions per chunk, so many partly filled
/// chunks even on these small shapes), checked here on whatever adapter the tests run.
#[test]
fn tiled_conv2d_kernels_match_the_cpu_reference_with_the_chunks_of_a_hardware_gpu() {
    let Some(ctx) = gpu() else { return };
    for case in &CONV_CASES {
        assert_all_pass(conv2d::case_checks(ctx, case, false, Tuning::Hardware).unwrap());
    }
}

#[test]
fn naive_conv2d_kernels_match_the_cpu_reference() {
    conv_cases(true);
}

#[test]
fn maxpool_kernels_match_the_cpu_reference_bit_for_bit() {
    let Some(ctx) = gpu() else { return };
    assert_all_pass(maxpool2d::checks(ctx).unwrap());
}

#[test]
fn dropout_masks_are_bit_identical_on_gpu_and_cpu() {
    let Some(ctx) = gpu() else { return };
    assert_all_pass(dropout::checks(ctx).unwrap());
}

#[test]
fn dense_softmax_kernels_match_the_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    assert_all_pass(dense_softmax::checks(ctx).unwrap());
}

#[test]
fn adam_matches_the_cpu_reference_over_several_steps() {
    let Some(ctx) = gpu() else { return };
    assert_all_pass(wgpu_cnn::adam::checks(ctx).unwrap());
}

#[test]
fn gather_assembles_batches_through_the_order_across_two_bindings() {
    let Some(ctx) = gpu() else { return };
    assert_all_pass(wgpu_cnn::gather::checks(ctx).unwrap());
}

#[test]
fn the_whole_selftest_passes_on_this_adapter() {
    let Some(ctx) = gpu() else { return };
    let checks = selftest::run_all(ctx).unwrap();
    assert!(checks.len() > 50, "{} checks", checks.len());
    assert_all_pass(checks);
}

#[test]
fn every_registered_layer_checks_itself_on_this_adapter() {
    let Some(ctx) = gpu() else { return };
    for kind in REGISTRY {
        let checks = (kind.checks)(ctx).unwrap();
        assert!(!checks.is_empty(), "{} brings no GPU checks", kind.syntax.0);
        assert_all_pass(checks);
    }
}
