//! Every GPU kernel against its CPU reference on small random tensors, on whatever adapter the
//! caller gives: the engine of `wgpu-cnn selftest` (drivers differ, and a user should be able to
//! check theirs in seconds) and of the GPU-vs-CPU tests. Each layer kind brings its own checks
//! ([`crate::layers::Kind::checks`], most through [`hidden_layer`]); [`run_all`] runs them all.
//!
//! Each check pre-fills its outputs with NaN, so an element the kernel forgot to write counts as
//! a mismatch, and uses partial batches (the grid is sized for more samples than the step holds:
//! samples past the batch must stay untouched).

use crate::error::Result;
use crate::filter::{cpu as filter_cpu, Conv3x3, Kernel3x3, Plane};
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{begin_pass, Kernels};
use crate::layers::{
    Backward, Ctx, Epilogue, GpuGrads, GpuLayer, HiddenLayer, Init, LayerAt, Mask, Pass, Reference, RunSettings,
    StepParams, Tuning, REGISTRY,
};
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

    pub fn compare(name: String, got: &[f32], expected: &[f32], atol: f32, rtol: f32) -> Check {
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
    pub fn untouched(name: String, values: &[f32]) -> Check {
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

/// The variable that lets a machine without any adapter run the CPU tests alone (`1`).
pub const SKIP_GPU_TESTS: &str = "WGPU_CNN_SKIP_GPU_TESTS";

/// The GPU context a test binary's GPU tests share, on the adapter `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME` pick; `None` when the user opted out with `WGPU_CNN_SKIP_GPU_TESTS=1`.
/// Test support: without an adapter (and without the opt-out) it panics, saying how to get one,
/// so that a missing driver fails the tests instead of skipping them. (Native targets: a browser's
/// GPU handles cannot be shared between threads.)
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn test_context() -> Option<&'static GpuContext> {
    static CONTEXT: std::sync::OnceLock<Option<GpuContext>> = std::sync::OnceLock::new();
    CONTEXT
        .get_or_init(|| {
            if std::env::var(SKIP_GPU_TESTS).is_ok_and(|v| v == "1") {
                eprintln!("{SKIP_GPU_TESTS}=1: skipping GPU tests");
                return None;
            }
            let options = crate::gpu::GpuOptions::from_env().expect("WGPU_BACKEND names a backend");
            match GpuContext::new(&options) {
                Ok(ctx) => {
                    eprintln!("GPU tests run on {}", ctx.describe());
                    Some(ctx)
                }
                Err(e) => panic!(
                    "GPU tests need an adapter and none was found: {e}\n\
                     Install one (Linux: `apt-get install mesa-vulkan-drivers libvulkan1`), \
                     or set {SKIP_GPU_TESTS}=1 to skip the GPU tests explicitly."
                ),
            }
        })
        .as_ref()
}

/// Every check, on `ctx`'s adapter: Part I (buffers and textures), every layer kind of the
/// registry, Adam, the gather, the classifier's input.
pub fn run_all(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut checks = conv3x3(ctx)?;
    checks.extend(conv3x3_texture(ctx)?);
    for kind in REGISTRY {
        checks.extend((kind.checks)(ctx)?);
    }
    checks.extend(crate::partial_sums::checks(ctx)?);
    checks.extend(crate::bench::probe_checks(ctx)?);
    checks.extend(crate::adam::checks(ctx)?);
    checks.extend(crate::gather::checks(ctx)?);
    checks.extend(crate::classify::checks(ctx)?);
    Ok(checks)
}

/// Uniform values in ±`scale`.
pub fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32 * scale).collect()
}

/// A storage buffer holding `data`.
pub fn upload(ctx: &GpuContext, data: &[f32]) -> Result<wgpu::Buffer> {
    ctx.upload("selftest", bytemuck::cast_slice(data), wgpu::BufferUsages::empty())
}

/// A buffer of NaNs: "not written" differs from "wrote 0".
pub fn sentinel(ctx: &GpuContext, len: usize) -> Result<wgpu::Buffer> {
    upload(ctx, &vec![f32::NAN; len])
}

