//! Part I: the 3×3 u8 convolution at the assignment's size (451×300) and at 4096×4096, on the
//! CPU (reference loop and fast path) and the GPU (kernel alone on device-resident buffers, and
//! end to end with upload and readback). Criterion reports each; compare them as ratios within
//! one run. `wgpu-cnn bench conv` prints the same comparison as a table.
//!
//! Without an adapter the GPU rows are skipped with a message.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_cnn::bench::{random_plane, DISPATCHES_PER_SUBMIT};
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3};
use wgpu_cnn::gpu::{self, GpuContext, GpuOptions};

fn conv3x3(c: &mut Criterion) {
    let ctx = match GpuOptions::from_env().and_then(|o| GpuContext::new(&o)) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            eprintln!("no GPU benchmarks: {e}");
            None
        }
    };
    let kernel = Kernel3x3::K1;
    let mut group = c.benchmark_group("conv3x3");
    group.sample_size(10);
    for (width, height) in [(451u32, 300u32), (4096, 4096)] {
        let size = format!("{width}x{height}");
        let input = random_plane(width, height, 1);
        group.throughput(Throughput::Elements(u64::from(width) * u64::from(height)));
        group.bench_function(BenchmarkId::new("cpu_reference", &size), |b| {
            b.iter(|| cpu::conv3x3_reference(&input, &kernel))
        });
        group.bench_function(BenchmarkId::new("cpu_fast", &size), |b| b.iter(|| cpu::conv3x3_fast(&input, &kernel)));
        let Some(ctx) = &ctx else { continue };
        let conv = Conv3x3::new(&ctx.device).unwrap();
        let input_buffer = ctx.upload("input", &input.pixels, wgpu::BufferUsages::empty()).unwrap();
        let output_buffer = gpu::storage_buffer(&ctx.device, "output", input.pixels.len() as u64).unwrap();
        let dispatch = conv.prepare(&ctx.device, &input_buffer, &output_buffer, width, height, &kernel).unwrap();
        // Several dispatches per submit, synchronised once: the kernel's throughput, not the
        // submit latency. Criterion's time is per batch; the throughput line accounts for it.
        group.throughput(Throughput::Elements(u64::from(width) * u64::from(height) * u64::from(DISPATCHES_PER_SUBMIT)));
        group.bench_function(BenchmarkId::new("gpu_kernel_x8", &size), |b| {
            b.iter(|| {
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                for _ in 0..DISPATCHES_PER_SUBMIT {
                    dispatch.encode(&mut encoder);
                }
                ctx.queue.submit([encoder.finish()]);
                gpu::wait_idle(&ctx.device).unwrap();
            })
        });
        group.throughput(Throughput::Elements(u64::from(width) * u64::from(height)));
        group.bench_function(BenchmarkId::new("gpu_end_to_end", &size), |b| {
            b.iter(|| conv.run(&ctx.device, &ctx.queue, &input, &kernel).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, conv3x3);
criterion_main!(benches);
