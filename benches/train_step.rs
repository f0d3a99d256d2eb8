//! One training step of the base CNN at batch 128: on the GPU (tiled and naive convolution
//! kernels) and on the CPU reference, side by side in one run; then each convolution of the
//! base net alone, forward and backward, naive vs tiled; then its first convolution after the
//! gather beside the one that reads the dataset itself. `wgpu-cnn bench train` prints images/s.
//!
//! Without an adapter the GPU rows are skipped with a message.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_cnn::data::{self, Dataset};
use wgpu_cnn::gather::{self, BatchSource, GpuDataset};
use wgpu_cnn::gpu::uniform_buffer;
use wgpu_cnn::gpu::{self, GpuContext, GpuOptions};
use wgpu_cnn::kernel::begin_pass;
use wgpu_cnn::layers::conv2d::{self, Conv2dShape};
use wgpu_cnn::layers::{Epilogue, GpuGrads, GpuLayer, Mask, StepParams, Tuning};
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::partial_sums;
use wgpu_cnn::train::gpu::GpuEngine;
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{Engine, TrainConfig, Trainer};

const BATCH: usize = 128;

fn gpu_context() -> Option<GpuContext> {
    match GpuOptions::from_env().and_then(|o| GpuContext::new(&o)) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            eprintln!("no GPU benchmarks: {e}");
            None
        }
    }
}

/// One batch of the real CIFAR-10 subset in `assets/`.
fn one_batch() -> Dataset {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cifar10");
    data::load_dir(&folder).expect("the CIFAR-10 subset in assets/").train.take_first(BATCH)
}

/// Times one-step epochs of the training loop on `engine`.
fn bench_engine(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    engine: &mut dyn Engine,
    batch: &Dataset,
    config: &TrainConfig,
) {
    let mut trainer = Trainer::new(engine, batch, &Dataset::default(), config).unwrap();
    group.bench_function(id, |b| b.iter(|| trainer.run_epoch().unwrap()));
}

fn train_step(c: &mut Criterion) {
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let batch = one_batch();
    let config = TrainConfig { batch_size: BATCH, ..Default::default() };
    let weights = model.init(1);
    let mut group = c.benchmark_group("train_step_base_batch128");
    group.sample_size(10).throughput(Throughput::Elements(BATCH as u64));
    if let Some(ctx) = gpu_context() {
        for naive in [false, true] {
            let mut gpu = GpuEngine::with_kernels(&ctx, &model, &batch, &weights, &config, naive).unwrap();
            let id = BenchmarkId::new("gpu", if naive { "naive" } else { "tiled" });
            bench_engine(&mut group, id, &mut gpu, &batch, &config);
        }
    }
    let mut cpu = ReferenceEngine::new(&model, &batch, weights, &config).unwrap();
    bench_engine(&mut group, BenchmarkId::new("cpu", "reference"), &mut cpu, &batch, &config);
    group.finish();
}

fn conv_layers(c: &mut Criterion) {
    let Some(ctx) = gpu_context() else { return };
    let step = uniform_buffer(&ctx.device, "step", &StepParams { batch_size: BATCH as u32, ..Default::default() });
    let mut group = c.benchmark_group("conv2d_base_layers_batch128");
    group.sample_size(10);
    for (input, filters, stride) in
        [([32, 32, 3], 16, 1), ([32, 32, 16], 16, 2), ([16, 16, 16], 32, 1), ([16, 16, 32], 32, 2)]
    {
        let s = Conv2dShape::new(BATCH, input, filters, stride);
        let buffer = |n: usize| gpu::storage_buffer(&ctx.device, "bench", 4 * n as u64).unwrap();
        let (x, params, y, dy) =
            (buffer(s.input_len()), buffer(s.kernel_len() + filters), buffer(s.output_len()), buffer(s.output_len()));
        let (dx, grads) = (buffer(s.input_len()), buffer(s.kernel_len() + filters));
        let scratch = buffer(s.tuned(Tuning::for_adapter(&ctx.info)).partials_len());
        let layer = format!("{}x{}x{}_to_{filters}_s{stride}", input[0], input[1], input[2]);
        group.throughput(Throughput::Elements((s.output_len() * 9 * input[2]) as u64));
        for naive in [false, true] {
            let gpu = GpuLayer {
                kernels: &ctx.kernels,
                tuning: Tuning::for_adapter(&ctx.info),
                naive,
                step: &step,
                params: &params,
                state: &params,
                x: &x,
                y: &y,
                source: None,
                // As the engine binds a convolution between two others: dy comes masked by the
                // ReLU, dx leaves masked for the one before.
                backward: Some(GpuGrads {
                    dy: &dy,
                    dx: Some(&dx),
                    grads: &grads,
                    scratch: &scratch,
                    scratch_offset: 0,
                    dy_masked: true,
                    mask_dx: Mask::RELU,
                }),
                epilogue: Epilogue::default(),
                pooled: None,
                forward_by_before: false,
            };
            let pass = conv2d::bind(&gpu, &s.tuned(gpu.tuning)).unwrap();
            // The tiled dkernel's final sums, which the engine runs with every layer's.
            let sums =
                partial_sums::bind(&ctx.kernels, &pass.sums, &scratch, &grads, s.kernel_len() + filters).unwrap();
            let variant = if naive { "naive" } else { "tiled" };
            for backward in [false, true] {
                let name = format!("{}_{variant}", if backward { "backward" } else { "forward" });
                group.bench_function(BenchmarkId::new(name, &layer), |b| {
                    b.iter(|| {
                        let mut encoder = ctx.device.create_command_encoder(&Default::default());
                        {
                            let mut p = begin_pass(&mut encoder, "bench");
                            if backward {
                                pass.record_backward(&mut p);
                                if let Some((sums, _)) = &sums {
                                    sums.record(&mut p);
                                }
                            } else {
                                pass.record_forward(&mut p);
                            }
                        }
                        ctx.queue.submit([encoder.finish()]);
                        gpu::wait_idle(&ctx.device).unwrap();
                    })
                });
            }
        }
    }
    group.finish();
}

