//! Conv2D: 3×3 kernel, stride 1 or 2, Keras 'same' padding, bias, fused ReLU or no activation.
//! Keras: `Conv2D(K, (3, 3), strides=s, padding='same', activation='relu')`, or with no
//! `activation` (linear, as before a `BatchNormalization`).
//! Tokens: `cK` (stride 1) and `cKs2`, with ReLU; `cKn` and `cKs2n` without an activation.
//!
//! # Shapes
//! x `[N, H, W, C]`, kernel `[3, 3, C, K]`, bias `[K]`, y `[N, OH, OW, K]` with
//! `OH = ceil(H / stride)` and TensorFlow's padding (see [`crate::model::same_padding`]).
//!
//! # Where it runs
//! - CPU reference: [`forward`], [`backward_input`], [`backward_weight`] below.
//! - GPU: `shaders/conv2d_tiled.wgsl` (training) and `shaders/conv2d_naive.wgsl` (the baseline),
//!   both after `shaders/conv2d_shape.wgsl`; the shape reaches them as override constants
//!   ([`Conv2dShape::constants`]), so each layer gets pipelines compiled for its sizes. [`bind`].
//!   The tiled kernels' variants read a first layer's batch from the dataset ([`TILED_GATHERED`])
//!   or store the max-pool after the layer beside y ([`TILED_POOLED`]).
//! - Fast CPU: [`fast`], implicit GEMMs on padded NHWC tensors.

#[cfg(feature = "fast-cpu")]
pub mod fast;

use num_traits::Float;

use super::{
    epilogue_uniform, GpuFusion, Mask,
    positive, Backward, Ctx, GpuLayer, HiddenLayer, Init, Kind, LayerAt, LayerInfo, LayerPass, Parsed, Pass,
    Reference, TensorSpec, Tuning,
};
use crate::error::{Error, Result};
use crate::gpu::{self, GpuContext};
use crate::gather::{IMAGE_BINDINGS, LABEL_BINDINGS};
use crate::kernel::{
    arg, extended, floats, read, read_write, uniform, Arg, Binding, Dispatch, EntryPoint, Grid, Shader, WORKGROUP_SIZE,
};
use crate::model::same_padding;
use crate::partial_sums::Segment;
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// `cK`: K filters, stride 1; `cKs2`: stride 2; a trailing `n`: no activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub filters: usize,
    pub stride: usize,
    /// `y = relu(conv + bias)` (fused), or `conv + bias` when false.
    pub relu: bool,
}

pub static KIND: Kind = Kind {
    syntax: ("cK, cKs2, cKn, cKs2n", "3×3 convolution with K filters, ReLU; s2: stride 2; n: no activation"),
    parse,
    shaders: &[&TILED, &TILED_GATHERED, &TILED_POOLED, &NAIVE],
    checks,
    examples: &[("c5", [5, 6, 3]), ("c4s2", [7, 5, 4]), ("c8", [6, 6, 8]), ("c4n", [5, 4, 3]), ("c3s2n", [5, 6, 2])],
};

fn parse(token: &str) -> Option<std::result::Result<Parsed, String>> {
    let rest = token.strip_prefix('c')?;
    let (rest, relu) = rest.strip_suffix('n').map_or((rest, true), |rest| (rest, false));
    let (filters, stride) = rest.split_once('s').unwrap_or((rest, "1"));
    Some((|| {
        let filters = positive(filters).ok_or("the filter count must be a positive whole number")?;
        let stride = match stride {
            "1" => 1,
            "2" => 2,
            _ => return Err("the stride must be 1 or 2".to_string()),
        };
        if filters > 1024 {
            return Err("at most 1024 filters".to_string());
        }
        Ok(Parsed::Hidden(std::sync::Arc::new(Conv2d { filters, stride, relu })))
    })())
}

impl LayerInfo for Conv2d {
    fn keras(&self) -> (&'static str, &'static str) {
        ("conv2d", "Conv2D")
    }

    fn token(&self) -> String {
        let stride = if self.stride == 1 { String::new() } else { format!("s{}", self.stride) };
        format!("c{}{stride}{}", self.filters, if self.relu { "" } else { "n" })
    }

    fn flat_output(&self, flat_input: bool) -> std::result::Result<bool, String> {
        super::needs_image(flat_input, "a convolution")
    }

    fn output(&self, [h, w, _]: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok([same_padding(h, 3, self.stride).0, same_padding(w, 3, self.stride).0, self.filters])
    }

    /// Keras' fans: `(3·3·C, 3·3·K)`.
    fn tensors(&self, [_, _, c]: [usize; 3], _: [usize; 3]) -> Vec<TensorSpec> {
        let k = self.filters;
        vec![
            TensorSpec::trainable("kernel", vec![3, 3, c, k], Init::GlorotUniform { fan_in: 9 * c, fan_out: 9 * k }),
            TensorSpec::trainable("bias", vec![k], Init::Zeros),
        ]
    }

    fn forward_macs(&self, at: &LayerAt) -> usize {
        at.output_len() * 9 * at.input[2]
    }
}

