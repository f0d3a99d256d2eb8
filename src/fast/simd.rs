//! The vector instructions the fast layers are written in, behind one small trait.
//!
//! Every kernel of [`crate::fast`] is generic over `Simd` and marked `#[inline(always)]`; the
//! `multiversion!` macro compiles it once per instruction set inside a `#[target_feature]`
//! function and picks one from the [`Isa`] it is given (the crate's one instruction-set choice,
//! [`crate::isa`], which Part I's rows use too). So one source gives AVX-512 (16 lanes,
//! 32 registers), AVX2 + FMA (8 lanes, 16 registers), NEON (4 lanes, 32 registers, FMA),
//! wasm SIMD128 (4 lanes) and a portable fallback (8 lanes of plain Rust that LLVM vectorises
//! for whatever the target has).

pub use crate::isa::Isa;

/// Defines `$vis fn $name(isa: Isa, args...)` that runs `$imp::<S>(args...)` for the [`Simd`]
/// type of `isa`, compiled with that instruction set's target features. `$imp` and everything
/// it calls down to the intrinsics must be `#[inline(always)]` so that the whole kernel is
/// compiled inside the `#[target_feature]` function.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = $imp:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)?) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::fast::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                $imp::<$crate::fast::simd::Avx512>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                $imp::<$crate::fast::simd::Avx2>($($arg),*)
            }
            #[cfg(target_arch = "aarch64")]
            #[target_feature(enable = "neon")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn neon($($arg: $ty),*) $(-> $ret)? {
                $imp::<$crate::fast::simd::Neon>($($arg),*)
            }
            match isa.kind() {
                // SAFETY: an `Isa` naming these features exists only if the CPU has them.
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Kind::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Kind::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "aarch64")]
                $crate::isa::Kind::Neon => unsafe { neon($($arg),*) },
                // SIMD128 is enabled for the whole module at build time (WebAssembly has no
                // run-time detection), so no wrapper is needed.
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                $crate::isa::Kind::Simd128 => $imp::<$crate::fast::simd::Simd128>($($arg),*),
                $crate::isa::Kind::Portable => $imp::<$crate::fast::simd::Portable>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// One instruction set's f32 vectors. All functions are `unsafe`: they may only run inside a
