//! BatchNormalization — fast. The math of [`super`], in the reference's order (f64 sums, pixel by
//! pixel), so results are bit-exact with it; the loops run over the contiguous channels of a
//! pixel and vectorise.
//!
//! A training step reaches this layer in one call holding the whole batch, on one thread (the
//! engine sees [`crate::layers::HiddenLayer::batch_statistics`]): the forward pass keeps the batch's
//! statistics for the backward pass and for [`FastLayer::update_state`], which moves the
//! moving statistics once the step's passes are done.
//!
//! # Layouts
//! x and y in the layouts the plan was built with (y padded when a convolution reads it); dy
//! and dx plain.

use std::sync::Mutex;

use super::{one_minus_momentum, NormShape, EPSILON, MOMENTUM};
use crate::fast::simd::{multiversion, Isa, Simd};
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
    /// The forward pass's γ / √(variance + ε) and β − mean·inv; the backward pass's 1 / √(variance
    /// + ε), dγ and dβ.
    inv: Vec<f32>,
    shift: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
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
            shift: vec![0.0; c],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            sums: vec![0.0; c],
            more: vec![0.0; c],
            pending: false,
        };
        NormPlan { shape, isa, x, y, batch, gamma: vec![0.0; c], beta: vec![0.0; c], scratch: Mutex::new(scratch) }
    }
}

/// The row of pixels `r` of image `n` in `layout`: `W·C` floats.
#[inline(always)]
fn row<'a>(buffer: &'a [f32], layout: &Layout, n: usize, r: usize) -> &'a [f32] {
    &buffer[layout.at(n, r, 0)..][..layout.width * layout.channels]
}

multiversion!(fn sums_isa = sums_impl(sums: &mut [f64], x: &[f32], layout: &Layout, batch: usize, mean: Option<&[f32]>));

/// `sums[c] += x` over every pixel (`mean` given: `+= (x − mean)²`), in pixel order, in f64.
#[inline(always)]
fn sums_impl<S: Simd>(sums: &mut [f64], x: &[f32], layout: &Layout, batch: usize, mean: Option<&[f32]>) {
    let c = layout.channels;
    for n in 0..batch {
        for r in 0..layout.height {
            for pixel in row(x, layout, n, r).chunks_exact(c) {
                match mean {
                    None => sums.iter_mut().zip(pixel).for_each(|(t, &v)| *t += f64::from(v)),
                    Some(mean) => sums.iter_mut().zip(pixel).zip(mean).for_each(|((t, &v), &mu)| {
                        let d = f64::from(v - mu);
                        *t += d * d;
                    }),
                }
            }
        }
    }
}

multiversion!(fn normalize_isa = normalize_impl(y: &mut [f32], y_layout: &Layout, x: &[f32], x_layout: &Layout, batch: usize, inv: &[f32], shift: &[f32]));

/// `y = x·inv + shift` per channel (`shift = β − mean·inv`, the reference's `x·inv + (β − mean·inv)`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_impl<S: Simd>(y: &mut [f32], y_layout: &Layout, x: &[f32], x_layout: &Layout, batch: usize, inv: &[f32], shift: &[f32]) {
    let c = x_layout.channels;
    let width = x_layout.width * c;
    for n in 0..batch {
        for r in 0..x_layout.height {
            let to = &mut y[y_layout.at(n, r, 0)..][..width];
            for (out, pixel) in to.chunks_exact_mut(c).zip(row(x, x_layout, n, r).chunks_exact(c)) {
                for ch in 0..c {
                    out[ch] = pixel[ch] * inv[ch] + shift[ch];
                }
            }
        }
    }
}

multiversion!(fn gradient_sums_isa = gradient_sums_impl(dgamma: &mut [f64], dbeta: &mut [f64], dy: &[f32], x: &[f32], layout: &Layout, batch: usize, mean: &[f32], rstd: &[f32]));

/// `dγ += dy·x̂`, `dβ += dy` per channel, in pixel order, in f64; dy plain.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gradient_sums_impl<S: Simd>(dgamma: &mut [f64], dbeta: &mut [f64], dy: &[f32], x: &[f32], layout: &Layout, batch: usize, mean: &[f32], rstd: &[f32]) {
    let c = layout.channels;
    let plain = Layout { pad: 0, ..*layout };
    for n in 0..batch {
        for r in 0..layout.height {
            let pixels = row(x, layout, n, r).chunks_exact(c).zip(row(dy, &plain, n, r).chunks_exact(c));
            for (x, g) in pixels {
                for ch in 0..c {
                    let xhat = (x[ch] - mean[ch]) * rstd[ch];
                    dbeta[ch] += f64::from(g[ch]);
                    dgamma[ch] += f64::from(g[ch] * xhat);
                }
            }
        }
    }
}

