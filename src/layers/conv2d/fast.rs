//! Conv2D 3×3, stride 1 or 2, Keras 'same' padding, bias, fused ReLU (or none) — fast. The math of
//! [`super`], as implicit GEMMs on padded NHWC tensors.
//!
//! # Shapes and layouts
//! x `[N, H, W, C]` stored [`Layout::padded`]; kernel `[3, 3, C, K]` (HWIO); bias `[K]`;
//! y `[N, OH, OW, K]` in the layout the plan was built with (padded when the next layer is a
//! convolution); dy and dx plain; dpre = dL/d(pre-activation) `[N, OH, OW, K]` padded.
//!
//! # The passes
//! - [`forward`]: for each output row, tiles of up to 16 output pixels × up to 64 filters in
//!   registers. Tap row `ky` of a pixel is the `3·C` contiguous floats of the padded input row
//!   `oy·s + ky` from column `ox·s`, against kernel rows `ky·3C ..` (HWIO is already `[9C, K]`),
//!   so `y = relu(x̂·W + b)` with `x̂` never materialised. Bias starts the accumulators; ReLU is
//!   applied on the store.
//! - [`relu_backward`]: `dpre = dy · (y > 0)`, into the padded layout the next two read.
//! - [`backward_input`]: `dx[iy, ix, c] = Σ dpre[oy, ox, k] · W[ky, kx, c, k]` over the taps that
//!   reach (iy, ix). Stride 1 is a 'full' convolution of the padded dpre with the kernel flipped
//!   and transposed to `[3, 3, K, C]`. Stride 2 splits dx into its four sub-pixel phases (the
//!   parities of `iy + pad_top`, `ix + pad_left`): each phase sees 1 or 2 taps per axis, which
//!   for a row of same-phase pixels are again contiguous runs of the padded dpre (`2K` floats
//!   for the even phase, `K` for the odd one). Same tile kernel, no scatter, no atomics.
//! - [`backward_weight`]: `dW[ky, kx, c, k] = Σ_pixels x̂[pixel, (ky, kx, c)] · dpre[pixel, k]`
//!   and `db[k] = Σ dpre[pixel, k]`: tiles of up to 24 rows of dW in registers, streamed over
//!   chunks of output rows that stay in L1.

use crate::fast::block::{dot_tile, groups, outer_tile, Dot, Outer, Tap, Tiles};
use crate::fast::simd::{multiversion, Isa};
use crate::fast::{split, FastBackward, FastDx, FastLayer, Layout, MAX_LANES};
use crate::layers::Pass;
use super::Conv2dShape;

/// A convolution's layouts and its packed-weight scratch, built once for batches of up to
/// `shape.batch`.
#[derive(Clone, Debug)]
pub struct ConvPlan {
    pub shape: Conv2dShape,
    pub isa: Isa,
    /// Padded: every 3×3 tap is in bounds.
    pub x: Layout,
    /// The output, in whatever layout its consumer reads.
    pub y: Layout,
    /// Plain, as the next layer's input gradient.
    pub dy: Layout,
    /// Padded: the input gradient reads it through the taps.
    pub dpre: Layout,
    /// Plain, as the previous layer's output gradient.
    pub dx: Layout,
    /// The kernel as `[9C, K']` (K' = K rounded up to whole vectors, zero-filled) and the bias.
    forward_weights: Vec<f32>,
    forward_bias: Vec<f32>,
    /// The kernel transposed to `[3, 3, K, C']` (flipped for stride 1, columns in kx order
    /// 2, 0, 1 for stride 2 so each phase's taps are contiguous).
    backward_weights: Vec<f32>,
}

/// The sizes of a convolution as `usize`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    in_h: usize,
    in_w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
    k: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
}

fn dims(s: &Conv2dShape) -> Dims {
    let u = |v: u32| v as usize;
    Dims {
        batch: u(s.batch),
        in_h: u(s.in_h),
        in_w: u(s.in_w),
        c: u(s.in_c),
        out_h: u(s.out_h),
        out_w: u(s.out_w),
        k: u(s.out_c),
        stride: u(s.stride),
        pad_top: u(s.pad_top),
        pad_left: u(s.pad_left),
    }
}

