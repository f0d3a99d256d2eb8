//! Every GPU kernel against its CPU reference on small random tensors, on whatever adapter the
//! caller gives: the engine of `wgpu-cnn selftest` (drivers differ, and a user should be able to
//! check theirs in seconds) and of the GPU-vs-CPU tests.
//!
//! Each check pre-fills its outputs with NaN, so an element the kernel forgot to write counts as
//! a mismatch, and uses partial batches (the grid is sized for more samples than the step holds:
//! samples past the batch must stay untouched).

use crate::error::Result;
use crate::filter::{cpu as filter_cpu, Conv3x3, Kernel3x3, Plane};
use crate::gpu::uniform_buffer;
use crate::gpu::GpuContext;
use crate::kernel::begin_pass;
use crate::layers::adam::{self, Adam, AdamBuffers, AdamConfig};
use crate::layers::conv2d::{self, Conv2d, Conv2dBuffers, Conv2dShape, Conv2dVariant};
use crate::layers::dense_softmax::{self, DenseBuffers, DenseShape, DenseSoftmax};
use crate::layers::dropout::{self, Dropout, DropoutShape};
use crate::layers::gather::{self, Gather, GatherBuffers, GpuDataset};
use crate::layers::maxpool2d::{self, MaxPool2d, PoolShape};
use crate::layers::{ActivationBuffers, StepParams};
use crate::rng::Rng;

/// The outcome of comparing one kernel's output with the CPU reference.
#[derive(Clone, Debug)]
pub struct Check {
    /// "conv2d tiled backward_input [8, 8, 5]→6 stride 2", ...
    pub name: String,
    /// Largest |gpu − cpu| over the compared elements (NaN if one was never written).
    pub max_error: f32,
    /// Elements outside atol + rtol·|cpu| (never-written ones included).
    pub mismatches: usize,
    pub compared: usize,
    /// The first mismatches, for the report.
    pub first: Vec<String>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }

    fn compare(name: String, got: &[f32], expected: &[f32], atol: f32, rtol: f32) -> Check {
        let mut check = Check { name, max_error: 0.0, mismatches: 0, compared: expected.len(), first: Vec::new() };
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let error = (g - e).abs();
            // Written so that NaN (an element never written) counts as a mismatch.
            let within = error <= atol + rtol * e.abs();
            if !within {
                check.mismatches += 1;
                if check.first.len() < 5 {
                    check.first.push(format!("[{i}] got {g}, expected {e}"));
                }
            }
            // f32::max ignores NaN; an unwritten element must stay visible in the maximum.
            check.max_error =
                if error.is_nan() || check.max_error.is_nan() { f32::NAN } else { check.max_error.max(error) };
        }
        check
    }

    /// Fails unless `values` are all still NaN (the samples past a partial batch).
    fn untouched(name: String, values: &[f32]) -> Check {
        let written = values.iter().filter(|v| !v.is_nan()).count();
        Check {
            name,
            max_error: 0.0,
            mismatches: written,
            compared: values.len(),
            first: if written > 0 { vec![format!("{written} element(s) past the batch were written")] } else { vec![] },
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.passed() { "pass" } else { "FAIL" };
        // `{:<width$}` with the formatter's width, so a list can align its names (`{check:70}`).
        let width = f.width().unwrap_or(0);
        write!(f, "{verdict}  {:<width$} max error {:.2e} over {} elements", self.name, self.max_error, self.compared)?;
        if !self.passed() {
            write!(f, "; {} mismatches: {}", self.mismatches, self.first.join(", "))?;
        }
        Ok(())
    }
}

/// Every check, on `ctx`'s adapter.
pub fn run_all(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    checks.extend(conv3x3(ctx)?);
    for variant in [Conv2dVariant::Tiled, Conv2dVariant::Naive] {
        for case in &CONV_CASES {
            checks.extend(conv2d(ctx, variant, case)?);
        }
    }
    checks.extend(maxpool2d(ctx)?);
    checks.extend(dropout(ctx)?);
    checks.extend(dense_softmax(ctx)?);
    checks.extend(adam(ctx)?);
    checks.extend(gather(ctx)?);
    Ok(checks)
}

/// One convolution to check.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub batch: usize,
    /// Samples in the batch actually used (a partial batch when fewer than `batch`).
    pub used: usize,
    /// [H, W, C]
    pub input: [usize; 3],
    pub filters: usize,
    pub stride: usize,
    /// A first layer computes no dx.
    pub first: bool,
    /// Where the kernel starts in the flat parameter buffer (the bias follows it).
    pub kernel_offset: usize,
}

