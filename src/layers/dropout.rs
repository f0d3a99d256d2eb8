//! Inverted dropout: in training each element is kept with probability `1 − rate` and scaled by
//! `1 / (1 − rate)`; at inference it passes unchanged. Keras: `Dropout(rate)`.
//!
//! The mask is a counter-based hash of (seed, step, layer, element index) — see
//! [`crate::rng::uniform_at`] — so a run is reproducible, nothing is stored between the forward
//! and backward passes, and the CPU reference draws the very same mask as the GPU.

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::ActivationBuffers;
use crate::error::Result;
use crate::gpu::uniform_buffer;
use crate::kernel::{shader_module, ComputeKernel, Dispatch};
use crate::rng::{dropout_key, uniform_at};
use crate::shaders;

/// Mirror of `DropoutShape` in `shaders/dropout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DropoutShape {
    pub batch: u32,
    pub sample_len: u32,
    pub layer: u32,
    pub rate: f32,
    pub scale: f32,
    pub _pad: [u32; 3],
}

impl DropoutShape {
    pub fn new(batch: usize, sample_len: usize, layer: usize, rate: f32) -> Self {
        DropoutShape {
            batch: batch as u32,
            sample_len: sample_len as u32,
            layer: layer as u32,
            rate,
            scale: (1.0 / (1.0 - f64::from(rate))) as f32,
            _pad: [0; 3],
        }
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        DropoutShape { batch: batch as u32, ..*self }
    }

    pub fn len(&self) -> usize {
        (self.batch * self.sample_len) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What element `i` is multiplied by in training step `step` of a run seeded with `seed`.
    pub fn factor(&self, seed: u32, step: u32, i: usize) -> f32 {
        let keep = uniform_at(dropout_key(seed, step, self.layer), i as u32) >= self.rate;
        if keep {
            self.scale
        } else {
            0.0
        }
    }
}

/// `y = x · mask / (1 − rate)` in training (`training = Some((seed, step))`), `y = x` otherwise.
pub fn forward<T: Float>(y: &mut [T], x: &[T], training: Option<(u32, u32)>, s: &DropoutShape) {
    for i in 0..s.len() {
        y[i] = match training {
            Some((seed, step)) => x[i] * T::from(s.factor(seed, step, i)).expect("f32 converts to T"),
            None => x[i],
        };
    }
}

/// `dx = dy · mask / (1 − rate)`: the same mask as the forward pass of that step.
pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], training: Option<(u32, u32)>, s: &DropoutShape) {
    forward(dx, dy, training, s)
}

/// The pipelines of `shaders/dropout.wgsl`.
#[derive(Clone, Debug)]
pub struct Dropout {
    forward: ComputeKernel,
    backward_input: ComputeKernel,
}

/// A dropout layer bound to its buffers.
#[derive(Debug)]
pub struct DropoutPass {
    _shape_buffer: wgpu::Buffer,
    forward: Dispatch,
    backward_input: Dispatch,
}

impl Dropout {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "dropout.wgsl", shaders::DROPOUT)?;
        Ok(Dropout {
            forward: ComputeKernel::new(device, &module, "forward")?,
            backward_input: ComputeKernel::new(device, &module, "backward_input")?,
        })
    }

    pub fn bind(&self, device: &wgpu::Device, shape: &DropoutShape, b: &ActivationBuffers<'_>) -> DropoutPass {
        let shape_buffer = uniform_buffer(device, "dropout shape", shape);
        let (step, shape_binding) = ((0, b.step), (1, &shape_buffer));
        let len = shape.len() as u64;
        let forward = Dispatch::covering(device, &self.forward, &[step, shape_binding, (2, b.x), (3, b.y)], len);
        let backward_input =
            Dispatch::covering(device, &self.backward_input, &[step, shape_binding, (4, b.dy), (5, b.dx)], len);
        DropoutPass { _shape_buffer: shape_buffer, forward, backward_input }
    }
}

impl DropoutPass {
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.forward.record(pass);
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.backward_input.record(pass);
    }
}
