//! Flatten + Dense + softmax + cross-entropy (+ L1 on the kernel) — fast. The math of
//! [`super`]; the three products go through the register-tiled kernels,
//! the softmax itself (a few exponentials per sample) is the reference's scalar code.
//!
//! # Shapes
//! x `[N, F]` plain (the NHWC tensor, flattened for free), kernel `[F, K]`, bias `[K]`, probs and
//! dlogits `[N, K]`.
//! - logits `= x·W + b`: tiles of samples × classes (classes in the vector lanes);
//! - `dW = xᵀ·dlogits + λ·sign(W)`: tiles of 24 kernel rows, streamed over the batch;
//! - `dx = dlogits·Wᵀ`: tiles of samples × features, W transposed once per call.

use crate::fast::block::{dot_tile, groups, outer_tile, Dot, Outer, Tap, Tiles};
use crate::fast::split;
use crate::fast::simd::{multiversion, Isa};
use crate::fast::MAX_LANES;
use super::{l1_penalty, softmax_cross_entropy, DenseShape};
use crate::fast::FastHead;
use crate::layers::HeadOutputs;

/// The dense layer's packed-weight scratch, for batches of up to `shape.batch`.
#[derive(Clone, Debug)]
pub struct DensePlan {
    pub shape: DenseShape,
    pub isa: Isa,
    /// The kernel `[F, K']` (K' = K rounded up to whole vectors, zero-filled) and the bias.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// The kernel transposed, `[K, F']`.
    transposed: Vec<f32>,
}

impl DensePlan {
    pub fn new(shape: &DenseShape, isa: Isa) -> Self {
        let (f, k) = (shape.features as usize, shape.classes as usize);
        let round = |v: usize| v.div_ceil(MAX_LANES) * MAX_LANES;
        DensePlan {
            shape: *shape,
            isa,
            weights: vec![0.0; f * round(k)],
            bias: vec![0.0; round(k)],
            transposed: vec![0.0; k * round(f)],
        }
    }

    fn check(&self, s: &DenseShape) -> (usize, usize, usize) {
        assert!(
            s.batch <= self.shape.batch && *s == self.shape.with_batch(s.batch as usize),
            "this dense plan was built for {:?}, not {s:?}",
            self.shape
        );
        (s.batch as usize, s.features as usize, s.classes as usize)
    }

    /// Floats of scratch this plan holds (for the allocation tests).
    pub fn scratch_capacity(&self) -> usize {
        self.weights.capacity() + self.bias.capacity() + self.transposed.capacity()
    }
}

/// Per sample: `probs = softmax(x·kernel + bias)`, `losses = −log probs[label]`, `predicted` =
/// the first arg-max, `dlogits = (probs − one_hot) / N`; as the reference.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    probs: &mut [f32],
    dlogits: &mut [f32],
    losses: &mut [f32],
    predicted: &mut [u32],
    x: &[f32],
    kernel: &[f32],
    bias: &[f32],
    labels: &[u32],
    s: &DenseShape,
    plan: &mut DensePlan,
) {
    plan.pack(kernel, bias);
    forward_part(probs, dlogits, losses, predicted, x, labels, s.batch as usize, s, plan);
}

/// [`forward`] on `s.batch` samples that are part of a batch of `mean_over` (the loss is that
/// batch's mean, so `dlogits = (probs − one_hot) / mean_over`), with the weights packed by
/// [`DensePlan::pack`].
#[allow(clippy::too_many_arguments)]
pub fn forward_part(
    probs: &mut [f32],
    dlogits: &mut [f32],
    losses: &mut [f32],
    predicted: &mut [u32],
    x: &[f32],
    labels: &[u32],
    mean_over: usize,
    s: &DenseShape,
    plan: &DensePlan,
) {
    let (batch, features, classes) = plan.check(s);
    assert!(probs.len() >= batch * classes && dlogits.len() >= batch * classes, "dense outputs too short");
    assert!(losses.len() >= batch && predicted.len() >= batch && labels.len() >= batch, "dense per-sample buffers");
    assert!(x.len() >= batch * features, "dense input too short");
    forward_linear(probs, x, s, plan);
    let inverse_batch = 1.0 / mean_over as f32;
    for n in 0..batch {
        let logits = &mut probs[n * classes..][..classes];
        let dlogits = &mut dlogits[n * classes..][..classes];
        (losses[n], predicted[n]) = softmax_cross_entropy(logits, dlogits, labels[n] as usize, inverse_batch);
    }
}

/// `y = x·kernel + bias` (the logits, or a hidden dense layer's pre-activation) for `s.batch`
/// samples, with the weights packed by [`DensePlan::pack`]; x and y plain.
pub fn forward_linear(y: &mut [f32], x: &[f32], s: &DenseShape, plan: &DensePlan) {
    let (batch, features, classes) = plan.check(s);
    assert!(y.len() >= batch * classes && x.len() >= batch * features, "dense buffers too short");
    logits_isa(plan.isa, y, x, batch, plan);
}