const fn case(
    used_of: [usize; 2],
    input: [usize; 3],
    filters: usize,
    stride: usize,
    first: bool,
    kernel_offset: usize,
) -> ConvCase {
    ConvCase { batch: used_of[1], used: used_of[0], input, filters, stride, first, kernel_offset }
}

/// Odd shapes, partial batches, both strides on even and odd inputs, channel counts that are
/// not multiples of 4 and ones that are (the tiled kernels' vec4 loads), with the kernel at an
/// offset that allows vec4 loads and at one that does not.
pub const CONV_CASES: [ConvCase; 9] = [
    case([3, 3], [5, 6, 3], 4, 1, false, 0),
    case([3, 4], [8, 8, 5], 6, 2, false, 0),
    case([2, 2], [7, 5, 2], 3, 2, true, 0),
    case([2, 2], [32, 32, 3], 16, 1, true, 0),
    case([2, 3], [9, 13, 6], 5, 1, false, 0),
    case([2, 2], [33, 31, 2], 3, 2, false, 0),
    case([3, 3], [6, 7, 8], 8, 1, false, 4),
    case([2, 3], [10, 9, 4], 12, 2, false, 8),
    case([2, 2], [6, 5, 8], 8, 1, false, 2),
];

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32 * scale).collect()
}

fn upload(ctx: &GpuContext, data: &[f32]) -> Result<wgpu::Buffer> {
    ctx.upload("selftest", bytemuck::cast_slice(data), wgpu::BufferUsages::empty())
}

/// A buffer of NaNs: "not written" differs from "wrote 0".
fn sentinel(ctx: &GpuContext, len: usize) -> Result<wgpu::Buffer> {
    upload(ctx, &vec![f32::NAN; len])
}

fn read(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    Ok(bytemuck::cast_slice(&ctx.read_buffer(buffer)?)[..len].to_vec())
}

fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    record(&mut begin_pass(&mut encoder, "selftest"));
    ctx.queue.submit([encoder.finish()]);
}

fn step(ctx: &GpuContext, params: StepParams) -> wgpu::Buffer {
    uniform_buffer(&ctx.device, "selftest step", &params)
}

fn training_step(batch_size: usize) -> StepParams {
    StepParams { batch_size: batch_size as u32, seed: 42, step: 9, training: 1, ..Default::default() }
}

/// Part I on odd shapes: the exact integer path bit for bit, the f32 path within one grey level.
pub fn conv3x3(ctx: &GpuContext) -> Result<Vec<Check>> {
    let conv = Conv3x3::new(&ctx.device)?;
    let mut rng = Rng::new(1);
    let mut checks = Vec::new();
    for (width, height) in [(1, 1), (37, 23), (64, 3)] {
        let pixels: Vec<u8> = (0..width * height).map(|_| rng.below(256) as u8).collect();
        let plane = Plane::new(width, height, pixels)?;
        for (kernel, name, tolerance) in
            [(Kernel3x3::K1, "int", 0.0), (Kernel3x3::new([[0.3, -1.7, 0.1]; 3]), "float", 1.0)]
        {
            let gpu = conv.run(&ctx.device, &ctx.queue, &plane, &kernel)?;
            let cpu = filter_cpu::conv3x3_reference(&plane, &kernel);
            let as_f32 = |p: &Plane| p.pixels.iter().map(|&v| f32::from(v)).collect::<Vec<_>>();
            checks.push(Check::compare(
                format!("conv3x3 {name} {width}×{height}"),
                &as_f32(&gpu),
                &as_f32(&cpu),
                tolerance,
                0.0,
            ));
        }
    }
    Ok(checks)
}

/// One convolution: forward, and dx / dkernel / dbias from the GPU's own forward output.
/// The dkernel reduction is chunked as the trainer chunks it on this adapter.
pub fn conv2d(ctx: &GpuContext, variant: Conv2dVariant, case: &ConvCase) -> Result<Vec<Check>> {
    conv2d_chunked(ctx, variant, case, |shape| shape.for_adapter(&ctx.info))
}

