//! # wgpu-cnn
//!
//! A small convolutional network — image convolution, training and evaluation — as hand-written
//! WGSL compute shaders on `wgpu`, running on any Vulkan, Metal, DX12 (or GL) adapter, with a
//! plain-loop CPU reference beside every kernel.
//!
//! It is **not** a general tensor library: every kernel is written out for the layers the
//! assignment needs, so that each one can be read, timed and reused on its own.
//!
//! ## Layout
//! - [`gpu`]: the one GPU context (adapter choice, device), upload, readback, error scopes.
//! - [`kernel`]: the one way to build a compute pipeline from WGSL and dispatch it.
//! - [`shaders`]: every WGSL source as a public constant.
//! - [`filter`]: Part I, the 3×3 image convolution: CPU reference, fast CPU, GPU (embeddable).
//! - [`layers`]: the network's layers, forward and backward, CPU reference beside GPU twin.
//! - [`model`]: architectures, shapes, parameter layout, initialisation, summary.
//! - [`train`]: the Keras training loop and its GPU and CPU backends.
//! - [`data`], [`checkpoint`], [`metrics`], [`plot`], [`experiment`]: CIFAR-10, safetensors
//!   checkpoints, evaluation, figures, the assignment's sweeps.
//! - [`selftest`]: every GPU kernel against its CPU reference, on any adapter.
//! - [`picture`], [`io`], [`rng`], [`bench`](mod@bench): image files, atomic writes, seeded randomness,
//!   timing helpers.
//!
//! ## Dimension legend (used in every doc comment and shader)
//! `N` batch, `H`/`W` height/width, `C` channels, `K` output channels (filters), `y`/`x` pixel
//! coordinates, `ky`/`kx` kernel taps.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod experiment;
pub mod fast;
pub mod filter;
pub mod gpu;
pub mod io;
pub mod kernel;
pub mod layers;
pub mod metrics;
pub mod model;
pub mod picture;
pub mod plot;
pub mod rng;
pub mod selftest;
pub mod shaders;

pub use error::{Error, Result};
pub mod train;
