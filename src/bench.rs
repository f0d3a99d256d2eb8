//! Timing helpers shared by the CLI's `bench` reports and the criterion benchmarks, and the
//! Part I comparison (reference CPU, fast CPU, GPU kernel, GPU end to end) measured in one run.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::filter::{cpu, Conv3x3, Kernel3x3, Plane};
use crate::gpu::{self, GpuContext};

/// Mean time of one call of `work`: one untimed warm-up call, then calls until `budget` has passed
/// (at least `min_iterations`).
pub fn measure(budget: Duration, min_iterations: u32, mut work: impl FnMut() -> Result<()>) -> Result<Duration> {
    work()?;
    let start = Instant::now();
    let mut iterations = 0u32;
    while iterations < min_iterations || start.elapsed() < budget {
        work()?;
        iterations += 1;
    }
    Ok(start.elapsed() / iterations)
}

/// Dispatches recorded per submit when timing a device-resident kernel, so that submit latency
/// is spread over several kernels (as in a real pipeline of work).
pub const DISPATCHES_PER_SUBMIT: u32 = 8;

/// The CPU's model name (Linux: /proc/cpuinfo), or the architecture elsewhere.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Threads the CPU paths run on: rayon's pool with the `fast-cpu` feature (`RAYON_NUM_THREADS`
/// sets it), else 1.
pub fn cpu_threads() -> usize {
    #[cfg(feature = "fast-cpu")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "fast-cpu"))]
    return 1;
}

/// One line of the Part I comparison.
#[derive(Clone, Debug)]
pub struct ConvTiming {
    pub width: u32,
    pub height: u32,
    pub method: &'static str,
    pub seconds: f64,
}

impl ConvTiming {
    pub fn megapixels_per_second(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height) / self.seconds / 1e6
    }
}

/// A deterministic pseudo-random plane (xorshift), for benchmarks and tests.
pub fn random_plane(width: u32, height: u32, seed: u64) -> Plane {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pixels = (0..width as usize * height as usize)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    Plane { width, height, pixels }
}

/// Times the Part I convolution of a random `width × height` plane with `kernel` on the CPU
/// (reference and fast) and, when `gpu` is given, on the GPU (kernel alone on device-resident
/// buffers, and end to end with upload and readback).
pub fn conv_timings(
    gpu: Option<&GpuContext>,
    width: u32,
    height: u32,
    kernel: &Kernel3x3,
    budget: Duration,
) -> Result<Vec<ConvTiming>> {
    let input = random_plane(width, height, 42);
    let mut rows = Vec::new();
    let mut push =
        |method, duration: Duration| rows.push(ConvTiming { width, height, method, seconds: duration.as_secs_f64() });

    push(
        "CPU reference",
        measure(budget, 2, || {
            std::hint::black_box(cpu::conv3x3_reference(&input, kernel));
            Ok(())
        })?,
    );
    push(
        "CPU fast",
        measure(budget, 3, || {
            std::hint::black_box(cpu::conv3x3_fast(&input, kernel));
            Ok(())
        })?,
    );
    if let Some(ctx) = gpu {
        let conv = Conv3x3::with_kernels(&ctx.kernels)?;
        let input_buffer = ctx.upload("bench input", &input.pixels, wgpu::BufferUsages::empty())?;
        let output_buffer = gpu::storage_buffer(&ctx.device, "bench output", input.pixels.len() as u64)?;
        let dispatch = conv.prepare(&ctx.device, &input_buffer, &output_buffer, width, height, kernel)?;
        let kernel_time = measure(budget, 3, || {
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            for _ in 0..DISPATCHES_PER_SUBMIT {
                dispatch.encode(&mut encoder);
            }
            ctx.queue.submit([encoder.finish()]);
            gpu::wait_idle(&ctx.device)
        })?;
        push("GPU kernel", kernel_time / DISPATCHES_PER_SUBMIT);
        push(
            "GPU end to end",
            measure(budget, 3, || {
                std::hint::black_box(conv.run(&ctx.device, &ctx.queue, &input, kernel)?);
                Ok(())
            })?,
        );
    }
    Ok(rows)
}

/// Training throughput of an engine built on `data`, in images/s: whole epochs of the training
/// loop (so that the GPU's per-epoch metric readback counts), after one untimed warm-up epoch
/// that lets drivers finish compiling.
pub fn train_images_per_second(
    engine: &mut dyn crate::train::Engine,
    data: &crate::data::Dataset,
    config: &crate::train::TrainConfig,
    budget: Duration,
) -> Result<f64> {
    let mut trainer = crate::train::Trainer::new(engine, data, &Default::default(), config)?;
    let per_epoch = measure(budget, 1, || trainer.run_epoch().map(|_| ()))?;
    Ok(data.len() as f64 / per_epoch.as_secs_f64())
}