/// As [`conv2d()`], with the dkernel reduction chunked by `chunking` (e.g. as on a hardware GPU,
/// whichever adapter runs the check).
pub fn conv2d_chunked(
    ctx: &GpuContext,
    variant: Conv2dVariant,
    case: &ConvCase,
    chunking: impl Fn(Conv2dShape) -> Conv2dShape,
) -> Result<Vec<Check>> {
    let ConvCase { batch, used, input, filters, stride, first, kernel_offset } = *case;
    let mut rng = Rng::new((batch * 131 + input[0] * 17 + filters * 3 + stride + kernel_offset * 7) as u64);
    let standalone = Conv2dShape::new(batch, input, filters, stride);
    let shape = Conv2dShape {
        kernel_offset: kernel_offset as u32,
        bias_offset: (kernel_offset + standalone.kernel_len()) as u32,
        ..standalone
    };
    let shape = chunking(shape);
    let used_shape = shape.with_batch(used);
    let x = random(&mut rng, shape.input_len(), 1.0);
    let mut params = random(&mut rng, kernel_offset + shape.kernel_len(), 0.3);
    params.extend(random(&mut rng, filters, 0.1));
    let dy = random(&mut rng, shape.output_len(), 1.0);
    let (kernel, bias) = params[kernel_offset..].split_at(shape.kernel_len());

    let mut y = vec![f32::NAN; shape.output_len()];
    conv2d::forward(&mut y, &x, kernel, bias, &used_shape);
    let mut dx = vec![f32::NAN; shape.input_len()];
    conv2d::backward_input(&mut dx, &dy, &y, kernel, &used_shape);
    let (mut dkernel, mut dbias) = (vec![0.0; kernel.len()], vec![0.0; filters]);
    conv2d::backward_weight(&mut dkernel, &mut dbias, &dy, &y, &x, &used_shape);

    let step = step(ctx, training_step(used));
    let (x_b, params_b, dy_b) = (upload(ctx, &x)?, upload(ctx, &params)?, upload(ctx, &dy)?);
    let (y_b, dx_b, grads_b) = (sentinel(ctx, y.len())?, sentinel(ctx, x.len())?, sentinel(ctx, params.len())?);
    let (dpre_b, partials_b) = (sentinel(ctx, y.len())?, sentinel(ctx, shape.partials_len())?);
    let buffers = Conv2dBuffers {
        step: &step,
        x: &x_b,
        params: &params_b,
        y: &y_b,
        dy: &dy_b,
        dx: (!first).then_some(&dx_b),
        grads: &grads_b,
        dpre: &dpre_b,
        partials: &partials_b,
    };
    let bound = Conv2d::new(&ctx.device)?.bind(&ctx.device, &shape, &buffers, variant)?;
    run(ctx, |pass| bound.record_forward(pass));
    run(ctx, |pass| bound.record_backward(pass));

    let at = if kernel_offset > 0 { format!(", kernel at {kernel_offset}") } else { String::new() };
    let at = format!("{at}, {} chunk{}", shape.chunks, if shape.chunks == 1 { "" } else { "s" });
    let at = if shape.chunk_lanes > 1 { format!("{at} × {} lanes", shape.chunk_lanes) } else { at };
    let what = format!(
        "conv2d {} {input:?}→{filters} stride {stride}, batch {used}/{batch}{at}",
        format!("{variant:?}").to_lowercase()
    );
    let (used_y, used_x) = (used_shape.output_len(), used_shape.input_len());
    let gpu_y = read(ctx, &y_b, y.len())?;
    let grads = read(ctx, &grads_b, params.len())?;
    let gpu_dx = read(ctx, &dx_b, x.len())?;
    let mut checks = vec![
        Check::compare(format!("{what}: y"), &gpu_y[..used_y], &y[..used_y], 1e-5, 1e-4),
        Check::untouched(format!("{what}: y past the batch"), &gpu_y[used_y..]),
        Check::compare(format!("{what}: dkernel"), &grads[kernel_offset..][..kernel.len()], &dkernel, 1e-4, 1e-4),
        Check::compare(format!("{what}: dbias"), &grads[kernel_offset + kernel.len()..], &dbias, 1e-4, 1e-4),
        Check::untouched(format!("{what}: grads before the kernel"), &grads[..kernel_offset]),
    ];
    if first {
        checks.push(Check::untouched(format!("{what}: no dx for a first layer"), &gpu_dx));
    } else {
        checks.push(Check::compare(format!("{what}: dx"), &gpu_dx[..used_x], &dx[..used_x], 1e-5, 1e-4));
    }
    Ok(checks)
}