/// The first `len` floats of `buffer`.
pub fn read(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    Ok(bytemuck::cast_slice(&ctx.read_buffer(buffer)?)[..len].to_vec())
}

/// Records `record` into one compute pass and submits it.
pub fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    record(&mut begin_pass(&mut encoder, "selftest"));
    ctx.queue.submit([encoder.finish()]);
}

/// Tolerances `(atol, rtol)` of a hidden layer's outputs: `|gpu − cpu| ≤ atol + rtol·|cpu|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub y: (f32, f32),
    pub dx: (f32, f32),
    pub grads: (f32, f32),
}

impl Tolerance {
    /// Bit for bit.
    pub const EXACT: Tolerance = Tolerance { y: (0.0, 0.0), dx: (0.0, 0.0), grads: (0.0, 0.0) };
}

/// A hidden layer to check on the GPU against its reference.
pub struct HiddenCheck<'a> {
    /// "conv2d tiled [8, 8, 5]→6 stride 2, batch 3/4, ..." (each check's name adds ": y", ...).
    pub name: String,
    pub layer: &'a dyn HiddenLayer,
    pub at: &'a LayerAt,
    /// The batch the kernels are bound for, and the samples the step uses (a partial batch when
    /// fewer: samples past it must stay untouched).
    pub batch: usize,
    pub used: usize,
    /// A first layer computes no dx.
    pub first: bool,
    pub tuning: Tuning,
    pub naive: bool,
    pub run: RunSettings,
    /// Seeds the random x, parameters and dy.
    pub seed: u64,
    /// An x of `batch` samples instead of a random one (to set up ties, ...).
    pub x: Option<Vec<f32>>,
    pub tolerance: Tolerance,
}