/// A convolution's sizes and where its tensors live in the flat parameter vector; the one place
/// the output-size arithmetic is done. The GPU kernels take it as pipeline-override constants
/// ([`Conv2dShape::constants`]), so each layer's pipelines are compiled for its shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dShape {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub in_c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub out_c: u32,
    pub stride: u32,
    pub pad_top: u32,
    pub pad_left: u32,
    pub kernel_offset: u32,
    pub bias_offset: u32,
    /// Output positions per chunk of the split dkernel reduction, the number of chunks, and the
    /// invocations that share a chunk (a power of two that divides [`WORKGROUP_SIZE`]).
    pub chunk_len: u32,
    pub chunks: u32,
    pub chunk_lanes: u32,
    /// The fused ReLU: `y = relu(pre)`; without it `y = pre`.
    pub relu: bool,
    /// How dx is written for the layers before ([`crate::layers::GpuGrads::mask_dx`]).
    pub mask_dx: Mask,
    /// dy arrives with the ReLU applied ([`crate::layers::GpuGrads::dy_masked`]).
    pub dy_masked: bool,
    /// Where the tiled kernels' partial sums start in the scratch buffer (floats).
    pub partials_offset: u32,
    /// The kind of the epilogue the forward kernels apply ([`crate::layers::Epilogue`]).
    pub epilogue: u32,
}

/// Output positions summed by one invocation of `backward_weight_partial` on a software adapter:
/// a CPU driver such as lavapipe runs few invocations at once, so long chunks keep the final
/// reduction short and still give thousands of invocations.
pub const CHUNK_LEN: usize = 512;

/// Invocations that share one chunk on a hardware GPU ([`Conv2dShape::for_hardware_gpu`]).
pub const GPU_CHUNK_LANES: u32 = 64;

impl Conv2dShape {
    /// The shape of a standalone convolution: kernel at offset 0, bias right after it.
    pub fn new(batch: usize, input: [usize; 3], filters: usize, stride: usize) -> Self {
        let [h, w, c] = input;
        let (out_h, pad_top) = same_padding(h, 3, stride);
        let (out_w, pad_left) = same_padding(w, 3, stride);
        let u = |v: usize| v as u32;
        Conv2dShape {
            batch: u(batch),
            in_h: u(h),
            in_w: u(w),
            in_c: u(c),
            out_h: u(out_h),
            out_w: u(out_w),
            out_c: u(filters),
            stride: u(stride),
            pad_top: u(pad_top),
            pad_left: u(pad_left),
            kernel_offset: 0,
            bias_offset: u(9 * c * filters),
            chunk_len: 0,
            chunks: 0,
            chunk_lanes: 1,
            relu: true,
            mask_dx: Mask::NONE,
            dy_masked: false,
            partials_offset: 0,
            epilogue: 0,
        }
        .with_chunk_len(CHUNK_LEN)
    }

    /// The shape of `layer` placed at `c.at`, for batches of up to `c.batch` samples.
    pub fn for_layer(layer: &Conv2d, c: &Ctx<'_>) -> Self {
        let (kernel, bias) = (c.at.tensor("kernel"), c.at.tensor("bias"));
        debug_assert_eq!(bias.offset, kernel.offset + kernel.len(), "the bias follows the kernel");
        Conv2dShape {
            kernel_offset: kernel.offset as u32,
            bias_offset: bias.offset as u32,
            relu: layer.relu,
            ..Self::new(c.batch, c.at.input, layer.filters, layer.stride)
        }
    }

    /// The same shape for a different batch size (a partial batch on the CPU).
    pub fn with_batch(&self, batch: usize) -> Self {
        Conv2dShape { batch: batch as u32, ..*self }.with_chunk_len(self.chunk_len as usize)
    }

    /// The split dkernel reduction in chunks of `chunk_len` output positions.
    pub fn with_chunk_len(&self, chunk_len: usize) -> Self {
        let chunk_len = chunk_len.max(1);
        let chunks = self.positions().div_ceil(chunk_len).max(1);
        Conv2dShape { chunk_len: chunk_len as u32, chunks: chunks as u32, ..*self }
    }

    /// The chunking for `tuning`: [`CHUNK_LEN`] on a software adapter, else
    /// [`Conv2dShape::for_hardware_gpu`].
    pub fn tuned(&self, tuning: Tuning) -> Self {
        match tuning {
            Tuning::Software => *self,
            Tuning::Hardware => self.for_hardware_gpu(),
        }
    }

    /// The chunking for a hardware GPU: teams of [`GPU_CHUNK_LANES`] invocations per chunk, and
    /// chunks of about √(lanes · positions) positions, so that each lane of the partial sums and
    /// each invocation of the final reduction sum about √(positions / lanes) values. A GPU's
    /// invocations mostly wait on memory, so the longest such sum sets the time (on an H100, one
    /// invocation per 512-position chunk left the weight gradients at 60% of a training step).
    pub fn for_hardware_gpu(&self) -> Self {
        let lanes = GPU_CHUNK_LANES as usize;
        let chunk_len = (lanes * self.positions()).isqrt().max(1);
        Conv2dShape { chunk_lanes: GPU_CHUNK_LANES, ..self.with_chunk_len(chunk_len) }
    }

    /// Invocations of the tiled dx kernel for a full batch: per input row, column slots of
    /// same-phase blocks (stride · ⌈W / (4 · stride)⌉), times channel blocks of 4.
    fn input_invocations(&self) -> u32 {
        let slots = self.stride * self.in_w.div_ceil(4 * self.stride);
        self.batch * self.in_h * slots * self.in_c.div_ceil(4)
    }

    /// Workgroups of the fused `backward` kernel that compute dx; the rest sum dkernel's partials.
    fn input_workgroups(&self) -> u32 {
        self.input_invocations().div_ceil(WORKGROUP_SIZE)
    }

