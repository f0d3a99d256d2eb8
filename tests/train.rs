//! Whole training steps: GPU and CPU agree over several steps from the same seed (with dropout,
//! max-pooling, partial batches and L1), and training learns real CIFAR-10 pictures.

mod common;

use common::gpu;
use wgpu_cnn::data::{self, Dataset};
use wgpu_cnn::experiment::BackendFactory;
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::cpu::CpuBackend;
use wgpu_cnn::train::gpu::GpuBackend;
use wgpu_cnn::train::{fit, Backend, History, TrainConfig};
use wgpu_cnn::Result;

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
        let history =
            fit(&mut gpu, &train, &Dataset::default(), &config, History::default(), &mut |_| {}, &mut |_, _| Ok(()))
                .unwrap();
        (history.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(), gpu.params().unwrap())
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "a seeded run is bit-for-bit reproducible on one device");
}

/// Trains `epochs` epochs in one go, or `split` epochs, a checkpoint save and load, then the rest.
fn train_with_resume(backend_for: BackendFactory<'_>, split: Option<usize>) -> Vec<f32> {
    use wgpu_cnn::checkpoint::Checkpoint;
    let model = Model::new(&Architecture::parse("c4,c8s2,d0.5,f10").unwrap(), CIFAR_INPUT).unwrap();
    let (train, validation) = subset(60).split_validation(0.2).unwrap();
    let config = TrainConfig { epochs: 3, batch_size: 16, ..Default::default() };
    let mut backend = backend_for(&model, &train, model.init_params(config.seed), &config).unwrap();
    let Some(split) = split else {
        fit(backend.as_mut(), &train, &validation, &config, History::default(), &mut |_| {}, &mut |_, _| Ok(()))
            .unwrap();
        return backend.params().unwrap();
    };
    let first = TrainConfig { epochs: split, ..config.clone() };
    let history =
        fit(backend.as_mut(), &train, &validation, &first, History::default(), &mut |_| {}, &mut |_, _| Ok(()))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    Checkpoint {
        architecture: model.architecture.clone(),
        params: backend.params().unwrap(),
        optimizer: Some(backend.optimizer_state().unwrap()),
        config: first,
        epochs_done: split,
        history,
        data: "test".into(),
    }
    .save(&path)
    .unwrap();
    drop(backend);
    let checkpoint = Checkpoint::load(&path).unwrap();
    let mut resumed = backend_for(&model, &train, checkpoint.params.clone(), &config).unwrap();
    resumed.set_optimizer_state(checkpoint.optimizer.as_ref().unwrap()).unwrap();
    let history =
        fit(resumed.as_mut(), &train, &validation, &config, checkpoint.history, &mut |_| {}, &mut |_, _| Ok(()))
            .unwrap();
    assert_eq!(history.epochs.len(), 3);
    resumed.params().unwrap()
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_on_the_cpu() {
    let cpu = |m: &Model, t: &Dataset, p: Vec<f32>, c: &TrainConfig| -> Result<Box<dyn Backend>> {
        Ok(Box::new(CpuBackend::new(m, t, p, c)?))
    };
    assert_eq!(train_with_resume(&cpu, None), train_with_resume(&cpu, Some(1)));
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_on_the_gpu() {
    let Some(ctx) = gpu() else { return };
    let on_gpu = |m: &Model, t: &Dataset, p: Vec<f32>, c: &TrainConfig| -> Result<Box<dyn Backend>> {
        Ok(Box::new(GpuBackend::new(ctx, m, t, &p, c)?))
    };
    assert_eq!(train_with_resume(&on_gpu, None), train_with_resume(&on_gpu, Some(2)));
}

#[test]
fn a_short_training_learns_real_pictures_well_above_the_baseline() {
    // A small net on 3,000 real CIFAR-10 images, 6 epochs on the CPU reference (a few seconds):
    // the most-common-label baseline is ≈ 10%; measured here: see the assertion message.
    let data = data::embedded();
    let model = Model::new(&Architecture::parse("c8s2,c16s2,f10").unwrap(), CIFAR_INPUT).unwrap();
    let (train, validation) = data.train.take_first(3000).split_validation(0.1).unwrap();
    let config = TrainConfig { epochs: 6, batch_size: 32, ..Default::default() };
    let mut cpu = CpuBackend::new(&model, &train, model.init_params(config.seed), &config).unwrap();
    let history =
        fit(&mut cpu, &train, &validation, &config, History::default(), &mut |_| {}, &mut |_, _| Ok(())).unwrap();
    let raw = cpu.evaluate(&data.test).unwrap();
    let (_, accuracy) = raw.summarise(data.test.labels.iter().copied(), usize::MAX);
    let losses: Vec<f64> = history.epochs.iter().map(|e| e.loss).collect();
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "the training loss falls every epoch: {losses:?}");
    assert!(accuracy > 0.30, "test accuracy {accuracy:.3} after 6 epochs (baseline ≈ 0.11)");
}

/// The assignment's Keras comparison: 20 epochs of `base` on the 4,660 real images (the same as
/// ../shared/data/cifar10-sample), seed 42. Keras 3 on the same images, three seeds: test
/// 0.46–0.49. Measured here: fast CPU 0.4823 (8 s), CPU reference 0.4775 (9 minutes).
fn twenty_epochs_of_base(backend_for: BackendFactory<'_>) -> f64 {
    let data = data::embedded();
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let config = TrainConfig::default();
    let (train, validation) = data.train.split_validation(config.validation_split).unwrap();
    let mut backend = backend_for(&model, &train, model.init_params(config.seed), &config).unwrap();
    fit(backend.as_mut(), &train, &validation, &config, History::default(), &mut |_| {}, &mut |_, _| Ok(())).unwrap();
    backend.evaluate(&data.test).unwrap().summarise(data.test.labels.iter().copied(), usize::MAX).1
}

#[test]
fn twenty_epochs_of_the_base_net_on_the_fast_cpu_reach_the_keras_test_accuracy() {
    let fast = |m: &Model, t: &Dataset, p: Vec<f32>, c: &TrainConfig| -> Result<Box<dyn Backend>> {
        Ok(Box::new(wgpu_cnn::fast::FastCpuBackend::new(m, t, p, c)?))
    };
    let accuracy = twenty_epochs_of_base(&fast);
    assert!((0.44..0.52).contains(&accuracy), "test accuracy {accuracy:.4}");
}

/// The same on the plain-loop reference: opt-in (about 9 minutes here), `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn twenty_epochs_of_the_base_net_on_the_cpu_reference_reach_the_keras_test_accuracy() {
    let reference = |m: &Model, t: &Dataset, p: Vec<f32>, c: &TrainConfig| -> Result<Box<dyn Backend>> {
        Ok(Box::new(CpuBackend::new(m, t, p, c)?))
    };
    let accuracy = twenty_epochs_of_base(&reference);
    assert!((0.44..0.52).contains(&accuracy), "test accuracy {accuracy:.4}");
}
