//! Flatten + Dense + softmax + categorical cross-entropy, fused, with Keras' L1 kernel
//! regulariser: the head of every model. Keras: `Flatten()`,
//! `Dense(K, activation='softmax', kernel_regularizer=l1(λ))`, `loss='categorical_crossentropy'`
//! (which Keras computes from the logits when the softmax is the layer's own activation, as here).
//! Token: `fK` (K classes), which must end the architecture.
//!
//! # Shapes
//! x `[N, F]` (the NHWC tensor, flattened for free), kernel `[F, K]`, bias `[K]`, probs and
//! dlogits `[N, K]`. The loss of a batch is `mean_n(CE_n) + λ·Σ|kernel|`, so
//! `dlogits = (softmax − one_hot) / N` and `dkernel += λ·sign(kernel)`.
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/dense_softmax.wgsl` (shape and λ in a uniform); fast CPU
//! [`fast`].

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{
    positive, Ctx, GpuHead, HeadLayer, HeadOutputs, HeadReference, Init, Kind, LayerAt, LayerInfo,
    LayerPass, Parsed, RunSettings, SummaryRow, TensorSpec,
};
use crate::error::{Error, Result};
use crate::gpu::{self, uniform_buffer, GpuContext};
use crate::kernel::{arg, extended, floats, read, read_write, uniform, Arg, Binding, Dispatch, EntryPoint, Grid, Shader};
use crate::layers::dense::MAX_UNITS;
use crate::layers::{GpuFusion, Keep, Mask, StepParams};
use crate::rng::Rng;
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

/// `fK`: K classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseSoftmax {
    pub units: usize,
}

pub static KIND: Kind = Kind {
    syntax: ("fK", "the final flatten + dense softmax over K classes, e.g. f10"),
    parse,
    shaders: &[&SHADER],
    checks,
    examples: &[("f10", [2, 3, 7]), ("f3", [1, 1, 5])],
};

fn parse(token: &str) -> Option<std::result::Result<Parsed, String>> {
    let units = token.strip_prefix('f')?;
    Some(match positive(units) {
        Some(units) if units <= MAX_UNITS => Ok(Parsed::Head(std::sync::Arc::new(DenseSoftmax { units }))),
        // Bounded like a hidden dense layer's, so that no shape arithmetic can overflow.
        Some(_) => Err(format!("at most {MAX_UNITS} units")),
        None => Err("the unit count must be a positive whole number".into()),
    })
}

impl LayerInfo for DenseSoftmax {
    fn keras(&self) -> (&'static str, &'static str) {
        ("dense", "Dense")
    }

    fn token(&self) -> String {
        format!("f{}", self.units)
    }

    fn output(&self, _input: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok([1, 1, self.units])
    }

    /// Keras' fans: `(F, K)`.
    fn tensors(&self, input: [usize; 3], _: [usize; 3]) -> Vec<TensorSpec> {
        let (features, k) = (input.iter().product(), self.units);
        vec![
            TensorSpec::trainable("kernel", vec![features, k], Init::GlorotUniform { fan_in: features, fan_out: k }),
            TensorSpec::trainable("bias", vec![k], Init::Zeros),
        ]
    }

    fn flat_output(&self, _flat_input: bool) -> std::result::Result<bool, String> {
        Ok(true)
    }

    /// Keras shows the Flatten it stands for (when its input is an image) as a layer of its own.
    fn summary_rows(&self, at: &LayerAt) -> Vec<SummaryRow> {
        super::dense_rows(at, self.units)
    }

    fn forward_macs(&self, at: &LayerAt) -> usize {
        at.input_len() * self.units
    }
}

/// Mirror of `DenseShape` in `shaders/dense_softmax.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DenseShape {
    pub batch: u32,
    pub features: u32,
    pub classes: u32,
    pub kernel_offset: u32,
    pub bias_offset: u32,
    pub l1: f32,
    /// How dx is written for the layers before ([`crate::layers::GpuHead::mask_dx`]): through
    /// a dropout's keep mask (a rate of 0 for none), then `mask_pos` and `mask_neg`.
    pub mask_pos: f32,
    pub mask_neg: f32,
    pub mask_rate: f32,
    pub mask_scale: f32,
    pub mask_seed: u32,
    pub mask_layer: u32,
}

