//! # wgpu-cnn
//!
//! A small convolutional network — image convolution, training and evaluation — as hand-written
//! WGSL compute shaders on `wgpu`, running on any Vulkan, Metal, DX12 (or GL) adapter, with a
//! plain-loop CPU reference beside every kernel.
//!
//! It is **not** a general tensor library: every kernel is written out for the layers the
//! assignment needs, so that each one can be read, timed and reused on its own. It never creates
//! an embedder's device: every GPU part takes a `&wgpu::Device` (and `&wgpu::Queue`), records into
//! the caller's encoder or compute pass, and works on the caller's buffers. [`wgpu`] is
//! re-exported so that an application names the same version.
//!
//! ## Layout
//! - [`kernel`]: the host–shader contract (binding tables, checked against naga by the tests) and
//!   the one way to build, bind and dispatch a kernel; [`shaders`]: every WGSL source.
//! - [`gpu`]: the one GPU context (adapter choice, device), upload, readback, error scopes.
//! - [`filter`]: Part I, the 3×3 image convolution: CPU reference, fast CPU, GPU (embeddable).
//! - [`layers`]: the layer registry — one module per layer kind, forward and backward, CPU
//!   reference beside GPU twin and fast CPU kernels; [`model`]: architectures laid out on the
//!   registry (shapes, flat parameters, initialisation, summary).
//! - [`train`]: the one training loop and its engines (GPU, fast CPU, reference); [`adam`] and
//!   [`gather`]: the optimiser and the batch assembly every engine uses; [`partial_sums`]: the
//!   last stage of every layer's split weight-gradient reduction, in one GPU dispatch.
//! - [`data`], [`metrics`], `checkpoint` (feature `checkpoint`): CIFAR-10, evaluation,
//!   safetensors checkpoints.
//! - [`selftest`]: every GPU kernel against its CPU reference, on any adapter.
//! - [`isa`]: the one run-time choice of CPU instruction set (AVX-512, AVX2, NEON, SIMD128,
//!   portable), for Part I's rows and the fast CPU kernels alike.
//! - `fast` (feature `fast-cpu`): what the fast CPU kernels share; [`io`], [`rng`],
//!   [`bench`](mod@bench): atomic writes, seeded randomness, timing helpers.
//!
//! ## Features
//! With default features off the crate depends on wgpu, bytemuck, pollster, futures-intrusive,
//! thiserror and num-traits only. `fast-cpu` (rayon) adds the fast CPU engine and multi-threaded
//! Part I; `serde` (serde, serde_json) serialisable settings, histories and reports;
//! `checkpoint` (with `serde`, safetensors) checkpoints; `cifar-archive` (flate2, tar, md-5) the
//! official `cifar-10-binary.tar.gz`. All are on by default.
//!
//! ## Dimension legend (used in every doc comment and shader)
//! `N` batch, `H`/`W` height/width, `C` channels, `K` output channels (filters), `y`/`x` pixel
//! coordinates, `ky`/`kx` kernel taps.

pub use wgpu;

pub mod adam;
pub mod bench;
#[cfg(feature = "checkpoint")]
pub mod checkpoint;
pub mod classify;
pub mod data;
pub mod error;
#[cfg(feature = "fast-cpu")]
pub mod fast;
pub mod filter;
pub mod gather;
pub mod gpu;
pub mod io;
pub mod isa;
pub mod kernel;
pub mod layers;
pub mod metrics;
pub mod model;
pub mod partial_sums;
pub mod rng;
pub mod selftest;
pub mod shaders;
pub mod train;

pub use error::{Error, Result};