    /// Invocations of the dkernel partial sums: a team of `chunk_lanes` per 4×4 block of a tap
    /// of a chunk.
    fn partial_invocations(&self) -> u32 {
        self.chunks * 9 * self.in_c.div_ceil(4) * self.out_c.div_ceil(4) * self.chunk_lanes
    }

    /// Output positions (n, oy, ox) of a full batch.
    fn positions(&self) -> usize {
        (self.batch * self.out_h * self.out_w) as usize
    }

    /// Floats of the partial-sum scratch buffer the tiled dkernel needs.
    pub fn partials_len(&self) -> usize {
        self.chunks as usize * (self.kernel_len() + self.out_c as usize)
    }

    pub fn input_len(&self) -> usize {
        (self.batch * self.in_h * self.in_w * self.in_c) as usize
    }

    pub fn output_len(&self) -> usize {
        (self.batch * self.out_h * self.out_w * self.out_c) as usize
    }

    pub fn kernel_len(&self) -> usize {
        (9 * self.in_c * self.out_c) as usize
    }

    /// The kernel's and the bias's elements in the flat parameter vector.
    pub fn kernel_range(&self) -> std::ops::Range<usize> {
        self.kernel_offset as usize..self.kernel_offset as usize + self.kernel_len()
    }

    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias_offset as usize..(self.bias_offset + self.out_c) as usize
    }

    /// The `override` constants of `shaders/conv2d_shape.wgsl` for this shape: its extents, and whether
    /// rows of x and of the kernel and dpre start on whole vec4s (the tiled kernels' vec4 loads).
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        let extents = [
            ("BATCH", self.batch),
            ("IN_H", self.in_h),
            ("IN_W", self.in_w),
            ("IN_C", self.in_c),
            ("OUT_H", self.out_h),
            ("OUT_W", self.out_w),
            ("OUT_C", self.out_c),
            ("STRIDE", self.stride),
            ("PAD_TOP", self.pad_top),
            ("PAD_LEFT", self.pad_left),
            ("KERNEL_OFFSET", self.kernel_offset),
            ("BIAS_OFFSET", self.bias_offset),
            ("CHUNK_LEN", self.chunk_len),
            ("CHUNKS", self.chunks),
            ("CHUNK_LANES", self.chunk_lanes),
            ("INPUT_WORKGROUPS", self.input_workgroups()),
            ("PARTIALS_OFFSET", self.partials_offset),
            ("EPILOGUE", self.epilogue),
        ];
        let mask = [("MASK_POS", self.mask_dx.pos), ("MASK_NEG", self.mask_dx.neg)];
        let flags = [
            ("RELU", self.relu),
            ("DY_MASKED", self.dy_masked),
            ("X_VEC4", self.in_c.is_multiple_of(4)),
            (
                "K_VEC4",
                self.out_c.is_multiple_of(4)
                    && self.kernel_offset.is_multiple_of(4)
                    && self.bias_offset.is_multiple_of(4),
            ),
        ];
        let extents = extents.into_iter().map(|(name, v)| (name, f64::from(v)));
        let mask = mask.into_iter().map(|(name, v)| (name, f64::from(v)));
        extents.chain(mask).chain(flags.into_iter().map(|(name, on)| (name, f64::from(u8::from(on))))).collect()
    }

    /// The constants of the forward kernels: those of [`Conv2dShape::constants`] with the
    /// fields that only the backward kernels read at their defaults, so that a training net and
    /// an inference net of one model (evaluation after training) share forward pipelines.
    pub fn forward_constants(&self) -> Vec<(&'static str, f64)> {
        Conv2dShape { mask_dx: Mask::NONE, dy_masked: false, partials_offset: 0, ..*self }.constants()
    }

    fn dims(&self) -> [usize; 10] {
        [
            self.batch,
            self.in_h,
            self.in_w,
            self.in_c,
            self.out_h,
            self.out_w,
            self.out_c,
            self.stride,
            self.pad_top,
            self.pad_left,
        ]
        .map(|v| v as usize)
    }
}

/// Input coordinate read by output coordinate `o` through tap `k`, or None in the padding.
fn input_coord(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < size)
}

// ---------------------------------------------------------------------------------------------
// CPU reference: the loops of the math, in the order the shader sums.

/// `y = relu(conv(x, kernel) + bias)`, or without the ReLU when `!s.relu`.
pub fn forward<T: Float>(y: &mut [T], x: &[T], kernel: &[T], bias: &[T], s: &Conv2dShape) {
    let [batch, in_h, in_w, in_c, out_h, out_w, out_c, stride, pad_top, pad_left] = s.dims();
    for n in 0..batch {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for k in 0..out_c {
                    let mut sum = bias[k];
                    for ky in 0..3 {
                        let Some(iy) = input_coord(oy, ky, stride, pad_top, in_h) else { continue };
                        for kx in 0..3 {
                            let Some(ix) = input_coord(ox, kx, stride, pad_left, in_w) else { continue };
                            for c in 0..in_c {
                                sum = sum
                                    + x[((n * in_h + iy) * in_w + ix) * in_c + c]
                                        * kernel[((ky * 3 + kx) * in_c + c) * out_c + k];
                            }
                        }
                    }
                    y[((n * out_h + oy) * out_w + ox) * out_c + k] = if s.relu { sum.max(T::zero()) } else { sum };
                }
            }
        }
    }
}

/// dL/d(pre-activation): ReLU passes `dy` where the output is positive; without one, all of it.
fn dpre<T: Float>(dy: &[T], y: &[T], o: usize, relu: bool) -> T {
    if !relu || y[o] > T::zero() {
        dy[o]
    } else {
        T::zero()
    }
}