impl DenseShape {
    /// A standalone dense layer: kernel at offset 0, bias right after it.
    pub fn new(batch: usize, features: usize, classes: usize, l1: f32) -> Self {
        DenseShape {
            batch: batch as u32,
            features: features as u32,
            classes: classes as u32,
            kernel_offset: 0,
            bias_offset: (features * classes) as u32,
            l1,
            mask_pos: 1.0,
            mask_neg: 1.0,
            mask_rate: 0.0,
            mask_scale: 1.0,
            mask_seed: 0,
            mask_layer: 0,
        }
    }

    /// Writing dx through `mask`.
    pub fn with_mask(&self, mask: Mask) -> Self {
        let keep = mask.dropout.unwrap_or(Keep { rate: 0.0, scale: 1.0, seed: 0, layer: 0 });
        DenseShape {
            mask_pos: mask.pos,
            mask_neg: mask.neg,
            mask_rate: keep.rate,
            mask_scale: keep.scale,
            mask_seed: keep.seed,
            mask_layer: keep.layer,
            ..*self
        }
    }

    /// The shape of the head at `c.at`, for `c.batch` samples, with the run's L1 weight.
    pub fn for_layer(c: &Ctx<'_>) -> Self {
        let (kernel, bias) = (c.at.tensor("kernel"), c.at.tensor("bias"));
        debug_assert_eq!(bias.offset, kernel.offset + kernel.len(), "the bias follows the kernel");
        DenseShape {
            kernel_offset: kernel.offset as u32,
            bias_offset: bias.offset as u32,
            ..Self::new(c.batch, c.at.input_len(), c.at.output_len(), c.run.l1)
        }
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        DenseShape { batch: batch as u32, ..*self }
    }

    pub fn kernel_len(&self) -> usize {
        (self.features * self.classes) as usize
    }

    /// The kernel's and the bias's elements in the flat parameter vector.
    pub fn kernel_range(&self) -> std::ops::Range<usize> {
        self.kernel_offset as usize..self.kernel_offset as usize + self.kernel_len()
    }

    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias_offset as usize..(self.bias_offset + self.classes) as usize
    }
}

/// Per sample: `probs = softmax(x·kernel + bias)`, `losses = −log probs[label]` (as
/// logsumexp − logit), `predicted` = the first arg-max (as `np.argmax`), and
/// `dlogits = (probs − one_hot) / N`.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Float>(
    probs: &mut [T],
    dlogits: &mut [T],
    losses: &mut [T],
    predicted: &mut [u32],
    x: &[T],
    kernel: &[T],
    bias: &[T],
    labels: &[u32],
    s: &DenseShape,
) {
    let out = HeadOutputs { probs, dlogits, losses, predicted };
    forward_of(out, x, kernel, bias, labels, s.batch as usize, s);
}

/// [`forward`] of `s.batch` samples that are part of a batch of `mean_over`:
/// `dlogits = (probs − one_hot) / mean_over`.
fn forward_of<T: Float>(
    out: HeadOutputs<'_, T>,
    x: &[T],
    kernel: &[T],
    bias: &[T],
    labels: &[u32],
    mean_over: usize,
    s: &DenseShape,
) {
    let (batch, features, classes) = (s.batch as usize, s.features as usize, s.classes as usize);
    let inverse_batch = T::one() / T::from(mean_over).expect("batch size converts to T");
    for n in 0..batch {
        let logits = &mut out.probs[n * classes..][..classes];
        for (j, logit) in logits.iter_mut().enumerate() {
            let mut sum = bias[j];
            for f in 0..features {
                sum = sum + x[n * features + f] * kernel[f * classes + j];
            }
            *logit = sum;
        }
        let dlogits = &mut out.dlogits[n * classes..][..classes];
        (out.losses[n], out.predicted[n]) = softmax_cross_entropy(logits, dlogits, labels[n] as usize, inverse_batch);
    }
}

/// One sample's softmax + cross-entropy from its `logits`, which become the probabilities in
/// place: returns (loss = logsumexp − the label's logit, first arg-max) and writes
/// `dlogits = (probs − one_hot) · inverse_batch`. Shared by the reference and the fast engine.
pub fn softmax_cross_entropy<T: Float>(
    logits: &mut [T],
    dlogits: &mut [T],
    label: usize,
    inverse_batch: T,
) -> (T, u32) {
    let mut top_class = 0;
    for j in 1..logits.len() {
        if logits[j] > logits[top_class] {
            top_class = j;
        }
    }
    let top = logits[top_class];
    let total = logits.iter().fold(T::zero(), |t, &l| t + (l - top).exp());
    let loss = total.ln() - (logits[label] - top);
    for j in 0..logits.len() {
        let p = (logits[j] - top).exp() / total;
        logits[j] = p;
        let target = if j == label { T::one() } else { T::zero() };
        dlogits[j] = (p - target) * inverse_batch;
    }
    (loss, top_class as u32)
}

