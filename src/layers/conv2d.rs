//! Conv2D: 3×3 kernel, stride 1 or 2, Keras 'same' padding, bias, fused ReLU.
//! Keras: `Conv2D(K, (3, 3), strides=s, padding='same', activation='relu')`.
//!
//! # Shapes
//! x `[N, H, W, C]`, kernel `[3, 3, C, K]`, bias `[K]`, y `[N, OH, OW, K]` with
//! `OH = ceil(H / stride)` and TensorFlow's padding (see [`crate::model::same_padding`]).

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::uniform_buffer;
use crate::error::Result;
use crate::kernel::{grid_for, shader_module, ComputeKernel};
use crate::model::{same_padding, Layer};
use crate::shaders;

/// A convolution's sizes and where its tensors live in the flat parameter vector. Mirror of
/// `Conv2dShape` in `shaders/conv2d.wgsl`; the one place the output-size arithmetic is done.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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
}

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
        }
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
        Conv2dShape { batch: batch as u32, ..*self }
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

/// The four pipelines of `shaders/conv2d.wgsl`, built once per device.
#[derive(Clone, Debug)]
pub struct Conv2d {
    forward: ComputeKernel,
    backward_input: ComputeKernel,
    backward_weight: ComputeKernel,
    backward_bias: ComputeKernel,
}

/// The buffers one convolution works on (see the binding table in `shaders/conv2d.wgsl`).
pub struct Conv2dBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    /// None for the first layer, whose input needs no gradient.
    pub dx: Option<&'a wgpu::Buffer>,
    pub grads: &'a wgpu::Buffer,
}

/// One convolution bound to its buffers: record its forward or backward passes.
#[derive(Debug)]
pub struct Conv2dPass {
    kernels: Conv2d,
    shape: Conv2dShape,
    _shape_buffer: wgpu::Buffer,
    forward: wgpu::BindGroup,
    backward_input: Option<wgpu::BindGroup>,
    backward_weight: wgpu::BindGroup,
    backward_bias: wgpu::BindGroup,
    max_groups: u32,
}

impl Conv2d {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "conv2d.wgsl", shaders::CONV2D)?;
        Ok(Conv2d {
            forward: ComputeKernel::new(device, &module, "forward")?,
            backward_input: ComputeKernel::new(device, &module, "backward_input")?,
            backward_weight: ComputeKernel::new(device, &module, "backward_weight")?,
            backward_bias: ComputeKernel::new(device, &module, "backward_bias")?,
        })
    }

    /// Binds a convolution of `shape` (for batches up to `shape.batch`) to `b`.
    pub fn bind(&self, device: &wgpu::Device, shape: &Conv2dShape, b: &Conv2dBuffers<'_>) -> Conv2dPass {
        let shape_buffer = uniform_buffer(device, "conv2d shape", shape);
        let step = (0, b.step);
        let shape_binding = (1, &shape_buffer);
        let forward = self.forward.bind(device, &[step, shape_binding, (2, b.x), (3, b.params), (4, b.y)]);
        let backward_input = b.dx.map(|dx| {
            self.backward_input.bind(device, &[step, shape_binding, (3, b.params), (4, b.y), (5, b.dy), (6, dx)])
        });
        let backward_weight =
            self.backward_weight.bind(device, &[step, shape_binding, (2, b.x), (4, b.y), (5, b.dy), (7, b.grads)]);
        let backward_bias = self.backward_bias.bind(device, &[step, shape_binding, (4, b.y), (5, b.dy), (7, b.grads)]);
        Conv2dPass {
            kernels: self.clone(),
            shape: *shape,
            _shape_buffer: shape_buffer,
            forward,
            backward_input,
            backward_weight,
            backward_bias,
            max_groups: device.limits().max_compute_workgroups_per_dimension,
        }
    }
}

impl Conv2dPass {
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        let grid = grid_for(self.shape.output_len() as u64, self.max_groups);
        self.kernels.forward.dispatch(pass, &self.forward, grid);
    }

    /// dx (unless this is the first layer), dkernel and dbias.
    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(bind_group) = &self.backward_input {
            let grid = grid_for(self.shape.input_len() as u64, self.max_groups);
            self.kernels.backward_input.dispatch(pass, bind_group, grid);
        }
        let grid = grid_for(self.shape.kernel_len() as u64, self.max_groups);
        self.kernels.backward_weight.dispatch(pass, &self.backward_weight, grid);
        self.kernels.backward_bias.dispatch(pass, &self.backward_bias, [self.shape.out_c, 1, 1]);
    }

    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }
}
