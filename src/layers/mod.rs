//! The network's layers: one module per layer kind, and the registry that lists them.
//!
//! A layer kind says everything about itself in its module — `src/layers/<kind>/mod.rs`, its
//! shaders in `shaders/`, and its fast CPU kernels in `src/layers/<kind>/fast.rs` where it has
//! them: the token of the architecture string, the output shape, the tensors (names, shapes,
//! trainable or not, initialiser), its rows of the Keras summary, its CPU reference forward and
//! backward (generic over f32/f64, so that finite differences can run in f64), how its GPU
//! kernels are bound and recorded, its fast CPU kernels, and its GPU-vs-reference checks. The
//! model is a list of these; no other file matches on the layer kind. Adding a layer is its
//! module plus one line of `registry!`.
//!
//! Two roles: [`HiddenLayer`]s map activations to activations; the one [`HeadLayer`], last in a
//! model, maps the final activations to class probabilities and the loss.
//!
//! # Conventions
//! - Names: `forward`, `backward` (dL/dx and dL/dθ together), identical on the CPU and GPU sides;
//!   the tensors are called `x`, `y`, `dy`, `dx`, `params`, `grads` everywhere.
//! - Gradients are **overwritten** by the reference and the GPU: every GPU backward kernel is a
//!   gather, one invocation per gradient element it writes, with no float atomics (WGSL has none),
//!   so a seeded run gives the same bits every time on the same device. The fast CPU engine, which
//!   runs a batch as several micro-batches, **accumulates** into gradient sums it zeroes once per
//!   step (see `crate::fast`).
//! - Tensors are NHWC; the loss gradient fed back is that of the **batch mean** loss.
//! - Trainable tensors live in one flat `params` vector (and `grads` of the same layout), so Adam
//!   is one loop / one dispatch; non-trainable ones (moving statistics) in a flat `state` vector.
//!   A layer finds its tensors through its [`LayerAt`].
//! - On the GPU, binding 0 of a training kernel that needs it is the per-step uniform
//!   ([`StepParams`]); a kernel's hyper-parameters and shape are in its own uniform, or, for the
//!   convolution, in pipeline-override constants (see [`crate::kernel`]).

use std::fmt;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use crate::error::Result;
use crate::gpu::GpuContext;
use crate::kernel::{Dispatch, Kernels, Shader};
use crate::selftest::Check;

mod fusion;
pub use fusion::{plan, Elementwise, Epilogue, GpuFusion, Keep, Mask, Placement, Plan};

/// Declares the layer modules and lists them in [`REGISTRY`], in the order the architecture
/// parser tries them: one line per layer kind.
macro_rules! registry {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every layer kind.
        pub static REGISTRY: &[&Kind] = &[$(&$module::KIND),*];
    };
}

registry!(conv2d, maxpool2d, dropout, batch_norm, activation, dense, dense_softmax);

/// A layer as the architecture string names it.
pub enum Parsed {
    Hidden(Arc<dyn HiddenLayer>),
    Head(Arc<dyn HeadLayer>),
}

/// One layer kind: how its tokens read, and what the registry-wide machinery needs of it.
pub struct Kind {
    /// The tokens and what they mean, for help texts: `("cK, cKsS", "3×3 convolution ...")`.
    pub syntax: (&'static str, &'static str),
    /// The layer `token` describes: `None` if the token is not of this kind, `Some(Err(why))` if
    /// it is but something is wrong with it.
    pub parse: fn(&str) -> Option<std::result::Result<Parsed, String>>,
    /// Its shaders (checked by `tests/shaders.rs`: naga validation, binding tables).
    pub shaders: &'static [&'static Shader],
    /// Its GPU kernels against the CPU reference on `ctx`'s adapter (`wgpu-cnn selftest`).
    pub checks: fn(&GpuContext) -> Result<Vec<Check>>,
    /// Tokens with inputs that exercise the kind (the registry-wide tests run them all).
    pub examples: &'static [(&'static str, [usize; 3])],
}

/// How a tensor starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Keras' `glorot_uniform`: `U(±√(6 / (fan_in + fan_out)))`.
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// A tensor a layer declares: Keras' name for it, its shape, whether Adam trains it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub trainable: bool,
    pub init: Init,
}

impl TensorSpec {
    /// A trainable tensor.
    pub fn trainable(name: &'static str, shape: Vec<usize>, init: Init) -> Self {
        TensorSpec { name, shape, trainable: true, init }
    }

