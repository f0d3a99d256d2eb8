//! MaxPooling2D: 2×2 window, stride 2, 'valid' padding. Keras: `MaxPooling2D((2, 2))`.
//!
//! # Shapes
//! x `[N, H, W, C]`, y `[N, H/2, W/2, C]` (floor). The gradient goes to the first maximum of
//! each window (row-major), as TensorFlow's.

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::ActivationBuffers;
use crate::error::Result;
use crate::gpu::uniform_buffer;
use crate::kernel::{shader_module, ComputeKernel, Dispatch};
use crate::shaders;

/// Mirror of `PoolShape` in `shaders/maxpool2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct PoolShape {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub channels: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub _pad: [u32; 2],
}

impl PoolShape {
    pub fn new(batch: usize, input: [usize; 3]) -> Self {
        let [h, w, c] = input.map(|v| v as u32);
        PoolShape { batch: batch as u32, in_h: h, in_w: w, channels: c, out_h: h / 2, out_w: w / 2, _pad: [0; 2] }
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        PoolShape { batch: batch as u32, ..*self }
    }

    pub fn input_len(&self) -> usize {
        (self.batch * self.in_h * self.in_w * self.channels) as usize
    }

    pub fn output_len(&self) -> usize {
        (self.batch * self.out_h * self.out_w * self.channels) as usize
    }
}

/// Index into x of the first maximum of window (n, oy, ox, c).
fn argmax<T: Float>(x: &[T], s: &PoolShape, n: usize, oy: usize, ox: usize, c: usize) -> usize {
    let (in_h, in_w, channels) = (s.in_h as usize, s.in_w as usize, s.channels as usize);
    let mut best = ((n * in_h + 2 * oy) * in_w + 2 * ox) * channels + c;
    for t in 1..4 {
        let i = ((n * in_h + 2 * oy + t / 2) * in_w + 2 * ox + t % 2) * channels + c;
        if x[i] > x[best] {
            best = i;
        }
    }
    best
}

pub fn forward<T: Float>(y: &mut [T], x: &[T], s: &PoolShape) {
    let (out_h, out_w, channels) = (s.out_h as usize, s.out_w as usize, s.channels as usize);
    for n in 0..s.batch as usize {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for c in 0..channels {
                    y[((n * out_h + oy) * out_w + ox) * channels + c] = x[argmax(x, s, n, oy, ox, c)];
                }
            }
        }
    }
}

pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], x: &[T], s: &PoolShape) {
    let (out_h, out_w, channels) = (s.out_h as usize, s.out_w as usize, s.channels as usize);
    dx[..s.input_len()].fill(T::zero());
    for n in 0..s.batch as usize {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for c in 0..channels {
                    dx[argmax(x, s, n, oy, ox, c)] = dy[((n * out_h + oy) * out_w + ox) * channels + c];
                }
            }
        }
    }
}

/// The pipelines of `shaders/maxpool2d.wgsl`.
#[derive(Clone, Debug)]
pub struct MaxPool2d {
    forward: ComputeKernel,
    backward_input: ComputeKernel,
}

/// A pooling layer bound to its buffers.
#[derive(Debug)]
pub struct MaxPool2dPass {
    _shape_buffer: wgpu::Buffer,
    forward: Dispatch,
    backward_input: Dispatch,
}

impl MaxPool2d {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "maxpool2d.wgsl", shaders::MAXPOOL2D)?;
        Ok(MaxPool2d {
            forward: ComputeKernel::new(device, &module, "forward")?,
            backward_input: ComputeKernel::new(device, &module, "backward_input")?,
        })
    }

    pub fn bind(&self, device: &wgpu::Device, shape: &PoolShape, b: &ActivationBuffers<'_>) -> MaxPool2dPass {
        let shape_buffer = uniform_buffer(device, "maxpool2d shape", shape);
        let (step, shape_binding) = ((0, b.step), (1, &shape_buffer));
        // forward: one invocation per output element; backward: one per input element (a gather).
        let forward = Dispatch::covering(
            device,
            &self.forward,
            &[step, shape_binding, (2, b.x), (3, b.y)],
            shape.output_len() as u64,
        );
        let backward_input = Dispatch::covering(
            device,
            &self.backward_input,
            &[step, shape_binding, (2, b.x), (4, b.dy), (5, b.dx)],
            shape.input_len() as u64,
        );
        MaxPool2dPass { _shape_buffer: shape_buffer, forward, backward_input }
    }
}

impl MaxPool2dPass {
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.record(pass);
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.backward_input.record(pass);
    }
}
