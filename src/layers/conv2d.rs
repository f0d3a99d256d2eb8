//! Conv2D: 3×3 kernel, stride 1 or 2, Keras 'same' padding, bias, fused ReLU.
//! Keras: `Conv2D(K, (3, 3), strides=s, padding='same', activation='relu')`.
//!
//! # Shapes
//! x `[N, H, W, C]`, kernel `[3, 3, C, K]`, bias `[K]`, y `[N, OH, OW, K]` with
//! `OH = ceil(H / stride)` and TensorFlow's padding (see [`crate::model::same_padding`]).

use num_traits::Float;

use crate::error::{Error, Result};
use crate::kernel::{shader_module, ComputeKernel, Dispatch, WORKGROUP_SIZE};
use crate::model::{same_padding, Layer};
use crate::shaders;

/// A convolution's sizes and where its tensors live in the flat parameter vector; the one place
/// the output-size arithmetic is done. The GPU kernels take it as pipeline-override constants
/// ([`Conv2dShape::constants`]), so each layer's pipelines are compiled for its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        }
        .with_chunk_len(CHUNK_LEN)
    }

    /// The shape of a model's conv layer for batches of up to `batch` samples.
    pub fn for_layer(layer: &Layer, batch: usize) -> Self {
        let crate::model::LayerSpec::Conv { filters, stride } = layer.spec else {
            panic!("{} is not a convolution", layer.name)
        };
        Conv2dShape {
            kernel_offset: layer.kernel_offset as u32,
            bias_offset: layer.bias_offset as u32,
            ..Self::new(batch, layer.input, filters, stride)
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

    /// The chunking for `adapter`: [`CHUNK_LEN`] on a software adapter, else
    /// [`Conv2dShape::for_hardware_gpu`].
    pub fn for_adapter(&self, adapter: &wgpu::AdapterInfo) -> Self {
        if crate::gpu::is_software(adapter) {
            *self
        } else {
            self.for_hardware_gpu()
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

    /// The `override` constants of `shaders/conv2d.wgsl` for this shape: its extents, and whether
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
        ];
        let flags = [
            ("X_VEC4", self.in_c.is_multiple_of(4)),
            (
                "K_VEC4",
                self.out_c.is_multiple_of(4)
                    && self.kernel_offset.is_multiple_of(4)
                    && self.bias_offset.is_multiple_of(4),
            ),
        ];
        let extents = extents.into_iter().map(|(name, v)| (name, f64::from(v)));
        extents.chain(flags.into_iter().map(|(name, on)| (name, f64::from(u8::from(on))))).collect()
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

/// `y = relu(conv(x, kernel) + bias)`.
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
                    y[((n * out_h + oy) * out_w + ox) * out_c + k] = sum.max(T::zero());
                }
            }
        }
    }
}

/// dL/d(pre-activation): ReLU passes `dy` where the output is positive.
fn dpre<T: Float>(dy: &[T], y: &[T], o: usize) -> T {
    if y[o] > T::zero() {
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
                                sum = sum + dpre(dy, y, o) * kernel[((ky * 3 + kx) * in_c + c) * out_c + k];
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
                    let g = dpre(dy, y, ((n * out_h + oy) * out_w + ox) * out_c + k);
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
// GPU twin.

/// Which implementation of the convolution kernels to record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conv2dVariant {
    /// Register-tiled forward/backward_input and a split dkernel reduction (for training).
    #[default]
    Tiled,
    /// One invocation per element, the math as written: the baseline the tiled ones beat.
    Naive,
}

/// `shaders/conv2d.wgsl`, compiled once per device; [`Conv2d::bind`] builds the pipelines of one
/// shape from it.
#[derive(Clone, Debug)]
pub struct Conv2d {
    module: wgpu::ShaderModule,
}

/// The buffers one convolution works on (see the binding table in `shaders/conv2d.wgsl`). The tiled
/// kernels also read `x`, `params` and `dpre` as vec4s, so those need at least 16 bytes.
pub struct Conv2dBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    /// None for the first layer, whose input needs no gradient.
    pub dx: Option<&'a wgpu::Buffer>,
    pub grads: &'a wgpu::Buffer,
    /// Scratch shaped like y (tiled variant).
    pub dpre: &'a wgpu::Buffer,
    /// Scratch of at least [`Conv2dShape::partials_len`] floats (tiled variant); layers may share it.
    pub partials: &'a wgpu::Buffer,
}

/// One convolution bound to its buffers: record its forward or backward passes.
#[derive(Debug)]
pub struct Conv2dPass {
    variant: Conv2dVariant,
    shape: Conv2dShape,
    /// Dispatches in recording order for the chosen variant.
    forward: Vec<Dispatch>,
    backward: Vec<Dispatch>,
}