/// Rows of dpre per chunk of the weight gradient: about 16 KiB, so a chunk stays in L1 while
/// every tile of dW streams over it.
const CHUNK_FLOATS: usize = 4096;

impl ConvPlan {
    /// A plan for `shape` (its batch is the largest this plan runs), writing y with `y_pad`
    /// pixels of border (1 when the next layer is a convolution).
    pub fn new(shape: &Conv2dShape, isa: Isa, y_pad: usize) -> Self {
        let d = dims(shape);
        assert!(d.stride == 1 || d.stride == 2, "stride must be 1 or 2, got {}", d.stride);
        assert!(d.pad_top <= 1 && d.pad_left <= 1, "a 3×3 'same' convolution pads at most one pixel");
        let round = |v: usize| v.div_ceil(MAX_LANES) * MAX_LANES;
        let out = [d.out_h, d.out_w, d.k];
        ConvPlan {
            shape: *shape,
            isa,
            x: Layout::padded([d.in_h, d.in_w, d.c]),
            y: Layout { pad: y_pad, ..Layout::plain(out) },
            dy: Layout::plain(out),
            dpre: Layout::padded(out),
            dx: Layout::plain([d.in_h, d.in_w, d.c]),
            forward_weights: vec![0.0; 9 * d.c * round(d.k)],
            forward_bias: vec![0.0; round(d.k)],
            backward_weights: vec![0.0; 9 * d.k * round(d.c)],
        }
    }

    /// Panics unless `s` is this plan's shape for at most its batch.
    fn check(&self, s: &Conv2dShape) -> Dims {
        assert!(
            s.batch <= self.shape.batch && *s == self.shape.with_batch(s.batch as usize),
            "this convolution plan was built for {:?}, not {s:?}",
            self.shape
        );
        dims(s)
    }

    /// Floats of scratch this plan holds (for the allocation tests).
    pub fn scratch_capacity(&self) -> usize {
        self.forward_weights.capacity() + self.forward_bias.capacity() + self.backward_weights.capacity()
    }
}

fn check_len(what: &str, buffer: usize, needed: usize) {
    assert!(buffer >= needed, "{what} holds {buffer} floats, the layer needs {needed}");
}

// ---------------------------------------------------------------------------------------------
// Forward.

/// `y = relu(conv(x, kernel) + bias)` for the first `s.batch` images. x in `plan.x` (padded),
/// y in `plan.y`; only y's pixels are written, never its border.
pub fn forward(y: &mut [f32], x: &[f32], kernel: &[f32], bias: &[f32], s: &Conv2dShape, plan: &mut ConvPlan) {
    plan.pack_forward(kernel, bias);
    forward_packed(y, x, s, plan);
}

/// [`forward`] with the weights already packed by [`ConvPlan::pack_forward`] (once per step,
/// however many micro-batches run through the layer).
pub fn forward_packed(y: &mut [f32], x: &[f32], s: &Conv2dShape, plan: &ConvPlan) {
    let d = plan.check(s);
    check_len("x", x.len(), plan.x.len(d.batch));
    check_len("y", y.len(), plan.y.len(d.batch));
    forward_isa(plan.isa, y, x, d.batch, plan);
}

impl ConvPlan {
    /// Packs the kernel rows to whole vectors for [`forward_packed`] (the padding lanes multiply
    /// into lanes that are never stored), and the bias.
    pub fn pack_forward(&mut self, kernel: &[f32], bias: &[f32]) {
        let d = dims(&self.shape);
        let (c, k) = (d.c, d.k);
        check_len("kernel", kernel.len(), 9 * c * k);
        check_len("bias", bias.len(), k);
        let kp = self.forward_bias.len();
        for (row, packed) in kernel[..9 * c * k].chunks_exact(k).zip(self.forward_weights.chunks_exact_mut(kp)) {
            packed[..k].copy_from_slice(row);
            packed[k..].fill(0.0);
        }
        self.forward_bias[..k].copy_from_slice(&bias[..k]);
        self.forward_bias[k..].fill(0.0);
    }