    /// A non-trainable tensor (kept in the model's `state`, saved in checkpoints).
    pub fn non_trainable(name: &'static str, shape: Vec<usize>, init: Init) -> Self {
        TensorSpec { name, shape, trainable: false, init }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tensor placed in the model: where it lives in `params` (trainable) or `state`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub spec: TensorSpec,
    pub offset: usize,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.spec.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    /// Its elements in a flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Where a layer sits in a model: what every method of a layer is told about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerAt {
    /// Position in the model (keys dropout masks).
    pub index: usize,
    /// Keras-style name: conv2d, conv2d_1, max_pooling2d, dropout, dense, ...
    pub name: String,
    /// `[H, W, C]` of one input sample and one output sample.
    pub input: [usize; 3],
    pub output: [usize; 3],
    /// Whether the input and the output are flat vectors `(None, U)` — a dense layer's output
    /// and what follows it — rather than images `(None, H, W, C)` (`[1, 1, U]` either way here).
    pub flat_input: bool,
    pub flat_output: bool,
    pub tensors: Vec<Tensor>,
}

impl LayerAt {
    /// `layer` at position `index` of a model, named `name`, reading `input`, its trainable
    /// tensors from `param_offset` on and its non-trainable ones from `state_offset` on.
    pub fn place(
        layer: &dyn LayerInfo,
        index: usize,
        name: String,
        input: [usize; 3],
        param_offset: usize,
        state_offset: usize,
    ) -> std::result::Result<Self, String> {
        let output = layer.output(input)?;
        let (mut params, mut state) = (param_offset, state_offset);
        let tensors = layer
            .tensors(input, output)
            .into_iter()
            .map(|spec| {
                let next = if spec.trainable { &mut params } else { &mut state };
                let offset = *next;
                *next += spec.len();
                Tensor { spec, offset }
            })
            .collect();
        let flat_output = layer.flat_output(false)?;
        Ok(LayerAt { index, name, input, output, flat_input: false, flat_output, tensors })
    }

    /// The same layer after a layer whose output is flat (`flat_input`), or why it cannot be.
    pub fn after(mut self, layer: &dyn LayerInfo, flat_input: bool) -> std::result::Result<Self, String> {
        self.flat_output = layer.flat_output(flat_input)?;
        self.flat_input = flat_input;
        Ok(self)
    }

    /// Keras' output shape: `(None, H, W, C)`, or `(None, U)` when flat.
    pub fn keras_output_shape(&self) -> String {
        if self.flat_output {
            format!("(None, {})", self.output_len())
        } else {
            keras_shape(self.output)
        }
    }

    /// The tensor called `name`; the layer declared it in [`LayerInfo::tensors`].
    pub fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .iter()
            .find(|t| t.spec.name == name)
            .unwrap_or_else(|| panic!("{} declares a tensor '{name}' in LayerInfo::tensors", self.name))
    }

    /// Elements of one sample's input and output.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output.iter().product()
    }

    /// Trainable and non-trainable elements.
    pub fn param_counts(&self) -> (usize, usize) {
        let count =
            |trainable: bool| self.tensors.iter().filter(|t| t.spec.trainable == trainable).map(Tensor::len).sum();
        (count(true), count(false))
    }
}

/// The run's settings that layers read (from [`crate::train::TrainConfig`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunSettings {
    /// λ of the head's L1 kernel regulariser.
    pub l1: f32,
    /// The 32-bit seed dropout masks are keyed with.
    pub seed: u32,
}

/// What a layer's methods work on: the layer in its model, how many samples (a batch, or part of
/// one), and the run's settings.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub at: &'a LayerAt,
    pub batch: usize,
    pub run: RunSettings,
}

/// A training step's pass or an inference pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Training step `step` (0-based: it keys the dropout masks). The samples are those of the
    /// step's batch from sample `first` on (a micro-batch of the fast CPU engine; 0 otherwise).
    Training {
        step: u32,
        first: usize,
    },
    Inference,
}

impl Pass {
    pub fn is_training(&self) -> bool {
        matches!(self, Pass::Training { .. })
    }
}

/// One row of a Keras-style summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// "conv2d_1 (Conv2D)"
    pub layer: String,
    /// "(None, 16, 16, 16)"
    pub shape: String,
    pub params: usize,
}