/// `dx = dL/dx` from `dy = dL/dy` and the forward output `y` (for the ReLU mask).
pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], y: &[T], kernel: &[T], s: &Conv2dShape) {
    let [batch, in_h, in_w, in_c, out_h, out_w, out_c, stride, pad_top, pad_left] = s.dims();
    dx[..s.input_len()].fill(T::zero());
    // Scatter form on the CPU (same sums as the GPU's gather, in a different order).
    for n in 0..batch {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for ky in 0..3 {
                    let Some(iy) = input_coord(oy, ky, stride, pad_top, in_h) else { continue };
                    for kx in 0..3 {
                        let Some(ix) = input_coord(ox, kx, stride, pad_left, in_w) else { continue };
                        for c in 0..in_c {
                            let mut sum = T::zero();
                            for k in 0..out_c {
                                let o = ((n * out_h + oy) * out_w + ox) * out_c + k;
                                sum = sum + dpre(dy, y, o, s.relu) * kernel[((ky * 3 + kx) * in_c + c) * out_c + k];
                            }
                            let i = ((n * in_h + iy) * in_w + ix) * in_c + c;
                            dx[i] = dx[i] + sum;
                        }
                    }
                }
            }
        }
    }
}

/// `dkernel = dL/dkernel`, `dbias = dL/dbias`.
pub fn backward_weight<T: Float>(dkernel: &mut [T], dbias: &mut [T], dy: &[T], y: &[T], x: &[T], s: &Conv2dShape) {
    let [batch, in_h, in_w, in_c, out_h, out_w, out_c, stride, pad_top, pad_left] = s.dims();
    dkernel[..s.kernel_len()].fill(T::zero());
    dbias[..out_c].fill(T::zero());
    for n in 0..batch {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for k in 0..out_c {
                    let g = dpre(dy, y, ((n * out_h + oy) * out_w + ox) * out_c + k, s.relu);
                    if g == T::zero() {
                        continue;
                    }
                    dbias[k] = dbias[k] + g;
                    for ky in 0..3 {
                        let Some(iy) = input_coord(oy, ky, stride, pad_top, in_h) else { continue };
                        for kx in 0..3 {
                            let Some(ix) = input_coord(ox, kx, stride, pad_left, in_w) else { continue };
                            for c in 0..in_c {
                                let w = ((ky * 3 + kx) * in_c + c) * out_c + k;
                                dkernel[w] = dkernel[w] + g * x[((n * in_h + iy) * in_w + ix) * in_c + c];
                            }
                        }
                    }
                }
            }
        }
    }
}


// ---------------------------------------------------------------------------------------------
// CPU reference through the layer interface.

impl<T: Float> Reference<T> for Conv2d {
    fn forward(&self, c: &Ctx<'_>, _pass: Pass, x: &[T], y: &mut [T], params: &[T], _state: &mut [T]) {
        let s = Conv2dShape::for_layer(self, c);
        forward(y, x, &params[s.kernel_range()], &params[s.bias_range()], &s);
    }

    fn backward(&self, c: &Ctx<'_>, _pass: Pass, b: Backward<'_, T>) {
        let s = Conv2dShape::for_layer(self, c);
        let kernel = &b.params[s.kernel_range()];
        if let Some(dx) = b.dx {
            backward_input(dx, b.dy, b.y, kernel, &s);
        }
        // The bias follows the kernel (LayerInfo::tensors' order).
        let (dkernel, dbias) = b.grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
        backward_weight(dkernel, dbias, b.dy, b.y, b.x, &s);
    }
}

// ---------------------------------------------------------------------------------------------
// GPU.

/// The forward pass's bindings in both tiled variants, but for where x comes from.
const FORWARD: [Binding; 5] =
    [uniform(0, "step"), read(3, "params"), read_write(4, "y"), read(11, "params4"), uniform(15, "epilogue")];
/// The weight gradient's partial sums', but for where x comes from.
const WEIGHT_PARTIAL: [Binding; 4] = [uniform(0, "step"), read_write(9, "partials"), read(12, "dpre"), read(13, "dpre4")];
const RELU_BACKWARD: [Binding; 4] = [uniform(0, "step"), read_write(4, "y"), read(5, "dy"), read_write(8, "dpre_out")];
/// x from a buffer (`shaders/conv2d_input.wgsl`).
const X: [Binding; 2] = [read(2, "x"), read(10, "x4")];
const FORWARD_X: [Binding; 7] = extended::<5, 2, 7>(FORWARD, X);
const WEIGHT_PARTIAL_X: [Binding; 6] = extended::<4, 2, 6>(WEIGHT_PARTIAL, X);
/// The weight partials' bindings and what dx reads and writes: `backward` runs both.
const BACKWARD_X: [Binding; 9] =
    extended::<6, 3, 9>(WEIGHT_PARTIAL_X, [read(3, "params"), read(11, "params4"), read_write(6, "dx")]);

/// The binding tables of `shaders/conv2d_tiled.wgsl`, reading x from a buffer.
pub static TILED: Shader = Shader {
    name: "conv2d_tiled",
    file: "conv2d_tiled.wgsl",
    source: shader_source!(
        "common.wgsl",
        "conv2d_shape.wgsl",
        "epilogue.wgsl",
        "conv2d_input.wgsl",
        "conv2d_output.wgsl",
        "conv2d_tiled_dx.wgsl",
        "conv2d_tiled.wgsl"
    ),
    own: shader_own!("conv2d_tiled.wgsl"),
    entry_points: &[
        EntryPoint { name: "forward", bindings: &FORWARD_X },
        EntryPoint { name: "relu_backward", bindings: &RELU_BACKWARD },
        EntryPoint { name: "backward", bindings: &BACKWARD_X },
        EntryPoint { name: "backward_weight_partial", bindings: &WEIGHT_PARTIAL_X },
    ],
};

