//! The WGSL sources, embedded at compile time and public so that other wgpu programs can build
//! their own pipelines from them. Each file starts with its bindings and buffer layout.

/// Part I: 3×3 cross-correlation of a packed u8 plane (entry points `conv3x3_int`,
/// `conv3x3_float`). See [`crate::filter::Conv3x3`] for the host side.
pub const CONV3X3: &str = include_str!("../shaders/conv3x3.wgsl");

/// Every shader as (file name, source), for validation tests and `selftest`.
pub const ALL: &[(&str, &str)] = &[("conv3x3.wgsl", CONV3X3)];