/// Keras' `(None, H, W, C)`.
///
/// The Flatten Keras needs before a dense layer that reads an image (the rows a dense layer
/// adds to the summary, see [`flatten_rows`]).
pub fn keras_shape([h, w, c]: [usize; 3]) -> String {
    format!("(None, {h}, {w}, {c})")
}

/// `flatten (Flatten)` before a dense layer at `at` that reads an image; nothing when its input
/// is already flat. There is only ever one: everything after a dense layer is flat.
pub fn flatten_rows(at: &LayerAt) -> Vec<SummaryRow> {
    if at.flat_input {
        Vec::new()
    } else {
        vec![SummaryRow { layer: "flatten (Flatten)".into(), shape: format!("(None, {})", at.input_len()), params: 0 }]
    }
}

/// A dense layer's rows: the Flatten before it (when its input is an image), then itself.
pub(crate) fn dense_rows(at: &LayerAt, units: usize) -> Vec<SummaryRow> {
    let mut rows = flatten_rows(at);
    rows.push(SummaryRow {
        layer: format!("{} (Dense)", at.name),
        shape: format!("(None, {units})"),
        params: at.param_counts().0,
    });
    rows
}

/// The error of an image layer after a flat one.
pub(crate) fn needs_image(flat_input: bool, what: &str) -> std::result::Result<bool, String> {
    if flat_input {
        Err(format!("{what} needs an image (H, W, C) input, but it follows a dense layer, whose output is flat"))
    } else {
        Ok(false)
    }
}

/// What every layer says about itself, whatever its role.
pub trait LayerInfo: fmt::Debug + Send + Sync {
    /// Keras' base name for layers of this kind (`conv2d`, numbered `conv2d_1`, ... in a model)
    /// and its class (`Conv2D`).
    fn keras(&self) -> (&'static str, &'static str);
    /// The token of the architecture string that reads back as this layer.
    fn token(&self) -> String;
    /// The shape of one output sample for one input sample of `input`, or why the layer cannot
    /// take that input.
    fn output(&self, input: [usize; 3]) -> std::result::Result<[usize; 3], String>;
    /// Its tensors, in checkpoint order.
    fn tensors(&self, _input: [usize; 3], _output: [usize; 3]) -> Vec<TensorSpec> {
        Vec::new()
    }
    /// Whether the output is a flat vector, given whether the input is (by default, as the
    /// input: dropout or an activation after a dense layer stays flat); or why the layer cannot
    /// take a flat input (a convolution needs an image).
    fn flat_output(&self, flat_input: bool) -> std::result::Result<bool, String> {
        Ok(flat_input)
    }
    /// Its rows of the Keras summary: one, unless the layer stands for several of Keras'.
    fn summary_rows(&self, at: &LayerAt) -> Vec<SummaryRow> {
        let (trainable, non_trainable) = at.param_counts();
        vec![SummaryRow {
            layer: format!("{} ({})", at.name, self.keras().1),
            shape: at.keras_output_shape(),
            params: trainable + non_trainable,
        }]
    }
    /// Multiply-adds of one sample's forward pass.
    fn forward_macs(&self, _at: &LayerAt) -> usize {
        0
    }
}

/// A layer's CPU reference in element type `T`: the plain loops of the math, the oracle every
/// other implementation is tested against, and itself tested against finite differences in f64.
pub trait Reference<T: Float> {
    /// `y = f(x)` for `c.batch` samples. `state` is the layer's non-trainable tensors (in the
    /// model's `state` layout); a layer may update it in training.
    fn forward(&self, c: &Ctx<'_>, pass: Pass, x: &[T], y: &mut [T], params: &[T], state: &mut [T]);
    /// dL/dx into `b.dx` (None for the first layer, whose input needs no gradient) and dL/dθ
    /// into the layer's slice of `b.grads`, both overwritten, from dL/dy of the same pass.
    fn backward(&self, c: &Ctx<'_>, pass: Pass, b: Backward<'_, T>);
}

/// The tensors of a reference backward pass.
pub struct Backward<'a, T> {
    pub x: &'a [T],
    pub y: &'a [T],
    pub dy: &'a [T],
    pub dx: Option<&'a mut [T]>,
    pub params: &'a [T],
    pub grads: &'a mut [T],
}

/// What a head computes per sample.
pub struct HeadOutputs<'a, T> {
    /// `[N, classes]` class probabilities.
    pub probs: &'a mut [T],
    /// `[N, classes]` dL/dlogits of the batch-mean loss.
    pub dlogits: &'a mut [T],
    /// Per-sample loss and predicted class.
    pub losses: &'a mut [T],
    pub predicted: &'a mut [u32],
}

