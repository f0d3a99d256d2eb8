//! `wgpu-cnn`, the command-line tool: a thin layer over the `wgpu_cnn` library that parses
//! options, picks the device, prints, and writes figures. A library of its own so that its tests
//! reach its parts; `main.rs` is the command line.
//!
//! - [`args`]: options shared by several commands, the device choice, the library's errors in
//!   the tool's terms (flags); `info` and `selftest`.
//! - [`convolve`]: Part I (`convolve`, `bench conv`).
//! - [`train`]: Part II (`train`, `summary`, `evaluate`, `predict`, `bench train`, `experiment`).
//! - [`experiment`]: the assignment's sweeps and their report; [`plot`] and [`picture`]: figures
//!   and image files; [`assets`]: the embedded CIFAR-10 subset.
//! - [`fuzzing`]: the parsers of user input as fuzz targets (`fuzz/`).

pub mod args;
pub mod assets;
pub mod convolve;
pub mod experiment;
pub mod fuzzing;
pub mod picture;
pub mod plot;
pub mod train;