/// `c.layer`'s forward pass and, from the GPU's own forward output, its backward pass in training
/// step 9, on the GPU through [`HiddenLayer::bind_gpu`] against [`Reference`]: y (and y past the
/// batch untouched), dx (or none for a first layer), every tensor's gradient, and the gradients
/// outside the layer's tensors untouched. Every output starts as NaN. A layer that fuses with its
/// neighbours ([`HiddenLayer::gpu_fusion`]) is checked again as the engine binds it beside them:
/// dy given masked by the ReLU, dx written masked by x > 0.
pub fn hidden_layer(ctx: &GpuContext, c: &HiddenCheck<'_>) -> Result<Vec<Check>> {
    let at = c.at;
    let mut rng = Rng::new(c.seed);
    let (x_len, y_len) = (c.batch * at.input_len(), c.batch * at.output_len());
    let x = c.x.clone().unwrap_or_else(|| random(&mut rng, x_len, 1.0));
    // Parameters before the layer's own are random too; their gradients must stay unwritten.
    let params_end = at.tensors.iter().filter(|t| t.spec.trainable).map(|t| t.range().end).max().unwrap_or(0);
    let mut params = random(&mut rng, params_end, 0.3);
    for tensor in at.tensors.iter().filter(|t| t.spec.trainable) {
        let scale = if matches!(tensor.spec.init, Init::GlorotUniform { .. }) { 0.3 } else { 0.1 };
        params[tensor.range()].copy_from_slice(&random(&mut rng, tensor.len(), scale));
    }
    let state_len = at.tensors.iter().filter(|t| !t.spec.trainable).map(|t| t.range().end).max().unwrap_or(0);
    let mut state = vec![0.0f32; state_len];
    for tensor in at.tensors.iter().filter(|t| !t.spec.trainable) {
        let value = if tensor.spec.init == Init::Ones { 1.0 } else { 0.0 };
        state[tensor.range()].fill(value);
    }
    let dy = random(&mut rng, y_len, 1.0);
    let pass = Pass::Training { step: 9, first: 0 };

    let ctx_used = Ctx { at, batch: c.used, run: c.run };
    let compute = |x: &[f32]| {
        let mut y = vec![f32::NAN; y_len];
        let mut reference_state = state.clone();
        Reference::<f32>::forward(c.layer, &ctx_used, pass, x, &mut y, &params, &mut reference_state);
        let (mut dx, mut grads) = (vec![f32::NAN; x_len], vec![0.0; params_end]);
        let backward = Backward { x, y: &y, dy: &dy, dx: Some(&mut dx), params: &params, grads: &mut grads };
        Reference::<f32>::backward(c.layer, &ctx_used, pass, backward);
        Outputs { y, dx, grads, state: reference_state }
    };
    let reference = compute(&x);
    let inputs = Inputs { x: &x, params: &params, state: &state, dy: &dy };
    let mut checks = hidden_layer_bound(ctx, c, &inputs, &reference, &Variant::default())?;
    let fusion = c.layer.gpu_fusion(&Ctx { at, batch: c.batch, run: c.run });
    let masks = fusion.masks_dx && !c.first;
    // As the engine binds it between two ReLU layers: dy arrives masked by its own ReLU (the
    // reference's outputs are the same from either dy), dx leaves masked for the one before.
    let dy_masked_values: Vec<f32> = if fusion.relu_output {
        dy.iter().zip(&reference.y).map(|(&d, &y)| if y > 0.0 { d } else { 0.0 }).collect()
    } else {
        dy.clone()
    };
    if fusion.relu_output || masks {
        let mask = if masks { Mask::RELU } else { Mask::NONE };
        let expected = Outputs { dx: masked(&reference.dx, &x, mask), ..reference.clone() };
        let variant = Variant { label: "beside ReLUs", dy_masked: fusion.relu_output, mask, ..Default::default() };
        checks.extend(hidden_layer_bound(ctx, c, &Inputs { dy: &dy_masked_values, ..inputs }, &expected, &variant)?);
    }
    // As the engine binds it when it absorbs the layer after (dropout, LeakyReLU) or writes dx
    // through a layer absorbed before (a mask with both a scale and a slope). With an epilogue,
    // y holds the absorbed layer's output, so a ReLU layer takes its dy masked (as the engine
    // gives it: the layer after writes it through the dropout's mask and the ReLU).
    if fusion.takes_epilogue || masks {
        let dropout = crate::layers::dropout::Dropout { rate: 0.5 };
        let leaky = crate::layers::activation::Activation::LeakyRelu { slope: 0.3 };
        let after: [(&[&dyn HiddenLayer], &str); 3] = [
            (&[&dropout], "+ dropout 0.5"),
            (&[&leaky], "+ leaky relu 0.3"),
            (&[&leaky, &dropout], "+ leaky relu 0.3 + dropout 0.5"),
        ];
        // Two in one epilogue only after a layer without a ReLU of its own, as the plan has it.
        let absorbed = match (fusion.takes_epilogue, fusion.relu_output) {
            (false, _) => &after[..1],
            (true, true) => &after[..2],
            (true, false) => &after[..],
        };
        for (k, (next, label)) in absorbed.iter().enumerate() {
            let (epilogue, y) = if fusion.takes_epilogue {
                let mut epilogue = Epilogue::default();
                let mut z = reference.y.clone();
                let used = c.used * at.output_len();
                for layer in next.iter() {
                    // The layer after, at index 7 of its model, on this one's output.
                    let next_at =
                        LayerAt::place(*layer, 7, "absorbed".into(), at.output, 0, 0).map_err(crate::Error::invalid)?;
                    let next_ctx = Ctx { at: &next_at, batch: c.used, run: c.run };
                    let elementwise = layer
                        .gpu_fusion(&next_ctx)
                        .elementwise
                        .ok_or_else(|| crate::Error::invalid("an elementwise layer"))?;
                    epilogue = epilogue
                        .then(elementwise)
                        .ok_or_else(|| crate::Error::invalid("an activation, then a dropout"))?;
                    let mut out = vec![f32::NAN; z.len()];
                    Reference::<f32>::forward(*layer, &next_ctx, pass, &z[..used], &mut out[..used], &[], &mut []);
                    z = out;
                }
                (epilogue, z)
            } else {
                (Epilogue::default(), reference.y.clone())
            };
            let masks_for = [Mask { pos: 2.0, neg: 0.3, dropout: None }, Mask { pos: 1.0, neg: 0.0, dropout: None }];
            let mask = if masks { masks_for[k % 2] } else { Mask::NONE };
            let expected = Outputs { y, dx: masked(&reference.dx, &x, mask), ..reference.clone() };
            let label = if fusion.takes_epilogue { label } else { "dx through a scale and a slope" };
            // As the plan gives it: the layer after a dropout writes this one's dy through the
            // ReLU as well; after an activation, this layer applies its own ReLU.
            let dy_masked = fusion.relu_output && epilogue.is_dropout();
            let dy = if dy_masked { &dy_masked_values } else { &dy };
            let variant = Variant { label, mask, epilogue, dy_masked, ..Default::default() };
            checks.extend(hidden_layer_bound(ctx, c, &Inputs { dy, ..inputs }, &expected, &variant)?);
        }
    }
    // As the engine binds it before a max-pool, whose forward pass it takes: the pool's output
    // beside y, alone and with a dropout after the pool as its epilogue (y then stays as it is).
    if fusion.pools_output && !c.naive {
        let pool = crate::layers::maxpool2d::MaxPool2d;
        let dropout = crate::layers::dropout::Dropout { rate: 0.5 };
        let pool_at = LayerAt::place(&pool, 7, "pooled".into(), at.output, 0, 0).map_err(crate::Error::invalid)?;
        let dropout_at =
            LayerAt::place(&dropout, 8, "dropout".into(), pool_at.output, 0, 0).map_err(crate::Error::invalid)?;
        let (used_y, used_pooled) = (c.used * at.output_len(), c.used * pool_at.output_len());
        let mut pooled = vec![f32::NAN; c.batch * pool_at.output_len()];
        let pool_ctx = Ctx { at: &pool_at, batch: c.used, run: c.run };
        Reference::<f32>::forward(
            &pool,
            &pool_ctx,
            pass,
            &reference.y[..used_y],
            &mut pooled[..used_pooled],
            &[],
            &mut [],
        );
        let mut dropped = pooled.clone();
        let dropout_ctx = Ctx { at: &dropout_at, batch: c.used, run: c.run };
        Reference::<f32>::forward(
            &dropout,
            &dropout_ctx,
            pass,
            &pooled[..used_pooled],
            &mut dropped[..used_pooled],
            &[],
            &mut [],
        );
        let keep = dropout
            .gpu_fusion(&dropout_ctx)
            .elementwise
            .ok_or_else(|| crate::Error::invalid("dropout is elementwise"))?;
        for (epilogue, expected, label) in
            [(Epilogue::default(), pooled, "+ max-pool"), (keep.epilogue(), dropped, "+ max-pool + dropout 0.5")]
        {
            let variant = Variant { label, epilogue, pooled: Some(expected), ..Default::default() };
            checks.extend(hidden_layer_bound(ctx, c, &inputs, &reference, &variant)?);
        }
    }
    // As the engine binds a first layer that reads the dataset itself (its rows are whole u32
    // words): the values the gather would have written, bytes / 255.
    if c.first && fusion.reads_dataset && !c.naive && at.input_len().is_multiple_of(4) {
        let x: Vec<f32> = (0..x_len).map(|_| f32::from(rng.below(256) as u8) / 255.0).collect();
        let variant = Variant { label: "reading the dataset", dataset: true, ..Default::default() };
        checks.extend(hidden_layer_bound(ctx, c, &Inputs { x: &x, ..inputs }, &compute(&x), &variant)?);
    }
    Ok(checks)
}