/// A head's CPU reference in element type `T`.
pub trait HeadReference<T: Float> {
    /// Probabilities, per-sample loss and prediction, and dL/dlogits of `c.batch` samples that
    /// are part of a batch of `mean_over` (the loss is that batch's mean).
    fn forward(&self, c: &Ctx<'_>, x: &[T], params: &[T], labels: &[u32], mean_over: usize, out: HeadOutputs<'_, T>);
    /// dL/dx (unless None) and the data term of dL/dθ, overwritten, from the forward pass's
    /// dlogits: the regulariser's gradient is [`HeadReference::penalty_backward`]'s.
    fn backward(&self, c: &Ctx<'_>, x: &[T], dlogits: &[T], dx: Option<&mut [T]>, params: &[T], grads: &mut [T]);
    /// The regulariser's contribution to the loss for `params`.
    fn penalty(&self, c: &Ctx<'_>, params: &[T]) -> T;
    /// Adds the regulariser's gradient for `params` to `grads` (once per step).
    fn penalty_backward(&self, c: &Ctx<'_>, params: &[T], grads: &mut [T]);
}

/// Whether a GPU's chunking suits a software adapter (a CPU driver such as lavapipe, which runs a
/// few dozen invocations at once) or a hardware GPU (tens of thousands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    Software,
    Hardware,
}

impl Tuning {
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        if crate::gpu::is_software(info) {
            Tuning::Software
        } else {
            Tuning::Hardware
        }
    }
}

/// What a hidden layer binds its GPU kernels to. All buffers are the caller's.
pub struct GpuLayer<'a> {
    /// The device's pipelines (built once per shape).
    pub kernels: &'a Kernels,
    pub tuning: Tuning,
    /// Bind the naive baseline kernels where the layer has them (the benchmarks compare).
    pub naive: bool,
    /// The per-step uniform ([`StepParams`]).
    pub step: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
    /// `[N, H, W, C]` input and output, each at least `Ctx::batch` samples.
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    /// Where the kernels read the input instead of `x`: a dataset through the epoch's order,
    /// the batch's labels copied for the head (only given to a first layer whose
    /// [`GpuFusion::reads_dataset`] is set, and not with [`GpuLayer::naive`]).
    pub source: Option<crate::gather::BatchSource<'a>>,
    /// The gradient buffers, for training; None binds the forward pass alone (inference).
    pub backward: Option<GpuGrads<'a>>,
    /// What the forward kernels apply as they store y: the layer after, absorbed (only given
    /// to a layer whose [`GpuFusion::takes_epilogue`] is set; the default applies nothing).
    /// With [`GpuLayer::pooled`], what they apply to the pooled values instead, y as it is.
    pub epilogue: Epilogue,
    /// Also store the 2×2 max-pool of y here: the max-pool after this layer, whose forward pass
    /// this one takes (only given to a layer whose [`GpuFusion::pools_output`] is set).
    pub pooled: Option<&'a wgpu::Buffer>,
    /// The layer before stores this layer's output as it stores its own ([`GpuLayer::pooled`]):
    /// bind the backward pass alone (only given to a layer whose [`GpuFusion::max_pool`] is set).
    pub forward_by_before: bool,
}

/// The gradient buffers of a training pass.
#[derive(Clone, Copy)]
pub struct GpuGrads<'a> {
    /// dL/dy (shaped like y) and dL/dx (shaped like x; None for the first layer).
    pub dy: &'a wgpu::Buffer,
    pub dx: Option<&'a wgpu::Buffer>,
    /// Flat gradients, laid out like `params`.
    pub grads: &'a wgpu::Buffer,
    /// The layer's region of the step's partial-sum scratch, [`HiddenLayer::gpu_scratch_len`]
    /// floats from `scratch_offset`; their final sums are the layer's [`LayerPass::sums`].
    pub scratch: &'a wgpu::Buffer,
    pub scratch_offset: u32,
    /// dy arrives as dL/dy·(y > 0), the gradient of the ReLU's input: the layer after this one
    /// masked it as it wrote it (only given to a layer whose [`GpuFusion::relu_output`] is set).
    pub dy_masked: bool,
    /// Write dx through this mask, for the layers before (only asked of a layer whose
    /// [`GpuFusion::masks_dx`] is set; [`Mask::NONE`] otherwise).
    pub mask_dx: Mask,
}

