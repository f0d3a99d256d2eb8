//! Inference on the caller's device: a trained model's forward pass over images the application
//! holds — in a buffer of u8 records or in regions of a texture — recorded into the
//! application's encoder, its class probabilities copied into the application's buffer.
//!
//! # Who owns what
//! - The application owns the device, the queue, the encoder, the input buffer or texture and the
//!   output buffer. [`Classifier`] owns the model's weights, its activations and one uniform per
//!   bound input, all created on the application's device when it is built.
//! - [`Classifier::record_images`] and [`Classifier::record_regions`] **record only**: a copy of the
//!   call's parameters into the classifier's uniforms, one compute pass, and a copy of the
//!   probabilities into the output. Nothing is submitted, polled or waited on. The results are
//!   in the output buffer once the application's submission has finished (map it, or
//!   `queue.on_submitted_work_done`). Calls recorded into one encoder, or into several before a
//!   submit, run in the order recorded and do not clobber each other's parameters: each call
//!   carries them in a small buffer of its own (created per call) that is copied in the
//!   encoder.
//! - Each call classifies up to [`Classifier::max_batch`] images; the activations are the
//!   classifier's, so two calls in flight at once on one classifier run one after the other
//!   (wgpu orders them), never in parallel.
//! - Size `max_batch` to the calls you make: every call launches the workgroups of `max_batch`
//!   images (those past the call's images return at once, but are launched). On lavapipe a
//!   classifier built for 256 images classifies one image 17× slower than one built for 1
//!   (`wgpu-cnn bench classify` builds one per batch size).
//!
//! # Inputs
//! - **Buffer** ([`Classifier::bind_images`]): `STORAGE` usage, u8 NHWC records of the model's
//!   input shape (32 × 32 × 3 = 3,072 bytes per image for CIFAR, as the CIFAR files hold them
//!   less the label byte), images back to back. The probabilities equal [`GpuInference`]'s on the
//!   same images and device bit for bit (the same scaling, the same kernels).
//! - **Texture** ([`Classifier::bind_texture`]): a view of level 0 of a 2-D texture with
//!   `TEXTURE_BINDING` usage, 8-bit normalised RGBA or BGRA (an sRGB texture through its
//!   non-sRGB view, [`gpu::byte_view`]). Each image is a [`Region`]; a
//!   region of exactly the model's input size is read texel for texel (the same input as from a
//!   buffer, bit for bit); a larger or smaller one is reduced by area averaging (see
//!   `shaders/classify_input.wgsl` for the exact rule; a region a whole multiple of the input
//!   size averages whole blocks).
//! - **Output**: `COPY_DST` usage, `images × classes` f32 probabilities from `offset` (a multiple
//!   of 4) on: [`Classifier::output_size`] bytes.
//!
//! Errors (wrong usage, sizes, regions outside the texture, too many images) come back as
//! [`Error`]s when binding or recording, never as wgpu validation panics.
//!
//! [`GpuInference`]: crate::train::gpu::GpuInference

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{self, GpuContext};
use crate::kernel::{
    arg, begin_pass, floats, read, read_write, texture, texture_arg, uniform, Binding, Dispatch, EntryPoint, Grid,
    Kernels, Shader,
};
use crate::layers::StepParams;
use crate::model::{Model, Weights};
use crate::selftest::{self, Check};
use crate::train::gpu::GpuNet;
use crate::train::TrainConfig;
use crate::{shader_own, shader_source};

/// `shaders/classify_input.wgsl`.
pub static SHADER: Shader = Shader {
    name: "classify_input",
    file: "classify_input.wgsl",
    source: shader_source!("common.wgsl", "classify_input.wgsl"),
    own: shader_own!("classify_input.wgsl"),
    entry_points: &[
        EntryPoint { name: "from_bytes", bindings: FROM_BYTES },
        EntryPoint { name: "from_texture", bindings: FROM_TEXTURE },
    ],
};

const FROM_BYTES: &[Binding] = &[uniform(0, "step"), uniform(1, "shape"), read(2, "bytes"), read_write(5, "x")];
const FROM_TEXTURE: &[Binding] =
    &[uniform(0, "step"), uniform(1, "shape"), texture(3, "picture"), read(4, "regions"), read_write(5, "x")];