/// `dkernel = xᵀ·dlogits + λ·sign(kernel)` (sign(0) = 0, as TensorFlow), `dbias = Σ_n dlogits`.
pub fn backward_weight<T: Float>(
    dkernel: &mut [T],
    dbias: &mut [T],
    dlogits: &[T],
    x: &[T],
    kernel: &[T],
    s: &DenseShape,
) {
    let (batch, features, classes) = (s.batch as usize, s.features as usize, s.classes as usize);
    let l1 = T::from(s.l1).expect("f32 converts to T");
    for f in 0..features {
        for j in 0..classes {
            let mut sum = T::zero();
            for n in 0..batch {
                sum = sum + x[n * features + f] * dlogits[n * classes + j];
            }
            dkernel[f * classes + j] = sum + l1 * sign(kernel[f * classes + j]);
        }
    }
    for j in 0..classes {
        dbias[j] = (0..batch).fold(T::zero(), |sum, n| sum + dlogits[n * classes + j]);
    }
}

/// TensorFlow's sign: 1, −1, or 0 for 0.
fn sign<T: Float>(w: T) -> T {
    if w > T::zero() {
        T::one()
    } else if w < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

/// `dx = dlogits·kernelᵀ`.
pub fn backward_input<T: Float>(dx: &mut [T], dlogits: &[T], kernel: &[T], s: &DenseShape) {
    let (batch, features, classes) = (s.batch as usize, s.features as usize, s.classes as usize);
    for n in 0..batch {
        for f in 0..features {
            let mut sum = T::zero();
            for j in 0..classes {
                sum = sum + dlogits[n * classes + j] * kernel[f * classes + j];
            }
            dx[n * features + f] = sum;
        }
    }
}

/// The regulariser's contribution to the loss, `λ·Σ|kernel|`.
pub fn l1_penalty<T: Float>(kernel: &[T], s: &DenseShape) -> T {
    let sum = kernel[..s.kernel_len()].iter().fold(T::zero(), |t, w| t + w.abs());
    T::from(s.l1).expect("f32 converts to T") * sum
}

impl<T: Float> HeadReference<T> for DenseSoftmax {
    fn forward(&self, c: &Ctx<'_>, x: &[T], params: &[T], labels: &[u32], mean_over: usize, out: HeadOutputs<'_, T>) {
        let s = DenseShape::for_layer(c);
        forward_of(out, x, &params[s.kernel_range()], &params[s.bias_range()], labels, mean_over, &s);
    }

    fn backward(&self, c: &Ctx<'_>, x: &[T], dlogits: &[T], dx: Option<&mut [T]>, params: &[T], grads: &mut [T]) {
        // λ = 0: the data term alone (`sum + 0·sign` is `sum`, so adding λ·sign after is the same
        // single rounding as backward_weight's `sum + λ·sign`).
        let s = DenseShape { l1: 0.0, ..DenseShape::for_layer(c) };
        let kernel = &params[s.kernel_range()];
        // The bias follows the kernel.
        let (dkernel, dbias) = grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
        backward_weight(dkernel, dbias, dlogits, x, kernel, &s);
        if let Some(dx) = dx {
            backward_input(dx, dlogits, kernel, &s);
        }
    }

    fn penalty(&self, c: &Ctx<'_>, params: &[T]) -> T {
        let s = DenseShape::for_layer(c);
        l1_penalty(&params[s.kernel_range()], &s)
    }

    fn penalty_backward(&self, c: &Ctx<'_>, params: &[T], grads: &mut [T]) {
        let s = DenseShape::for_layer(c);
        let l1: T = super::cast(s.l1);
        for (g, &w) in grads[s.kernel_range()].iter_mut().zip(&params[s.kernel_range()]) {
            *g = *g + l1 * sign(w);
        }
    }
}

const FORWARD: [Binding; 9] = [
    uniform(0, "step"),
    uniform(1, "shape"),
    read(2, "x"),
    read(3, "params"),
    read(4, "labels"),
    read_write(5, "probs"),
    read_write(6, "dlogits"),
    read_write(7, "metrics"),
    read_write(10, "penalties"),
];

/// `forward`'s, and the dx it writes too.
const FORWARD_BACKWARD: [Binding; 10] = extended(FORWARD, [read_write(9, "dx")]);

const BACKWARD_WEIGHT: [Binding; 6] =
    extended([uniform(0, "step"), read(3, "params"), read_write(8, "grads")], GRADIENT_BINDINGS);

/// The binding tables of `shaders/dense_softmax.wgsl`.
pub static SHADER: Shader = Shader {
    name: "dense_softmax",
    file: "dense_softmax.wgsl",
    source: shader_source!("common.wgsl", "dense_dot.wgsl", "dense_gradient.wgsl", "dense_softmax.wgsl"),
    own: shader_own!("dense_softmax.wgsl"),
    entry_points: &[
        EntryPoint { name: "forward", bindings: &FORWARD },
        EntryPoint { name: "forward_backward", bindings: &FORWARD_BACKWARD },
        EntryPoint { name: "backward_weight", bindings: &BACKWARD_WEIGHT },
    ],
};

/// The bindings `shaders/dense_gradient.wgsl` declares, for the shaders that include it.
pub const GRADIENT_BINDINGS: [Binding; 3] = [uniform(16, "dense"), read(17, "dense_x"), read(18, "dense_dlogits")];

/// Mirror of `DenseGradientShape` in `shaders/dense_gradient.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct DenseGradientShape {
    pub kernel_offset: u32,
    pub features: u32,
    /// 0 where no gradient is bound.
    pub classes: u32,
    pub l1: f32,
}

