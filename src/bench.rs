//! Timing helpers shared by the CLI's `bench` reports and the criterion benchmarks, and the
//! Part I comparison (reference CPU, fast CPU, GPU kernel, GPU end to end) measured in one run.

use std::time::Duration;

/// The clock every timing of the crate reads: std's `Instant`, or in a browser (where std's
/// panics) `performance.now()` through `web-time`.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use std::time::Instant;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub use web_time::Instant;

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
/// (reference and fast) and, when `gpu` is given, on the GPU: the kernel alone on
/// device-resident buffers; end to end with upload and readback, one plane at a time and three in
/// flight; and the bound of one plane's upload plus its readback, each alone.
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
        // write_buffer takes whole words: the plane padded as its buffers are.
        let mut words = input.pixels.clone();
        words.resize(gpu::padded_size(words.len() as u64) as usize, 0);
        let expected = cpu::conv3x3_fast(&input, kernel).pixels;
        let mut slots = stream_slots(ctx, &conv, &input, words.len() as u64, kernel)?;
        let pipelined = measure(budget, 2, || conv_pipelined(ctx, &mut slots, &words, &expected))?;
        push("GPU end to end, 3 in flight", pipelined / PIPELINED_PLANES as u32);
        let (upload, readback) = transfer_times(ctx, &input_buffer, &output_buffer, &words, budget)?;
        push("bound: upload + readback", upload + readback);
    }
    Ok(rows)
}

/// Planes [`conv_pipelined`] convolves per call.
const PIPELINED_PLANES: usize = 12;

/// One plane's place in [`conv_pipelined`]'s stream: its input, output and bound kernel, and
/// the readback in flight with its submission.
struct StreamSlot {
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    dispatch: crate::filter::Conv3x3Dispatch,
    pending: Option<(gpu::Readback, wgpu::SubmissionIndex)>,
}

/// Three slots of `bytes`-long buffers for planes of `input`'s size, built once, before timing.
fn stream_slots(
    ctx: &GpuContext,
    conv: &Conv3x3,
    input: &Plane,
    bytes: u64,
    kernel: &Kernel3x3,
) -> Result<Vec<StreamSlot>> {
    (0..3)
        .map(|_| {
            let input_buffer = gpu::storage_buffer(&ctx.device, "stream input", bytes)?;
            let output = gpu::storage_buffer(&ctx.device, "stream output", bytes)?;
            let dispatch = conv.prepare(&ctx.device, &input_buffer, &output, input.width, input.height, kernel)?;
            Ok(StreamSlot { input: input_buffer, output, dispatch, pending: None })
        })
        .collect()
}

/// Part I end to end as a stream of planes would run it: three planes in flight, each in a slot
/// of its own (input, output and a mapped staging buffer), so that while one plane's result is
/// read back the next is uploaded and convolved. Each wait is for one submission only. Every
/// result is compared with `expected` (a memcmp, small beside the transfers), so the timing is
/// of the right work.
fn conv_pipelined(ctx: &GpuContext, slots: &mut [StreamSlot], words: &[u8], expected: &[u8]) -> Result<()> {
    let (device, queue) = (&ctx.device, &ctx.queue);
    let bytes = words.len() as u64;
    let finish = |pending: Option<(gpu::Readback, wgpu::SubmissionIndex)>| -> Result<()> {
        let Some((mut readback, submission)) = pending else { return Ok(()) };
        let wait = wgpu::PollType::Wait { submission_index: Some(submission), timeout: None };
        device.poll(wait).map_err(|e| crate::Error::Readback(e.to_string()))?;
        // The wait ran the map's callback; should it not have, wait for everything instead.
        let bytes = match readback.try_take() {
            Some(bytes) => bytes?,
            None => pollster::block_on(readback.bytes())?,
        };
        match bytes.get(..expected.len()) == Some(expected) {
            true => Ok(()),
            false => Err(crate::Error::Readback("a pipelined plane differs from the CPU's result".into())),
        }
    };
    for plane in 0..PIPELINED_PLANES {
        let slot = &mut slots[plane % slots.len()];
        finish(slot.pending.take())?;
        queue.write_buffer(&slot.input, 0, words);
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stream") });
        slot.dispatch.encode(&mut encoder);
        let mut readback = gpu::Readback::record(device, &mut encoder, &[(&slot.output, 0, bytes)]);
        let submission = queue.submit([encoder.finish()]);
        readback.map();
        slot.pending = Some((readback, submission));
    }
    slots.iter_mut().try_for_each(|slot| finish(slot.pending.take()))
}

