//! MaxPooling2D 2×2, stride 2, 'valid' — fast. The math of [`super`]: the
//! gradient goes to the first maximum of each window in row-major order, as TensorFlow's.
//!
//! # Shapes and layouts
//! x `[N, H, W, C]` and y `[N, H/2, W/2, C]` in the layouts the plan was built with (y is
//! padded when a convolution reads it, so pooling writes straight into that convolution's
//! input); dy and dx plain. The loops run over whole channel vectors: the comparisons become
//! vector compares and blends, identical in result to the reference's scalar ones (outputs are
//! bit-exact).

use crate::fast::simd::{multiversion, Isa, Simd};
use crate::fast::{FastBackward, FastDx, FastLayer, Layout};
use crate::layers::Pass;
use super::PoolShape;

/// A pooling layer's layouts, for batches of up to `shape.batch`.
#[derive(Clone, Debug)]
pub struct PoolPlan {
    pub shape: PoolShape,
    pub isa: Isa,
    pub x: Layout,
    pub y: Layout,
    pub dy: Layout,
    pub dx: Layout,
    /// The dpre of the convolution before (x's shape, padded), for [`backward_input_relu`].
    pub dpre_before: Layout,
}

impl PoolPlan {
    /// A plan reading x with `x_pad` and writing y with `y_pad` pixels of border.
    pub fn new(shape: &PoolShape, isa: Isa, x_pad: usize, y_pad: usize) -> Self {
        let [h, w, c, oh, ow] = [shape.in_h, shape.in_w, shape.channels, shape.out_h, shape.out_w].map(|v| v as usize);
        PoolPlan {
            shape: *shape,
            isa,
            x: Layout { pad: x_pad, ..Layout::plain([h, w, c]) },
            y: Layout { pad: y_pad, ..Layout::plain([oh, ow, c]) },
            dy: Layout::plain([oh, ow, c]),
            dx: Layout::plain([h, w, c]),
            dpre_before: Layout::padded([h, w, c]),
        }
    }

    fn check(&self, s: &PoolShape) -> usize {
        assert!(
            s.batch <= self.shape.batch && *s == self.shape.with_batch(s.batch as usize),
            "this pooling plan was built for {:?}, not {s:?}",
            self.shape
        );
        s.batch as usize
    }
}

fn check_len(what: &str, buffer: usize, needed: usize) {
    assert!(buffer >= needed, "{what} holds {buffer} floats, the layer needs {needed}");
}

/// `y = max over each 2×2 window of x`, first `s.batch` images.
pub fn forward(y: &mut [f32], x: &[f32], s: &PoolShape, plan: &PoolPlan) {
    let batch = plan.check(s);
    check_len("x", x.len(), plan.x.len(batch));
    check_len("y", y.len(), plan.y.len(batch));
    forward_isa(plan.isa, y, x, batch, plan);
}

multiversion!(fn forward_isa = forward_impl(y: &mut [f32], x: &[f32], batch: usize, plan: &PoolPlan));

#[inline(always)]
fn forward_impl<S: Simd>(y: &mut [f32], x: &[f32], batch: usize, plan: &PoolPlan) {
    let c = plan.x.channels;
    for n in 0..batch {
        for oy in 0..plan.y.height {
            for ox in 0..plan.y.width {
                let top = &x[plan.x.at(n, 2 * oy, 2 * ox)..][..2 * c];
                let bottom = &x[plan.x.at(n, 2 * oy + 1, 2 * ox)..][..2 * c];
                let out = &mut y[plan.y.at(n, oy, ox)..][..c];
                for ch in 0..c {
                    // The reference's "x[i] > x[best]" scan, in window order.
                    let mut best = top[ch];
                    for candidate in [top[c + ch], bottom[ch], bottom[c + ch]] {
                        if candidate > best {
                            best = candidate;
                        }
                    }
                    out[ch] = best;
                }
            }
        }
    }
}