    /// Packs the kernel transposed for [`backward_input_packed`]: rows `[ky', q, k]` of C'
    /// floats. Stride 1: ky' = 2 − ky and q = 2 − kx (the 'full' convolution flips the kernel).
    /// Stride 2: ky as is, q over kx = 2, 0, 1 (so each phase's taps are contiguous rows).
    pub fn pack_backward(&mut self, kernel: &[f32]) {
        let d = dims(&self.shape);
        let (c, k) = (d.c, d.k);
        check_len("kernel", kernel.len(), 9 * c * k);
        let cp = self.backward_weights.len() / (9 * k);
        for ky in 0..3 {
            for q in 0..3 {
                let (from_ky, from_kx) = if d.stride == 1 { (2 - ky, 2 - q) } else { (ky, [2, 0, 1][q]) };
                for kk in 0..k {
                    let packed = &mut self.backward_weights[((ky * 3 + q) * k + kk) * cp..][..cp];
                    for (ch, value) in packed[..c].iter_mut().enumerate() {
                        *value = kernel[((from_ky * 3 + from_kx) * c + ch) * k + kk];
                    }
                    packed[c..].fill(0.0);
                }
            }
        }
    }
}

multiversion!(fn forward_isa = forward_impl(y: &mut [f32], x: &[f32], batch: usize, plan: &ConvPlan));