/// A parameter-free layer (max pooling, dropout) on the GPU: uploads `x` and `dy`, records the
/// forward and backward passes of the layer `bind` builds for a training step of `batch` samples,
/// and reads back y (`y_len` floats) and dx, both poisoned with NaN beforehand.
fn forward_backward<P>(
    ctx: &GpuContext,
    batch: usize,
    x: &[f32],
    dy: &[f32],
    y_len: usize,
    bind: impl FnOnce(&ActivationBuffers<'_>) -> Result<P>,
    record: impl FnOnce(&P, &mut wgpu::ComputePass<'_>),
) -> Result<(Vec<f32>, Vec<f32>)> {
    let step = step(ctx, training_step(batch));
    let (x_b, dy_b, y_b, dx_b) = (upload(ctx, x)?, upload(ctx, dy)?, sentinel(ctx, y_len)?, sentinel(ctx, x.len())?);
    let bound = bind(&ActivationBuffers { step: &step, x: &x_b, y: &y_b, dy: &dy_b, dx: &dx_b })?;
    run(ctx, |pass| record(&bound, pass));
    Ok((read(ctx, &y_b, y_len)?, read(ctx, &dx_b, x.len())?))
}

/// Max-pooling with an odd input and a tie, bit for bit.
pub fn maxpool2d(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(11);
    let shape = PoolShape::new(3, [7, 6, 5]);
    let used = shape.with_batch(2);
    let mut x = random(&mut rng, shape.input_len(), 1.0);
    x[0] = x[1]; // a tie: the gradient goes to the first
    let dy = random(&mut rng, shape.output_len(), 1.0);
    let mut y = vec![f32::NAN; shape.output_len()];
    maxpool2d::forward(&mut y, &x, &used);
    let mut dx = vec![f32::NAN; shape.input_len()];
    maxpool2d::backward_input(&mut dx, &dy, &x, &used);

    let (gpu_y, gpu_dx) = forward_backward(
        ctx,
        2,
        &x,
        &dy,
        y.len(),
        |b| Ok(MaxPool2d::new(&ctx.device)?.bind(&ctx.device, &shape, b)),
        |bound, pass| {
            bound.record_forward(pass);
            bound.record_backward(pass);
        },
    )?;
    let (y_len, x_len) = (used.output_len(), used.input_len());
    Ok(vec![
        Check::compare("maxpool2d [7, 6, 5]: y".into(), &gpu_y[..y_len], &y[..y_len], 0.0, 0.0),
        Check::compare("maxpool2d [7, 6, 5]: dx".into(), &gpu_dx[..x_len], &dx[..x_len], 0.0, 0.0),
    ])
}

/// Dropout masks must be bit-identical: the GPU and the CPU hash the same counters.
pub fn dropout(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(12);
    let shape = DropoutShape::new(4, 333, 5, 0.5);
    let x = random(&mut rng, shape.len(), 1.0);
    let dy = random(&mut rng, shape.len(), 1.0);
    let mut y = vec![0.0; shape.len()];
    dropout::forward(&mut y, &x, Some((42, 9)), &shape);
    let mut dx = vec![0.0; shape.len()];
    dropout::backward_input(&mut dx, &dy, Some((42, 9)), &shape);

    let (gpu_y, gpu_dx) = forward_backward(
        ctx,
        4,
        &x,
        &dy,
        y.len(),
        |b| Ok(Dropout::new(&ctx.device)?.bind(&ctx.device, &shape, b)),
        |bound, pass| {
            bound.record_forward(pass);
            bound.record_backward(pass);
        },
    )?;
    Ok(vec![
        Check::compare("dropout 0.5: y".into(), &gpu_y, &y, 0.0, 0.0),
        Check::compare("dropout 0.5: dx".into(), &gpu_dx, &dx, 0.0, 0.0),
    ])
}

/// The fused dense layer: probabilities, dlogits, per-sample metrics, gradients, L1 penalty.
pub fn dense_softmax(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(13);
    let (batch, used, features, classes) = (6, 5, 70, 10);
    let shape = DenseShape::new(batch, features, classes, 1e-2);
    let used_shape = shape.with_batch(used);
    let x = random(&mut rng, batch * features, 1.0);
    let mut params = random(&mut rng, features * classes, 0.3);
    params[3] = 0.0; // sign(0) = 0
    params.extend(random(&mut rng, classes, 0.1));
    let labels: Vec<u32> = (0..batch as u32).map(|n| (n * 7) % classes as u32).collect();
    let (kernel, bias) = params.split_at(features * classes);

    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0; batch * classes], vec![0.0; batch * classes], vec![0.0; batch], vec![0u32; batch]);
    dense_softmax::forward(
        &mut probs,
        &mut dlogits,
        &mut losses,
        &mut predicted,
        &x,
        kernel,
        bias,
        &labels,
        &used_shape,
    );
    let (mut dkernel, mut dbias, mut dx) = (vec![0.0; kernel.len()], vec![0.0; classes], vec![0.0; x.len()]);
    dense_softmax::backward_weight(&mut dkernel, &mut dbias, &dlogits, &x, kernel, &used_shape);
    dense_softmax::backward_input(&mut dx, &dlogits, kernel, &used_shape);
    let penalty = dense_softmax::l1_penalty(kernel, &shape);

    // This batch's metrics go to positions 3.. of the epoch and its penalty to slot 2.
    let step = step(
        ctx,
        StepParams { batch_size: used as u32, batch_start: 3, penalty_slot: 2, training: 1, ..Default::default() },
    );
    let labels_b = ctx.upload("labels", bytemuck::cast_slice(&labels), wgpu::BufferUsages::empty())?;
    let (x_b, params_b) = (upload(ctx, &x)?, upload(ctx, &params)?);
    let (probs_b, dlogits_b, metrics_b) =
        (sentinel(ctx, probs.len())?, sentinel(ctx, dlogits.len())?, sentinel(ctx, 2 * (batch + 3))?);
    let (grads_b, dx_b, penalties_b) = (sentinel(ctx, params.len())?, sentinel(ctx, x.len())?, sentinel(ctx, 4)?);
    let bound = DenseSoftmax::new(&ctx.device)?.bind(
        &ctx.device,
        &shape,
        &DenseBuffers {
            step: &step,
            x: &x_b,
            params: &params_b,
            labels: &labels_b,
            probs: &probs_b,
            dlogits: &dlogits_b,
            metrics: &metrics_b,
            grads: &grads_b,
            dx: &dx_b,
            penalties: &penalties_b,
        },
    );
    run(ctx, |pass| {
        bound.record_forward(pass);
        bound.record_penalty(pass);
        bound.record_backward(pass);
    });
    let n = used * classes;
    let metrics = read(ctx, &metrics_b, 2 * (batch + 3))?;
    let gpu_losses: Vec<f32> = (0..used).map(|i| metrics[6 + 2 * i]).collect();
    let gpu_predicted: Vec<f32> = (0..used).map(|i| metrics[7 + 2 * i]).collect();
    let cpu_predicted: Vec<f32> = predicted[..used].iter().map(|&p| p as f32).collect();
    let grads = read(ctx, &grads_b, params.len())?;
    Ok(vec![
        Check::compare("dense_softmax: probabilities".into(), &read(ctx, &probs_b, n)?, &probs[..n], 1e-6, 1e-4),
        Check::compare("dense_softmax: dlogits".into(), &read(ctx, &dlogits_b, n)?, &dlogits[..n], 1e-6, 1e-4),
        Check::untouched("dense_softmax: metrics before batch_start".into(), &metrics[..6]),
        Check::compare("dense_softmax: per-sample loss".into(), &gpu_losses, &losses[..used], 1e-5, 1e-4),
        Check::compare("dense_softmax: predicted class".into(), &gpu_predicted, &cpu_predicted, 0.0, 0.0),
        Check::compare("dense_softmax: dkernel (with L1)".into(), &grads[..kernel.len()], &dkernel, 1e-5, 1e-4),
        Check::compare("dense_softmax: dbias".into(), &grads[kernel.len()..], &dbias, 1e-5, 1e-4),
        Check::compare(
            "dense_softmax: dx".into(),
            &read(ctx, &dx_b, used * features)?,
            &dx[..used * features],
            1e-6,
            1e-4,
        ),
        Check::compare("dense_softmax: L1 penalty".into(), &read(ctx, &penalties_b, 4)?[2..3], &[penalty], 1e-6, 1e-5),
    ])
}

