//! The instruction sets the CPU kernels are compiled for, and the one run-time choice between
//! them: Part I's row kernels ([`crate::filter::cpu`]) and the network's fast kernels
//! ([`crate::fast`]) both take an [`Isa`].
//!
//! - x86-64: AVX-512 (F, VL, BW, DQ, with AVX2 and FMA) or AVX2 + FMA, detected at run time with
//!   `is_x86_feature_detected!` (the crate is built without `-C target-cpu=native`);
//! - aarch64: NEON, part of the base instruction set (Apple Silicon, Graviton, Ampere, Cortex-A);
//! - wasm32: SIMD128, when the module is compiled with `-C target-feature=+simd128` (WebAssembly
//!   has no run-time detection: a module with SIMD instructions does not load where they are
//!   missing, so the choice is made at build time);
//! - everywhere: a portable fallback of plain Rust.
//!
//! An [`Isa`] can only be obtained for an instruction set the running CPU has, which is what makes
//! calling the `#[target_feature]` functions compiled for it sound.

use std::fmt;

/// An instruction set the CPU kernels are compiled for. Only constructible for instruction sets
/// the running CPU supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
    Portable,
}

impl Isa {
    /// The widest instruction set this CPU has.
    pub fn best() -> Isa {
        Isa::supported()[0]
    }

    /// Every instruction set this CPU runs, widest first (the portable one always last).
    // What is pushed depends on the target: on some, nothing but the portable fallback.
    #[allow(clippy::vec_init_then_push)]
    pub fn supported() -> Vec<Isa> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            if avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                all.push(Isa(Kind::Avx512));
            }
            if avx2 {
                all.push(Isa(Kind::Avx2));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            all.push(Isa(Kind::Neon));
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        all.push(Isa(Kind::Simd128));
        all.push(Isa(Kind::Portable));
        all
    }

    /// The instruction set called `name` ("avx512", "avx2", "neon", "simd128", "portable"), if
    /// this CPU runs it.
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
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "neon",
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kind::Simd128 => "simd128",
            Kind::Portable => "portable",
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.0
    }

    /// f32 lanes per vector register of the network's kernels.
    pub fn lanes(&self) -> usize {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Kind::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Kind::Avx2 => 8,
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => 4,
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kind::Simd128 => 4,
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
            #[cfg(target_arch = "aarch64")]
            Kind::Neon => "NEON",
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Kind::Simd128 => "wasm SIMD128",
            Kind::Portable => "portable SIMD",
        })
    }
}