impl DensePlan {
    /// Packs the kernel `[F, K']` and bias for [`forward_part`], and the kernel transposed
    /// `[K, F']` for [`backward_input_packed`].
    pub fn pack(&mut self, kernel: &[f32], bias: &[f32]) {
        let (features, classes) = (self.shape.features as usize, self.shape.classes as usize);
        assert!(kernel.len() >= features * classes && bias.len() >= classes, "dense weights too short");
        self.pack_transposed(kernel);
        let kp = self.bias.len();
        for (row, packed) in kernel[..features * classes].chunks_exact(classes).zip(self.weights.chunks_exact_mut(kp)) {
            packed[..classes].copy_from_slice(row);
            packed[classes..].fill(0.0);
        }
        self.bias[..classes].copy_from_slice(&bias[..classes]);
        self.bias[classes..].fill(0.0);
    }

    fn pack_transposed(&mut self, kernel: &[f32]) {
        let (features, classes) = (self.shape.features as usize, self.shape.classes as usize);
        let fp = self.transposed.len() / classes.max(1);
        for j in 0..classes {
            let row = &mut self.transposed[j * fp..][..fp];
            for f in 0..features {
                row[f] = kernel[f * classes + j];
            }
            row[features..].fill(0.0);
        }
    }
}

multiversion!(fn logits_isa = logits_impl(logits: &mut [f32], x: &[f32], batch: usize, plan: &DensePlan));

#[inline(always)]
fn logits_impl<S: Tiles>(logits: &mut [f32], x: &[f32], batch: usize, plan: &DensePlan) {
    let (features, classes) = (plan.shape.features as usize, plan.shape.classes as usize);
    let kp = plan.bias.len();
    rows_times_packed::<S>(logits, x, &plan.weights, kp, Some(&plan.bias), batch, features, classes);
}

/// `dst[n] = src[n] · W (+ init)` for the first `batch` rows: rows of `inputs` floats in `src`,
/// of `outputs` in `dst`, `W` packed as `inputs` rows of `w_stride` floats (`outputs` rounded up
/// to whole vectors, zero-padded), `init` as long. Both dense products are this one: the
/// logits (x times the kernel, plus the bias) and the input gradient (dlogits times the
/// transposed kernel).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_times_packed<S: Tiles>(
    dst: &mut [f32],
    src: &[f32],
    w: &[f32],
    w_stride: usize,
    init: Option<&[f32]>,
    batch: usize,
    inputs: usize,
    outputs: usize,
) {
    let taps = [Tap { src: 0, w: 0, len: inputs }];
    for (first, vectors, lanes) in groups::<S>(outputs) {
        for (n, samples) in split(batch, dot_tile::<S>(vectors)) {
            // SAFETY: the callers check that src and dst hold `batch` rows; packed rows (and
            // init) are w_stride ≥ first + vectors·LANES floats.
            unsafe {
                let dot = Dot {
                    src: src.as_ptr().add(n * inputs),
                    src_step: inputs,
                    taps: &taps,
                    w: w.as_ptr().add(first),
                    w_stride,
                    init: init.map(|init| init.as_ptr().add(first)),
                    dst: dst.as_mut_ptr().add(n * outputs + first),
                    dst_step: outputs,
                    lanes,
                    relu: false,
                    mask: None,
                };
                S::dot(&dot, samples, vectors);
            }
        }
    }
}

/// `dkernel = xᵀ·dlogits + λ·sign(kernel)` (sign(0) = 0), `dbias = Σ_n dlogits` (overwritten).
pub fn backward_weight(
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dlogits: &[f32],
    x: &[f32],
    kernel: &[f32],
    s: &DenseShape,
    plan: &DensePlan,
) {
    let (features, classes) = (s.features as usize, s.classes as usize);
    dkernel[..features * classes].fill(0.0);
    dbias[..classes].fill(0.0);
    accumulate_weight(dkernel, dbias, dlogits, x, s, plan);
    add_l1(dkernel, kernel, s);
}

/// `dkernel += xᵀ·dlogits`, `dbias += Σ_n dlogits` (in sample order): the data part of
/// [`backward_weight`], summed over micro-batches.
pub fn accumulate_weight(
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dlogits: &[f32],
    x: &[f32],
    s: &DenseShape,
    plan: &DensePlan,
) {
    let (batch, features, classes) = plan.check(s);
    assert!(dkernel.len() >= features * classes && dbias.len() >= classes, "dense gradients too short");
    assert!(dlogits.len() >= batch * classes && x.len() >= batch * features, "dense inputs too short");
    backward_weight_isa(plan.isa, dkernel, dlogits, x, batch, plan);
    for j in 0..classes {
        dbias[j] = (0..batch).fold(dbias[j], |sum, n| sum + dlogits[n * classes + j]);
    }
}

