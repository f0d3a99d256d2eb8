//! One training step of the base CNN at batch 128: on the GPU (tiled and naive convolution
//! kernels) and on the CPU reference, side by side in one run; then each convolution of the
//! base net alone, forward and backward, naive vs tiled. `wgpu-cnn bench train` prints images/s.
//!
//! Without an adapter the GPU rows are skipped with a message.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_cnn::data;
use wgpu_cnn::gpu::uniform_buffer;
use wgpu_cnn::gpu::{self, GpuContext, GpuOptions};
use wgpu_cnn::kernel::begin_pass;
use wgpu_cnn::layers::conv2d::{Conv2d, Conv2dBuffers, Conv2dShape, Conv2dVariant};
use wgpu_cnn::layers::StepParams;
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::cpu::CpuBackend;
use wgpu_cnn::train::gpu::{GpuBackend, Kernels};
use wgpu_cnn::train::{Backend, TrainConfig};

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

fn train_step(c: &mut Criterion) {
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let batch = data::embedded().train.take_first(BATCH);
    let order: Vec<u32> = (0..BATCH as u32).collect();
    let config = TrainConfig { batch_size: BATCH, ..Default::default() };
    let params = model.init_params(1);
    let mut group = c.benchmark_group("train_step_base_batch128");
    group.sample_size(10).throughput(Throughput::Elements(BATCH as u64));
    if let Some(ctx) = gpu_context() {
        for variant in [Conv2dVariant::Tiled, Conv2dVariant::Naive] {
            let kernels = Kernels::new(&ctx.device).unwrap();
            let mut gpu = GpuBackend::with_kernels(&ctx, kernels, &model, &batch, &params, &config, variant).unwrap();
            group.bench_function(BenchmarkId::new("gpu", format!("{variant:?}").to_lowercase()), |b| {
                b.iter(|| gpu.train_epoch(&order, &mut |_| {}).unwrap())
            });
        }
    }
    let mut cpu = CpuBackend::new(&model, &batch, params, &config).unwrap();
    group.bench_function("cpu_reference", |b| b.iter(|| cpu.train_epoch(&order, &mut |_| {}).unwrap()));
    group.finish();
}

fn conv_layers(c: &mut Criterion) {
    let Some(ctx) = gpu_context() else { return };
    let conv = Conv2d::new(&ctx.device).unwrap();
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
        let (dx, grads, dpre, partials) =
            (buffer(s.input_len()), buffer(s.kernel_len() + filters), buffer(s.output_len()), buffer(s.partials_len()));
        let layer = format!("{}x{}x{}_to_{filters}_s{stride}", input[0], input[1], input[2]);
        group.throughput(Throughput::Elements((s.output_len() * 9 * input[2]) as u64));
        for variant in [Conv2dVariant::Tiled, Conv2dVariant::Naive] {
            let buffers = Conv2dBuffers {
                step: &step,
                x: &x,
                params: &params,
                y: &y,
                dy: &dy,
                dx: Some(&dx),
                grads: &grads,
                dpre: &dpre,
                partials: &partials,
            };
            let pass = conv.bind(&ctx.device, &s, &buffers, variant).unwrap();
            for backward in [false, true] {
                let name = format!("{}_{variant:?}", if backward { "backward" } else { "forward" }).to_lowercase();
                group.bench_function(BenchmarkId::new(name, &layer), |b| {
                    b.iter(|| {
                        let mut encoder = ctx.device.create_command_encoder(&Default::default());
                        {
                            let mut p = begin_pass(&mut encoder, "bench");
                            if backward {
                                pass.record_backward(&mut p);
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

criterion_group!(benches, train_step, conv_layers);
criterion_main!(benches);
