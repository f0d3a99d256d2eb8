//! BatchNormalization — fast. The math of [`super`], in the reference's order (f64 sums, pixel by
//! pixel), so results are bit-exact with it; the loops run over the contiguous channels of a
//! pixel and vectorise.
//!
//! A training step reaches this layer as one micro-batch holding the whole batch (the engine
//! sees [`crate::layers::HiddenLayer::batch_statistics`]): the forward pass keeps the batch's
//! statistics for the backward pass and for [`FastLayer::update_state`], which moves the
//! moving statistics once the step's passes are done.
//!
//! # Layouts
//! x and y in the layouts the plan was built with (y padded when a convolution reads it); dy
//! and dx plain.

use std::sync::Mutex;

use super::{one_minus_momentum, NormShape, EPSILON, MOMENTUM};
use crate::fast::simd::Isa;
use crate::fast::{FastBackward, FastDx, FastLayer, Layout};
use crate::layers::Pass;

/// A batch-normalisation layer's layouts and its scratch, for batches of up to `batch`.
#[derive(Debug)]
pub struct NormPlan {
    pub shape: NormShape,
    pub isa: Isa,
    pub x: Layout,
    pub y: Layout,
    pub batch: usize,
    /// This step's γ and β.
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// The last training forward pass's `[mean, variance]` per channel, and f64 sums.
    scratch: Mutex<Scratch>,
}

#[derive(Debug)]
struct Scratch {
    mean: Vec<f32>,
    variance: Vec<f32>,
    inv: Vec<f32>,
    sums: Vec<f64>,
    more: Vec<f64>,
    /// Whether mean and variance hold a training pass's statistics not yet moved into the state.
    pending: bool,
}

impl NormPlan {
    pub fn new(shape: NormShape, isa: Isa, x: Layout, y: Layout, batch: usize) -> Self {
        let c = shape.channels();
        assert_eq!(x.channels, c, "batch norm over {c} channels reads {x:?}");
        let scratch = Scratch {
            mean: vec![0.0; c],
            variance: vec![0.0; c],
            inv: vec![0.0; c],
            sums: vec![0.0; c],
            more: vec![0.0; c],
            pending: false,
        };
        NormPlan { shape, isa, x, y, batch, gamma: vec![0.0; c], beta: vec![0.0; c], scratch: Mutex::new(scratch) }
    }

    /// Every pixel of the first `batch` images: (its index in `layout`'s buffer, in the plain one).
    fn pixels(layout: &Layout, batch: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let plain = Layout { pad: 0, ..*layout };
        (0..batch).flat_map(move |n| {
            (0..layout.height)
                .flat_map(move |r| (0..layout.width).map(move |col| (layout.at(n, r, col), plain.at(n, r, col))))
        })
    }
}

impl FastLayer for NormPlan {
    fn pack(&mut self, params: &[f32], _backward: bool) {
        self.gamma.copy_from_slice(&params[self.shape.gamma()]);
        self.beta.copy_from_slice(&params[self.shape.beta()]);
    }

