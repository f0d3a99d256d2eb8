//! Every WGSL source the crate compiles, with its binding tables: each [`Shader`] lives beside the
//! code that binds it (a layer's in its module), and [`all`] lists them for the validation tests
//! and for other wgpu programs that build their own pipelines from them. Each file in `shaders/`
//! starts with its bindings and buffer layout.
//!
//! The training shaders are compiled after `shaders/common.wgsl` (the per-step uniform, the grid
//! index and the hash shared with [`crate::rng`]), so those facts are written once; the
//! convolution's also after `shaders/conv2d_shape.wgsl` (its shape as override constants).

use crate::kernel::Shader;
use crate::layers::REGISTRY;

/// The prelude of every training shader.
pub const COMMON: &str = crate::shader_own!("common.wgsl");

/// Every shader: Part I's, each layer kind's (from the registry), Adam's and the gather's.
pub fn all() -> Vec<&'static Shader> {
    let mut all = vec![&crate::filter::SHADER];
    for kind in REGISTRY {
        all.extend(kind.shaders.iter().copied());
    }
    all.extend([&crate::adam::SHADER, &crate::gather::SHADER]);
    all
}
