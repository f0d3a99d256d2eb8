//! The two register-blocked micro-kernels that every fast layer is built from. Both keep a
//! `P × V` (or `R × V`) tile of accumulators in vector registers and stream their operands
//! from memory once, with one scalar broadcast per multiply-add row, which AVX-512 folds into
//! the FMA itself (`vfmadd231ps zmm, zmm, dword ptr [..]{1to16}`).
//!
//! - [`dot_block`]: `P` outputs of `V` vectors each, every output a sum over "taps" of
//!   contiguous source runs times weight rows: the forward convolution (implicit GEMM straight
//!   from the padded NHWC input, no im2col copy), the input gradient (the same with transposed
//!   weights over the padded output gradient) and both dense products.
//! - [`outer_block`]: `R` rows of a weight gradient, each a sum over pixels of one source value
//!   times the pixel's gradient vector: `dW += colᵀ·dpre` without materialising `col`.
//!
//! `P`, `R` and `V` are const generics so that the tiles live in registers; [`with_p_v!`] and
//! [`with_r_v!`] turn run-time sizes into those constants.

#[cfg(target_arch = "aarch64")]
use super::simd::Neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use super::simd::Simd128;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd};

/// The tile dispatchers of one instruction set, compiled once each (not inlined into every
/// caller: they hold ~100 tile variants).
pub(crate) trait Tiles: Simd {
    /// [`run_dot`] for this instruction set.
    unsafe fn dot(d: &Dot<'_>, p: usize, v: usize);
    /// [`run_outer`] for this instruction set.
    unsafe fn outer(o: &Outer, r: usize, v: usize);
}

macro_rules! tiles {
    ($S:ty, $($features:literal)?) => {
        impl Tiles for $S {
            #[inline(always)]
            unsafe fn dot(d: &Dot<'_>, p: usize, v: usize) {
                $(#[target_feature(enable = $features)])?
                #[inline(never)]
                unsafe fn dot(d: &Dot<'_>, p: usize, v: usize) {
                    run_dot::<$S>(d, p, v)
                }
                dot(d, p, v)
            }
            #[inline(always)]
            unsafe fn outer(o: &Outer, r: usize, v: usize) {
                $(#[target_feature(enable = $features)])?
                #[inline(never)]
                unsafe fn outer(o: &Outer, r: usize, v: usize) {
                    run_outer::<$S>(o, r, v)
                }
                outer(o, r, v)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
tiles!(Avx512, "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma");
#[cfg(target_arch = "x86_64")]
tiles!(Avx2, "avx2,fma");
#[cfg(target_arch = "aarch64")]
tiles!(Neon, "neon");
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
tiles!(Simd128,);
tiles!(Portable,);

/// One tap of a [`dot_block`]: `len` consecutive source floats starting `src` floats after the
/// pixel's base, against the `len` weight rows starting at row `w`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tap {
    pub src: usize,
    pub w: usize,
    pub len: usize,
}

/// Operands of a [`dot_block`]. Output `p`, lane `l` (`l < lanes`, at most `V·LANES`) is
/// `init[l] + Σ_taps Σ_j src[p·src_step + tap.src + j] · w[(tap.w + j)·w_stride + l]`,
/// stored at `dst[p·dst_step + l]`, through `max(·, 0)` when `relu`, and zeroed where
/// `mask[p·dst_step + l] ≤ 0` when there is a mask (the ReLU of the layer before, fused).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dot<'a> {
    pub src: *const f32,
    pub src_step: usize,
    pub taps: &'a [Tap],
    /// Weight rows, `w_stride` floats apart, each readable for `V·LANES` floats (zero-padded).
    pub w: *const f32,
    pub w_stride: usize,
    /// `V·LANES` readable floats, or None to start from zero.
    pub init: Option<*const f32>,
    pub dst: *mut f32,
    pub dst_step: usize,
    pub lanes: usize,
    pub relu: bool,
    /// Laid out as dst.
    pub mask: Option<*const f32>,
}

/// See [`Dot`]. `P·V` accumulators stay in registers; each step of a tap loads `V` weight
/// vectors and broadcasts `P` source floats. `STEP` is `src_step` when it is known at compile
/// time (0 when not): the `P` broadcast addresses are then immediate offsets from one register
/// instead of `P` registers, which the 16-output tile does not have to spare.
#[inline(always)]
pub(crate) unsafe fn dot_block<S: Simd, const P: usize, const V: usize, const STEP: usize>(d: &Dot<'_>) {
    let step = if STEP == 0 { d.src_step } else { STEP };
    let mut acc = [[S::zero(); V]; P];
    if let Some(init) = d.init {
        let mut start = [S::zero(); V];
        for v in 0..V {
            start[v] = S::load(init.add(v * S::LANES));
        }
        acc = [start; P];
    }
    for tap in d.taps {
        let mut src = d.src.add(tap.src);
        let mut w = d.w.add(tap.w * d.w_stride);
        for _ in 0..tap.len {
            let mut wv = [S::zero(); V];
            for v in 0..V {
                wv[v] = S::load(w.add(v * S::LANES));
            }
            for p in 0..P {
                let x = S::splat(*src.add(p * step));
                for v in 0..V {
                    acc[p][v] = S::fma(x, wv[v], acc[p][v]);
                }
            }
            src = src.add(1);
            w = w.add(d.w_stride);
        }
    }
    for p in 0..P {
        let dst = d.dst.add(p * d.dst_step);
        for v in 0..V {
            let mut value = if d.relu { S::relu(acc[p][v]) } else { acc[p][v] };
            let lanes = d.lanes - v * S::LANES;
            let full = v + 1 < V || lanes >= S::LANES;
            if let Some(mask) = d.mask {
                let at = mask.add(p * d.dst_step + v * S::LANES);
                let m = if full { S::load(at) } else { S::load_masked(at, S::mask(lanes)) };
                value = S::where_positive(m, value);
            }
            if full {
                S::store(dst.add(v * S::LANES), value);
            } else {
                S::store_masked(dst.add(v * S::LANES), value, S::mask(lanes));
            }
        }
    }
}

/// Operands of an [`outer_block`]: for each of `rows × count` pixels `m` (pixel `i` of row
/// `q`), accumulator row `r`, lane `l` (`l < lanes`, at most `V·LANES`) gains
/// `src[q·src_row + i·src_step + r] · grad[q·grad_row + i·grad_step + l]`. Accumulator row `r`
/// lives at `acc[r·acc_stride ..]` and is read at the start and written at the end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outer {
    pub src: *const f32,
    pub src_step: usize,
    pub src_row: usize,
    pub grad: *const f32,
    pub grad_step: usize,
    pub grad_row: usize,
    pub count: usize,
    pub rows: usize,
    pub acc: *mut f32,
    pub acc_stride: usize,
    pub lanes: usize,
}

/// See [`Outer`]. `R·V` accumulators stay in registers; each pixel loads `V` gradient vectors
/// and broadcasts `R` consecutive source floats.
#[inline(always)]
pub(crate) unsafe fn outer_block<S: Simd, const R: usize, const V: usize>(o: &Outer) {
    let last_lanes = o.lanes - (V - 1) * S::LANES;
    let partial = last_lanes < S::LANES;
    let last_mask = S::mask(last_lanes.min(S::LANES));
    let mut acc = [[S::zero(); V]; R];
    for r in 0..R {
        let row = o.acc.add(r * o.acc_stride);
        for v in 0..V {
            acc[r][v] = if v + 1 == V && partial {
                S::load_masked(row.add(v * S::LANES), last_mask)
            } else {
                S::load(row.add(v * S::LANES))
            };
        }
    }
    for q in 0..o.rows {
        let mut src = o.src.add(q * o.src_row);
        let mut grad = o.grad.add(q * o.grad_row);
        for _ in 0..o.count {
            let mut g = [S::zero(); V];
            for v in 0..V {
                g[v] = if v + 1 == V && partial {
                    S::load_masked(grad.add(v * S::LANES), last_mask)
                } else {
                    S::load(grad.add(v * S::LANES))
                };
            }
            for r in 0..R {
                let x = S::splat(*src.add(r));
                for v in 0..V {
                    acc[r][v] = S::fma(x, g[v], acc[r][v]);
                }
            }
            src = src.add(o.src_step);
            grad = grad.add(o.grad_step);
        }
    }
    for r in 0..R {
        let row = o.acc.add(r * o.acc_stride);
        for v in 0..V {
            if v + 1 == V && partial {
                S::store_masked(row.add(v * S::LANES), acc[r][v], last_mask);
            } else {
                S::store(row.add(v * S::LANES), acc[r][v]);
            }
        }
    }
}

/// The most vectors per output an instruction set's tiles are built for (a wider output is
/// cut into groups of this many vectors).
#[inline(always)]
pub(crate) fn max_vectors<S: Simd>() -> usize {
    if S::REGISTERS >= 32 {
        4
    } else {
        3
    }
}

/// Outputs per [`dot_block`] tile for `v` vectors each: as many as fit the registers beside
/// the `v` weight vectors and a broadcast, capped at 16 (the width of the base net's rows).
#[inline(always)]
pub(crate) fn dot_tile<S: Simd>(v: usize) -> usize {
    if S::REGISTERS >= 32 {
        [16, 8, 8, 6][v - 1]
    } else {
        [12, 6, 4][v - 1]
    }
}

/// Rows per [`outer_block`] tile for `v` vectors each.
#[inline(always)]
pub(crate) fn outer_tile<S: Simd>(v: usize) -> usize {
    if S::REGISTERS >= 32 {
        [24, 12, 8, 6][v - 1]
    } else {
        [12, 6, 4][v - 1]
    }
}

/// Runs `dot_block::<S, p, v, 0>(d)` for run-time `p` (1..=16) and `v` (1..=4).
macro_rules! with_p_v {
    ($S:ty, $p:expr, $v:expr, $d:expr) => {{
        macro_rules! arms {
            ($vv:literal) => {
                match $p {
                    1 => dot_block::<$S, 1, $vv, 0>($d),
                    2 => dot_block::<$S, 2, $vv, 0>($d),
                    3 => dot_block::<$S, 3, $vv, 0>($d),
                    4 => dot_block::<$S, 4, $vv, 0>($d),
                    5 => dot_block::<$S, 5, $vv, 0>($d),
                    6 => dot_block::<$S, 6, $vv, 0>($d),
                    7 => dot_block::<$S, 7, $vv, 0>($d),
                    8 => dot_block::<$S, 8, $vv, 0>($d),
                    9 => dot_block::<$S, 9, $vv, 0>($d),
                    10 => dot_block::<$S, 10, $vv, 0>($d),
                    11 => dot_block::<$S, 11, $vv, 0>($d),
                    12 => dot_block::<$S, 12, $vv, 0>($d),
                    13 => dot_block::<$S, 13, $vv, 0>($d),
                    14 => dot_block::<$S, 14, $vv, 0>($d),
                    15 => dot_block::<$S, 15, $vv, 0>($d),
                    16 => dot_block::<$S, 16, $vv, 0>($d),
                    p => unreachable!("dot tiles hold 1 to 16 outputs, not {p}"),
                }
            };
        }
        match $v {
            1 => arms!(1),
            2 => arms!(2),
            3 => arms!(3),
            4 => arms!(4),
            v => unreachable!("dot tiles hold 1 to 4 vectors, not {v}"),
        }
    }};
}

/// Runs `outer_block::<S, r, v>(o)` for run-time `r` (1..=24) and `v` (1..=4).
macro_rules! with_r_v {
    ($S:ty, $r:expr, $v:expr, $o:expr) => {{
        macro_rules! arms {
            ($vv:literal) => {
                match $r {
                    1 => outer_block::<$S, 1, $vv>($o),
                    2 => outer_block::<$S, 2, $vv>($o),
                    3 => outer_block::<$S, 3, $vv>($o),
                    4 => outer_block::<$S, 4, $vv>($o),
                    5 => outer_block::<$S, 5, $vv>($o),
                    6 => outer_block::<$S, 6, $vv>($o),
                    7 => outer_block::<$S, 7, $vv>($o),
                    8 => outer_block::<$S, 8, $vv>($o),
                    9 => outer_block::<$S, 9, $vv>($o),
                    10 => outer_block::<$S, 10, $vv>($o),
                    11 => outer_block::<$S, 11, $vv>($o),
                    12 => outer_block::<$S, 12, $vv>($o),
                    13 => outer_block::<$S, 13, $vv>($o),
                    14 => outer_block::<$S, 14, $vv>($o),
                    15 => outer_block::<$S, 15, $vv>($o),
                    16 => outer_block::<$S, 16, $vv>($o),
                    17 => outer_block::<$S, 17, $vv>($o),
                    18 => outer_block::<$S, 18, $vv>($o),
                    19 => outer_block::<$S, 19, $vv>($o),
                    20 => outer_block::<$S, 20, $vv>($o),
                    21 => outer_block::<$S, 21, $vv>($o),
                    22 => outer_block::<$S, 22, $vv>($o),
                    23 => outer_block::<$S, 23, $vv>($o),
                    24 => outer_block::<$S, 24, $vv>($o),
                    r => unreachable!("outer tiles hold 1 to 24 rows, not {r}"),
                }
            };
        }
        match $v {
            1 => arms!(1),
            2 => arms!(2),
            3 => arms!(3),
            4 => arms!(4),
            v => unreachable!("outer tiles hold 1 to 4 vectors, not {v}"),
        }
    }};
}

/// Runs the [`outer_block`] of `r` rows × `v` vectors on `o`.
#[inline(always)]
pub(crate) unsafe fn run_outer<S: Simd>(o: &Outer, r: usize, v: usize) {
    with_r_v!(S, r, v, o)
}

/// Runs the [`dot_block`] of `p` outputs × `v` vectors on `d`; the full tiles of
/// [`dot_tile`] with the source steps of the nets' layers (3·stride·C and K for C, K in
/// 3, 8, 16, 32) get a compile-time step.
#[inline(always)]
pub(crate) unsafe fn run_dot<S: Simd>(d: &Dot<'_>, p: usize, v: usize) {
    macro_rules! fixed {
        ($pp:literal, $vv:literal) => {
            match d.src_step {
                3 => return dot_block::<S, $pp, $vv, 3>(d),
                8 => return dot_block::<S, $pp, $vv, 8>(d),
                16 => return dot_block::<S, $pp, $vv, 16>(d),
                32 => return dot_block::<S, $pp, $vv, 32>(d),
                64 => return dot_block::<S, $pp, $vv, 64>(d),
                _ => {}
            }
        };
    }
    if p == dot_tile::<S>(v) {
        match (p, v) {
            (16, 1) => fixed!(16, 1),
            (8, 2) => fixed!(8, 2),
            (8, 3) => fixed!(8, 3),
            (6, 4) => fixed!(6, 4),
            (12, 1) => fixed!(12, 1),
            (6, 2) => fixed!(6, 2),
            (4, 3) => fixed!(4, 3),
            _ => {}
        }
    }
    with_p_v!(S, p, v, d)
}

/// Output groups of a layer with `width` lanes per pixel: `(first lane, vectors, lanes)` for
/// groups of at most [`max_vectors`] vectors.
#[inline(always)]
pub(crate) fn groups<S: Simd>(width: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let group = max_vectors::<S>() * S::LANES;
    (0..width).step_by(group.max(1)).map(move |first| {
        let lanes = (width - first).min(group);
        (first, lanes.div_ceil(S::LANES), lanes)
    })
}