/// The binding tables of `shaders/conv2d_tiled.wgsl` whose forward pass also stores the 2×2
/// max-pool of its output, taking the pool's forward pass (`shaders/conv2d_output_pooled.wgsl`).
/// The engine binds only its `forward`; the others are [`TILED`]'s.
pub static TILED_POOLED: Shader = Shader {
    name: "conv2d_tiled_pooled",
    file: "conv2d_tiled.wgsl",
    source: shader_source!(
        "common.wgsl",
        "conv2d_shape.wgsl",
        "epilogue.wgsl",
        "conv2d_input.wgsl",
        "conv2d_output_pooled.wgsl",
        "conv2d_tiled_dx.wgsl",
        "conv2d_tiled.wgsl"
    ),
    own: shader_own!("conv2d_tiled.wgsl"),
    entry_points: &[
        EntryPoint { name: "forward", bindings: &extended::<7, 1, 8>(FORWARD_X, [read_write(7, "pooled")]) },
        EntryPoint { name: "relu_backward", bindings: &RELU_BACKWARD },
        EntryPoint { name: "backward", bindings: &BACKWARD_X },
        EntryPoint { name: "backward_weight_partial", bindings: &WEIGHT_PARTIAL_X },
    ],
};

/// The binding tables of `shaders/conv2d_tiled.wgsl` as a first layer that reads the dataset
/// through the epoch's order itself (`shaders/dataset.wgsl`, `shaders/conv2d_input_gathered.wgsl`):
/// no gather, no f32 batch. It has no dx.
pub static TILED_GATHERED: Shader = Shader {
    name: "conv2d_tiled_gathered",
    file: "conv2d_tiled.wgsl",
    source: shader_source!(
        "common.wgsl",
        "conv2d_shape.wgsl",
        "epilogue.wgsl",
        "dataset.wgsl",
        "conv2d_input_gathered.wgsl",
        "conv2d_output.wgsl",
        "conv2d_tiled.wgsl"
    ),
    own: shader_own!("conv2d_tiled.wgsl"),
    entry_points: &[
        EntryPoint {
            name: "forward",
            bindings: &extended::<5, 6, 11>(FORWARD, extended::<4, 2, 6>(IMAGE_BINDINGS, LABEL_BINDINGS)),
        },
        EntryPoint { name: "relu_backward", bindings: &RELU_BACKWARD },
        EntryPoint { name: "backward_weight_partial", bindings: &extended::<4, 4, 8>(WEIGHT_PARTIAL, IMAGE_BINDINGS) },
    ],
};

/// The binding tables of `shaders/conv2d_naive.wgsl`.
pub static NAIVE: Shader = Shader {
    name: "conv2d_naive",
    file: "conv2d_naive.wgsl",
    source: shader_source!("common.wgsl", "conv2d_shape.wgsl", "epilogue.wgsl", "conv2d_naive.wgsl"),
    own: shader_own!("conv2d_naive.wgsl"),
    entry_points: &[
        EntryPoint {
            name: "naive_forward",
            bindings: &[uniform(0, "step"), read(2, "x"), read(3, "params"), read_write(4, "y"), uniform(15, "epilogue")],
        },
        EntryPoint {
            name: "naive_backward_input",
            bindings: &[
                uniform(0, "step"),
                read(2, "x"),
                read(3, "params"),
                read_write(4, "y"),
                read(5, "dy"),
                read_write(6, "dx"),
            ],
        },
        EntryPoint {
            name: "naive_backward_weight",
            bindings: &[uniform(0, "step"), read(2, "x"), read_write(4, "y"), read(5, "dy"), read_write(7, "grads")],
        },
        EntryPoint {
            name: "naive_backward_bias",
            bindings: &[uniform(0, "step"), read_write(4, "y"), read(5, "dy"), read_write(7, "grads")],
        },
    ],
};