/// The head's weight gradient (`shaders/dense_gradient.wgsl`: its shape, the head's input and
/// dlogits) for a kernel that takes it: the head's `backward_weight`, or Adam's dispatch in a
/// training step ([`crate::adam::Taken`]), which had that dispatch of its own.
#[derive(Debug)]
pub struct DenseGradient {
    shape: wgpu::Buffer,
    x: wgpu::Buffer,
    x_bytes: u64,
    dlogits: wgpu::Buffer,
    dlogits_bytes: u64,
}

impl DenseGradient {
    /// The gradient of the dense layer `s` with input `x` and dlogits `dlogits`.
    pub fn new(device: &wgpu::Device, s: &DenseShape, x: &wgpu::Buffer, dlogits: &wgpu::Buffer) -> Self {
        debug_assert_eq!(s.bias_offset, s.kernel_offset + s.features * s.classes, "the bias follows the kernel");
        let shape = DenseGradientShape { kernel_offset: s.kernel_offset, features: s.features, classes: s.classes, l1: s.l1 };
        DenseGradient {
            shape: uniform_buffer(device, "dense gradient shape", &shape),
            x: x.clone(),
            x_bytes: floats((s.batch * s.features) as usize),
            dlogits: dlogits.clone(),
            dlogits_bytes: floats((s.batch * s.classes) as usize),
        }
    }

    /// A gradient that covers no parameter, for Adam to bind where the head computes its own.
    pub fn none(device: &wgpu::Device) -> Result<Self> {
        let empty = gpu::storage_buffer(device, "no dense gradient", 4)?;
        let shape = uniform_buffer(device, "no dense gradient", &DenseGradientShape::default());
        Ok(DenseGradient { shape, x: empty.clone(), x_bytes: 4, dlogits: empty, dlogits_bytes: 4 })
    }

    /// The three bindings of `shaders/dense_gradient.wgsl`.
    pub fn args(&self) -> [Arg<'_>; 3] {
        let [shape, x, dlogits] = GRADIENT_BINDINGS.map(|b| b.name);
        [arg(shape, &self.shape, 16), arg(x, &self.x, self.x_bytes), arg(dlogits, &self.dlogits, self.dlogits_bytes)]
    }
}

impl HeadLayer for DenseSoftmax {
    fn classes(&self) -> usize {
        self.units
    }