/// The plane's way to the device and back alone, each timed end to end: a `write_buffer` of its
/// bytes and a submit, and a copy into a staging buffer that is mapped and read.
fn transfer_times(
    ctx: &GpuContext,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
    words: &[u8],
    budget: Duration,
) -> Result<(Duration, Duration)> {
    let upload = measure(budget, 3, || {
        ctx.queue.write_buffer(input, 0, words);
        ctx.queue.submit([]);
        gpu::wait_idle(&ctx.device)
    })?;
    let readback = measure(budget, 3, || {
        std::hint::black_box(ctx.read_buffer(output)?);
        Ok(())
    })?;
    Ok((upload, readback))
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

/// One measured classification throughput.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifyTiming {
    /// "GPU classifier, buffer", "GPU classifier, texture", "CPU fast (evaluate)".
    pub method: String,
    pub batch: usize,
    pub images_per_second: f64,
    /// Dispatches of one call (GPU rows).
    pub dispatches: Option<usize>,
}

/// Inference throughput of `model` (initial weights: the work does not depend on them) in
/// images/s, for each batch size: the embedders' [`crate::classify::Classifier`] from a buffer of
/// u8 images and from 32×32 regions of a texture, one call per submit as an application
/// classifying each frame's pictures would (the probabilities copied into a buffer of the
/// application's, not read back); and, with `fast-cpu`, the fast CPU engine's evaluation over
/// the same images for comparison.
pub fn classify_timings(
    ctx: &GpuContext,
    model: &crate::model::Model,
    images: &crate::data::Dataset,
    batches: &[usize],
    budget: Duration,
) -> Result<Vec<ClassifyTiming>> {
    use crate::classify::{Classifier, Region};
    let weights = model.init(1);
    let largest = batches.iter().copied().max().unwrap_or(1).max(1);
    let images = images.take_first(largest);
    if images.len() < largest {
        return Err(crate::Error::invalid(format!("{} images to time batches of {largest}", images.len())));
    }
    let buffer = ctx.upload("bench images", &images.images, wgpu::BufferUsages::empty())?;
    let (rgba, width, regions) = {
        let mut rgba = vec![255u8; 4 * 32 * 32 * largest];
        for n in 0..largest {
            for (i, pixel) in images.image(n).chunks(3).enumerate() {
                let (y, x) = (i / 32, n * 32 + i % 32);
                rgba[4 * (y * 32 * largest + x)..][..3].copy_from_slice(pixel);
            }
        }
        let regions: Vec<Region> = (0..largest as u32).map(|n| Region::new(32 * n, 0, 32, 32)).collect();
        (rgba, 32 * largest as u32, regions)
    };
    let texture = crate::selftest::texture_with(
        ctx,
        wgpu::TextureFormat::Rgba8Unorm,
        (width, 32),
        &rgba,
        wgpu::TextureUsages::empty(),
    );
    let view = texture.create_view(&Default::default());
    let output = gpu::storage_buffer(&ctx.device, "bench probabilities", 4 * (largest * model.classes()) as u64)?;
    let mut rows = Vec::new();
    for &batch in batches {
        // Built for this batch size, as an application sizes its classifier: the grids are fixed
        // at bind time for the largest call.
        let classifier = Classifier::new(&ctx.device, &ctx.queue, model, &weights, batch)?;
        let from_buffer = classifier.bind_images(&buffer)?;
        let from_texture = classifier.bind_texture(&view)?;
        type Record<'a> = Box<dyn Fn(&mut wgpu::CommandEncoder) -> Result<()> + 'a>;
        let inputs: [(&str, Record<'_>); 2] = [
            ("GPU classifier, buffer", Box::new(|e| classifier.record_images(e, &from_buffer, 0, batch, &output, 0))),
            (
                "GPU classifier, texture",
                Box::new(|e| classifier.record_regions(e, &from_texture, &regions[..batch], &output, 0)),
            ),
        ];
        for (method, record) in inputs {
            let per_call = measure(budget, 3, || {
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                record(&mut encoder)?;
                ctx.queue.submit([encoder.finish()]);
                gpu::wait_idle(&ctx.device)
            })?;
            rows.push(ClassifyTiming {
                method: method.into(),
                batch,
                images_per_second: batch as f64 / per_call.as_secs_f64(),
                dispatches: Some(classifier.dispatches()),
            });
        }
        #[cfg(feature = "fast-cpu")]
        {
            use crate::train::Inference;
            let config = crate::train::TrainConfig { batch_size: batch, ..Default::default() };
            let set = images.take_first(batch);
            let mut fast = crate::train::fast::FastCpuEngine::new(model, &set, weights.clone(), &config)?;
            let id = fast.prepare(&set)?;
            let per_call = measure(budget, 3, || crate::train::wait(fast.probabilities(id)).map(|_| ()))?;
            rows.push(ClassifyTiming {
                method: "CPU fast (evaluate)".into(),
                batch,
                images_per_second: batch as f64 / per_call.as_secs_f64(),
                dispatches: None,
            });
        }
    }
    Ok(rows)
}