/// `dx` through `mask` at the inputs `x` (as `mask_gradient` in `shaders/common.wgsl`); a
/// mask with a dropout's keep mask needs the step's hash, which its check applies itself.
pub(crate) fn masked(dx: &[f32], x: &[f32], mask: Mask) -> Vec<f32> {
    assert!(mask.dropout.is_none(), "masked() applies a scale and a slope, not a keep mask");
    let through = |(&d, &x): (&f32, &f32)| match (x > 0.0, mask.neg == 0.0) {
        (true, _) => d * mask.pos,
        (false, true) => 0.0,
        (false, false) => d * mask.neg,
    };
    dx.iter().zip(x).map(through).collect()
}

/// How a check binds the layer: plain (the default), or as the engine binds it beside layers
/// it fuses with.
#[derive(Default)]
struct Variant {
    /// Added to the check's name.
    label: &'static str,
    dy_masked: bool,
    mask: Mask,
    epilogue: Epilogue,
    /// Reading x from a dataset through a shuffled order (a first layer whose
    /// [`crate::layers::GpuFusion::reads_dataset`] is set); x is then bytes / 255.
    dataset: bool,
    /// Storing the 2×2 max-pool of y as well (a layer whose
    /// [`crate::layers::GpuFusion::pools_output`] is set), with the epilogue applied to it: what
    /// the reference max-pool (and the epilogue's layers) gives, for `batch` samples.
    pooled: Option<Vec<f32>>,
}

