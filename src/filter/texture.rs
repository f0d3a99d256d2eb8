//! Part I on the caller's textures: the convolution of [`super::Conv3x3`] reading a sampled
//! texture and writing a storage texture, recorded into the caller's encoder or compute pass.
//!
//! # What the textures must be
//! - **Input**: a view of level 0 of a 2-D texture with `TEXTURE_BINDING` usage, in an 8-bit
//!   normalised format: `Rgba8Unorm` or `Bgra8Unorm`. The shader reads each channel back as its
//!   byte. For an **sRGB** texture (`Rgba8UnormSrgb`, `Bgra8UnormSrgb`, what a loaded photo or a
//!   swapchain often is) bind a view in the matching *non*-sRGB format, which the texture's
//!   creator must list in its `view_formats`: through the sRGB view the GPU would linearise the
//!   bytes before the shader sees them, and the result would silently differ from the CPU's.
//!   [`gpu::byte_view`] makes that view.
//! - **Output**: a view of a 2-D texture of the input's size with `STORAGE_BINDING` usage, in
//!   `Rgba8Unorm`, or `Bgra8Unorm` on a device created with
//!   [`wgpu::Features::BGRA8UNORM_STORAGE`] (a clear error names the feature otherwise).
//!   Input and output must be different textures.
//!
//! # Semantics
//! Those of the u8 path, per channel: zero padding, no kernel flip, clipped to 0..=255; integer
//! kernels exact (bit-identical to [`super::cpu::conv3x3_reference`] on each channel's bytes),
//! fractional ones within one grey level. [`TextureChannels`] picks one channel (written as grey
//! to R, G and B, alpha 255) or each of R, G, B (alpha copied). [`reference()`] is the CPU oracle.

use bytemuck::{Pod, Zeroable};

use super::gpu::UniformRows;
use super::{cpu, Conv3x3Dispatch, Kernel3x3, Plane};
use crate::error::{Error, Result};
use crate::gpu;
use crate::kernel::{
    arg, storage_texture, texture, texture_arg, uniform, Binding, Dispatch, EntryPoint, Grid, Kernel, Kernels, Shader,
};
use crate::{shader_own, shader_source};

/// `shaders/conv3x3_texture.wgsl` writing `Rgba8Unorm`.
pub static SHADER_RGBA8: Shader = Shader {
    name: "conv3x3_texture_rgba8",
    file: "conv3x3_texture.wgsl",
    source: shader_source!("conv3x3_texture_rgba8.wgsl", "conv3x3_texture.wgsl"),
    own: shader_own!("conv3x3_texture.wgsl"),
    entry_points: &[EntryPoint { name: "conv3x3_texture", bindings: BINDINGS_RGBA8 }],
};

/// The same writing `Bgra8Unorm`.
pub static SHADER_BGRA8: Shader = Shader {
    name: "conv3x3_texture_bgra8",
    file: "conv3x3_texture.wgsl",
    source: shader_source!("conv3x3_texture_bgra8.wgsl", "conv3x3_texture.wgsl"),
    own: shader_own!("conv3x3_texture.wgsl"),
    entry_points: &[EntryPoint { name: "conv3x3_texture", bindings: BINDINGS_BGRA8 }],
};

const BINDINGS_RGBA8: &[Binding] =
    &[uniform(0, "params"), texture(1, "input"), storage_texture(2, "output", wgpu::TextureFormat::Rgba8Unorm)];
const BINDINGS_BGRA8: &[Binding] =
    &[uniform(0, "params"), texture(1, "input"), storage_texture(2, "output", wgpu::TextureFormat::Bgra8Unorm)];

/// Which channels a texture convolution works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextureChannels {
    /// R, G or B (0, 1, 2) convolved, written as a grey image (the same byte in R, G and B),
    /// alpha 255: the assignment's figure, on the GPU.
    One(usize),
    /// R, G and B each convolved on their own; alpha copied from the input.
    All,
}

impl TextureChannels {
    fn code(self) -> Result<u32> {
        match self {
            TextureChannels::One(c) if c < 3 => Ok(c as u32),
            TextureChannels::One(c) => Err(Error::invalid(format!("channel {c} is not R, G or B (0, 1 or 2)"))),
            TextureChannels::All => Ok(3),
        }
    }
}

/// Mirror of `TextureConvParams` in `shaders/conv3x3_texture.wgsl` (a test checks the offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct TextureConvParams {
    /// Row `ky` is `(k[ky][0], k[ky][1], k[ky][2], 0)`.
    pub weights: [[f32; 4]; 3],
    pub weights_int: [[i32; 4]; 3],
    /// 0, 1, 2: that channel; 3: all.
    pub channel: u32,
    /// 1 when `weights_int` holds the kernel exactly.
    pub exact: u32,
    pub _pad: [u32; 2],
}