/// Binds the convolution of `s` (for batches up to `s.batch`) to `gpu`'s buffers, with pipelines
/// specialised for `s`: the tiled kernels, or the naive ones when `gpu.naive`. In training, the
/// tiled weight gradients' partial sums go to `gpu`'s scratch region and their final sums are the
/// pass's `sums`; a dL/d(pre-activation) buffer of its own is made only when the layer after did
/// not apply the ReLU (relu_backward writes it).
pub fn bind(gpu: &GpuLayer<'_>, s: &Conv2dShape) -> Result<LayerPass> {
    if !s.chunk_lanes.is_power_of_two() || !WORKGROUP_SIZE.is_multiple_of(s.chunk_lanes) {
        return Err(Error::invalid(format!(
            "chunk_lanes is {}; it must be a power of two that divides {WORKGROUP_SIZE}",
            s.chunk_lanes
        )));
    }
    if gpu.source.is_some() && (gpu.naive || gpu.backward.is_some_and(|g| g.dx.is_some())) {
        return Err(Error::invalid(String::from(
            "only the tiled kernels of a first convolution read the dataset: the naive ones, and a layer with a dx, \
             read x",
        )));
    }
    if gpu.pooled.is_some() && (gpu.naive || gpu.source.is_some() || !s.out_h.is_multiple_of(2) || !s.out_w.is_multiple_of(2)) {
        return Err(Error::invalid(format!(
            "only the tiled kernels reading x pool their output, and only an even one: {}×{}",
            s.out_h, s.out_w
        )));
    }
    let device = gpu.kernels.device();
    let s = &Conv2dShape {
        mask_dx: gpu.backward.map_or(Mask::NONE, |g| g.dx_mask()),
        dy_masked: gpu.backward.is_some_and(|g| g.dy_masked),
        epilogue: gpu.epilogue.kind,
        partials_offset: gpu.backward.map_or(0, |g| g.scratch_offset),
        ..*s
    };
    let shader = if gpu.naive { &NAIVE } else { &TILED };
    // The kernels that read x (the forward pass, the weight partials) read it from the dataset
    // when the layer is given one, specialised for it.
    let reading = if gpu.source.is_some() { &TILED_GATHERED } else { shader };
    let storing = if gpu.pooled.is_some() { &TILED_POOLED } else { reading };
    let dataset: Vec<_> = gpu.source.iter().flat_map(|source| source.constants()).collect();
    let constants = s.constants();
    let forward_constants = [s.forward_constants(), dataset.clone()].concat();
    let partial_constants = [constants.clone(), dataset].concat();
    let kernel = |shader, entry: &str, constants: &[(&'static str, f64)], args: &[Arg<'_>], grid: Grid| {
        Dispatch::new(device, &gpu.kernels.get(shader, entry, constants)?, args, grid)
    };
    let forward = |entry: &str, args: &[Arg<'_>], grid: Grid| kernel(storing, entry, &forward_constants, args, grid);
    let dispatch = |entry: &str, args: &[Arg<'_>], grid: Grid| kernel(shader, entry, &constants, args, grid);
    let (input, output) = (floats(s.input_len()), floats(s.output_len()));
    let params_end = floats(s.kernel_offset as usize + s.kernel_len()).max(floats(s.bias_offset as usize + s.out_c as usize));
    let step = arg("step", gpu.step, 32);
    let (x, x4, y) = (arg("x", gpu.x, input), arg("x4", gpu.x, input), arg("y", gpu.y, output));
    let batch = s.batch as usize;
    let x_args: Vec<Arg<'_>> = match &gpu.source {
        Some(source) => source.image_args(batch).to_vec(),
        None => vec![x, x4],
    };
    // The layer's kernel and bias, at their offsets.
    let own = floats(s.kernel_len() + s.out_c as usize);
    let (params, params4) =
        (arg("params", gpu.params, params_end).moving(own), arg("params4", gpu.params, params_end).moving(own));
    let blocks = |n: u32| n.div_ceil(4) as u64;
    let mut pass = LayerPass::default();
    let epilogue_buffer = epilogue_uniform(gpu);
    let epilogue = arg("epilogue", &epilogue_buffer, 32);
    if gpu.naive {
        pass.forward.push(forward("naive_forward", &[step, x, params, y, epilogue], Grid::Invocations(s.output_len() as u64))?);
    } else {
        // An invocation's four pixels: a row's, or a pooling window's.
        let pixels = match gpu.pooled {
            None => u64::from(s.batch * s.out_h) * blocks(s.out_w),
            Some(_) => u64::from(s.batch * (s.out_h / 2) * (s.out_w / 2)),
        };
        let mut args = vec![step, params, y, params4, epilogue];
        args.extend_from_slice(&x_args);
        // Reading the dataset, the forward pass copies the batch's labels too.
        args.extend(gpu.source.iter().flat_map(|source| source.label_args(batch)));
        args.extend(gpu.pooled.map(|pooled| arg("pooled", pooled, floats(s.output_len() / 4))));
        pass.forward.push(forward("forward", &args, Grid::Invocations(pixels * blocks(s.out_c)))?);
    }
    pass.buffers.push(epilogue_buffer);
    let Some(grads) = gpu.backward else { return Ok(pass) };
    let dy = arg("dy", grads.dy, output);
    let dx = grads.dx.map(|dx| arg("dx", dx, input));
    let (dy_buffer, dy_masked, scratch) = (grads.dy, grads.dy_masked, grads.scratch);
    let grads = arg("grads", grads.grads, params_end);
    if gpu.naive {
        if let Some(dx) = dx {
            pass.backward.push(dispatch("naive_backward_input", &[step, x, params, y, dy, dx], Grid::Invocations(s.input_len() as u64))?);
        }
        pass.backward.push(dispatch("naive_backward_weight", &[step, x, y, dy, grads], Grid::Invocations(s.kernel_len() as u64))?);
        // One workgroup per filter.
        pass.backward.push(dispatch("naive_backward_bias", &[step, y, dy, grads], Grid::Workgroups(u64::from(s.out_c)))?);
        return Ok(pass);
    }
    // dL/d(pre-activation): dy itself when the layer after masked it or there is no activation,
    // else relu_backward's output, which is read as vec4s: whole vec4s of it.
    let dpre_buffer = if dy_masked || !s.relu {
        None
    } else {
        let buffer = gpu::storage_buffer(device, "conv2d dpre", floats(s.output_len().next_multiple_of(4)))?;
        pass.backward.push(dispatch(
            "relu_backward",
            &[step, y, dy, arg("dpre_out", &buffer, output)],
            Grid::Invocations(s.output_len() as u64),
        )?);
        Some(buffer)
    };
    let dpre_source = dpre_buffer.as_ref().unwrap_or(dy_buffer);
    let (dpre, dpre4) = (arg("dpre", dpre_source, output), arg("dpre4", dpre_source, output));
    let partials = arg("partials", scratch, floats(s.partials_offset as usize + s.partials_len())).moving(floats(s.partials_len()));
    if let Some(dx) = dx {
        // dx and the partial sums in one dispatch: INPUT_WORKGROUPS workgroups, then the rest.
        let workgroups = u64::from(s.input_workgroups()) + u64::from(s.partial_invocations().div_ceil(WORKGROUP_SIZE));
        pass.backward.push(dispatch(
            "backward",
            &[step, x, params, dx, partials, x4, params4, dpre, dpre4],
            Grid::Workgroups(workgroups),
        )?);
    } else {
        let mut args = vec![step, partials, dpre, dpre4];
        args.extend_from_slice(&x_args);
        let grid = Grid::Invocations(u64::from(s.partial_invocations()));
        pass.backward.push(kernel(reading, "backward_weight_partial", &partial_constants, &args, grid)?);
    }
    // Each chunk's partial sums are dkernel's then dbias', per_chunk floats in all.
    let (kernel_len, per_chunk) = (s.kernel_len() as u32, s.kernel_len() as u32 + s.out_c);
    let segment = |dst: u32, len: u32, src: u32| Segment { dst, len, src, chunks: s.chunks, stride: per_chunk };
    pass.sums = vec![
        segment(s.kernel_offset, kernel_len, s.partials_offset),
        segment(s.bias_offset, s.out_c, s.partials_offset + kernel_len),
    ];
    pass.buffers.extend(dpre_buffer);
    Ok(pass)
}

impl HiddenLayer for Conv2d {
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        bind(gpu, &Conv2dShape::for_layer(self, c).tuned(gpu.tuning))
    }

    fn gpu_fusion(&self, c: &Ctx<'_>) -> GpuFusion {
        let [h, w, _] = c.at.output;
        GpuFusion {
            relu_output: self.relu,
            masks_dx: true,
            takes_epilogue: true,
            reads_dataset: true,
            pools_output: h.is_multiple_of(2) && w.is_multiple_of(2),
            ..Default::default()
        }
    }

    fn gpu_scratch_len(&self, c: &Ctx<'_>, tuning: Tuning, naive: bool) -> usize {
        // The naive kernels sum dkernel in one pass.
        if naive {
            0
        } else {
            Conv2dShape::for_layer(self, c).tuned(tuning).partials_len()
        }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast_fusion(&self) -> crate::fast::Fusion {
        // A 3×3 tap reads one pixel of border; the layer's backward starts from dL/d(pre-
        // activation) in a padded buffer, which a next layer may write through the ReLU when the
        // output is relu(pre).
        crate::fast::Fusion { input_pad: 1, dpre_pad: Some(1), relu_output: self.relu, masked_dx: true }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        c: &Ctx<'_>,
        isa: crate::fast::Isa,
        _x: crate::fast::Layout,
        y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        Some(Box::new(fast::ConvPlan::new(&Conv2dShape::for_layer(self, c), isa, y.pad)))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks: the GPU kernels against the reference above.

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
    /// The fused ReLU, or none.
    pub relu: bool,
}

const fn case(
    used_of: [usize; 2],
    input: [usize; 3],
    filters: usize,
    stride: usize,
    first: bool,
    kernel_offset: usize,
) -> ConvCase {
    ConvCase { batch: used_of[1], used: used_of[0], input, filters, stride, first, kernel_offset, relu: true }
}

/// A case without the activation.
const fn linear(case: ConvCase) -> ConvCase {
    ConvCase { relu: false, ..case }
}

/// Odd shapes, partial batches, both strides on even and odd inputs, channel counts that are
/// not multiples of 4 and ones that are (the tiled kernels' vec4 loads), with the kernel at an
/// offset that allows vec4 loads and at one that does not; and without the activation. Those
/// with an even output also pool it (`selftest::hidden_layer`).
pub const CONV_CASES: [ConvCase; 13] = [
    case([3, 3], [5, 6, 3], 4, 1, false, 0),
    case([3, 4], [8, 8, 5], 6, 2, false, 0),
    case([2, 2], [7, 5, 2], 3, 2, true, 0),
    case([2, 2], [32, 32, 3], 16, 1, true, 0),
    case([2, 3], [6, 6, 3], 5, 2, true, 0),
    case([2, 3], [9, 13, 6], 5, 1, false, 0),
    case([2, 2], [33, 31, 2], 3, 2, false, 0),
    case([3, 3], [6, 7, 8], 8, 1, false, 4),
    case([2, 3], [10, 9, 4], 12, 2, false, 8),
    case([2, 2], [6, 5, 8], 8, 1, false, 2),
    case([2, 3], [8, 6, 8], 8, 1, false, 4),
    linear(case([3, 3], [5, 6, 3], 4, 1, false, 0)),
    linear(case([2, 3], [10, 9, 4], 12, 2, false, 8)),
];

/// Every case, tiled and naive, chunked as the trainer chunks on this adapter.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut all = Vec::new();
    for naive in [false, true] {
        for case in &CONV_CASES {
            all.extend(case_checks(ctx, case, naive, Tuning::for_adapter(&ctx.info))?);
        }
    }
    Ok(all)
}

/// One case: forward, and dx / dkernel / dbias from the GPU's own forward output, with the
/// weight gradients chunked for `tuning` (a hardware GPU's chunking can be checked anywhere).
pub fn case_checks(ctx: &GpuContext, case: &ConvCase, naive: bool, tuning: Tuning) -> Result<Vec<Check>> {
    let ConvCase { batch, used, input, filters, stride, first, kernel_offset, relu } = *case;
    let layer = Conv2d { filters, stride, relu };
    let at = LayerAt::place(&layer, 0, "conv2d".into(), input, kernel_offset, 0).map_err(Error::invalid)?;
    let shape = Conv2dShape::for_layer(&layer, &Ctx { at: &at, batch, run: Default::default() }).tuned(tuning);
    let mut name = format!("conv2d {} {input:?}→{filters} stride {stride}, batch {used}/{batch}", if naive { "naive" } else { "tiled" });
    if kernel_offset > 0 {
        name += &format!(", kernel at {kernel_offset}");
    }
    if !relu {
        name += ", no activation";
    }
    if !naive {
        name += &format!(", {} chunk{}", shape.chunks, if shape.chunks == 1 { "" } else { "s" });
        if shape.chunk_lanes > 1 {
            name += &format!(" × {} lanes", shape.chunk_lanes);
        }
    }
    selftest::hidden_layer(
        ctx,
        &HiddenCheck {
            name,
            layer: &layer,
            at: &at,
            batch,
            used,
            first,
            tuning,
            naive,
            run: Default::default(),
            seed: (batch * 131 + input[0] * 17 + filters * 3 + stride + kernel_offset * 7) as u64,
            x: None,
            tolerance: Tolerance { y: (1e-5, 1e-4), dx: (1e-5, 1e-4), grads: (1e-4, 1e-4) },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(shape: &Conv2dShape, name: &str) -> bool {
        shape.constants().iter().find(|(n, _)| *n == name).map(|(_, v)| *v == 1.0).expect("flag is set")
    }

    #[test]
    fn vec4_loads_are_chosen_only_where_rows_start_on_whole_vec4s() {
        let first = Conv2dShape::new(4, [32, 32, 3], 16, 1);
        assert!(!flag(&first, "X_VEC4") && flag(&first, "K_VEC4"));
        let inner = Conv2dShape::new(4, [16, 16, 16], 32, 1);
        assert!(flag(&inner, "X_VEC4") && flag(&inner, "K_VEC4"));
        let odd_filters = Conv2dShape::new(4, [16, 16, 16], 10, 1);
        assert!(flag(&odd_filters, "X_VEC4") && !flag(&odd_filters, "K_VEC4"));
        let unaligned = Conv2dShape { kernel_offset: 6, ..inner };
        assert!(!flag(&unaligned, "K_VEC4"));
        let bias_elsewhere = Conv2dShape { bias_offset: 4610, ..inner };
        assert!(!flag(&bias_elsewhere, "K_VEC4"));
    }

    #[test]
    fn forward_constants_do_not_depend_on_the_backward_neighbours() {
        let alone = Conv2dShape::new(4, [16, 16, 16], 32, 1);
        let fused = Conv2dShape { mask_dx: Mask::RELU, dy_masked: true, partials_offset: 96, ..alone };
        assert_eq!(alone.forward_constants(), fused.forward_constants());
        assert_ne!(alone.constants(), fused.constants());
        // What the forward kernels read still keys them.
        let with_epilogue = Conv2dShape { epilogue: 1, ..alone };
        assert_ne!(alone.forward_constants(), with_epilogue.forward_constants());
    }

    #[test]
    fn the_base_nets_convolutions_pad_as_tensorflow() {
        let model = crate::model::Model::new(&crate::model::Architecture::parse("base").unwrap(), [32, 32, 3]).unwrap();
        let padding = |i: usize| {
            let conv = Conv2d { filters: model.hidden[i].at.output[2], stride: [1, 2][i % 2], relu: true };
            let s = Conv2dShape::for_layer(&conv, &Ctx { at: &model.hidden[i].at, batch: 1, run: Default::default() });
            (s.pad_top, s.pad_left)
        };
        // Stride 1: one pixel each side; stride 2 on an even size: 0 before (and 1 after).
        assert_eq!(padding(0), (1, 1));
        assert_eq!(padding(1), (0, 0));
    }

    #[test]
    fn chunks_cover_every_position_and_shrink_on_a_hardware_gpu() {
        for (input, filters, stride) in [([32, 32, 3], 16, 1), ([32, 32, 16], 16, 2), ([16, 16, 32], 32, 2)] {
            let software = Conv2dShape::new(128, input, filters, stride);
            let hardware = software.for_hardware_gpu();
            for s in [software, hardware] {
                let positions = s.positions();
                assert!(s.chunks as usize * s.chunk_len as usize >= positions);
                assert!((s.chunks as usize - 1) * (s.chunk_len as usize) < positions, "no empty chunk: {s:?}");
            }
            assert_eq!(software.chunk_len as usize, CHUNK_LEN);
            assert_eq!((software.chunk_lanes, hardware.chunk_lanes), (1, GPU_CHUNK_LANES));
            let per_lane = hardware.chunk_len.div_ceil(hardware.chunk_lanes);
            assert!(per_lane.abs_diff(hardware.chunks) <= 2, "balanced: {hardware:?}");
            // A partial batch keeps the chunk length and needs no more chunks.
            let partial = hardware.with_batch(5);
            assert_eq!(partial.chunk_len, hardware.chunk_len);
            assert!(partial.chunks <= hardware.chunks);
        }
    }
}