impl GpuGrads<'_> {
    /// The mask dx is written through: [`GpuGrads::mask_dx`] when there is a dx to write.
    pub fn dx_mask(&self) -> Mask {
        if self.dx.is_some() {
            self.mask_dx
        } else {
            Mask::NONE
        }
    }
}

/// What the head binds its GPU kernels to.
#[derive(Clone, Copy)]
pub struct GpuHead<'a> {
    pub kernels: &'a Kernels,
    pub tuning: Tuning,
    pub step: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    /// `[N, ...]` input.
    pub x: &'a wgpu::Buffer,
    /// u32 class of each sample `[N]`.
    pub labels: &'a wgpu::Buffer,
    /// `[N, classes]` probabilities.
    pub probs: &'a wgpu::Buffer,
    /// Per position of the epoch (`step.batch_start + n`): `[loss, predicted class]`.
    pub metrics: &'a wgpu::Buffer,
    /// The regulariser's penalty, at `step.penalty_slot`.
    pub penalties: &'a wgpu::Buffer,
    /// For training: dL/dx (None when the head is the only layer) and the flat gradients.
    pub backward: Option<(Option<&'a wgpu::Buffer>, &'a wgpu::Buffer)>,
    /// Write dx through this mask (see [`GpuGrads::mask_dx`]); only asked as
    /// [`HeadLayer::gpu_fusion`] allows.
    pub mask_dx: Mask,
    /// Leave the weight gradient to Adam's dispatch ([`LayerPass::dense_gradient`]) instead of
    /// recording a dispatch of its own (a training step's binding).
    pub gradient_to_adam: bool,
}

/// A layer bound to its buffers: the dispatches it records, in order, and the buffers it made
/// for itself (scratch, its uniform), kept alive with it.
#[derive(Debug, Default)]
pub struct LayerPass {
    /// Includes a head's regulariser's penalty, so every evaluation batch and classifier call
    /// writes it too (its slot in the step uniform).
    pub forward: Vec<Dispatch>,
    /// Empty when bound for inference.
    pub backward: Vec<Dispatch>,
    /// The final sums of the partial sums the backward pass leaves in the scratch buffer,
    /// which a training step's Adam dispatch takes for every layer at once
    /// ([`crate::partial_sums`]).
    pub sums: Vec<crate::partial_sums::Segment>,
    /// A dense head's weight gradient, left for Adam's dispatch to take
    /// ([`GpuHead::gradient_to_adam`], [`crate::adam::Taken`]).
    pub dense_gradient: Option<crate::layers::dense_softmax::DenseGradient>,
    pub buffers: Vec<wgpu::Buffer>,
}

impl LayerPass {
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.iter().for_each(|d| d.record(pass));
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.backward.iter().for_each(|d| d.record(pass));
    }

    /// Dispatches of a training step: forward and backward.
    pub fn dispatches(&self) -> usize {
        self.forward.len() + self.backward.len()
    }
}

/// The uniform of `gpu.epilogue`, for a forward kernel that applies it (`shaders/epilogue.wgsl`).
pub(crate) fn epilogue_uniform(gpu: &GpuLayer<'_>) -> wgpu::Buffer {
    crate::gpu::uniform_buffer(gpu.kernels.device(), "epilogue", &gpu.epilogue)
}

/// The pipeline constant of `gpu.epilogue`'s kind, for the same kernels.
pub(crate) fn epilogue_constants(gpu: &GpuLayer<'_>) -> [(&'static str, f64); 1] {
    [("EPILOGUE", f64::from(gpu.epilogue.kind))]
}

/// Binds a layer that is one `forward` and one `backward_input` entry point of `shader` (max
/// pooling, dropout): the forward pass on `forward`'s buffers (unless the layer before takes it:
/// [`GpuLayer::forward_by_before`]), and the input gradient on `backward`'s when there is one to
/// write (training, and not the first layer).
pub(crate) fn bind_forward_and_input_gradient(
    gpu: &GpuLayer<'_>,
    shader: &'static Shader,
    forward: (&[crate::kernel::Arg<'_>], crate::kernel::Grid, &[(&'static str, f64)]),
    backward: Option<(Vec<crate::kernel::Arg<'_>>, crate::kernel::Grid)>,
) -> Result<LayerPass> {
    let device = gpu.kernels.device();
    let mut pass = LayerPass::default();
    if !gpu.forward_by_before {
        let kernel = gpu.kernels.get(shader, "forward", forward.2)?;
        pass.forward.push(Dispatch::new(device, &kernel, forward.0, forward.1)?);
    }
    if let Some((args, grid)) = backward {
        pass.backward.push(Dispatch::new(device, &gpu.kernels.get(shader, "backward_input", &[])?, &args, grid)?);
    }
    Ok(pass)
}

