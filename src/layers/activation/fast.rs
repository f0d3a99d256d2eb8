//! ReLU and LeakyReLU — fast. The math of [`super`], bit for bit: one select per element, in
//! loops the compiler vectorises for each instruction set.
//!
//! # Layouts
//! x and y in the layouts the plan was built with (y padded when a convolution reads it); dy
//! and dx plain.

use super::Activation;
use crate::fast::simd::{multiversion, Isa, Simd};
use crate::fast::{FastBackward, FastDx, FastLayer, Layout};
use crate::layers::Pass;

/// An activation layer's layouts, for micro-batches of up to `batch`.
#[derive(Clone, Debug)]
pub struct ActivationPlan {
    pub layer: Activation,
    pub isa: Isa,
    pub x: Layout,
    pub y: Layout,
    pub batch: usize,
}

multiversion!(fn forward_isa = forward_impl(y: &mut [f32], y_layout: &Layout, x: &[f32], x_layout: &Layout, batch: usize, layer: Activation));

#[inline(always)]
fn forward_impl<S: Simd>(y: &mut [f32], y_layout: &Layout, x: &[f32], x_layout: &Layout, batch: usize, layer: Activation) {
    let row = x_layout.width * x_layout.channels;
    let slope = layer.slope();
    for n in 0..batch {
        for r in 0..x_layout.height {
            let from = &x[x_layout.at(n, r, 0)..][..row];
            let to = &mut y[y_layout.at(n, r, 0)..][..row];
            match layer {
                Activation::Relu => to.iter_mut().zip(from).for_each(|(o, &v)| *o = v.max(0.0)),
                Activation::LeakyRelu { .. } => {
                    to.iter_mut().zip(from).for_each(|(o, &v)| *o = if v > 0.0 { v } else { slope * v })
                }
            }
        }
    }
}

multiversion!(fn backward_isa = backward_impl(dx: &mut [f32], dy: &[f32], x: &[f32], x_layout: &Layout, batch: usize, slope: f32));

#[inline(always)]
fn backward_impl<S: Simd>(dx: &mut [f32], dy: &[f32], x: &[f32], x_layout: &Layout, batch: usize, slope: f32) {
    let row = x_layout.width * x_layout.channels;
    let plain = Layout { pad: 0, ..*x_layout };
    for n in 0..batch {
        for r in 0..x_layout.height {
            let (at, from) = (plain.at(n, r, 0), &x[x_layout.at(n, r, 0)..][..row]);
            let (dx, dy) = (&mut dx[at..][..row], &dy[at..][..row]);
            for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(from) {
                *d = if v > 0.0 { g } else { slope * g };
            }
        }
    }
}

impl FastLayer for ActivationPlan {
    fn forward(&self, batch: usize, _pass: Pass, x: &[f32], y: &mut [f32], _state: &[f32]) {
        assert!(batch <= self.batch && x.len() >= self.x.len(batch) && y.len() >= self.y.len(batch), "activation buffers");
        forward_isa(self.isa, y, &self.y, x, &self.x, batch, self.layer);
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let plain = Layout { pad: 0, ..self.x }.len(batch);
        match b.dx {
            FastDx::Plain(dx) => {
                assert!(dx.len() >= plain && b.dy.len() >= plain, "activation gradient buffers");
                backward_isa(self.isa, dx, b.dy, b.x, &self.x, batch, self.layer.slope());
            }
            FastDx::None => {}
            FastDx::ThroughRelu(_) => unreachable!("an activation layer does not set Fusion::masked_dx"),
        }
    }
}