/// A hidden layer's inputs in a check.
struct Inputs<'a> {
    x: &'a [f32],
    params: &'a [f32],
    state: &'a [f32],
    dy: &'a [f32],
}

/// What the reference computed from [`Inputs`].
#[derive(Clone)]
struct Outputs {
    y: Vec<f32>,
    dx: Vec<f32>,
    grads: Vec<f32>,
    state: Vec<f32>,
}

/// One binding of `c.layer`, as `variant` says, against `reference`.
fn hidden_layer_bound(
    ctx: &GpuContext,
    c: &HiddenCheck<'_>,
    inputs: &Inputs<'_>,
    reference: &Outputs,
    variant: &Variant,
) -> Result<Vec<Check>> {
    let at = c.at;
    let (x_len, y_len, params_end, state_len) =
        (inputs.x.len(), reference.y.len(), inputs.params.len(), inputs.state.len());
    let (y, dx, grads, reference_state) = (&reference.y, &reference.dx, &reference.grads, &reference.state);
    let shuffled = if variant.dataset { Some(crate::gather::shuffled(ctx, inputs.x, c.batch)?) } else { None };
    let batch_start = shuffled.as_ref().map_or(0, |d| d.start);
    let step = uniform_buffer(
        &ctx.device,
        "selftest step",
        &StepParams { batch_size: c.used as u32, batch_start, step: 9, training: 1, ..Default::default() },
    );
    let labels_b = sentinel(ctx, c.batch)?;
    let (params_b, dy_b) = (upload(ctx, inputs.params)?, upload(ctx, inputs.dy)?);
    // Reading the dataset, the layer must not read x: NaN there would show in y.
    let x_b = if variant.dataset { sentinel(ctx, x_len)? } else { upload(ctx, inputs.x)? };
    let state_b = upload(ctx, inputs.state)?;
    let (y_b, dx_b, grads_b) = (sentinel(ctx, y_len)?, sentinel(ctx, x_len)?, sentinel(ctx, params_end)?);
    let pooled_b = variant.pooled.as_ref().map(|p| sentinel(ctx, p.len())).transpose()?;
    let kernels = Kernels::new(&ctx.device);
    // The layer's scratch region at an offset, as the engine places layers after others.
    let layer_ctx = Ctx { at, batch: c.batch, run: c.run };
    let scratch_offset = 8;
    let scratch = sentinel(ctx, scratch_offset as usize + c.layer.gpu_scratch_len(&layer_ctx, c.tuning, c.naive))?;
    let gpu = GpuLayer {
        kernels: &kernels,
        tuning: c.tuning,
        naive: c.naive,
        step: &step,
        params: &params_b,
        state: &state_b,
        x: &x_b,
        y: &y_b,
        source: shuffled.as_ref().map(|d| crate::gather::BatchSource {
            data: &d.data,
            order: &d.order,
            batch_labels: &labels_b,
        }),
        backward: Some(GpuGrads {
            dy: &dy_b,
            dx: (!c.first).then_some(&dx_b),
            grads: &grads_b,
            scratch: &scratch,
            scratch_offset,
            dy_masked: variant.dy_masked,
            mask_dx: variant.mask,
        }),
        epilogue: variant.epilogue,
        pooled: pooled_b.as_ref(),
        forward_by_before: false,
    };
    let bound = c.layer.bind_gpu(&layer_ctx, &gpu)?;
    let sums = crate::partial_sums::bind(&kernels, &bound.sums, &scratch, &grads_b, params_end)?;
    run(ctx, |pass| bound.record_forward(pass));
    run(ctx, |pass| {
        bound.record_backward(pass);
        if let Some((sums, _table)) = &sums {
            sums.record(pass);
        }
    });

    let what = if variant.label.is_empty() { c.name.clone() } else { format!("{}, {}", c.name, variant.label) };
    let what = &what;
    let (used_y, used_x) = (c.used * at.output_len(), c.used * at.input_len());
    let gpu_y = read(ctx, &y_b, y_len)?;
    let gpu_grads = read(ctx, &grads_b, params_end)?;
    let gpu_dx = read(ctx, &dx_b, x_len)?;
    let (ya, yr) = c.tolerance.y;
    let mut checks = vec![
        Check::compare(format!("{what}: y"), &gpu_y[..used_y], &y[..used_y], ya, yr),
        Check::untouched(format!("{what}: y past the batch"), &gpu_y[used_y..]),
    ];
    if let (Some(expected), Some(buffer)) = (&variant.pooled, &pooled_b) {
        let gpu_pooled = read(ctx, buffer, expected.len())?;
        let used = c.used * expected.len() / c.batch;
        checks.push(Check::compare(format!("{what}: pooled"), &gpu_pooled[..used], &expected[..used], ya, yr));
        checks.push(Check::untouched(format!("{what}: pooled past the batch"), &gpu_pooled[used..]));
    }
    let (ga, gr) = c.tolerance.grads;
    let mut first_tensor = params_end;
    for tensor in at.tensors.iter().filter(|t| t.spec.trainable) {
        first_tensor = first_tensor.min(tensor.offset);
        let name = format!("{what}: d{}", tensor.spec.name);
        checks.push(Check::compare(name, &gpu_grads[tensor.range()], &grads[tensor.range()], ga, gr));
    }
    if first_tensor > 0 {
        checks.push(Check::untouched(format!("{what}: grads before the layer's"), &gpu_grads[..first_tensor]));
    }
    if state_len > 0 {
        // The training forward pass moved the non-trainable tensors (moving statistics).
        let gpu_state = read(ctx, &state_b, state_len)?;
        checks.push(Check::compare(
            format!("{what}: state after a training step"),
            &gpu_state,
            reference_state,
            ya,
            yr,
        ));
    }
    if let Some(d) = &shuffled {
        // u32 labels in a buffer of NaN sentinels, compared as numbers.
        let gpu_labels = read(ctx, &labels_b, c.batch)?;
        let (used, past) = gpu_labels.split_at(c.used);
        let used: Vec<f32> = used.iter().map(|v| v.to_bits() as f32).collect();
        let labels: Vec<f32> = d.labels[..c.used].iter().map(|&l| l as f32).collect();
        checks.push(Check::compare(format!("{what}: the batch's labels"), &used, &labels, 0.0, 0.0));
        checks.push(Check::untouched(format!("{what}: labels past the batch"), past));
    }
    if c.first {
        checks.push(Check::untouched(format!("{what}: no dx for a first layer"), &gpu_dx));
    } else {
        let (da, dr) = c.tolerance.dx;
        checks.push(Check::compare(format!("{what}: dx"), &gpu_dx[..used_x], &dx[..used_x], da, dr));
    }
    Ok(checks)
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

/// A `width × height` texture of `format` holding `bytes` (in its memory order), with `usage`
/// added to what the checks need (copying in and out, sampling) and the non-sRGB twin of an sRGB
/// format in its `view_formats`.
pub fn texture_with(
    ctx: &GpuContext,
    format: wgpu::TextureFormat,
    (width, height): (u32, u32),
    bytes: &[u8],
    usage: wgpu::TextureUsages,
) -> wgpu::Texture {
    let view_formats = [format.remove_srgb_suffix()];
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("selftest texture"),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: usage
            | wgpu::TextureUsages::COPY_DST
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: if format.is_srgb() { &view_formats } else { &[] },
    });
    ctx.queue.write_texture(
        texture.as_image_copy(),
        bytes,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(format.block_copy_size(None).unwrap_or(4) * width),
            rows_per_image: None,
        },
        wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
    );
    texture
}