/// A layer between the input and the head.
pub trait HiddenLayer: LayerInfo + Reference<f32> + Reference<f64> {
    /// Whether a training forward pass needs the whole batch at once (batch normalisation's
    /// statistics): the fast CPU engine then runs each step as one pass of the whole batch.
    fn batch_statistics(&self) -> bool {
        false
    }

    /// Builds (through `gpu.kernels`, once per shape) and binds this layer's GPU kernels for
    /// batches of up to `c.batch` samples.
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass>;

    /// Floats of the partial-sum scratch ([`GpuGrads::scratch`]) the layer's training binding
    /// for `tuning` (with the naive kernels when `naive`) writes; none by default.
    fn gpu_scratch_len(&self, _c: &Ctx<'_>, _tuning: Tuning, _naive: bool) -> usize {
        0
    }

    /// How this layer's GPU kernels, placed at `c.at`, meet its neighbours' (none by default).
    fn gpu_fusion(&self, _c: &Ctx<'_>) -> GpuFusion {
        GpuFusion::default()
    }

    /// How this layer meets its neighbours in the fast CPU engine (see [`crate::fast::Fusion`]).
    #[cfg(feature = "fast-cpu")]
    fn fast_fusion(&self) -> crate::fast::Fusion {
        crate::fast::Fusion::default()
    }

    /// The fast CPU kernels of this layer for micro-batches of up to `c.batch`, reading x in
    /// `x` and writing y in `y`; None runs the reference in its place.
    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        _c: &Ctx<'_>,
        _isa: crate::fast::Isa,
        _x: crate::fast::Layout,
        _y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        None
    }
}

/// The last layer: activations in, class probabilities and the loss out.
pub trait HeadLayer: LayerInfo + HeadReference<f32> + HeadReference<f64> {
    /// The number of classes.
    fn classes(&self) -> usize;

    /// Builds and binds the head's GPU kernels for batches of up to `c.batch` samples.
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuHead<'_>) -> Result<LayerPass>;

    /// What the head's kernels share with the layer before: only [`GpuFusion::masks_dx`] and
    /// [`GpuFusion::masks_dropout`] are read.
    fn gpu_fusion(&self) -> GpuFusion {
        GpuFusion::default()
    }

    /// The fast CPU kernels of the head for micro-batches of up to `c.batch`; None runs the
    /// reference in its place.
    #[cfg(feature = "fast-cpu")]
    fn fast(&self, _c: &Ctx<'_>, _isa: crate::fast::Isa) -> Option<Box<dyn crate::fast::FastHead>> {
        None
    }
}

/// Mirror of `Step` in `shaders/common.wgsl`: what changes from one submission to the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct StepParams {
    pub batch_size: u32,
    pub batch_start: u32,
    pub step: u32,
    pub training: u32,
    pub adam_alpha: f32,
    pub penalty_slot: u32,
    pub _pad: [u32; 2],
}

/// The layer `token` names, or why it names none (the message lists the tokens there are).
pub fn parse_token(token: &str) -> std::result::Result<Parsed, String> {
    if token.is_empty() {
        return Err("empty layer".into());
    }
    for kind in REGISTRY {
        if let Some(parsed) = (kind.parse)(token) {
            return parsed;
        }
    }
    Err("unknown layer type".into())
}

/// "cK (3×3 convolution, K filters), ..." for help texts and errors.
pub fn token_help() -> String {
    REGISTRY.iter().map(|k| format!("{} ({})", k.syntax.0, k.syntax.1)).collect::<Vec<_>>().join(", ")
}

/// A positive whole number, or None.
pub(crate) fn positive(text: &str) -> Option<usize> {
    text.parse().ok().filter(|&n| n > 0)
}

/// Converts an f32 hyper-parameter to the reference's element type.
pub(crate) fn cast<T: Float>(value: f32) -> T {
    T::from(value).expect("an f32 converts to f32 and f64")
}
