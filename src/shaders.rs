//! The WGSL sources, embedded at compile time and public so that other wgpu programs can build
//! their own pipelines from them. Each file starts with its bindings and buffer layout.
//!
//! The training shaders are prefixed with `shaders/common.wgsl` (the per-step uniform, the grid
//! index and the hash shared with [`crate::rng`]), so those facts are written once.

/// Part I: 3×3 cross-correlation of a packed u8 plane (entry points `conv3x3_int`,
/// `conv3x3_float`). See [`crate::filter::Conv3x3`] for the host side.
pub const CONV3X3: &str = include_str!("../shaders/conv3x3.wgsl");

/// The prelude of every training shader.
pub const COMMON: &str = include_str!("../shaders/common.wgsl");

macro_rules! training_shader {
    ($file:literal) => {
        concat!(include_str!("../shaders/common.wgsl"), "\n", include_str!(concat!("../shaders/", $file)))
    };
}

/// Conv2D 3×3 + bias + ReLU: `forward`, `backward_input`, `backward_weight`, `backward_bias`.
pub const CONV2D: &str = training_shader!("conv2d.wgsl");
/// MaxPooling2D 2×2: `forward`, `backward_input`.
pub const MAXPOOL2D: &str = training_shader!("maxpool2d.wgsl");
/// Inverted dropout: `forward`, `backward_input`.
pub const DROPOUT: &str = training_shader!("dropout.wgsl");
/// Dense + softmax + cross-entropy + L1: `logits`, `softmax_cross_entropy`, `backward_weight`,
/// `backward_input`, `l1_penalty`.
pub const DENSE_SOFTMAX: &str = training_shader!("dense_softmax.wgsl");
/// Adam over the flat parameter buffer: `update`.
pub const ADAM: &str = training_shader!("adam.wgsl");
/// Batch assembly from u8 images: `gather`.
pub const GATHER: &str = training_shader!("gather.wgsl");

/// Every shader as (file name, full source), for validation tests and `selftest`.
pub const ALL: &[(&str, &str)] = &[
    ("conv3x3.wgsl", CONV3X3),
    ("conv2d.wgsl", CONV2D),
    ("maxpool2d.wgsl", MAXPOOL2D),
    ("dropout.wgsl", DROPOUT),
    ("dense_softmax.wgsl", DENSE_SOFTMAX),
    ("adam.wgsl", ADAM),
    ("gather.wgsl", GATHER),
];

/// The part of a shader after the common prelude: the file as written in `shaders/`.
pub fn own_part(source: &str) -> &str {
    source.strip_prefix(COMMON).map(|rest| rest.trim_start()).unwrap_or(source)
}