/// The base net's first convolution as the engine binds it (no dx): the gather then the forward
/// pass on the f32 batch, beside the forward pass that reads the u8 dataset itself; and the
/// weight partials from either.
fn first_layer(c: &mut Criterion) {
    let Some(ctx) = gpu_context() else { return };
    let batch = one_batch();
    let (input, filters) = ([32, 32, 3], 16);
    let s = Conv2dShape::new(BATCH, input, filters, 1);
    let tuning = Tuning::for_adapter(&ctx.info);
    let step = uniform_buffer(&ctx.device, "step", &StepParams { batch_size: BATCH as u32, ..Default::default() });
    let buffer = |n: usize| gpu::storage_buffer(&ctx.device, "bench", 4 * n as u64).unwrap();
    let (x, params, y, dy) =
        (buffer(s.input_len()), buffer(s.kernel_len() + filters), buffer(s.output_len()), buffer(s.output_len()));
    let (grads, scratch, labels) =
        (buffer(s.kernel_len() + filters), buffer(s.tuned(tuning).partials_len()), buffer(BATCH));
    let data = GpuDataset::upload(&ctx.device, "bench", &batch.images, &batch.labels, s.input_len() / BATCH).unwrap();
    let order: Vec<u32> = (0..BATCH as u32).rev().collect();
    let order = ctx.upload("order", bytemuck::cast_slice(&order), wgpu::BufferUsages::empty()).unwrap();
    let source = BatchSource { data: &data, order: &order, batch_labels: &labels };
    let gather = gather::bind(&ctx.kernels, BATCH, &step, &source, &x).unwrap();
    let mut group = c.benchmark_group("conv2d_first_layer_batch128");
    group.sample_size(10).throughput(Throughput::Elements(BATCH as u64));
    for reads_dataset in [false, true] {
        let gpu = GpuLayer {
            kernels: &ctx.kernels,
            tuning,
            naive: false,
            step: &step,
            params: &params,
            state: &params,
            x: &x,
            y: &y,
            source: reads_dataset.then_some(source),
            backward: Some(GpuGrads {
                dy: &dy,
                dx: None,
                grads: &grads,
                scratch: &scratch,
                scratch_offset: 0,
                dy_masked: true,
                mask_dx: Mask::NONE,
            }),
            epilogue: Epilogue::default(),
            pooled: None,
            forward_by_before: false,
        };
        let pass = conv2d::bind(&gpu, &s.tuned(tuning)).unwrap();
        for backward in [false, true] {
            let name = match (backward, reads_dataset) {
                (false, false) => "gather_then_forward",
                (false, true) => "forward_reading_the_dataset",
                (true, false) => "weight_partials_from_x",
                (true, true) => "weight_partials_from_the_dataset",
            };
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut encoder = ctx.device.create_command_encoder(&Default::default());
                    {
                        let mut p = begin_pass(&mut encoder, "bench");
                        if backward {
                            pass.record_backward(&mut p);
                        } else {
                            if !reads_dataset {
                                gather.record(&mut p);
                            }
                            pass.record_forward(&mut p);
                        }
                    }
                    ctx.queue.submit([encoder.finish()]);
                    gpu::wait_idle(&ctx.device).unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, train_step, conv_layers, first_layer);
criterion_main!(benches);