multiversion!(fn input_gradient_isa = input_gradient_impl(dx: &mut [f32], dy: &[f32], x: &[f32], layout: &Layout, batch: usize, s: &Scratch, gamma: &[f32], m: f32));

/// `dx = rstd·γ·(dy − (dβ + x̂·dγ) / M)`: rstd in `s.inv`, dγ and dβ (as f32) in `s.dgamma`,
/// `s.dbeta`, as [`NormPlan`]'s backward pass leaves them; dx and dy plain.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_gradient_impl<S: Simd>(dx: &mut [f32], dy: &[f32], x: &[f32], layout: &Layout, batch: usize, s: &Scratch, gamma: &[f32], m: f32) {
    let c = layout.channels;
    let plain = Layout { pad: 0, ..*layout };
    let width = layout.width * c;
    for n in 0..batch {
        for r in 0..layout.height {
            let out = &mut dx[plain.at(n, r, 0)..][..width];
            let pixels = out.chunks_exact_mut(c).zip(row(x, layout, n, r).chunks_exact(c)).zip(row(dy, &plain, n, r).chunks_exact(c));
            for ((dx, x), g) in pixels {
                for ch in 0..c {
                    let xhat = (x[ch] - s.mean[ch]) * s.inv[ch];
                    dx[ch] = s.inv[ch] * gamma[ch] * (g[ch] - (s.dbeta[ch] + xhat * s.dgamma[ch]) / m);
                }
            }
        }
    }
}

impl FastLayer for NormPlan {
    fn pack(&mut self, params: &[f32], _backward: bool) {
        self.gamma.copy_from_slice(&params[self.shape.gamma()]);
        self.beta.copy_from_slice(&params[self.shape.beta()]);
    }

    fn forward(&self, batch: usize, pass: Pass, x: &[f32], y: &mut [f32], state: &[f32]) {
        assert!(batch <= self.batch && x.len() >= self.x.len(batch) && y.len() >= self.y.len(batch), "batch norm buffers");
        let mut guard = self.scratch.lock().expect("no batch-norm pass panicked");
        let s = &mut *guard;
        if pass.is_training() {
            let m = (batch * self.x.height * self.x.width) as f64;
            s.sums.fill(0.0);
            sums_isa(self.isa, &mut s.sums, x, &self.x, batch, None);
            s.mean.iter_mut().zip(&s.sums).for_each(|(mu, &t)| *mu = (t / m) as f32);
            s.more.fill(0.0);
            sums_isa(self.isa, &mut s.more, x, &self.x, batch, Some(&s.mean));
            s.variance.iter_mut().zip(&s.more).for_each(|(var, &t)| *var = (t / m) as f32);
            s.pending = true;
        } else {
            s.mean.copy_from_slice(&state[self.shape.moving_mean()]);
            s.variance.copy_from_slice(&state[self.shape.moving_variance()]);
            s.pending = false;
        }
        // inv = γ / √(variance + ε) (as super::normalize: 1/√ first, then γ), shift = β − mean·inv.
        for ch in 0..s.inv.len() {
            s.inv[ch] = 1.0 / (s.variance[ch] + EPSILON).sqrt() * self.gamma[ch];
            s.shift[ch] = self.beta[ch] - s.mean[ch] * s.inv[ch];
        }
        normalize_isa(self.isa, y, &self.y, x, &self.x, batch, &s.inv, &s.shift);
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let mut guard = self.scratch.lock().expect("no batch-norm pass panicked");
        let s = &mut *guard;
        // rstd = 1 / √(variance + ε) into inv (the forward pass's γ-scaled one is not needed now).
        for (inv, &var) in s.inv.iter_mut().zip(&s.variance) {
            *inv = 1.0 / (var + EPSILON).sqrt();
        }
        s.sums.fill(0.0);
        s.more.fill(0.0);
        gradient_sums_isa(self.isa, &mut s.sums, &mut s.more, b.dy, b.x, &self.x, batch, &s.mean, &s.inv);
        for ch in 0..s.inv.len() {
            (s.dgamma[ch], s.dbeta[ch]) = (s.sums[ch] as f32, s.more[ch] as f32);
        }
        if let FastDx::Plain(dx) = b.dx {
            let m = (batch * self.x.height * self.x.width) as f32;
            input_gradient_isa(self.isa, dx, b.dy, b.x, &self.x, batch, s, &self.gamma, m);
        }
        for (ch, (g, bt)) in self.shape.gamma().zip(self.shape.beta()).enumerate() {
            b.grads[g] += s.dgamma[ch];
            b.grads[bt] += s.dbeta[ch];
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
            + s.shift.capacity()
            + s.dgamma.capacity()
            + s.dbeta.capacity()
            + 2 * (s.sums.capacity() + s.more.capacity())
    }
}