/// `dx = dy` at the first maximum of each window, 0 elsewhere (every element of dx written),
/// first `s.batch` images.
pub fn backward_input(dx: &mut [f32], dy: &[f32], x: &[f32], s: &PoolShape, plan: &PoolPlan) {
    let batch = plan.check(s);
    check_len("dx", dx.len(), plan.dx.len(batch));
    check_len("dy", dy.len(), plan.dy.len(batch));
    check_len("x", x.len(), plan.x.len(batch));
    backward_input_isa(plan.isa, dx, &plan.dx, false, dy, x, batch, plan);
}

/// [`backward_input`] through the ReLU of the convolution before, fused: x is that
/// convolution's output, so the gradient `dx · (x > 0)` is written in `plan.dpre_before`
/// (padded; its border, zero, is not written) — the previous layer's dpre, sparing its `relu_backward` pass.
pub fn backward_input_relu(dpre_before: &mut [f32], dy: &[f32], x: &[f32], s: &PoolShape, plan: &PoolPlan) {
    let batch = plan.check(s);
    check_len("dpre_before", dpre_before.len(), plan.dpre_before.len(batch));
    check_len("dy", dy.len(), plan.dy.len(batch));
    check_len("x", x.len(), plan.x.len(batch));
    backward_input_isa(plan.isa, dpre_before, &plan.dpre_before, true, dy, x, batch, plan);
}

multiversion!(fn backward_input_isa = backward_input_impl(dx: &mut [f32], out: &Layout, relu: bool, dy: &[f32], x: &[f32], batch: usize, plan: &PoolPlan));

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_input_impl<S: Simd>(
    dx: &mut [f32],
    out: &Layout,
    relu: bool,
    dy: &[f32],
    x: &[f32],
    batch: usize,
    plan: &PoolPlan,
) {
    let (h, w, c) = (plan.x.height, plan.x.width, plan.x.channels);
    let (row, out_row) = (w * c, out.row_stride());
    for n in 0..batch {
        for oy in 0..plan.y.height {
            for ox in 0..plan.y.width {
                let top = &x[plan.x.at(n, 2 * oy, 2 * ox)..][..2 * c];
                let bottom = &x[plan.x.at(n, 2 * oy + 1, 2 * ox)..][..2 * c];
                let g = &dy[plan.dy.at(n, oy, ox)..][..c];
                let (dx_top, dx_bottom) = dx[out.at(n, 2 * oy, 2 * ox)..].split_at_mut(out_row);
                let (dx_top, dx_bottom) = (&mut dx_top[..2 * c], &mut dx_bottom[..2 * c]);
                for ch in 0..c {
                    let (mut best, mut at) = (top[ch], 0u32);
                    for (t, candidate) in [(1, top[c + ch]), (2, bottom[ch]), (3, bottom[c + ch])] {
                        if candidate > best {
                            (best, at) = (candidate, t);
                        }
                    }
                    // Through the ReLU before: x > 0 at the maximum (the only place it matters).
                    let passes = !relu || best > 0.0;
                    let g = if passes { g[ch] } else { 0.0 };
                    let pick = |t: u32| if at == t { g } else { 0.0 };
                    dx_top[ch] = pick(0);
                    dx_top[c + ch] = pick(1);
                    dx_bottom[ch] = pick(2);
                    dx_bottom[c + ch] = pick(3);
                }
            }
        }
        // An odd last column and row belong to no window: their gradient is 0.
        if w % 2 == 1 {
            for y in 0..2 * plan.y.height {
                dx[out.at(n, y, w - 1)..][..c].fill(0.0);
            }
        }
        if h % 2 == 1 {
            dx[out.at(n, h - 1, 0)..][..row].fill(0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The engine's interface.

impl FastLayer for PoolPlan {
    fn forward(&self, batch: usize, _pass: Pass, x: &[f32], y: &mut [f32], _state: &[f32]) {
        forward(y, x, &self.shape.with_batch(batch), self);
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let s = self.shape.with_batch(batch);
        match b.dx {
            FastDx::ThroughRelu(dpre_before) => backward_input_relu(dpre_before, b.dy, b.x, &s, self),
            FastDx::Plain(dx) => backward_input(dx, b.dy, b.x, &s, self),
            FastDx::None => {}
        }
    }
}