/// Mirror of `InputShape` in `shaders/classify_input.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct InputShape {
    /// The buffer's image read as sample 0 (`from_bytes`).
    pub first: u32,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

/// A rectangle of a texture, in texels: one image to classify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Region { x, y, width, height }
    }
}

/// A trained model on the application's device, ready to record forward passes.
pub struct Classifier {
    net: GpuNet,
    input: [usize; 3],
}

/// A buffer of u8 images bound to a [`Classifier`] ([`Classifier::bind_images`]).
#[derive(Debug)]
pub struct ImageSource {
    dispatch: Dispatch,
    shape: wgpu::Buffer,
    images: usize,
}

/// A texture bound to a [`Classifier`] ([`Classifier::bind_texture`]).
#[derive(Debug)]
pub struct TextureSource {
    dispatch: Dispatch,
    /// Bound once with `first` 0 and never rewritten; kept alive with the bind group.
    _shape: wgpu::Buffer,
    regions: wgpu::Buffer,
    size: (u32, u32),
}

impl Classifier {
    /// `model` with `weights` on the application's `device` and `queue`, for calls of up to
    /// `max_batch` images. Builds its pipelines and buffers (about the size of `max_batch`
    /// images' activations) now; nothing is submitted.
    pub fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        model: &Model,
        weights: &Weights,
        max_batch: usize,
    ) -> Result<Self> {
        let config = TrainConfig { batch_size: max_batch, ..TrainConfig::default() };
        crate::train::check_engine_inputs(model, weights, &config)?;
        let ctx = GpuContext::from_device(device, queue);
        let net = GpuNet::forward_only(&ctx, model, weights, &config, max_batch, true)?;
        Ok(Classifier { net, input: model.input })
    }

    /// The model of a checkpoint ([`crate::checkpoint::Checkpoint::load`]) with its weights.
    #[cfg(feature = "checkpoint")]
    pub fn from_checkpoint(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        checkpoint: &crate::checkpoint::Checkpoint,
        max_batch: usize,
    ) -> Result<Self> {
        Self::new(device, queue, &checkpoint.model()?, &checkpoint.weights, max_batch)
    }

    /// Classes per image (floats per image in the output).
    pub fn classes(&self) -> usize {
        self.net.classes
    }

    /// The most images one call classifies.
    pub fn max_batch(&self) -> usize {
        self.net.batch
    }

    /// `[H, W, C]` of one input image.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }

    /// Bytes the probabilities of `images` images take in the output buffer.
    pub fn output_size(&self, images: usize) -> u64 {
        floats(images * self.classes())
    }

    /// The flat f32 parameters on the device, in the model's layout: `STORAGE | COPY_SRC |
    /// COPY_DST`, so that new weights (a training engine's, [`crate::train::gpu::GpuEngine::params_buffer`])
    /// can be copied in by the application's encoder.
    pub fn params_buffer(&self) -> &wgpu::Buffer {
        &self.net.params
    }

    /// The flat f32 non-trainable tensors (batch normalisation's moving statistics; 4 bytes of
    /// zeros for a model without any), `STORAGE | COPY_SRC | COPY_DST`: copy a training engine's
    /// ([`crate::train::gpu::GpuEngine::state_buffer`]) in with the parameters.
    pub fn state_buffer(&self) -> &wgpu::Buffer {
        &self.net.state
    }

    /// Dispatches of one call (for reports): the input's, then every layer's forward pass.
    pub fn dispatches(&self) -> usize {
        1 + self.net.forward_dispatches()
    }

    fn shape(&self, first: u32) -> InputShape {
        let [height, width, channels] = self.input.map(|d| d as u32);
        InputShape { first, height, width, channels }
    }

    /// Binds `images`, a `STORAGE` buffer of u8 records of the model's input shape (see the
    /// module docs), for [`Classifier::record_images`].
    pub fn bind_images(&self, images: &wgpu::Buffer) -> Result<ImageSource> {
        let sample = self.input.iter().product::<usize>();
        if !sample.is_multiple_of(4) {
            return Err(Error::invalid(format!(
                "a buffer of {sample}-byte images: the classifier reads whole u32 words, so an image must be a multiple of 4 bytes"
            )));
        }
        let images_held = images.size() as usize / sample;
        if images_held == 0 {
            return Err(Error::invalid(format!(
                "the image buffer holds {} bytes, less than one {sample}-byte image",
                images.size()
            )));
        }
        let shape = gpu::uniform_buffer(&self.net.device, "classifier input shape", &self.shape(0));
        let inputs =
            Inputs { step: &self.net.step, shape: &shape, x: &self.net.x0, batch: self.max_batch(), input: self.input };
        let dispatch = bind_from_bytes(&self.net.kernels, &inputs, images)
            .map_err(|e| Error::invalid(format!("the classifier's image buffer: {e}")))?;
        Ok(ImageSource { dispatch, shape, images: images_held })
    }

    /// Binds a view of level 0 of a texture (see the module docs) for
    /// [`Classifier::record_regions`].
    pub fn bind_texture(&self, view: &wgpu::TextureView) -> Result<TextureSource> {
        let texture = view.texture();
        gpu::check_byte_texture(texture).map_err(|why| Error::invalid(format!("the classifier's texture {why}")))?;
        if self.input[2] != 3 {
            return Err(Error::invalid(format!(
                "the model takes {} channels per pixel; a texture gives R, G and B",
                self.input[2]
            )));
        }
        let device = &self.net.device;
        let shape = gpu::uniform_buffer(device, "classifier input shape", &self.shape(0));
        let regions = gpu::storage_buffer(device, "classifier regions", (16 * self.max_batch()) as u64)?;
        let inputs =
            Inputs { step: &self.net.step, shape: &shape, x: &self.net.x0, batch: self.max_batch(), input: self.input };
        let dispatch = bind_from_texture(&self.net.kernels, &inputs, view, &regions)
            .map_err(|e| Error::invalid(format!("the classifier's texture: {e}")))?;
        Ok(TextureSource { dispatch, _shape: shape, regions, size: (texture.width(), texture.height()) })
    }

    /// Records the classification of images `first .. first + count` of `source` into `encoder`:
    /// `count × classes` probabilities land in `output` from byte `offset` on.
    pub fn record_images(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        source: &ImageSource,
        first: usize,
        count: usize,
        output: &wgpu::Buffer,
        offset: u64,
    ) -> Result<()> {
        if first + count > source.images {
            return Err(Error::invalid(format!(
                "images {first}..{} asked for, but the buffer holds {} images",
                first + count,
                source.images
            )));
        }
        let shape = self.shape(first as u32);
        self.record(encoder, count, output, offset, &[(&source.shape, bytemuck::bytes_of(&shape))], &source.dispatch)
    }

    /// Records the classification of the images in `regions` of `source`'s texture into
    /// `encoder`: `regions.len() × classes` probabilities land in `output` from byte `offset` on.
    pub fn record_regions(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        source: &TextureSource,
        regions: &[Region],
        output: &wgpu::Buffer,
        offset: u64,
    ) -> Result<()> {
        let (width, height) = source.size;
        if let Some((i, r)) = regions.iter().enumerate().find(|(_, r)| {
            r.width == 0
                || r.height == 0
                || u64::from(r.x) + u64::from(r.width) > u64::from(width)
                || u64::from(r.y) + u64::from(r.height) > u64::from(height)
        }) {
            return Err(Error::invalid(format!(
                "region {i} ({}×{} at {}, {}) is empty or not inside the {width}×{height} texture",
                r.width, r.height, r.x, r.y
            )));
        }
        // The texture's shape uniform never changes (bound with `first` 0); only the regions do.
        let copies = [(&source.regions, bytemuck::cast_slice(regions))];
        self.record(encoder, regions.len(), output, offset, &copies, &source.dispatch)
    }

    /// The common part of a call: checks, the per-call parameters copied in (the step uniform,
    /// then each of `copies`: bytes for the start of a buffer of the input's), one compute pass
    /// (the input's dispatch, every layer's forward pass), the probabilities copied out.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        count: usize,
        output: &wgpu::Buffer,
        offset: u64,
        copies: &[(&wgpu::Buffer, &[u8])],
        input: &Dispatch,
    ) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        if count > self.max_batch() {
            return Err(Error::invalid(format!(
                "{count} images in one call; this classifier was built for at most {}",
                self.max_batch()
            )));
        }
        let bytes = self.output_size(count);
        if !output.usage().contains(wgpu::BufferUsages::COPY_DST) {
            return Err(Error::invalid(format!("the output buffer needs COPY_DST usage; it has {:?}", output.usage())));
        }
        if !offset.is_multiple_of(4) || offset + bytes > output.size() {
            return Err(Error::invalid(format!(
                "the probabilities of {count} images take {bytes} bytes from offset {offset} (a multiple of 4), but the output buffer holds {}",
                output.size()
            )));
        }
        let step = StepParams { batch_size: count as u32, ..StepParams::default() };
        // The call's parameters travel in a buffer of its own, copied in the encoder: calls
        // recorded before one submit then each see their own (a queue write would be seen by all).
        let copies: Vec<(&wgpu::Buffer, &[u8])> =
            std::iter::once((&self.net.step, bytemuck::bytes_of(&step))).chain(copies.iter().copied()).collect();
        let contents: Vec<u8> = copies.iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect();
        let staging = self.net.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("classifier call"),
            contents: &contents,
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        let mut at = 0;
        for (buffer, bytes) in copies {
            encoder.copy_buffer_to_buffer(&staging, at, buffer, 0, bytes.len() as u64);
            at += bytes.len() as u64;
        }
        {
            let mut pass = begin_pass(encoder, "classify");
            input.record(&mut pass);
            self.net.record_forward(&mut pass);
        }
        encoder.copy_buffer_to_buffer(&self.net.probs, 0, output, offset, bytes);
        Ok(())
    }
}