/// `dkernel += λ·sign(kernel)`: the L1 penalty's gradient, once per step.
pub fn add_l1(dkernel: &mut [f32], kernel: &[f32], s: &DenseShape) {
    let l1 = s.l1;
    for (g, &w) in dkernel[..s.kernel_len()].iter_mut().zip(kernel) {
        let sign = if w > 0.0 {
            1.0
        } else if w < 0.0 {
            -1.0
        } else {
            0.0
        };
        *g += l1 * sign;
    }
}

multiversion!(fn backward_weight_isa = backward_weight_impl(dkernel: &mut [f32], dlogits: &[f32], x: &[f32], batch: usize, plan: &DensePlan));

#[inline(always)]
fn backward_weight_impl<S: Tiles>(dkernel: &mut [f32], dlogits: &[f32], x: &[f32], batch: usize, plan: &DensePlan) {
    let (features, classes) = (plan.shape.features as usize, plan.shape.classes as usize);
    for (first, vectors, lanes) in groups::<S>(classes) {
        for (f, rows) in split(features, outer_tile::<S>(vectors)) {
            // SAFETY: features f..f + rows of every sample of x, classes first.. of every
            // sample of dlogits, and kernel rows f.. are in bounds.
            unsafe {
                let o = Outer {
                    src: x.as_ptr().add(f),
                    src_step: features,
                    src_row: 0,
                    grad: dlogits.as_ptr().add(first),
                    grad_step: classes,
                    grad_row: 0,
                    count: batch,
                    rows: 1,
                    acc: dkernel.as_mut_ptr().add(f * classes + first),
                    acc_stride: classes,
                    lanes,
                };
                S::outer(&o, rows, vectors);
            }
        }
    }
}

/// `dx = dlogits·kernelᵀ`, plain `[N, F]`.
pub fn backward_input(dx: &mut [f32], dlogits: &[f32], kernel: &[f32], s: &DenseShape, plan: &mut DensePlan) {
    assert!(kernel.len() >= s.kernel_len(), "dense kernel too short");
    plan.pack_transposed(kernel);
    backward_input_packed(dx, dlogits, s, plan);
}

/// [`backward_input`] with the weights packed by [`DensePlan::pack`].
pub fn backward_input_packed(dx: &mut [f32], dlogits: &[f32], s: &DenseShape, plan: &DensePlan) {
    let (batch, features, classes) = plan.check(s);
    assert!(dx.len() >= batch * features && dlogits.len() >= batch * classes, "dense buffers too short");
    backward_input_isa(plan.isa, dx, dlogits, batch, plan);
}

multiversion!(fn backward_input_isa = backward_input_impl(dx: &mut [f32], dlogits: &[f32], batch: usize, plan: &DensePlan));

#[inline(always)]
fn backward_input_impl<S: Tiles>(dx: &mut [f32], dlogits: &[f32], batch: usize, plan: &DensePlan) {
    let (features, classes) = (plan.shape.features as usize, plan.shape.classes as usize);
    let fp = plan.transposed.len() / classes.max(1);
    rows_times_packed::<S>(dx, dlogits, &plan.transposed, fp, None, batch, classes, features);
}

// ---------------------------------------------------------------------------------------------
// The engine's interface.

impl FastHead for DensePlan {
    fn pack(&mut self, params: &[f32]) {
        let s = self.shape;
        DensePlan::pack(self, &params[s.kernel_range()], &params[s.bias_range()]);
    }

    fn forward(&self, batch: usize, x: &[f32], labels: &[u32], mean_over: usize, out: HeadOutputs<'_, f32>) {
        let s = self.shape.with_batch(batch);
        forward_part(out.probs, out.dlogits, out.losses, out.predicted, x, labels, mean_over, &s, self);
    }

    fn backward(&self, batch: usize, x: &[f32], dlogits: &[f32], dx: Option<&mut [f32]>, grads: &mut [f32]) {
        let s = self.shape.with_batch(batch);
        // The bias follows the kernel.
        let (dkernel, dbias) = grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
        accumulate_weight(dkernel, dbias, dlogits, x, &s, self);
        if let Some(dx) = dx {
            backward_input_packed(dx, dlogits, &s, self);
        }
    }

    fn regularize(&self, params: &[f32], grads: &mut [f32]) -> f32 {
        let s = &self.shape;
        let kernel = &params[s.kernel_range()];
        add_l1(&mut grads[s.kernel_offset as usize..], kernel, s);
        l1_penalty(kernel, s)
    }

    fn penalty(&self, params: &[f32]) -> f32 {
        l1_penalty(&params[self.shape.kernel_range()], &self.shape)
    }

    fn scratch_capacity(&self) -> usize {
        DensePlan::scratch_capacity(self)
    }
}