/// The texture convolution's pipelines on one device: build once, [`Conv3x3Texture::prepare`] a
/// dispatch per (input, output, kernel, channels), record it as often as needed (every frame).
#[derive(Clone, Debug)]
pub struct Conv3x3Texture {
    /// The device's cache: the Bgra8Unorm variant is compiled there the first time a Bgra8Unorm
    /// output is bound, not before.
    kernels: Kernels,
    rgba8: Kernel,
}

impl Conv3x3Texture {
    /// Compiles the shader (for Rgba8Unorm outputs) on `device`.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_kernels(&Kernels::new(device))
    }

    /// Takes the pipelines from (or builds them into) `kernels`, the device's cache.
    pub fn with_kernels(kernels: &Kernels) -> Result<Self> {
        Ok(Conv3x3Texture { kernels: kernels.clone(), rgba8: kernels.get(&SHADER_RGBA8, "conv3x3_texture", &[])? })
    }

    /// Binds `input` and `output` (views of level 0; see the module docs for what they must be),
    /// `kernel` and `channels`. Fails, saying what is wrong, on a format, usage or size that does
    /// not fit.
    pub fn prepare(
        &self,
        device: &wgpu::Device,
        input: &wgpu::TextureView,
        output: &wgpu::TextureView,
        kernel: &Kernel3x3,
        channels: TextureChannels,
    ) -> Result<Conv3x3Dispatch> {
        let (from, to) = (input.texture(), output.texture());
        let bad = |why: String| Error::invalid(format!("cannot convolve the texture: {why}"));
        gpu::check_byte_texture(from).map_err(|why| bad(format!("the input {why}")))?;
        if from == to {
            return Err(bad("input and output are the same texture".into()));
        }
        let size = |t: &wgpu::Texture| (t.width(), t.height());
        if size(from) != size(to) {
            return Err(bad(format!("the input is {:?} pixels, the output {:?}", size(from), size(to))));
        }
        let kernel_for_output = match to.format() {
            wgpu::TextureFormat::Rgba8Unorm => self.rgba8.clone(),
            wgpu::TextureFormat::Bgra8Unorm => {
                if !self.kernels.device().features().contains(wgpu::Features::BGRA8UNORM_STORAGE) {
                    return Err(bad("a Bgra8Unorm output needs the device feature BGRA8UNORM_STORAGE (wgpu::Features::BGRA8UNORM_STORAGE), which this device was not created with; write to an Rgba8Unorm texture instead".into()));
                }
                self.kernels.get(&SHADER_BGRA8, "conv3x3_texture", &[])?
            }
            other => {
                return Err(bad(format!(
                    "the output is {other:?}; it must be Rgba8Unorm (or Bgra8Unorm with BGRA8UNORM_STORAGE)"
                )))
            }
        };
        let rows = UniformRows::of(kernel);
        let params = TextureConvParams {
            weights: rows.weights,
            weights_int: rows.weights_int,
            channel: channels.code()?,
            exact: u32::from(rows.exact),
            _pad: [0; 2],
        };
        let params_buffer = gpu::uniform_buffer(device, "conv3x3 texture params", &params);
        let args = [
            arg("params", &params_buffer, std::mem::size_of::<TextureConvParams>() as u64),
            texture_arg("input", input),
            texture_arg("output", output),
        ];
        let pixels = u64::from(from.width()) * u64::from(from.height());
        let dispatch = Dispatch::new(device, &kernel_for_output, &args, Grid::Invocations(pixels))?;
        Ok(Conv3x3Dispatch { dispatch, _params: params_buffer, exact: rows.exact })
    }
}

/// The CPU oracle of the texture convolution on tightly packed RGBA bytes (`width × height × 4`,
/// in RGBA order whatever the texture's memory order), built on [`cpu::conv3x3_reference`].
pub fn reference(
    rgba: &[u8],
    width: u32,
    height: u32,
    kernel: &Kernel3x3,
    channels: TextureChannels,
) -> Result<Vec<u8>> {
    let pixels = width as usize * height as usize;
    if rgba.len() != 4 * pixels {
        return Err(Error::invalid(format!(
            "a {width}×{height} RGBA image has {} bytes, not {}",
            4 * pixels,
            rgba.len()
        )));
    }
    let plane = |c: usize| Plane::new(width, height, rgba.iter().skip(c).step_by(4).copied().collect());
    let mut out = vec![0u8; rgba.len()];
    match channels {
        TextureChannels::One(c) => {
            channels.code()?;
            let filtered = cpu::conv3x3_reference(&plane(c)?, kernel);
            for (pixel, &v) in out.chunks_exact_mut(4).zip(&filtered.pixels) {
                pixel.copy_from_slice(&[v, v, v, 255]);
            }
        }
        TextureChannels::All => {
            for c in 0..3 {
                let filtered = cpu::conv3x3_reference(&plane(c)?, kernel);
                for (pixel, &v) in out.chunks_exact_mut(4).zip(&filtered.pixels) {
                    pixel[c] = v;
                }
            }
            for (pixel, source) in out.chunks_exact_mut(4).zip(rgba.chunks_exact(4)) {
                pixel[3] = source[3];
            }
        }
    }
    Ok(out)
}