    fn gpu_fusion(&self) -> GpuFusion {
        GpuFusion { masks_dx: true, masks_dropout: true, ..Default::default() }
    }

    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuHead<'_>) -> Result<LayerPass> {
        let s = DenseShape::for_layer(c).with_mask(gpu.mask_dx);
        let device = gpu.kernels.device();
        let kernel = |entry: &str| gpu.kernels.get(&SHADER, entry, &[]);
        let shape = uniform_buffer(device, "dense shape", &s);
        // dlogits is written by the forward pass even at inference: the head's own scratch.
        let logit_bytes = floats((s.batch * s.classes) as usize);
        let dlogits_buffer = gpu::storage_buffer(device, "dense dlogits", logit_bytes)?;
        let (step, shape_arg) = (arg("step", gpu.step, 32), arg("shape", &shape, 32));
        let x = arg("x", gpu.x, floats((s.batch * s.features) as usize));
        let params = arg("params", gpu.params, floats((s.bias_offset + s.classes) as usize));
        let dlogits = arg("dlogits", &dlogits_buffer, logit_bytes);
        let probs = arg("probs", gpu.probs, logit_bytes);
        let metrics = arg("metrics", gpu.metrics, floats(2 * s.batch as usize));
        let forward = [
            step,
            shape_arg,
            x,
            params,
            arg("labels", gpu.labels, floats(s.batch as usize)),
            probs,
            dlogits,
            metrics,
            arg("penalties", gpu.penalties, 4),
        ];
        // A workgroup per sample, and one for the penalty.
        let grid = Grid::Workgroups(u64::from(s.batch) + 1);
        let mut pass = LayerPass::default();
        let dx = gpu.backward.and_then(|(dx, _)| dx);
        match dx {
            Some(dx) => {
                let mut args = forward.to_vec();
                args.push(arg("dx", dx, floats((s.batch * s.features) as usize)));
                pass.forward.push(Dispatch::new(device, &kernel("forward_backward")?, &args, grid)?);
            }
            None => pass.forward.push(Dispatch::new(device, &kernel("forward")?, &forward, grid)?),
        }
        let mut kept = None;
        if let Some((_, grads)) = gpu.backward {
            let gradient = DenseGradient::new(device, &s, gpu.x, &dlogits_buffer);
            if gpu.gradient_to_adam {
                pass.dense_gradient = Some(gradient);
            } else {
                let mut args = vec![step, params, arg("grads", grads, floats((s.bias_offset + s.classes) as usize))];
                args.extend(gradient.args());
                let grid = Grid::Invocations(s.kernel_len() as u64 + u64::from(s.classes));
                pass.backward.push(Dispatch::new(device, &kernel("backward_weight")?, &args, grid)?);
                // After the shape and dlogits (the selftest reads dlogits as buffers[1]).
                kept = Some(gradient.shape);
            }
        }
        pass.buffers.extend([shape, dlogits_buffer].into_iter().chain(kept));
        Ok(pass)
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(&self, c: &Ctx<'_>, isa: crate::fast::Isa) -> Option<Box<dyn crate::fast::FastHead>> {
        Some(Box::new(fast::DensePlan::new(&DenseShape::for_layer(c), isa)))
    }
}

/// The mask of the base net's head: through a dropout of rate 0.5 after a ReLU.
const HEAD_MASK: Mask = Mask { pos: 2.0, neg: 0.0, dropout: None };

/// The head's dx as it is bound with input `x` and dx through `mask`, on `gpu`'s other buffers
/// but a dx of its own.
fn masked_head_dx(
    ctx: &GpuContext,
    layer: &DenseSoftmax,
    c: &Ctx<'_>,
    gpu: &GpuHead<'_>,
    x: &wgpu::Buffer,
    mask: Mask,
) -> Result<Vec<f32>> {
    let len = c.batch * c.at.input_len();
    let dx = selftest::sentinel(ctx, len)?;
    let grads = gpu.backward.map(|(_, grads)| grads).ok_or_else(|| Error::invalid("a training binding"))?;
    let bound = layer.bind_gpu(c, &GpuHead { x, backward: Some((Some(&dx), grads)), mask_dx: mask, ..*gpu })?;
    selftest::run(ctx, |pass| bound.record_forward(pass));
    selftest::read(ctx, &dx, len)
}