/// RGBA bytes to and from BGRA (the same swap both ways).
pub fn swap_red_blue(bytes: &[u8]) -> Vec<u8> {
    bytes.chunks_exact(4).flat_map(|p| [p[2], p[1], p[0], p[3]]).collect()
}

/// Part I on textures against [`crate::filter::texture::reference`]: odd sizes, one channel and all, integer
/// kernels bit for bit and a fractional one within a grey level, read from Rgba8Unorm, Bgra8Unorm
/// and (through its byte view) Rgba8UnormSrgb, written to Rgba8Unorm and, where the device can
/// store to it, Bgra8Unorm.
pub fn conv3x3_texture(ctx: &GpuContext) -> Result<Vec<Check>> {
    use crate::filter::texture::{self, Conv3x3Texture, TextureChannels};
    use wgpu::TextureFormat::{Bgra8Unorm, Rgba8Unorm, Rgba8UnormSrgb};
    let conv = Conv3x3Texture::with_kernels(&ctx.kernels)?;
    // Every input format into Rgba8Unorm; Bgra8Unorm output from Rgba8Unorm.
    let mut pairs = vec![(Rgba8Unorm, Rgba8Unorm), (Bgra8Unorm, Rgba8Unorm), (Rgba8UnormSrgb, Rgba8Unorm)];
    if ctx.device.features().contains(wgpu::Features::BGRA8UNORM_STORAGE) {
        pairs.push((Rgba8Unorm, Bgra8Unorm));
    }
    let mut rng = Rng::new(2);
    let mut checks = Vec::new();
    for (width, height) in [(1, 1), (37, 23), (64, 3)] {
        let rgba: Vec<u8> = (0..4 * width * height).map(|_| rng.below(256) as u8).collect();
        let cases = [
            (Kernel3x3::K1, TextureChannels::One(2), 0.0),
            (Kernel3x3::K2, TextureChannels::All, 0.0),
            (Kernel3x3::new([[0.3, -1.7, 0.1]; 3]), TextureChannels::All, 1.0),
        ];
        for (kernel, channels, tolerance) in cases {
            let expected = texture::reference(&rgba, width, height, &kernel, channels)?;
            for &(input_format, output_format) in &pairs {
                let memory = if input_format == Bgra8Unorm { swap_red_blue(&rgba) } else { rgba.clone() };
                let input = texture_with(ctx, input_format, (width, height), &memory, wgpu::TextureUsages::empty());
                let input_view = crate::gpu::byte_view(&ctx.device, &input)?;
                let output = texture_with(
                    ctx,
                    output_format,
                    (width, height),
                    &vec![0x55; rgba.len()],
                    wgpu::TextureUsages::STORAGE_BINDING,
                );
                let view = output.create_view(&Default::default());
                let dispatch = conv.prepare(&ctx.device, &input_view, &view, &kernel, channels)?;
                let mut encoder = ctx.device.create_command_encoder(&Default::default());
                dispatch.encode(&mut encoder);
                ctx.queue.submit([encoder.finish()]);
                let mut got = crate::gpu::read_texture(&ctx.device, &ctx.queue, &output)?;
                if output_format == Bgra8Unorm {
                    got = swap_red_blue(&got);
                }
                let as_f32 = |bytes: &[u8]| bytes.iter().map(|&v| f32::from(v)).collect::<Vec<_>>();
                let arithmetic = if dispatch.is_exact() { "int" } else { "float" };
                checks.push(Check::compare(
                    format!(
                        "conv3x3 texture {arithmetic} {channels:?} {input_format:?}→{output_format:?} {width}×{height}"
                    ),
                    &as_f32(&got),
                    &as_f32(&expected),
                    tolerance,
                    0.0,
                ));
            }
        }
    }
    Ok(checks)
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
