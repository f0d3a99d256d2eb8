//! The GPU twin of [`super::cpu::conv3x3_reference`], built on any `wgpu::Device` — ours or the
//! embedding application's — and recorded into the caller's encoder on the caller's buffers.
//!
//! # Buffer layout
//! Input and output are storage buffers holding one u8 plane each: `width * height` bytes,
//! row-major, rows packed without padding, little-endian within u32 words (pixel `i` is byte `i`
//! of the buffer), at least [`Conv3x3::buffer_size`] bytes (the pixel count rounded up to a
//! multiple of 4). The input needs `STORAGE` usage, the output `STORAGE` too; the bytes of the
//! output's last word past the last pixel are written as 0. Input and output must not overlap.

use bytemuck::{Pod, Zeroable};

use super::{Kernel3x3, Plane};
use crate::error::{Error, Result};
use crate::gpu;
use crate::kernel::{arg, begin_pass, read, read_write, uniform, Dispatch, EntryPoint, Grid, Kernel, Kernels, Shader};
use crate::{shader_own, shader_source};

/// The binding tables of `shaders/conv3x3.wgsl`: both entry points take the same three.
pub static SHADER: Shader = Shader {
    name: "conv3x3",
    file: "conv3x3.wgsl",
    source: shader_source!("conv3x3.wgsl"),
    own: shader_own!("conv3x3.wgsl"),
    entry_points: &[
        EntryPoint { name: "conv3x3_int", bindings: BINDINGS },
        EntryPoint { name: "conv3x3_float", bindings: BINDINGS },
    ],
};

const BINDINGS: &[crate::kernel::Binding] = &[uniform(0, "params"), read(1, "input"), read_write(2, "output")];

/// Mirror of `Conv3x3Params` in `shaders/conv3x3.wgsl` (a test checks the offsets against naga).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Conv3x3Params {
    pub width: u32,
    pub height: u32,
    pub _pad: [u32; 2],
    /// Row `ky` is `(k[ky][0], k[ky][1], k[ky][2], 0)`.
    pub weights: [[f32; 4]; 3],
    /// The same weights as i32, used by the exact integer entry point.
    pub weights_int: [[i32; 4]; 3],
}

/// A kernel as both shaders' uniforms hold it: row `ky` is `(k[ky][0], k[ky][1], k[ky][2], 0)`
/// (uniform arrays need a 16-byte stride), as f32 and, when every weight is a whole number that
/// the exact path can sum in i32, as i32 (`exact`).
pub(super) struct UniformRows {
    pub weights: [[f32; 4]; 3],
    pub weights_int: [[i32; 4]; 3],
    pub exact: bool,
}

impl UniformRows {
    pub fn of(kernel: &Kernel3x3) -> Self {
        let integer = kernel.integer_weights();
        let mut rows = UniformRows { weights: [[0.0; 4]; 3], weights_int: [[0; 4]; 3], exact: integer.is_some() };
        for ky in 0..3 {
            for kx in 0..3 {
                rows.weights[ky][kx] = kernel.weights[ky][kx];
                rows.weights_int[ky][kx] = integer.map_or(0, |k| k[ky][kx]);
            }
        }
        rows
    }
}

/// The Part I convolution's pipelines on one device. Build once, then [`Conv3x3::prepare`] a
/// dispatch per (input, output, kernel) and record it as often as needed.
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    exact: Kernel,
    float: Kernel,
}

/// One bound convolution, on buffers ([`Conv3x3::prepare`]) or textures
/// ([`super::Conv3x3Texture::prepare`]): ready to be recorded into a command encoder or an open
/// compute pass.
#[derive(Debug)]
pub struct Conv3x3Dispatch {
    pub(super) dispatch: Dispatch,
    // Kept alive for as long as the bind group refers to it.
    pub(super) _params: wgpu::Buffer,
    pub(super) exact: bool,
}