#[inline(always)]
fn forward_impl<S: Tiles>(y: &mut [f32], x: &[f32], batch: usize, plan: &ConvPlan) {
    let d = dims(&plan.shape);
    let (c, k) = (d.c, d.k);
    let kp = plan.forward_bias.len();
    let x_row = plan.x.row_stride();
    let taps = [
        Tap { src: 0, w: 0, len: 3 * c },
        Tap { src: x_row, w: 3 * c, len: 3 * c },
        Tap { src: 2 * x_row, w: 6 * c, len: 3 * c },
    ];
    let (w, b) = (plan.forward_weights.as_ptr(), plan.forward_bias.as_ptr());
    for n in 0..batch {
        for oy in 0..d.out_h {
            // SAFETY: the stored rows oy·s + ky - pad_top + 1 (ky < 3) and columns up to
            // (OW - 1)·s + 2 - pad_left + 1 lie inside the padded image (pad ≤ 1 a side, and
            // TensorFlow's padding never reaches further), and the y rows are inside y.
            unsafe {
                let src = x.as_ptr().add(plan.x.at_stored(n, oy * d.stride + 1 - d.pad_top, 1 - d.pad_left));
                let dst = y.as_mut_ptr().add(plan.y.at(n, oy, 0));
                for (first, vectors, lanes) in groups::<S>(k) {
                    for (ox, pixels) in split(d.out_w, dot_tile::<S>(vectors)) {
                        let dot = Dot {
                            src: src.add(ox * d.stride * c),
                            src_step: d.stride * c,
                            taps: &taps,
                            w: w.add(first),
                            w_stride: kp,
                            init: Some(b.add(first)),
                            dst: dst.add(ox * k + first),
                            dst_step: k,
                            lanes,
                            relu: plan.shape.relu,
                            mask: None,
                        };
                        S::dot(&dot, pixels, vectors);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward.

/// `dpre = dy · (y > 0)` (`dy` without the activation) for the first `s.batch` images: dy in
/// `plan.dy`, y in `plan.y`, dpre written in `plan.dpre` (padded; its border is not written).
pub fn relu_backward(dpre: &mut [f32], dy: &[f32], y: &[f32], s: &Conv2dShape, plan: &ConvPlan) {
    let d = plan.check(s);
    check_len("dpre", dpre.len(), plan.dpre.len(d.batch));
    check_len("dy", dy.len(), plan.dy.len(d.batch));
    check_len("y", y.len(), plan.y.len(d.batch));
    relu_backward_isa(plan.isa, dpre, dy, y, d.batch, plan);
}

multiversion!(fn relu_backward_isa = relu_backward_impl(dpre: &mut [f32], dy: &[f32], y: &[f32], batch: usize, plan: &ConvPlan));

#[inline(always)]
fn relu_backward_impl<S: Tiles>(dpre: &mut [f32], dy: &[f32], y: &[f32], batch: usize, plan: &ConvPlan) {
    let d = dims(&plan.shape);
    let row = d.out_w * d.k;
    let full = row / S::LANES * S::LANES;
    for n in 0..batch {
        for oy in 0..d.out_h {
            let (g, m) = (&dy[plan.dy.at(n, oy, 0)..][..row], &y[plan.y.at(n, oy, 0)..][..row]);
            let out = &mut dpre[plan.dpre.at(n, oy, 0)..][..row];
            if !plan.shape.relu {
                out.copy_from_slice(g);
                continue;
            }
            // SAFETY: every vector lies inside the three rows just sliced.
            unsafe {
                let mut i = 0;
                while i < full {
                    let v = S::where_positive(S::load(m.as_ptr().add(i)), S::load(g.as_ptr().add(i)));
                    S::store(out.as_mut_ptr().add(i), v);
                    i += S::LANES;
                }
            }
            for i in full..row {
                out[i] = if m[i] > 0.0 { g[i] } else { 0.0 };
            }
        }
    }
}

/// `dx = dL/dx` from dpre (in `plan.dpre`, border zero), written plain in `plan.dx` for the first
/// `s.batch` images: every element written.
pub fn backward_input(dx: &mut [f32], dpre: &[f32], kernel: &[f32], s: &Conv2dShape, plan: &mut ConvPlan) {
    plan.pack_backward(kernel);
    backward_input_packed(dx, dpre, s, plan);
}

/// [`backward_input`] with the weights packed by [`ConvPlan::pack_backward`].
pub fn backward_input_packed(dx: &mut [f32], dpre: &[f32], s: &Conv2dShape, plan: &ConvPlan) {
    let d = plan.check(s);
    check_len("dx", dx.len(), plan.dx.len(d.batch));
    check_len("dpre", dpre.len(), plan.dpre.len(d.batch));
    let out = plan.dx;
    backward_input_isa(plan.isa, dx, &out, None, dpre, d.batch, plan);
}

/// [`backward_input`] through the ReLU of the convolution before this one, fused: `x` is this
/// layer's input (that convolution's output y, in `plan.x`), and the result
/// `dx · (x > 0)` is written in `plan.x`'s padded layout — exactly the previous layer's dpre, so
/// its [`relu_backward`] pass is skipped. The border of `dpre_before` is not written.
pub fn backward_input_relu(
    dpre_before: &mut [f32],
    dpre: &[f32],
    kernel: &[f32],
    x: &[f32],
    s: &Conv2dShape,
    plan: &mut ConvPlan,
) {
    plan.pack_backward(kernel);
    backward_input_relu_packed(dpre_before, dpre, x, s, plan);
}

/// [`backward_input_relu`] with the weights packed by [`ConvPlan::pack_backward`].
pub fn backward_input_relu_packed(dpre_before: &mut [f32], dpre: &[f32], x: &[f32], s: &Conv2dShape, plan: &ConvPlan) {
    let d = plan.check(s);
    check_len("dpre_before", dpre_before.len(), plan.x.len(d.batch));
    check_len("x", x.len(), plan.x.len(d.batch));
    check_len("dpre", dpre.len(), plan.dpre.len(d.batch));
    let out = plan.x;
    backward_input_isa(plan.isa, dpre_before, &out, Some(x), dpre, d.batch, plan);
}

multiversion!(fn backward_input_isa = backward_input_impl(dx: &mut [f32], out: &Layout, mask: Option<&[f32]>, dpre: &[f32], batch: usize, plan: &ConvPlan));

#[inline(always)]
fn backward_input_impl<S: Tiles>(
    dx: &mut [f32],
    out: &Layout,
    mask: Option<&[f32]>,
    dpre: &[f32],
    batch: usize,
    plan: &ConvPlan,
) {
    let d = dims(&plan.shape);
    let (c, k) = (d.c, d.k);
    let cp = plan.backward_weights.len() / (9 * k);
    let w = plan.backward_weights.as_ptr();
    let d_row = plan.dpre.row_stride();
    for n in 0..batch {
        for iy in 0..d.in_h {
            let dst = out.at(n, iy, 0);
            let target =
                Rows { dx: dx.as_mut_ptr(), mask: mask.map(<[f32]>::as_ptr), dpre: dpre.as_ptr(), w, w_stride: cp };
            if d.stride == 1 {
                // dx[iy, ix] reads stored dpre rows iy..iy+2, columns ix..ix+2 (pad_top = 1).
                let taps = [
                    Tap { src: 0, w: 0, len: 3 * k },
                    Tap { src: d_row, w: 3 * k, len: 3 * k },
                    Tap { src: 2 * d_row, w: 6 * k, len: 3 * k },
                ];
                let src = plan.dpre.at_stored(n, iy, 0);
                // SAFETY: stored rows iy..=iy+2 ≤ H + 1 and columns ix..=ix+2 ≤ W + 1 of the
                // padded dpre (OH = H, OW = W), and dx pixels inside dx.
                unsafe { input_row::<S>(&target, &taps, src, k, dst, c, d.in_w, c) };
            } else {
                // Phase of the row: a = iy + pad_top. Even a gets ky = 2 (stored row a/2) and
                // ky = 0 (a/2 + 1); odd a gets ky = 1 (stored row (a + 1)/2).
                let a = iy + d.pad_top;
                let mut rows = [(0, 0); 2];
                let row_taps: &[(usize, usize)] = if a.is_multiple_of(2) {
                    rows = [(a / 2, 2), (a / 2 + 1, 0)];
                    &rows
                } else {
                    rows[0] = (a.div_ceil(2), 1);
                    &rows[..1]
                };
                for class in 0..2 {
                    // Pixels whose b = ix + pad_left has parity `class`, every other column.
                    let first = (class + d.pad_left) % 2;
                    if first >= d.in_w {
                        continue;
                    }
                    let count = (d.in_w - first).div_ceil(2);
                    let b = first + d.pad_left;
                    // Even b: stored columns b/2 (kx = 2) and b/2 + 1 (kx = 0), weight rows q = 0, 1.
                    // Odd b: stored column (b + 1)/2 (kx = 1), weight rows q = 2.
                    let (column, len, q) = if class == 0 { (b / 2, 2 * k, 0) } else { (b.div_ceil(2), k, 2 * k) };
                    let mut taps = [Tap::default(); 2];
                    for (tap, &(row, ky)) in taps.iter_mut().zip(row_taps) {
                        *tap = Tap { src: row * d_row, w: ky * 3 * k + q, len };
                    }
                    let src = plan.dpre.at_stored(n, 0, column);
                    // SAFETY: the stored rows and columns above are at most OH + 1 and OW + 1.
                    unsafe {
                        input_row::<S>(&target, &taps[..row_taps.len()], src, k, dst + first * c, 2 * c, count, c)
                    };
                }
            }
        }
    }
}

/// Where [`input_row`] reads and writes: dx (and the mask laid out like it), dpre, the
/// transposed weights.
struct Rows {
    dx: *mut f32,
    mask: Option<*const f32>,
    dpre: *const f32,
    w: *const f32,
    w_stride: usize,
}

/// One row of dx (or one phase of it): `count` pixels `dst_step` floats apart, pixel `p`
/// reading the taps from `src + p·src_step` of dpre.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_row<S: Tiles>(
    r: &Rows,
    taps: &[Tap],
    src: usize,
    src_step: usize,
    dst: usize,
    dst_step: usize,
    count: usize,
    channels: usize,
) {
    for (first, vectors, lanes) in groups::<S>(channels) {
        for (p, pixels) in split(count, dot_tile::<S>(vectors)) {
            let at = dst + p * dst_step + first;
            let dot = Dot {
                src: r.dpre.add(src + p * src_step),
                src_step,
                taps,
                w: r.w.add(first),
                w_stride: r.w_stride,
                init: None,
                dst: r.dx.add(at),
                dst_step,
                lanes,
                relu: false,
                mask: r.mask.map(|m| m.add(at)),
            };
            S::dot(&dot, pixels, vectors);
        }
    }
}

/// `dkernel = dL/dkernel`, `dbias = dL/dbias` (overwritten) from dpre (in `plan.dpre`) and x
/// (in `plan.x`), over the first `s.batch` images.
pub fn backward_weight(
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dpre: &[f32],
    x: &[f32],
    s: &Conv2dShape,
    plan: &ConvPlan,
) {
    let d = plan.check(s);
    dkernel[..9 * d.c * d.k].fill(0.0);
    dbias[..d.k].fill(0.0);
    accumulate_weight(dkernel, dbias, dpre, x, s, plan);
}

/// [`backward_weight`] added to `dkernel` and `dbias` (for gradients summed over micro-batches).
pub fn accumulate_weight(
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dpre: &[f32],
    x: &[f32],
    s: &Conv2dShape,
    plan: &ConvPlan,
) {
    let d = plan.check(s);
    check_len("dkernel", dkernel.len(), 9 * d.c * d.k);
    check_len("dbias", dbias.len(), d.k);
    check_len("dpre", dpre.len(), plan.dpre.len(d.batch));
    check_len("x", x.len(), plan.x.len(d.batch));
    backward_weight_isa(plan.isa, dkernel, dbias, dpre, x, d.batch, plan);
}

multiversion!(fn backward_weight_isa = backward_weight_impl(dkernel: &mut [f32], dbias: &mut [f32], dpre: &[f32], x: &[f32], batch: usize, plan: &ConvPlan));

#[inline(always)]
fn backward_weight_impl<S: Tiles>(
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dpre: &[f32],
    x: &[f32],
    batch: usize,
    plan: &ConvPlan,
) {
    let d = dims(&plan.shape);
    let (c, k) = (d.c, d.k);
    let one = 1.0f32;
    let chunk_rows = (CHUNK_FLOATS / (d.out_w * k).max(1)).max(1);
    let (x_row, d_row) = (plan.x.row_stride(), plan.dpre.row_stride());
    for n in 0..batch {
        for (oy, rows) in split(d.out_h, chunk_rows) {
            let grad = plan.dpre.at(n, oy, 0);
            for (first, vectors, lanes) in groups::<S>(k) {
                let outer = |src: *const f32, src_step, src_row, acc: *mut f32| Outer {
                    src,
                    src_step,
                    src_row,
                    // SAFETY (of the pointer arithmetic): inside dpre, checked by the caller.
                    grad: unsafe { dpre.as_ptr().add(grad + first) },
                    grad_step: k,
                    grad_row: d_row,
                    count: d.out_w,
                    rows,
                    acc,
                    acc_stride: k,
                    lanes,
                };
                // SAFETY: the x rows oy·s + ky - pad_top + 1 and columns up to
                // (OW - 1)·s + 2 - pad_left + 1 are inside the padded input; the dpre rows of the
                // chunk inside dpre; the dW rows ky·3C + j .. + tile inside dkernel.
                unsafe {
                    // db: a row of dW whose source is the constant 1.
                    let o = outer(&one, 0, 0, dbias.as_mut_ptr().add(first));
                    S::outer(&o, 1, vectors);
                    for ky in 0..3 {
                        let src =
                            x.as_ptr().add(plan.x.at_stored(n, oy * d.stride + ky + 1 - d.pad_top, 1 - d.pad_left));
                        for (j, tile) in split(3 * c, outer_tile::<S>(vectors)) {
                            let acc = dkernel.as_mut_ptr().add((ky * 3 * c + j) * k + first);
                            let o = outer(src.add(j), d.stride * c, d.stride * x_row, acc);
                            S::outer(&o, tile, vectors);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The engine's interface.

impl FastLayer for ConvPlan {
    fn pack(&mut self, params: &[f32], backward: bool) {
        let s = self.shape;
        self.pack_forward(&params[s.kernel_range()], &params[s.bias_range()]);
        if backward {
            self.pack_backward(&params[s.kernel_range()]);
        }
    }

    fn forward(&self, batch: usize, _pass: Pass, x: &[f32], y: &mut [f32], _state: &[f32]) {
        forward_packed(y, x, &self.shape.with_batch(batch), self);
    }

    fn backward(&self, batch: usize, _pass: Pass, b: FastBackward<'_>) {
        let s = self.shape.with_batch(batch);
        let dpre = b.dpre.expect("the engine gives a convolution its dpre (Fusion::dpre_pad)");
        if !b.dpre_ready {
            relu_backward(dpre, b.dy, b.y, &s, self);
        }
        match b.dx {
            FastDx::ThroughRelu(dpre_before) => backward_input_relu_packed(dpre_before, dpre, b.x, &s, self),
            FastDx::Plain(dx) => backward_input_packed(dx, dpre, &s, self),
            FastDx::None => {}
        }
        // The bias follows the kernel.
        let (dkernel, dbias) = b.grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
        accumulate_weight(dkernel, dbias, dpre, b.x, &s, self);
    }

    fn scratch_capacity(&self) -> usize {
        ConvPlan::scratch_capacity(self)
    }
}