/// The head after a LeakyReLU (slope 0.3) and a dropout (rate 0.5, step 0) both absorbed into
/// the layer before (cifar_bn's end): its input is `dropout(z)`, and dx, written through the
/// recomputed keep mask and the slope, must be what the two layers' own backward passes make of
/// the head's dx. Returns (GPU, reference) for the `used` samples of the step.
fn head_dx_through_leaky_relu_and_dropout(
    ctx: &GpuContext,
    layer: &DenseSoftmax,
    (c, used): (&Ctx<'_>, usize),
    gpu: &GpuHead<'_>,
    params: &[f32],
    labels: &[u32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (features, classes) = (c.at.input_len(), layer.units);
    let used_c = Ctx { batch: used, ..*c };
    let dropout = crate::layers::dropout::DropoutShape::new(c.batch, features, 3, 0.5, 5);
    let z = selftest::random(&mut Rng::new(29), c.batch * features, 1.0);
    let x: Vec<f32> = z.iter().enumerate().map(|(i, &z)| z * dropout.factor(0, i)).collect();
    let (mut probs, mut dlogits) = (vec![0.0; used * classes], vec![0.0; used * classes]);
    let (mut losses, mut predicted) = (vec![0.0; used], vec![0u32; used]);
    let out = HeadOutputs { probs: &mut probs, dlogits: &mut dlogits, losses: &mut losses, predicted: &mut predicted };
    HeadReference::<f32>::forward(layer, &used_c, &x, params, labels, used, out);
    let (mut grads, mut dx) = (vec![0.0; params.len()], vec![0.0; x.len()]);
    HeadReference::<f32>::backward(layer, &used_c, &x, &dlogits, Some(&mut dx), params, &mut grads);
    // The dropout's backward, then the LeakyReLU's (on its own output z: the same sign as its input).
    let reference: Vec<f32> = (0..x.len())
        .map(|i| {
            let g = dx[i] * dropout.factor(0, i);
            if z[i] > 0.0 {
                g
            } else {
                g * 0.3
            }
        })
        .collect();
    let mask = Mask { pos: 1.0, neg: 0.3, dropout: Some(dropout.keep()) };
    let gpu_dx = masked_head_dx(ctx, layer, c, gpu, &selftest::upload(ctx, &x)?, mask)?;
    Ok((gpu_dx[..used * features].to_vec(), reference[..used * features].to_vec()))
}

/// The fused head on the GPU against the reference: probabilities, dlogits, per-sample metrics
/// at their epoch positions, gradients, the L1 penalty in its slot.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    // CIFAR-10's classes, and more than one block of the kernel's classes (CLASS_BLOCK, 16).
    let mut all = checks_for(ctx, 10)?;
    all.extend(checks_for(ctx, 21)?);
    Ok(all)
}

/// The checks of a head of `classes` classes.
fn checks_for(ctx: &GpuContext, classes: usize) -> Result<Vec<Check>> {
    let mut rng = Rng::new(13);
    let (batch, used, features) = (6, 5, 70);
    let layer = DenseSoftmax { units: classes };
    let at = LayerAt::place(&layer, 0, "dense".into(), [1, 1, features], 0, 0).map_err(Error::invalid)?;
    let run = RunSettings { l1: 1e-2, ..Default::default() };
    let c = Ctx { at: &at, batch, run };
    let used_c = Ctx { batch: used, ..c };
    let x = selftest::random(&mut rng, batch * features, 1.0);
    let mut params = selftest::random(&mut rng, features * classes, 0.3);
    params[3] = 0.0; // sign(0) = 0
    params.extend(selftest::random(&mut rng, classes, 0.1));
    let labels: Vec<u32> = (0..batch as u32).map(|n| (n * 7) % classes as u32).collect();

    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0; batch * classes], vec![0.0; batch * classes], vec![0.0; batch], vec![0u32; batch]);
    let out = HeadOutputs { probs: &mut probs, dlogits: &mut dlogits, losses: &mut losses, predicted: &mut predicted };
    HeadReference::<f32>::forward(&layer, &used_c, &x, &params, &labels, used, out);
    let (mut grads, mut dx) = (vec![0.0; params.len()], vec![0.0; x.len()]);
    HeadReference::<f32>::backward(&layer, &used_c, &x, &dlogits, Some(&mut dx), &params, &mut grads);
    HeadReference::<f32>::penalty_backward(&layer, &used_c, &params, &mut grads);
    let penalty = HeadReference::<f32>::penalty(&layer, &c, &params);

    // This batch's metrics go to positions 3.. of the epoch and its penalty to slot 2.
    let step = uniform_buffer(
        &ctx.device,
        "selftest step",
        &StepParams { batch_size: used as u32, batch_start: 3, penalty_slot: 2, training: 1, ..Default::default() },
    );
    let labels_b = ctx.upload("labels", bytemuck::cast_slice(&labels), wgpu::BufferUsages::empty())?;
    let (x_b, params_b) = (selftest::upload(ctx, &x)?, selftest::upload(ctx, &params)?);
    let (probs_b, metrics_b) = (selftest::sentinel(ctx, probs.len())?, selftest::sentinel(ctx, 2 * (batch + 3))?);
    let (grads_b, dx_b, penalties_b) =
        (selftest::sentinel(ctx, params.len())?, selftest::sentinel(ctx, x.len())?, selftest::sentinel(ctx, 4)?);
    let kernels = crate::kernel::Kernels::new(&ctx.device);
    let gpu_head = GpuHead {
        kernels: &kernels,
        tuning: super::Tuning::for_adapter(&ctx.info),
        step: &step,
        params: &params_b,
        x: &x_b,
        labels: &labels_b,
        probs: &probs_b,
        metrics: &metrics_b,
        penalties: &penalties_b,
        backward: Some((Some(&dx_b), &grads_b)),
        mask_dx: Mask::NONE,
        gradient_to_adam: false,
    };
    let bound = layer.bind_gpu(&c, &gpu_head)?;
    selftest::run(ctx, |pass| {
        bound.record_forward(pass);
        bound.record_backward(pass);
    });
    let n = used * classes;
    let metrics = selftest::read(ctx, &metrics_b, 2 * (batch + 3))?;
    let gpu_losses: Vec<f32> = (0..used).map(|i| metrics[6 + 2 * i]).collect();
    let gpu_predicted: Vec<f32> = (0..used).map(|i| metrics[7 + 2 * i]).collect();
    let cpu_predicted: Vec<f32> = predicted[..used].iter().map(|&p| p as f32).collect();
    let gpu_grads = selftest::read(ctx, &grads_b, params.len())?;
    let kernel_len = features * classes;
    // Read before the heads bound below overwrite them.
    let gpu_probs = selftest::read(ctx, &probs_b, n)?;
    let masked_dx = masked_head_dx(ctx, &layer, &c, &gpu_head, &x_b, HEAD_MASK)?;
    let (kept_dx, kept_reference) = head_dx_through_leaky_relu_and_dropout(ctx, &layer, (&c, used), &gpu_head, &params, &labels)?;
    let reference_masked = selftest::masked(&dx, &x, HEAD_MASK);
    Ok(vec![
        Check::compare(format!("dense_softmax, {classes} classes: probabilities"), &gpu_probs, &probs[..n], 1e-6, 1e-4),
        // The head's own dlogits scratch, the second buffer it made (see bind_gpu).
        Check::compare(format!("dense_softmax, {classes} classes: dlogits"), &selftest::read(ctx, &bound.buffers[1], n)?, &dlogits[..n], 1e-6, 1e-4),
        Check::untouched(format!("dense_softmax, {classes} classes: metrics before batch_start"), &metrics[..6]),
        Check::compare(format!("dense_softmax, {classes} classes: per-sample loss"), &gpu_losses, &losses[..used], 1e-5, 1e-4),
        Check::compare(format!("dense_softmax, {classes} classes: predicted class"), &gpu_predicted, &cpu_predicted, 0.0, 0.0),
        Check::compare(format!("dense_softmax, {classes} classes: dkernel (with L1)"), &gpu_grads[..kernel_len], &grads[..kernel_len], 1e-5, 1e-4),
        Check::compare(format!("dense_softmax, {classes} classes: dbias"), &gpu_grads[kernel_len..], &grads[kernel_len..], 1e-5, 1e-4),
        Check::compare(
            format!("dense_softmax, {classes} classes: dx"),
            &selftest::read(ctx, &dx_b, used * features)?,
            &dx[..used * features],
            1e-6,
            1e-4,
        ),
        Check::compare(
            format!("dense_softmax, {classes} classes: dx through a dropout after a ReLU"),
            &masked_dx[..used * features],
            &reference_masked[..used * features],
            1e-6,
            1e-4,
        ),
        Check::compare(
            format!("dense_softmax, {classes} classes: dx through a LeakyReLU and a dropout (keep mask recomputed)"),
            &kept_dx,
            &kept_reference,
            1e-6,
            1e-4,
        ),
        Check::compare(
            format!("dense_softmax, {classes} classes: L1 penalty"),
            &selftest::read(ctx, &penalties_b, 4)?[2..3],
            &[penalty],
            1e-6,
            1e-5,
        ),
    ])
}