/// Three Adam steps over 1,000 parameters.
pub fn adam(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(14);
    let count = 1000;
    let config = AdamConfig::default();
    let shape = config.shape(count);
    let mut params = random(&mut rng, count, 1.0);
    let (mut m, mut v) = (vec![0.0; count], vec![0.0; count]);
    let (params_b, m_b, v_b) = (upload(ctx, &params)?, upload(ctx, &m)?, upload(ctx, &v)?);
    let kernel = Adam::new(&ctx.device)?;
    for t in 1..=3u64 {
        let grads = random(&mut rng, count, 0.1);
        adam::update(&mut params, &mut m, &mut v, &grads, config.alpha(t), &shape);
        let step = step(ctx, StepParams { adam_alpha: config.alpha(t), ..Default::default() });
        let grads_b = upload(ctx, &grads)?;
        let bound = kernel.bind(
            &ctx.device,
            &shape,
            &AdamBuffers { step: &step, params: &params_b, grads: &grads_b, m: &m_b, v: &v_b },
        );
        run(ctx, |pass| bound.record(pass));
    }
    Ok(vec![
        Check::compare("adam, 3 steps: params".into(), &read(ctx, &params_b, count)?, &params, 1e-7, 1e-6),
        Check::compare("adam, 3 steps: m".into(), &read(ctx, &m_b, count)?, &m, 1e-9, 1e-6),
        Check::compare("adam, 3 steps: v".into(), &read(ctx, &v_b, count)?, &v, 1e-12, 1e-5),
    ])
}

