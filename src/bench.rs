//! Timing helpers shared by the CLI's `bench` reports and the criterion benchmarks, the Part I
//! comparison (reference CPU, fast CPU, GPU kernel, GPU end to end) measured in one run, and
//! the device's own rates for a roofline (`shaders/probe.wgsl`, [`device_rates`]).

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
use crate::kernel::{arg, floats, read, read_write, Dispatch, EntryPoint, Grid, Shader};
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

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

/// What a device does, measured by `shaders/probe.wgsl`: the figures of a roofline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceRates {
    /// f32 multiply-adds in independent chains, as FLOP/s (2 a multiply-add): no tensor cores,
    /// as in every kernel of the crate.
    pub flop_per_second: f64,
    /// A copy kernel over buffers larger than any cache: bytes read plus bytes written a second.
    pub bytes_per_second: f64,
    /// What one more dispatch costs when it depends on the one before (a barrier between them,
    /// as between the dispatches of a training step), in seconds.
    pub dispatch_seconds: f64,
}

/// The binding table of `shaders/probe.wgsl`.
pub static PROBE: Shader = Shader {
    name: "probe",
    file: "probe.wgsl",
    source: shader_source!("common.wgsl", "probe.wgsl"),
    own: shader_own!("probe.wgsl"),
    entry_points: &[
        EntryPoint { name: "fma_chains", bindings: &[read_write(1, "dst")] },
        EntryPoint { name: "copy", bindings: &[read(0, "src"), read_write(1, "dst")] },
        EntryPoint { name: "touch", bindings: &[read_write(1, "dst")] },
    ],
};

/// `fma_chains`' work: FLOP per invocation (4 chains × 4 lanes × 2 × FMA_ITERATIONS = 256
/// steps, as in `shaders/probe.wgsl`).
const PROBE_FLOP_PER_INVOCATION: f64 = 4.0 * 4.0 * 2.0 * 256.0;
/// Invocations of one `fma_chains` dispatch.
const PROBE_INVOCATIONS: u64 = 1 << 18;
/// Bytes of each of the copy's two buffers: past the L2 of any current GPU (50 MB on an H200).
const PROBE_COPY_BYTES: u64 = 64 << 20;

/// Times `count` dispatches of `d` in one pass and one submit, doubling `count` from 1 until a
/// submit takes at least `at_least`: (count, seconds of that submit).
fn time_repeated(ctx: &GpuContext, d: &Dispatch, at_least: Duration) -> Result<(u32, f64)> {
    let mut count = 1u32;
    loop {
        let seconds = time_submit(ctx, d, count)?;
        if seconds >= at_least.as_secs_f64() || count >= 1 << 14 {
            return Ok((count, seconds));
        }
        count *= 2;
    }
}

/// One submit of `count` dispatches of `d` in one pass, waited for: seconds.
fn time_submit(ctx: &GpuContext, d: &Dispatch, count: u32) -> Result<f64> {
    let start = Instant::now();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = crate::kernel::begin_pass(&mut encoder, "probe");
        (0..count).for_each(|_| d.record(&mut pass));
    }
    ctx.queue.submit([encoder.finish()]);
    gpu::wait_idle(&ctx.device)?;
    Ok(start.elapsed().as_secs_f64())
}