/// What both input kernels write to and read their shape from.
pub struct Inputs<'a> {
    pub step: &'a wgpu::Buffer,
    pub shape: &'a wgpu::Buffer,
    /// `[batch, H, W, C]` f32.
    pub x: &'a wgpu::Buffer,
    pub batch: usize,
    /// `[H, W, C]`.
    pub input: [usize; 3],
}

/// `from_bytes` on `images` for calls of up to `inputs.batch` images.
pub fn bind_from_bytes(kernels: &Kernels, inputs: &Inputs<'_>, images: &wgpu::Buffer) -> Result<Dispatch> {
    let sample = inputs.input.iter().product::<usize>();
    let args = [
        arg("step", inputs.step, std::mem::size_of::<StepParams>() as u64),
        arg("shape", inputs.shape, std::mem::size_of::<InputShape>() as u64),
        arg("bytes", images, sample as u64),
        arg("x", inputs.x, floats(inputs.batch * sample)),
    ];
    let kernel = kernels.get(&SHADER, "from_bytes", &[])?;
    Dispatch::new(kernels.device(), &kernel, &args, Grid::Invocations((inputs.batch * sample / 4) as u64))
}

/// `from_texture` on `view` and `regions` (a `vec4<u32>` per image) for calls of up to
/// `inputs.batch` images.
pub fn bind_from_texture(
    kernels: &Kernels,
    inputs: &Inputs<'_>,
    view: &wgpu::TextureView,
    regions: &wgpu::Buffer,
) -> Result<Dispatch> {
    let pixels = inputs.input[0] * inputs.input[1];
    let args = [
        arg("step", inputs.step, std::mem::size_of::<StepParams>() as u64),
        arg("shape", inputs.shape, std::mem::size_of::<InputShape>() as u64),
        texture_arg("picture", view),
        arg("regions", regions, (16 * inputs.batch) as u64),
        arg("x", inputs.x, floats(inputs.batch * pixels * 3)),
    ];
    let kernel = kernels.get(&SHADER, "from_texture", &[])?;
    Dispatch::new(kernels.device(), &kernel, &args, Grid::Invocations((inputs.batch * pixels) as u64))
}