/// function compiled for the instruction set (see [`multiversion!`]), and pointers must be valid
/// for the lanes they touch.
pub(crate) trait Simd: Copy {
    /// f32 lanes per vector.
    const LANES: usize;
    /// Vector registers the compiler can keep accumulators in.
    const REGISTERS: usize;
    type V: Copy;
    /// Which lanes a partial load/store touches.
    type Mask: Copy;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n` lanes (`n ≤ LANES`).
    unsafe fn mask(n: usize) -> Self::Mask;
    /// Loads the masked lanes, zeros elsewhere; reads nothing outside the mask.
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self::V;
    /// Writes the masked lanes only.
    unsafe fn store_masked(p: *mut f32, v: Self::V, m: Self::Mask);
    /// `a·b + c` (fused where the instruction set has FMA).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `max(v, 0)`, and 0 for NaN, as `f32::max(v, 0.0)`.
    unsafe fn relu(v: Self::V) -> Self::V;
    /// `dy` where `y > 0`, else 0: the ReLU's backward pass.
    unsafe fn where_positive(y: Self::V, dy: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Simd;

    /// 16 lanes of `zmm`, 32 registers, embedded broadcasts and lane masks.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        const LANES: usize = 16;
        const REGISTERS: usize = 32;
        type V = __m512;
        type Mask = __mmask16;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __mmask16 {
            ((1u32 << n) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(m, p)
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
            _mm512_mask_storeu_ps(p, m, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn relu(v: __m512) -> __m512 {
            // maxps returns its second operand when the first is NaN.
            _mm512_max_ps(v, _mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn where_positive(y: __m512, dy: __m512) -> __m512 {
            _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_setzero_ps()), dy)
        }
    }

    /// 8 lanes of `ymm`, 16 registers, FMA.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;

    impl Simd for Avx2 {
        const LANES: usize = 8;
        const REGISTERS: usize = 16;
        type V = __m256;
        type Mask = __m256i;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> __m256i {
            // Lane i is on when i < n: compare the lane numbers with n.
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
            _mm256_maskload_ps(p, m)
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
            _mm256_maskstore_ps(p, m, v)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn relu(v: __m256) -> __m256 {
            _mm256_max_ps(v, _mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn where_positive(y: __m256, dy: __m256) -> __m256 {
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()), dy)
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::Simd;

    /// 4 lanes of a 128-bit `q` register, 32 registers, fused multiply-add (`fmla`) as baseline:
    /// the register-rich tiles of AVX-512 (16 accumulators a tile and more), a quarter as wide.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Neon;

    impl Simd for Neon {
        const LANES: usize = 4;
        const REGISTERS: usize = 32;
        type V = float32x4_t;
        type Mask = usize;

        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            vdupq_n_f32(0.0)
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            vdupq_n_f32(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            vld1q_f32(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            vst1q_f32(p, v)
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> usize {
            n
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, n: usize) -> float32x4_t {
            super::load_first::<Self>(p, n)
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: float32x4_t, n: usize) {
            super::store_first::<Self>(p, v, n)
        }
        #[inline(always)]
        unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            vfmaq_f32(c, a, b)
        }
        #[inline(always)]
        unsafe fn relu(v: float32x4_t) -> float32x4_t {
            // fmaxnm returns the number when one operand is NaN: max(NaN, 0) = 0, as f32::max.
            vmaxnmq_f32(v, vdupq_n_f32(0.0))
        }
        #[inline(always)]
        unsafe fn where_positive(y: float32x4_t, dy: float32x4_t) -> float32x4_t {
            let positive = vcgtq_f32(y, vdupq_n_f32(0.0));
            vreinterpretq_f32_u32(vandq_u32(positive, vreinterpretq_u32_f32(dy)))
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use wasm::Simd128;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use std::arch::wasm32::*;

    use super::Simd;

    /// 4 lanes of a `v128`. The engine JIT-compiles it to SSE/AVX or NEON registers; 16 is what
    /// x86 gives it. `a·b + c` is a multiply and an add: relaxed SIMD's fused multiply-add trains
    /// the base net 1.3–1.5× faster in V8, but the module built with `+relaxed-simd` failed the
    /// max-pooling bit-equality test (a 0 for a −0: relaxed min/max leave signed zeros to the
    /// engine), so it is not used.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Simd128;

    impl Simd for Simd128 {
        const LANES: usize = 4;
        const REGISTERS: usize = 16;
        type V = v128;
        type Mask = usize;

        #[inline(always)]
        unsafe fn zero() -> v128 {
            f32x4_splat(0.0)
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> v128 {
            f32x4_splat(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> v128 {
            v128_load(p.cast())
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: v128) {
            v128_store(p.cast(), v)
        }
        #[inline(always)]
        unsafe fn mask(n: usize) -> usize {
            n
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, n: usize) -> v128 {
            super::load_first::<Self>(p, n)
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, v: v128, n: usize) {
            super::store_first::<Self>(p, v, n)
        }
        #[inline(always)]
        unsafe fn fma(a: v128, b: v128, c: v128) -> v128 {
            f32x4_add(f32x4_mul(a, b), c)
        }
        #[inline(always)]
        unsafe fn relu(v: v128) -> v128 {
            // pmax(0, v) is `0 < v ? v : 0`: 0 for NaN, as f32::max(v, 0).
            f32x4_pmax(f32x4_splat(0.0), v)
        }
        #[inline(always)]
        unsafe fn where_positive(y: v128, dy: v128) -> v128 {
            v128_and(f32x4_gt(y, f32x4_splat(0.0)), dy)
        }
    }
}

/// [`Simd::load_masked`] where the mask is a lane count `n` and there are no masked loads (NEON,
/// SIMD128, portable): the first `n` floats go through a stack copy, so nothing past them is read,
/// and the other lanes are 0.
#[inline(always)]
unsafe fn load_first<S: Simd>(p: *const f32, n: usize) -> S::V {
    debug_assert!(n <= S::LANES && S::LANES <= 16);
    let mut lanes = [0f32; 16];
    std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n);
    S::load(lanes.as_ptr())
}

/// [`Simd::store_masked`] the same way: the vector goes to a stack copy, its first `n` floats on.
#[inline(always)]
unsafe fn store_first<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    debug_assert!(n <= S::LANES && S::LANES <= 16);
    let mut lanes = [0f32; 16];
    S::store(lanes.as_mut_ptr(), v);
    std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n);
}

/// Eight lanes of plain Rust; LLVM maps the arrays to whatever vectors the target has. `a·b + c`
/// is fused on aarch64, where FMA is part of the base instruction set, and unfused elsewhere
/// (a `mul_add` without hardware FMA is a library call).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    const REGISTERS: usize = 16;
    type V = [f32; 8];
    type Mask = usize;

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        p.cast::<[f32; 8]>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        p.cast::<[f32; 8]>().write_unaligned(v)
    }
    #[inline(always)]
    unsafe fn mask(n: usize) -> usize {
        n
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, n: usize) -> [f32; 8] {
        load_first::<Self>(p, n)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: [f32; 8], n: usize) {
        store_first::<Self>(p, v, n)
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        if cfg!(target_arch = "aarch64") {
            std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
        } else {
            std::array::from_fn(|i| a[i] * b[i] + c[i])
        }
    }
    #[inline(always)]
    unsafe fn relu(v: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| v[i].max(0.0))
    }
    #[inline(always)]
    unsafe fn where_positive(y: [f32; 8], dy: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| if y[i] > 0.0 { dy[i] } else { 0.0 })
    }
}