/// The device's [`DeviceRates`], each from submits of at least `at_least` (the best of three).
pub fn device_rates(ctx: &GpuContext, at_least: Duration) -> Result<DeviceRates> {
    let kernels = &ctx.kernels;
    let device = &ctx.device;
    let copy_bytes = PROBE_COPY_BYTES.min((device.limits().max_storage_buffer_binding_size / 2) & !15);
    let src = gpu::storage_buffer(device, "probe source", copy_bytes)?;
    let dst = gpu::storage_buffer(device, "probe destination", copy_bytes)?;
    let vec4s = copy_bytes / 16;
    let fma = Dispatch::new(
        device,
        &kernels.get(&PROBE, "fma_chains", &[])?,
        &[arg("dst", &dst, 16)],
        Grid::Invocations(PROBE_INVOCATIONS),
    )?;
    let copy = Dispatch::new(
        device,
        &kernels.get(&PROBE, "copy", &[])?,
        &[arg("src", &src, copy_bytes), arg("dst", &dst, copy_bytes)],
        Grid::Invocations(vec4s),
    )?;
    let touch =
        Dispatch::new(device, &kernels.get(&PROBE, "touch", &[])?, &[arg("dst", &dst, 16)], Grid::Workgroups(1))?;
    let best = |d: &Dispatch| -> Result<(u32, f64)> {
        let mut best = time_repeated(ctx, d, at_least)?;
        for _ in 0..2 {
            let (count, seconds) = time_repeated(ctx, d, at_least)?;
            if seconds / f64::from(count) < best.1 / f64::from(best.0) {
                best = (count, seconds);
            }
        }
        Ok(best)
    };
    let (n, seconds) = best(&fma)?;
    let flop_per_second = f64::from(n) * PROBE_INVOCATIONS as f64 * PROBE_FLOP_PER_INVOCATION / seconds;
    let (n, seconds) = best(&copy)?;
    let bytes_per_second = f64::from(n) * 2.0 * copy_bytes as f64 / seconds;
    // A chain of n dispatches against one: what each added dispatch costs.
    let (n, seconds) = best(&touch)?;
    let mut one = f64::INFINITY;
    for _ in 0..3 {
        one = one.min(time_submit(ctx, &touch, 1)?);
    }
    let dispatch_seconds = ((seconds - one) / f64::from(n.max(2) - 1)).max(0.0);
    Ok(DeviceRates { flop_per_second, bytes_per_second, dispatch_seconds })
}

/// The probe kernels against the CPU: the copy bit for bit, the FMA chains within rounding (a
/// driver may or may not fuse), and a chain of touches counted exactly.
pub fn probe_checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let device = &ctx.device;
    let n = 300usize;
    let values: Vec<f32> = (0..4 * n).map(|i| (i as f32 * 0.37).sin()).collect();
    let src = selftest::upload(ctx, &values)?;
    let dst = selftest::sentinel(ctx, 4 * n)?;
    let kernels = crate::kernel::Kernels::new(device);
    let bytes = floats(4 * n);
    let copy = Dispatch::new(
        device,
        &kernels.get(&PROBE, "copy", &[])?,
        &[arg("src", &src, bytes), arg("dst", &dst, bytes)],
        Grid::Invocations(n as u64),
    )?;
    selftest::run(ctx, |pass| copy.record(pass));
    let copied = selftest::read(ctx, &dst, 4 * n)?;
    // Two whole workgroups on as many vec4s: invocation i writes element i.
    let invocations = 2 * crate::kernel::WORKGROUP_SIZE as usize;
    let chains_b = selftest::sentinel(ctx, 4 * invocations)?;
    let fma = Dispatch::new(
        device,
        &kernels.get(&PROBE, "fma_chains", &[])?,
        &[arg("dst", &chains_b, floats(4 * invocations))],
        Grid::Invocations(invocations as u64),
    )?;
    selftest::run(ctx, |pass| fma.record(pass));
    let chains = selftest::read(ctx, &chains_b, 4 * invocations)?;
    let expected: Vec<f32> = (0..invocations).flat_map(fma_chains_reference).collect();
    let touches = 37;
    let touch =
        Dispatch::new(device, &kernels.get(&PROBE, "touch", &[])?, &[arg("dst", &dst, 16)], Grid::Workgroups(1))?;
    selftest::run(ctx, |pass| (0..touches).for_each(|_| touch.record(pass)));
    let touched = selftest::read(ctx, &dst, 4)?;
    let after: Vec<f32> = values[..4].iter().map(|v| v + touches as f32).collect();
    Ok(vec![
        Check::compare("probe: copy".into(), &copied, &values, 0.0, 0.0),
        Check::compare("probe: fma chains".into(), &chains, &expected, 1e-5, 1e-5),
        Check::compare(format!("probe: {touches} dependent touches"), &touched, &after, 1e-4, 0.0),
    ])
}

/// `fma_chains`' result for invocation `i`, in f32 (fused multiply-adds, as WGSL's `fma`), with
/// `shaders/probe.wgsl`'s seeds, SCALE, OFFSET and FMA_ITERATIONS.
fn fma_chains_reference(i: usize) -> [f32; 4] {
    let seed = (i % 1024) as f32 * (1.0 / 1024.0);
    let a0 = [seed, seed + 0.25, seed + 0.5, seed + 0.75];
    let chain = |start: f32| (0..256).fold(start, |v, _| v.mul_add(0.999, 0.001));
    std::array::from_fn(|l| (chain(a0[l]) + chain(a0[l] * 0.5)) + (chain(a0[l] * 0.25) + chain(a0[l] * 0.125)))
}
