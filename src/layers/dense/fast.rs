//! A hidden Dense layer — fast: the head's register-tiled products
//! ([`crate::layers::dense_softmax::fast`]) with the ReLU around them.
//!
//! # Layouts
//! x, y, dy, dx and dpre all plain `[N, F]` / `[N, U]`.

use super::HiddenDenseShape;
use crate::fast::simd::Isa;
use crate::fast::{FastBackward, FastDx, FastLayer};
use crate::layers::dense_softmax::fast::{accumulate_weight, backward_input_packed, forward_linear, DensePlan};
use crate::layers::dense_softmax::DenseShape;
use crate::layers::Pass;

/// A hidden dense layer's packed weights, for micro-batches of up to `shape.batch`.
#[derive(Clone, Debug)]
pub struct HiddenDensePlan {
    pub shape: HiddenDenseShape,
    plan: DensePlan,
}

impl HiddenDensePlan {
    pub fn new(shape: &HiddenDenseShape, isa: Isa) -> Self {
        HiddenDensePlan { shape: *shape, plan: DensePlan::new(&shape.as_dense_shape(), isa) }
    }

    fn dense(&self, batch: usize) -> DenseShape {
        self.shape.as_dense_shape().with_batch(batch)
    }
}

impl FastLayer for HiddenDensePlan {
    fn pack(&mut self, params: &[f32], _backward: bool) {
        let s = self.shape;
        self.plan.pack(&params[s.kernel_range()], &params[s.bias_range()]);
    }

    fn forward(&self, batch: usize, _pass: Pass, x: &[f32], y: &mut [f32], _state: &[f32]) {
        forward_linear(y, x, &self.dense(batch), &self.plan);
        if self.shape.relu == 1 {
            y[..batch * self.shape.units as usize].iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let s = self.dense(batch);
        let n = batch * self.shape.units as usize;
        let dpre = b.dpre.expect("the engine gives a dense layer its dpre (Fusion::dpre_pad)");
        for ((d, &g), &v) in dpre[..n].iter_mut().zip(&b.dy[..n]).zip(&b.y[..n]) {
            *d = if self.shape.relu == 0 || v > 0.0 { g } else { 0.0 };
        }
        let (dkernel, dbias) = b.grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
        accumulate_weight(dkernel, dbias, dpre, b.x, &s, &self.plan);
        match b.dx {
            FastDx::Plain(dx) => backward_input_packed(dx, dpre, &s, &self.plan),
            FastDx::None => {}
            FastDx::ThroughRelu(_) => unreachable!("a dense layer does not set Fusion::masked_dx"),
        }
    }

    fn scratch_capacity(&self) -> usize {
        self.plan.scratch_capacity()
    }
}