    fn forward(&self, batch: usize, pass: Pass, x: &[f32], y: &mut [f32], state: &[f32]) {
        assert!(batch <= self.batch && x.len() >= self.x.len(batch) && y.len() >= self.y.len(batch), "batch norm buffers");
        let c = self.shape.channels();
        let mut guard = self.scratch.lock().expect("no batch-norm pass panicked");
        let s = &mut *guard;
        if pass.is_training() {
            let m = (batch * self.x.height * self.x.width) as f64;
            s.sums.fill(0.0);
            for (at, _) in Self::pixels(&self.x, batch) {
                s.sums.iter_mut().zip(&x[at..][..c]).for_each(|(t, &v)| *t += f64::from(v));
            }
            s.mean.iter_mut().zip(&s.sums).for_each(|(mu, &t)| *mu = (t / m) as f32);
            s.more.fill(0.0);
            for (at, _) in Self::pixels(&self.x, batch) {
                for ((t, &v), &mu) in s.more.iter_mut().zip(&x[at..][..c]).zip(&s.mean) {
                    let d = f64::from(v - mu);
                    *t += d * d;
                }
            }
            s.variance.iter_mut().zip(&s.more).for_each(|(var, &t)| *var = (t / m) as f32);
            s.pending = true;
        } else {
            s.mean.copy_from_slice(&state[self.shape.moving_mean()]);
            s.variance.copy_from_slice(&state[self.shape.moving_variance()]);
            s.pending = false;
        }
        // inv = γ / √(variance + ε), as super::normalize.
        for ((inv, &var), &g) in s.inv.iter_mut().zip(&s.variance).zip(&self.gamma) {
            *inv = 1.0 / (var + EPSILON).sqrt() * g;
        }
        for (from, to) in Self::pixels(&self.x, batch).zip(Self::pixels(&self.y, batch)) {
            let (x, y) = (&x[from.0..][..c], &mut y[to.0..][..c]);
            for ch in 0..c {
                y[ch] = x[ch] * s.inv[ch] + (self.beta[ch] - s.mean[ch] * s.inv[ch]);
            }
        }
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let c = self.shape.channels();
        let mut guard = self.scratch.lock().expect("no batch-norm pass panicked");
        let s = &mut *guard;
        // 1 / √(variance + ε) into inv (the forward pass's γ-scaled one is no longer needed).
        for (inv, &var) in s.inv.iter_mut().zip(&s.variance) {
            *inv = 1.0 / (var + EPSILON).sqrt();
        }
        let (dgamma, dbeta) = (&mut s.sums, &mut s.more);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        for (at, plain) in Self::pixels(&self.x, batch) {
            let (x, dy) = (&b.x[at..][..c], &b.dy[plain..][..c]);
            for ch in 0..c {
                let xhat = (x[ch] - s.mean[ch]) * s.inv[ch];
                dbeta[ch] += f64::from(dy[ch]);
                dgamma[ch] += f64::from(dy[ch] * xhat);
            }
        }
        let m = (batch * self.x.height * self.x.width) as f32;
        if let FastDx::Plain(dx) = b.dx {
            for (at, plain) in Self::pixels(&self.x, batch) {
                let (x, dy, dx) = (&b.x[at..][..c], &b.dy[plain..][..c], &mut dx[plain..][..c]);
                for ch in 0..c {
                    let xhat = (x[ch] - s.mean[ch]) * s.inv[ch];
                    let (dg, db) = (dgamma[ch] as f32, dbeta[ch] as f32);
                    dx[ch] = s.inv[ch] * self.gamma[ch] * (dy[ch] - (db + xhat * dg) / m);
                }
            }
        }
        for (ch, (g, bt)) in self.shape.gamma().zip(self.shape.beta()).enumerate() {
            b.grads[g] += dgamma[ch] as f32;
            b.grads[bt] += dbeta[ch] as f32;
        }
    }

    fn update_state(&self, state: &mut [f32]) {
        let mut s = self.scratch.lock().expect("no batch-norm pass panicked");
        if !s.pending {
            return;
        }
        s.pending = false;
        let rest = one_minus_momentum();
        for (moving, &batch) in state[self.shape.moving_mean()].iter_mut().zip(&s.mean) {
            *moving = *moving * MOMENTUM + batch * rest;
        }
        for (moving, &batch) in state[self.shape.moving_variance()].iter_mut().zip(&s.variance) {
            *moving = *moving * MOMENTUM + batch * rest;
        }
    }

    fn scratch_capacity(&self) -> usize {
        let s = self.scratch.lock().expect("no batch-norm pass panicked");
        self.gamma.capacity()
            + self.beta.capacity()
            + s.mean.capacity()
            + s.variance.capacity()
            + s.inv.capacity()
            + 2 * (s.sums.capacity() + s.more.capacity())
    }
}
