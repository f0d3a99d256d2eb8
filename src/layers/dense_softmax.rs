//! Flatten + Dense + softmax + categorical cross-entropy, fused, with Keras' L1 kernel
//! regulariser. Keras: `Flatten()`, `Dense(K, activation='softmax', kernel_regularizer=l1(λ))`,
//! `loss='categorical_crossentropy'` (which Keras computes from the logits when the softmax is
//! the layer's own activation, as here).
//!
//! # Shapes
//! x `[N, F]` (the NHWC tensor, flattened for free), kernel `[F, K]`, bias `[K]`, probs and
//! dlogits `[N, K]`. The loss of a batch is `mean_n(CE_n) + λ·Σ|kernel|`, so
//! `dlogits = (softmax − one_hot) / N` and `dkernel += λ·sign(kernel)`.

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use crate::error::Result;
use crate::gpu::uniform_buffer;
use crate::kernel::{shader_module, workgroup_grid, ComputeKernel, Dispatch};
use crate::model::Layer;
use crate::shaders;

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
    pub _pad: [u32; 2],
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
            _pad: [0; 2],
        }
    }

    /// A model's dense layer for batches of up to `batch` samples.
    pub fn for_layer(layer: &Layer, batch: usize, l1: f32) -> Self {
        DenseShape {
            kernel_offset: layer.kernel_offset as u32,
            bias_offset: layer.bias_offset as u32,
            ..Self::new(batch, layer.input_len(), layer.output_len(), l1)
        }
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        DenseShape { batch: batch as u32, ..*self }
    }

    pub fn kernel_len(&self) -> usize {
        (self.features * self.classes) as usize
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
    let (batch, features, classes) = (s.batch as usize, s.features as usize, s.classes as usize);
    let inverse_batch = T::one() / T::from(batch).expect("batch size converts to T");
    for n in 0..batch {
        let logits = &mut probs[n * classes..][..classes];
        for (j, logit) in logits.iter_mut().enumerate() {
            let mut sum = bias[j];
            for f in 0..features {
                sum = sum + x[n * features + f] * kernel[f * classes + j];
            }
            *logit = sum;
        }
        let dlogits = &mut dlogits[n * classes..][..classes];
        (losses[n], predicted[n]) = softmax_cross_entropy(logits, dlogits, labels[n] as usize, inverse_batch);
    }
}

/// One sample's softmax + cross-entropy from its `logits`, which become the probabilities in
/// place: returns (loss = logsumexp − the label's logit, first arg-max) and writes
/// `dlogits = (probs − one_hot) · inverse_batch`. Shared by the reference and the fast backend.
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
            let w = kernel[f * classes + j];
            let sign = if w > T::zero() {
                T::one()
            } else if w < T::zero() {
                -T::one()
            } else {
                T::zero()
            };
            dkernel[f * classes + j] = sum + l1 * sign;
        }
    }
    for j in 0..classes {
        dbias[j] = (0..batch).fold(T::zero(), |sum, n| sum + dlogits[n * classes + j]);
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

/// The pipelines of `shaders/dense_softmax.wgsl`.
#[derive(Clone, Debug)]
pub struct DenseSoftmax {
    logits: ComputeKernel,
    softmax_cross_entropy: ComputeKernel,
    backward_weight: ComputeKernel,
    backward_input: ComputeKernel,
    l1_penalty: ComputeKernel,
}

/// The buffers the dense layer works on (see the binding table in the shader).
pub struct DenseBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub labels: &'a wgpu::Buffer,
    pub probs: &'a wgpu::Buffer,
    pub dlogits: &'a wgpu::Buffer,
    pub metrics: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub dx: &'a wgpu::Buffer,
    pub penalties: &'a wgpu::Buffer,
}

/// The dense layer bound to its buffers.
#[derive(Debug)]
pub struct DenseSoftmaxPass {
    _shape_buffer: wgpu::Buffer,
    logits: Dispatch,
    softmax_cross_entropy: Dispatch,
    backward_weight: Dispatch,
    backward_input: Dispatch,
    l1_penalty: Dispatch,
}

impl DenseSoftmax {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "dense_softmax.wgsl", shaders::DENSE_SOFTMAX)?;
        Ok(DenseSoftmax {
            logits: ComputeKernel::new(device, &module, "logits")?,
            softmax_cross_entropy: ComputeKernel::new(device, &module, "softmax_cross_entropy")?,
            backward_weight: ComputeKernel::new(device, &module, "backward_weight")?,
            backward_input: ComputeKernel::new(device, &module, "backward_input")?,
            l1_penalty: ComputeKernel::new(device, &module, "l1_penalty")?,
        })
    }

    pub fn bind(&self, device: &wgpu::Device, shape: &DenseShape, b: &DenseBuffers<'_>) -> DenseSoftmaxPass {
        let shape_buffer = uniform_buffer(device, "dense shape", shape);
        let (step, shape_binding) = ((0, b.step), (1, &shape_buffer));
        let s = shape;
        let max = device.limits().max_compute_workgroups_per_dimension;
        // One workgroup per logit.
        let logit_groups = workgroup_grid(u64::from(s.batch * s.classes), max);
        DenseSoftmaxPass {
            logits: Dispatch::new(
                device,
                &self.logits,
                &[step, shape_binding, (2, b.x), (3, b.params), (5, b.probs)],
                logit_groups,
            ),
            softmax_cross_entropy: Dispatch::covering(
                device,
                &self.softmax_cross_entropy,
                &[step, shape_binding, (4, b.labels), (5, b.probs), (6, b.dlogits), (7, b.metrics)],
                u64::from(s.batch),
            ),
            backward_weight: Dispatch::covering(
                device,
                &self.backward_weight,
                &[step, shape_binding, (2, b.x), (3, b.params), (6, b.dlogits), (8, b.grads)],
                s.kernel_len() as u64 + u64::from(s.classes),
            ),
            backward_input: Dispatch::covering(
                device,
                &self.backward_input,
                &[step, shape_binding, (3, b.params), (6, b.dlogits), (9, b.dx)],
                u64::from(s.batch * s.features),
            ),
            // One workgroup reduces the whole kernel.
            l1_penalty: Dispatch::new(
                device,
                &self.l1_penalty,
                &[step, shape_binding, (3, b.params), (10, b.penalties)],
                [1, 1, 1],
            ),
            _shape_buffer: shape_buffer,
        }
    }
}

impl DenseSoftmaxPass {
    /// Logits, softmax, per-sample loss and predicted class, and dlogits (needed only in training).
    pub fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.logits.record(pass);
        self.softmax_cross_entropy.record(pass);
    }

    /// `λ·Σ|kernel|` into `penalties[step.penalty_slot]`.
    pub fn record_penalty(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.l1_penalty.record(pass);
    }

    pub fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.backward_weight.record(pass);
        self.backward_input.record(pass);
    }
}
