//! The network's layers, each in one file with its forward and backward passes side by side:
//! the shape struct that owns the size arithmetic, the plain-loop CPU reference (generic over
//! f32/f64 so that finite differences can run in f64), and the GPU twin that builds its pipelines
//! from `shaders/<layer>.wgsl` and records its dispatches.
//!
//! # Conventions
//! - Names: `forward`, `backward_input` (dL/dx), `backward_weight` (dL/dW, dL/db), identical on
//!   the CPU and GPU sides; arguments go outputs first, then inputs, then the shape.
//! - Gradients are **overwritten**, never accumulated: every backward kernel is a gather, one
//!   invocation per gradient element it writes. There are no float atomics (WGSL has none), so
//!   a seeded run gives the same bits every time on the same device.
//! - Tensors are NHWC; the loss gradient fed back is that of the **batch mean** loss.
//! - GPU bindings: 0 = the per-step uniform ([`StepParams`]), 1 = the layer's shape uniform,
//!   then storage buffers in the order each shader lists them. Parameters and their gradients
//!   live in one flat buffer each; the shape holds the offsets of the layer's tensors.
//! - The convolution, most of a step's work, takes its shape as pipeline-override constants
//!   instead of a uniform: each layer gets pipelines compiled for its sizes
//!   ([`conv2d::Conv2dShape::constants`]).

pub mod adam;
pub mod conv2d;
pub mod dense_softmax;
pub mod dropout;
pub mod gather;
pub mod maxpool2d;

use bytemuck::{Pod, Zeroable};

/// The buffers of a layer without parameters (max pooling, dropout; see the binding table in its
/// shader): the per-step uniform, its input and output, and their gradients.
pub struct ActivationBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    pub dx: &'a wgpu::Buffer,
}

/// Mirror of `Step` in `shaders/common.wgsl`: what changes between training steps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct StepParams {
    pub batch_size: u32,
    pub batch_start: u32,
    pub step: u32,
    pub training: u32,
    pub seed: u32,
    pub adam_alpha: f32,
    pub penalty_slot: u32,
    pub _pad: u32,
}