/// Batch assembly through the order, across two image bindings.
pub fn gather(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(15);
    let (rows, sample_len) = (9, 12);
    let images: Vec<u8> = (0..rows * sample_len).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..rows as u8).map(|r| r % 10).collect();
    let order: Vec<u32> = vec![8, 2, 5, 0, 7, 1, 3, 6, 4];
    let (batch, used, start) = (4, 3, 5);
    let mut data = GpuDataset::upload(&ctx.device, "selftest", &images, &labels, sample_len)?;
    // Force the two-binding path: rows 0..4 in one buffer, 4.. in another.
    data.split_row = 4;
    data.images_low = ctx.upload("low", &images[..4 * sample_len], wgpu::BufferUsages::empty())?;
    data.images_high = ctx.upload("high", &images[4 * sample_len..], wgpu::BufferUsages::empty())?;

    let mut x = vec![0.0; batch * sample_len];
    let mut batch_labels = vec![0u32; batch];
    gather::gather(&mut x, &mut batch_labels, &images, &labels, &order[start..start + used], sample_len);

    let step = step(ctx, StepParams { batch_size: used as u32, batch_start: start as u32, ..Default::default() });
    let order_b = ctx.upload("order", bytemuck::cast_slice(&order), wgpu::BufferUsages::empty())?;
    let (x_b, labels_b) = (sentinel(ctx, x.len())?, sentinel(ctx, batch)?);
    let buffers = GatherBuffers { step: &step, data: &data, order: &order_b, x: &x_b, batch_labels: &labels_b };
    let bound = Gather::new(&ctx.device)?.bind(&ctx.device, batch, &buffers);
    run(ctx, |pass| bound.record(pass));
    let gpu_labels: Vec<f32> =
        bytemuck::cast_slice::<u8, u32>(&ctx.read_buffer(&labels_b)?)[..used].iter().map(|&l| l as f32).collect();
    let cpu_labels: Vec<f32> = batch_labels[..used].iter().map(|&l| l as f32).collect();
    Ok(vec![
        Check::compare(
            "gather: images scaled to [0, 1]".into(),
            &read(ctx, &x_b, used * sample_len)?,
            &x[..used * sample_len],
            0.0,
            1e-6,
        ),
        Check::compare("gather: labels".into(), &gpu_labels, &cpu_labels, 0.0, 0.0),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_written_elements_and_errors_beyond_tolerance_are_mismatches() {
        let check = Check::compare("t".into(), &[1.0, f32::NAN, 1.5, 2.0], &[1.0, 0.0, 1.0, 2.00001], 1e-3, 0.0);
        assert_eq!(check.mismatches, 2, "{check}");
        assert!(check.max_error.is_nan());
        assert!(!check.passed() && check.to_string().contains("[1] got NaN"));
        assert!(Check::compare("t".into(), &[1.0], &[1.0005], 1e-3, 0.0).passed());
        assert!(!Check::untouched("t".into(), &[f32::NAN, 0.0]).passed());
        assert!(Check::untouched("t".into(), &[f32::NAN]).passed());
    }
}
