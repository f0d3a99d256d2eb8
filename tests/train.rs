//! Whole training steps: GPU and CPU agree over several steps from the same seed (with dropout,
//! max-pooling, partial batches and L1), and training learns real CIFAR-10 pictures.

mod common;

use common::gpu;
use wgpu_cnn::data::{self, Dataset};
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::cpu::CpuBackend;
use wgpu_cnn::train::gpu::GpuBackend;
use wgpu_cnn::train::{fit, Backend, TrainConfig};

fn subset(rows: usize) -> Dataset {
    data::embedded().train.take_first(rows)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Trains `arch` for one epoch of `rows` images (batch 8, so the last batch is partial) on both
/// backends from the same initial weights; the parameters and metrics must agree.
fn gpu_matches_cpu(arch: &str, rows: usize) {
    let Some(ctx) = gpu() else { return };
    let model = Model::new(&Architecture::parse(arch).unwrap(), CIFAR_INPUT).unwrap();
    let train = subset(rows);
    let config = TrainConfig { batch_size: 8, l1: 1e-3, seed: 7, ..Default::default() };
    let initial = model.init_params(config.seed);
    let order = data::epoch_order(train.len(), config.seed, 0);

    let mut cpu = CpuBackend::new(&model, &train, initial.clone(), &config).unwrap();
    let mut gpu = GpuBackend::new(ctx, &model, &train, &initial, &config).unwrap();
    let cpu_raw = cpu.train_epoch(&order, &mut |_| {}).unwrap();
    let gpu_raw = gpu.train_epoch(&order, &mut |_| {}).unwrap();
    assert_eq!(cpu.steps_done(), gpu.steps_done());

    // Same math in a different summation order: measured differences are ≈ 3e-7 (f32 rounding);
    // the bounds leave 30× room for other drivers.
    let loss_difference = max_difference(&cpu_raw.losses[..8], &gpu_raw.losses[..8]);
    assert!(loss_difference < 1e-5, "{arch}: first-step losses differ by {loss_difference}");
    let all_losses = max_difference(&cpu_raw.losses, &gpu_raw.losses);
    assert!(all_losses < 1e-4, "{arch}: losses differ by {all_losses}");
    assert!(max_difference(&cpu_raw.penalties, &gpu_raw.penalties) < 1e-5);
    let (cpu_params, gpu_params) = (cpu.params().unwrap(), gpu.params().unwrap());
    let param_difference = max_difference(&cpu_params, &gpu_params);
    let moved = max_difference(&cpu_params, &initial);
    assert!(moved > 1e-3, "{arch}: training did not move the weights");
    assert!(
        param_difference < 1e-5,
        "{arch}: parameters differ by {param_difference} after {} steps",
        cpu.steps_done()
    );
    eprintln!("{arch}: first-step loss Δ {loss_difference:e}, all losses Δ {all_losses:e}, params Δ {param_difference:e} (moved {moved:e})");

    let val = data::embedded().test.take_first(13);
    let (c, g) = (cpu.evaluate(&val).unwrap(), gpu.evaluate(&val).unwrap());
    assert!(max_difference(&c.losses, &g.losses) < 1e-3);
    assert_eq!(c.losses.len(), 13);
}

#[test]
fn a_gpu_training_epoch_matches_the_cpu_reference_on_the_base_net() {
    gpu_matches_cpu("base", 20);
}

#[test]
fn a_gpu_training_epoch_matches_the_cpu_reference_with_max_pooling() {
    gpu_matches_cpu("c8,c8,p,c8,p,d0.3,f10", 12);
}

#[test]
fn the_same_seed_gives_the_same_run_on_the_gpu() {
    let Some(ctx) = gpu() else { return };
    let model = Model::new(&Architecture::parse("c4s2,d0.5,f10").unwrap(), CIFAR_INPUT).unwrap();
    let train = subset(40);
    let config = TrainConfig { epochs: 2, batch_size: 16, ..Default::default() };
    let run = || {
        let mut gpu = GpuBackend::new(ctx, &model, &train, &model.init_params(config.seed), &config).unwrap();
        let history = fit(&mut gpu, &train, &Dataset::default(), &config, 0, &mut |_| {}).unwrap();
        (history.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(), gpu.params().unwrap())
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "a seeded run is bit-for-bit reproducible on one device");
}
