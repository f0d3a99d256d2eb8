//! Adam, exactly as Keras 3's `keras.optimizers.Adam` (lr 1e-3, β₁ 0.9, β₂ 0.999, ε 1e-7):
//! ```text
//! α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)          (t = 1, 2, ... ; on the host, in f64)
//! m ← m + (g − m)·(1 − β₁)
//! v ← v + (g² − v)·(1 − β₂)
//! w ← w − α·m / (√v + ε)
//! ```
//! One dispatch updates every parameter: they share one flat buffer.

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use crate::error::Result;
use crate::gpu::uniform_buffer;
use crate::kernel::{shader_module, ComputeKernel, Dispatch};
use crate::shaders;

/// Adam's hyper-parameters; `Default` is Keras'.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }
    }
}

impl AdamConfig {
    /// The bias-corrected step size of update `t` (1-based).
    pub fn alpha(&self, t: u64) -> f32 {
        let t = t as f64;
        (self.learning_rate * (1.0 - self.beta2.powf(t)).sqrt() / (1.0 - self.beta1.powf(t))) as f32
    }

    pub fn shape(&self, count: usize) -> AdamShape {
        AdamShape {
            count: count as u32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            epsilon: self.epsilon as f32,
        }
    }
}

/// Mirror of `AdamShape` in `shaders/adam.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamShape {
    pub count: u32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub epsilon: f32,
}

/// One Adam update of `params` from `grads`, in the shader's order of operations.
pub fn update<T: Float>(params: &mut [T], m: &mut [T], v: &mut [T], grads: &[T], alpha: f32, s: &AdamShape) {
    let cast = |value: f32| T::from(value).expect("f32 converts to T");
    let (b1, b2, epsilon, alpha) = (cast(s.one_minus_beta1), cast(s.one_minus_beta2), cast(s.epsilon), cast(alpha));
    for i in 0..s.count as usize {
        let g = grads[i];
        m[i] = m[i] + (g - m[i]) * b1;
        v[i] = v[i] + (g * g - v[i]) * b2;
        params[i] = params[i] - (m[i] * alpha) / (v[i].sqrt() + epsilon);
    }
}

/// The pipeline of `shaders/adam.wgsl`.
#[derive(Clone, Debug)]
pub struct Adam {
    update: ComputeKernel,
}

/// The buffers Adam works on (see the binding table in the shader).
pub struct AdamBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub m: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
}

/// Adam bound to the parameter, gradient and moment buffers.
#[derive(Debug)]
pub struct AdamPass {
    _shape_buffer: wgpu::Buffer,
    update: Dispatch,
}

impl Adam {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "adam.wgsl", shaders::ADAM)?;
        Ok(Adam { update: ComputeKernel::new(device, &module, "update")? })
    }

    pub fn bind(&self, device: &wgpu::Device, shape: &AdamShape, b: &AdamBuffers<'_>) -> AdamPass {
        let shape_buffer = uniform_buffer(device, "adam shape", shape);
        let buffers = [(0, b.step), (1, &shape_buffer), (2, b.params), (3, b.grads), (4, b.m), (5, b.v)];
        let update = Dispatch::covering(device, &self.update, &buffers, u64::from(shape.count));
        AdamPass { _shape_buffer: shape_buffer, update }
    }
}

impl AdamPass {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.update.record(pass);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_adam_steps_match_keras_by_hand() {
        // With g constant, after step 1: m = 0.1·g, v = 0.001·g², α = lr·√0.001/0.1, so
        // w moves by α·m/(√v + ε) = lr·g/(|g| + ε/√0.001·...) ≈ lr·sign(g): Adam's first step is lr.
        let config = AdamConfig::default();
        let shape = config.shape(2);
        let (mut w, mut m, mut v) = (vec![1.0f64, -2.0], vec![0.0; 2], vec![0.0; 2]);
        update(&mut w, &mut m, &mut v, &[0.5, -4.0], config.alpha(1), &shape);
        assert!((w[0] - (1.0 - 1e-3)).abs() < 1e-8, "{}", w[0]);
        assert!((w[1] - (-2.0 + 1e-3)).abs() < 1e-8, "{}", w[1]);
        assert!((m[0] - 0.05).abs() < 1e-8 && (v[1] - 0.016).abs() < 1e-7, "{m:?} {v:?}");
        // α for t = 2: 1e-3·√(1 − 0.999²)/(1 − 0.9²) = 1e-3·0.044710/0.19 = 2.3531e-4.
        assert!((config.alpha(2) - 2.3531e-4).abs() < 1e-8);
    }
}