/// Both input kernels against their CPU references, on partial batches: a buffer's images from
/// an offset (scaled as the gather scales them), and texture regions of the input's size, of
/// twice it, of odd sizes and of less than it (reduced as [`texture_input`] reduces them).
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = crate::rng::Rng::new(16);
    let (input, batch, used) = ([4usize, 4, 3], 5, 4);
    let sample = 48;
    let kernels = &ctx.kernels;
    let step = gpu::uniform_buffer(
        &ctx.device,
        "selftest step",
        &StepParams { batch_size: used as u32, ..Default::default() },
    );
    let mut checks = Vec::new();

    let images: Vec<u8> = (0..7 * sample).map(|_| rng.below(256) as u8).collect();
    let first = 2;
    let shape = gpu::uniform_buffer(
        &ctx.device,
        "selftest shape",
        &InputShape { first: first as u32, height: 4, width: 4, channels: 3 },
    );
    let x = selftest::sentinel(ctx, batch * sample)?;
    let bytes = ctx.upload("selftest images", &images, wgpu::BufferUsages::empty())?;
    let inputs = Inputs { step: &step, shape: &shape, x: &x, batch, input };
    let dispatch = bind_from_bytes(kernels, &inputs, &bytes)?;
    selftest::run(ctx, |pass| dispatch.record(pass));
    let got = selftest::read(ctx, &x, batch * sample)?;
    let expected: Vec<f32> = images[first * sample..][..used * sample].iter().map(|&b| f32::from(b) / 255.0).collect();
    checks.push(Check::compare("classify input from_bytes".into(), &got[..used * sample], &expected, 0.0, 1e-6));
    checks.push(Check::untouched("classify input from_bytes: x past the batch".into(), &got[used * sample..]));

    let (width, height) = (23u32, 17u32);
    let rgba: Vec<u8> = (0..4 * width * height).map(|_| rng.below(256) as u8).collect();
    let picture = selftest::texture_with(
        ctx,
        wgpu::TextureFormat::Rgba8Unorm,
        (width, height),
        &rgba,
        wgpu::TextureUsages::empty(),
    );
    let view = picture.create_view(&Default::default());
    let regions =
        [Region::new(0, 0, 4, 4), Region::new(3, 5, 8, 8), Region::new(16, 10, 7, 5), Region::new(20, 14, 3, 2)];
    // A region for every sample the kernel is bound for; the last is past the call's batch.
    let bound: Vec<Region> = regions.iter().copied().chain([Region::new(0, 0, 1, 1)]).collect();
    let regions_b = ctx.upload("selftest regions", bytemuck::cast_slice(&bound), wgpu::BufferUsages::empty())?;
    let shape =
        gpu::uniform_buffer(&ctx.device, "selftest shape", &InputShape { first: 0, height: 4, width: 4, channels: 3 });
    let x = selftest::sentinel(ctx, batch * sample)?;
    let inputs = Inputs { step: &step, shape: &shape, x: &x, batch, input };
    let dispatch = bind_from_texture(kernels, &inputs, &view, &regions_b)?;
    selftest::run(ctx, |pass| dispatch.record(pass));
    let got = selftest::read(ctx, &x, batch * sample)?;
    for (n, region) in regions.iter().enumerate() {
        let expected = texture_input(&rgba, width, *region, input);
        checks.push(Check::compare(
            format!("classify input from_texture {}×{} region → 4×4", region.width, region.height),
            &got[n * sample..][..sample],
            &expected,
            0.0,
            1e-6,
        ));
    }
    checks.push(Check::untouched("classify input from_texture: x past the batch".into(), &got[used * sample..]));
    Ok(checks)
}

/// The CPU reference of the texture input: region `region` of a `width`-texel-wide picture of
/// tightly packed RGBA bytes, reduced to `[h, w, 3]` f32 as `from_texture` does.
pub fn texture_input(rgba: &[u8], width: u32, region: Region, [h, w, _]: [usize; 3]) -> Vec<f32> {
    let (h, w) = (h as u32, w as u32);
    let mut x = Vec::with_capacity((h * w * 3) as usize);
    for y in 0..h {
        let (y0, y1) = (region.y + y * region.height / h, region.y + ((y + 1) * region.height).div_ceil(h));
        for xo in 0..w {
            let (x0, x1) = (region.x + xo * region.width / w, region.x + ((xo + 1) * region.width).div_ceil(w));
            let mut sum = [0u32; 3];
            for ty in y0..y1 {
                for tx in x0..x1 {
                    let texel = 4 * (ty * width + tx) as usize;
                    for c in 0..3 {
                        sum[c] += u32::from(rgba[texel + c]);
                    }
                }
            }
            let count = (y1 - y0) * (x1 - x0);
            for c in 0..3 {
                x.push(if count == 1 { sum[c] as f32 / 255.0 } else { sum[c] as f32 / (count as f32 * 255.0) });
            }
        }
    }
    x
}
