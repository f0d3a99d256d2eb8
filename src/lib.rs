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
//! - [`picture`]: reading images into planes and writing the figure.
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