impl Conv2d {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Ok(Conv2d { module: shader_module(device, "conv2d.wgsl", shaders::CONV2D)? })
    }

    /// Builds the pipelines of a convolution of `shape` (for batches up to `shape.batch`) and
    /// binds them to `b`.
    pub fn bind(
        &self,
        device: &wgpu::Device,
        shape: &Conv2dShape,
        b: &Conv2dBuffers<'_>,
        variant: Conv2dVariant,
    ) -> Result<Conv2dPass> {
        for (name, buffer) in [("x", b.x), ("params", b.params), ("dpre", b.dpre)] {
            if buffer.size() < 16 {
                return Err(Error::invalid(format!(
                    "the convolution's {name} buffer holds {} bytes; it needs at least 16 (one vec4)",
                    buffer.size()
                )));
            }
        }
        if !shape.chunk_lanes.is_power_of_two() || !WORKGROUP_SIZE.is_multiple_of(shape.chunk_lanes) {
            return Err(Error::invalid(format!(
                "chunk_lanes is {}; it must be a power of two that divides {WORKGROUP_SIZE}",
                shape.chunk_lanes
            )));
        }
        let constants = shape.constants();
        let kernel = |name: &str| ComputeKernel::specialized(device, &self.module, name, &constants);
        // Most kernels index invocations on the 1-D grid of `linear_index`.
        let covering = |name: &str, buffers: &[(u32, &wgpu::Buffer)], invocations: usize| -> Result<Dispatch> {
            Ok(Dispatch::covering(device, &kernel(name)?, buffers, invocations as u64))
        };
        let s = shape;
        let blocks = |n: u32| n.div_ceil(4) as usize;
        let step = (0, b.step);
        let pixels = |h: u32, w: u32| (s.batch * h) as usize * blocks(w);
        let (mut forward, mut backward) = (Vec::new(), Vec::new());
        match variant {
            Conv2dVariant::Tiled => {
                forward.push(covering(
                    "forward",
                    &[step, (2, b.x), (3, b.params), (4, b.y), (10, b.x), (11, b.params)],
                    pixels(s.out_h, s.out_w) * blocks(s.out_c),
                )?);
                backward.push(covering("relu_backward", &[step, (4, b.y), (5, b.dy), (8, b.dpre)], s.output_len())?);
                if let Some(dx) = b.dx {
                    // Column slots of same-phase blocks: stride · ceil(W / (4 · stride)) per row.
                    let slots = (s.stride * s.in_w.div_ceil(4 * s.stride)) as usize;
                    backward.push(covering(
                        "backward_input",
                        &[step, (3, b.params), (6, dx), (11, b.params), (12, b.dpre), (13, b.dpre)],
                        (s.batch * s.in_h) as usize * slots * blocks(s.in_c),
                    )?);
                }
                let teams = s.chunks as usize * 9 * blocks(s.in_c) * blocks(s.out_c);
                backward.push(covering(
                    "backward_weight_partial",
                    &[step, (2, b.x), (9, b.partials), (10, b.x), (12, b.dpre), (13, b.dpre)],
                    teams * s.chunk_lanes as usize,
                )?);
                backward.push(covering(
                    "backward_weight_reduce",
                    &[(7, b.grads), (9, b.partials)],
                    s.kernel_len() + s.out_c as usize,
                )?);
            }
            Conv2dVariant::Naive => {
                forward.push(covering("naive_forward", &[step, (2, b.x), (3, b.params), (4, b.y)], s.output_len())?);
                if let Some(dx) = b.dx {
                    backward.push(covering(
                        "naive_backward_input",
                        &[step, (3, b.params), (4, b.y), (5, b.dy), (6, dx)],
                        s.input_len(),
                    )?);
                }
                backward.push(covering(
                    "naive_backward_weight",
                    &[step, (2, b.x), (4, b.y), (5, b.dy), (7, b.grads)],
                    s.kernel_len(),
                )?);
                // One workgroup per filter.
                backward.push(Dispatch::new(
                    device,
                    &kernel("naive_backward_bias")?,
                    &[step, (4, b.y), (5, b.dy), (7, b.grads)],
                    [s.out_c, 1, 1],
                ));
            }
        }
        Ok(Conv2dPass { variant, shape: *shape, forward, backward })
    }
}

impl Conv2dPass {
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for dispatch in &self.forward {
            dispatch.record(pass);
        }
    }

    /// dx (unless this is the first layer), dkernel and dbias.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for dispatch in &self.backward {
            dispatch.record(pass);
        }
    }

    /// The backward dispatches one by one (for per-kernel profiling; each is named by its entry point).
    pub fn backward_dispatches(&self) -> &[Dispatch] {
        &self.backward
    }

    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }

    pub fn variant(&self) -> Conv2dVariant {
        self.variant
    }

    /// Dispatches per training step (forward + backward).
    pub fn dispatches(&self) -> usize {
        self.forward.len() + self.backward.len()
    }
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
