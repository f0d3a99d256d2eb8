//! Inverted dropout — fast. The math of [`super`], with the very same mask:
//! element `i` (its index in the plain NHWC batch) is kept when
//! `uniform_at(dropout_key(seed, step, layer), i) ≥ rate`, so outputs are bit-exact with the
//! reference. The hash is recomputed in the backward pass (a few integer operations per
//! element, vectorised) rather than stored.
//!
//! # Layouts
//! x and y in the layouts the plan was built with (y padded when a convolution reads it); dy
//! and dx plain.

use crate::fast::simd::{multiversion, Isa, Simd};
use crate::fast::{FastBackward, FastDx, FastLayer, Layout};
use crate::layers::Pass;
use super::DropoutShape;
use crate::rng::{dropout_key, hash_u32};

/// A dropout layer's layouts, for batches of up to `shape.batch`.
#[derive(Clone, Debug)]
pub struct DropoutPlan {
    pub shape: DropoutShape,
    pub isa: Isa,
    pub x: Layout,
    pub y: Layout,
}

impl DropoutPlan {
    /// A plan for samples of `[H, W, C] = sample`, reading x with `x_pad` and writing y with
    /// `y_pad` pixels of border.
    pub fn new(shape: &DropoutShape, isa: Isa, sample: [usize; 3], x_pad: usize, y_pad: usize) -> Self {
        let plain = Layout::plain(sample);
        assert_eq!(plain.sample_len(), shape.sample_len as usize, "dropout sample {sample:?} vs {shape:?}");
        DropoutPlan { shape: *shape, isa, x: Layout { pad: x_pad, ..plain }, y: Layout { pad: y_pad, ..plain } }
    }

    fn check(&self, s: &DropoutShape) -> usize {
        assert!(
            s.batch <= self.shape.batch && *s == self.shape.with_batch(s.batch as usize),
            "this dropout plan was built for {:?}, not {s:?}",
            self.shape
        );
        s.batch as usize
    }
}

/// `y = x · mask / (1 − rate)` in training, `y = x` at inference, for `s.batch` samples that
/// start at sample `first` of the step's batch (`Pass::Training`: the mask is drawn by
/// whole-batch element index); x in `plan.x`, y in `plan.y`.
pub fn forward(y: &mut [f32], x: &[f32], pass: Pass, s: &DropoutShape, plan: &DropoutPlan) {
    let batch = plan.check(s);
    assert!(x.len() >= plan.x.len(batch) && y.len() >= plan.y.len(batch), "dropout buffers too short");
    let (training, first) = key(pass, s);
    apply_isa(plan.isa, y, &plan.y, x, &plan.x, training, first, batch, s);
}

/// `dx = dy · mask / (1 − rate)` with the forward pass's mask; both plain.
pub fn backward_input(dx: &mut [f32], dy: &[f32], pass: Pass, s: &DropoutShape, plan: &DropoutPlan) {
    let batch = plan.check(s);
    let plain = Layout { pad: 0, ..plan.x };
    assert!(dx.len() >= plain.len(batch) && dy.len() >= plain.len(batch), "dropout buffers too short");
    let (training, first) = key(pass, s);
    apply_isa(plan.isa, dx, &plain, dy, &plain, training, first, batch, s);
}

/// (seed, step) of a training pass, and its first sample.
fn key(pass: Pass, s: &DropoutShape) -> (Option<(u32, u32)>, usize) {
    match pass {
        Pass::Training { step, first } => (Some((s.seed, step)), first),
        Pass::Inference => (None, 0),
    }
}

multiversion!(fn apply_isa = apply_impl(out: &mut [f32], out_layout: &Layout, input: &[f32], in_layout: &Layout, training: Option<(u32, u32)>, first: usize, batch: usize, s: &DropoutShape));

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply_impl<S: Simd>(
    out: &mut [f32],
    out_layout: &Layout,
    input: &[f32],
    in_layout: &Layout,
    training: Option<(u32, u32)>,
    first: usize,
    batch: usize,
    s: &DropoutShape,
) {
    let row = in_layout.width * in_layout.channels;
    let (rate, scale) = (s.rate, s.scale);
    for n in 0..batch {
        for y in 0..in_layout.height {
            let from = &input[in_layout.at(n, y, 0)..][..row];
            let to = &mut out[out_layout.at(n, y, 0)..][..row];
            match training {
                Some((seed, step)) => {
                    // uniform_at(key, i) = (hash(i ^ hash(key)) >> 8) / 2^24, inlined so that
                    // the loop vectorises; the factor and product as in DropoutShape::factor.
                    let hashed_key = hash_u32(dropout_key(seed, step, s.layer));
                    let start = ((first + n) * s.sample_len as usize + y * row) as u32;
                    for (i, (o, &v)) in to.iter_mut().zip(from).enumerate() {
                        let uniform =
                            (hash(start.wrapping_add(i as u32) ^ hashed_key) >> 8) as f32 * (1.0 / 16_777_216.0);
                        *o = v * if uniform >= rate { scale } else { 0.0 };
                    }
                }
                None => to.copy_from_slice(from),
            }
        }
    }
}

/// [`crate::rng::hash_u32`], repeated here as `inline(always)` so that it vectorises inside the
/// loop above (the tests check the masks are bit-identical to the reference's).
#[inline(always)]
fn hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

// ---------------------------------------------------------------------------------------------
// The engine's interface.

impl FastLayer for DropoutPlan {
    fn forward(&self, batch: usize, pass: Pass, x: &[f32], y: &mut [f32], _state: &[f32]) {
        forward(y, x, pass, &self.shape.with_batch(batch), self);
    }

    fn backward(&self, batch: usize, pass: Pass, b: FastBackward<'_>) {
        match b.dx {
            FastDx::Plain(dx) => backward_input(dx, b.dy, pass, &self.shape.with_batch(batch), self),
            FastDx::None => {}
            FastDx::ThroughRelu(_) => unreachable!("dropout does not set Fusion::masked_dx"),
        }
    }
}
