//! The vector instructions the fast layers are written in, behind one small trait, and the choice
//! of instruction set at run time.
//!
//! Every kernel of [`crate::fast`] is generic over `Simd` and marked `#[inline(always)]`; the
//! `multiversion!` macro compiles it once per instruction set inside a `#[target_feature]`
//! function and picks one from the [`Isa`] it is given. So one source gives AVX-512 (16 lanes,
//! 32 registers), AVX2 + FMA (8 lanes, 16 registers) and a portable fallback (8 lanes of plain
//! Rust that LLVM vectorises for whatever the target has: SSE2, NEON, ...).
//!
//! The crate is built without `-C target-cpu=native`, so detection happens here, once, with
//! `is_x86_feature_detected!`; an [`Isa`] can only be obtained for a CPU that supports it, which
//! is what makes calling the `#[target_feature]` functions sound.

use std::fmt;

/// An instruction set the fast kernels are compiled for. Only constructible for instruction sets
/// the running CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    /// The widest instruction set this CPU has.
    pub fn best() -> Isa {
        Isa::supported()[0]
    }

    /// Every instruction set this CPU runs, widest first (the portable one always last).
    pub fn supported() -> Vec<Isa> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Isa(Kind::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(Isa(Kind::Avx2));
            }
        }
        all.push(Isa(Kind::Portable));
        all
    }

    /// The instruction set called `name` ("avx512", "avx2", "portable"), if this CPU runs it.
    pub fn named(name: &str) -> Option<Isa> {
        Isa::supported().into_iter().find(|isa| isa.name().eq_ignore_ascii_case(name))
    }

    /// The portable fallback (runs everywhere).
    pub fn portable() -> Isa {
        Isa(Kind::Portable)
    }

    pub fn name(&self) -> &'static str {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "avx2",
            Kind::Portable => "portable",
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.0
    }

    /// f32 lanes per vector register.
    pub fn lanes(&self) -> usize {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => 8,
            Kind::Portable => 8,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => "AVX-512",
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => "AVX2",
            Kind::Portable => "portable SIMD",
        })
    }
}

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
            match isa.kind() {
                // SAFETY: an `Isa` naming these features exists only if the CPU has them.
                #[cfg(target_arch = "x86_64")]
                $crate::fast::simd::Kind::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::fast::simd::Kind::Avx2 => unsafe { avx2($($arg),*) },
                $crate::fast::simd::Kind::Portable => $imp::<$crate::fast::simd::Portable>($($arg),*),
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
        let mut v = [0.0; 8];
        for (i, lane) in v.iter_mut().enumerate().take(n) {
            *lane = *p.add(i);
        }
        v
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: [f32; 8], n: usize) {
        for (i, lane) in v.iter().enumerate().take(n) {
            *p.add(i) = *lane;
        }
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