impl Conv3x3 {
    /// Compiles `shaders/conv3x3.wgsl` on `device`.
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Self::with_kernels(&Kernels::new(device))
    }

    /// Takes the pipelines from (or builds them into) `kernels`, the device's cache.
    pub fn with_kernels(kernels: &Kernels) -> Result<Self> {
        Ok(Conv3x3 {
            exact: kernels.get(&SHADER, "conv3x3_int", &[])?,
            float: kernels.get(&SHADER, "conv3x3_float", &[])?,
        })
    }

    /// Bytes a plane of `width × height` takes in a buffer: the pixel count rounded up to whole
    /// u32 words.
    pub fn buffer_size(width: u32, height: u32) -> u64 {
        gpu::padded_size(u64::from(width) * u64::from(height))
    }

    /// Checks that a `width × height` plane can be convolved on `device` at all: non-empty, pixel
    /// indices within u32, and one plane within the storage binding limit.
    pub fn check_fits(device: &wgpu::Device, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!("cannot convolve an empty {width}×{height} image")));
        }
        let pixels = u64::from(width) * u64::from(height);
        // The shader indexes bytes with u32.
        if pixels > u64::from(u32::MAX) - 4 {
            return Err(Error::invalid(format!(
                "a {width}×{height} image has {pixels} pixels; at most {} fit in one plane",
                u32::MAX - 4
            )));
        }
        gpu::check_binding_size(device, &format!("a {width}×{height} image plane"), Self::buffer_size(width, height))
    }

    /// Binds `input` and `output` (see the module docs for their layout) and `kernel`. Fails with
    /// a clear error if the plane does not fit the device or a buffer is too small.
    pub fn prepare(
        &self,
        device: &wgpu::Device,
        input: &wgpu::Buffer,
        output: &wgpu::Buffer,
        width: u32,
        height: u32,
        kernel: &Kernel3x3,
    ) -> Result<Conv3x3Dispatch> {
        Self::check_fits(device, width, height)?;
        let needed = Self::buffer_size(width, height);
        let rows = UniformRows::of(kernel);
        let params =
            Conv3x3Params { width, height, _pad: [0; 2], weights: rows.weights, weights_int: rows.weights_int };
        let params_buffer = gpu::uniform_buffer(device, "conv3x3 params", &params);

        let kernel = if rows.exact { &self.exact } else { &self.float };
        // One invocation per u32 word (four pixels) of the plane. Binding checks the buffers'
        // usages and that each holds the plane.
        let args = [
            arg("params", &params_buffer, std::mem::size_of::<Conv3x3Params>() as u64),
            arg("input", input, needed),
            arg("output", output, needed),
        ];
        let dispatch = Dispatch::new(device, kernel, &args, Grid::Invocations(needed / 4))
            .map_err(|e| Error::invalid(format!("a {width}×{height} plane: {e}")))?;
        Ok(Conv3x3Dispatch { dispatch, _params: params_buffer, exact: rows.exact })
    }

    /// Convenience for whole planes: upload, convolve, read back. Blocks until done (native
    /// targets; a browser awaits [`Conv3x3::run_async`]).
    pub fn run(&self, device: &wgpu::Device, queue: &wgpu::Queue, input: &Plane, kernel: &Kernel3x3) -> Result<Plane> {
        pollster::block_on(self.run_async(device, queue, input, kernel))
    }

    /// [`Conv3x3::run`] as a future: upload, convolve, and the readback's future.
    pub async fn run_async(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        input: &Plane,
        kernel: &Kernel3x3,
    ) -> Result<Plane> {
        Self::check_fits(device, input.width, input.height)?;
        let input_buffer = gpu::upload(device, "conv3x3 input", &input.pixels, wgpu::BufferUsages::empty())?;
        let output_buffer = gpu::storage_buffer(device, "conv3x3 output", input.pixels.len() as u64)?;
        let dispatch = self.prepare(device, &input_buffer, &output_buffer, input.width, input.height, kernel)?;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("conv3x3") });
        dispatch.encode(&mut encoder);
        queue.submit([encoder.finish()]);
        let mut pixels = gpu::read_buffer_async(device, queue, &output_buffer).await?;
        pixels.truncate(input.pixels.len());
        Plane::new(input.width, input.height, pixels)
    }
}

impl Conv3x3Dispatch {
    /// Records the dispatch into an open compute pass (to batch it with other work).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.record(pass);
    }

    /// Records the dispatch in a compute pass of its own.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = begin_pass(encoder, &self.dispatch.label());
        self.record(&mut pass);
    }

    /// True when the exact integer entry point runs (bit-identical to the CPU).
    pub fn is_exact(&self) -> bool {
        self.exact
    }
}
