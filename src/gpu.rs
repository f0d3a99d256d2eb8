//! The one GPU context of the crate: instance → adapter → device/queue, created here and nowhere
//! else, plus the one way to upload a buffer, the one way to read one back, and the one way to turn
//! wgpu's validation/out-of-memory errors into [`Error`]s.
//!
//! Embedders do not need [`GpuContext`]: the free functions [`upload`], [`read_buffer`],
//! [`read_texture`] and [`with_error_scope`] take a plain `&wgpu::Device` / `&wgpu::Queue`, the
//! embedding types ([`crate::filter::Conv3x3`], [`crate::filter::Conv3x3Texture`],
//! [`crate::classify::Classifier`]) too, and [`GpuContext::from_device`] wraps an application's
//! own device and queue for the training engines, creating nothing.

use std::fmt;

use crate::error::{Error, Result};

/// Which graphics APIs to use: a set of wgpu backends. The default, `auto`, tries every one
/// compiled in (Vulkan, Metal, DX12, GL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendChoice(pub wgpu::Backends);

impl Default for BackendChoice {
    fn default() -> Self {
        BackendChoice::AUTO
    }
}

impl BackendChoice {
    pub const AUTO: BackendChoice = BackendChoice(wgpu::Backends::all());

    /// The wgpu backend set this choice stands for.
    pub fn backends(self) -> wgpu::Backends {
        self.0
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;

    /// What wgpu's own `WGPU_BACKEND` accepts — a comma-separated list of `vulkan` (`vk`),
    /// `metal` (`mtl`), `dx12` (`d3d12`), `gl` (`gles`, `opengl`), `webgpu` — plus `auto` /
    /// `all`, `primary` (Vulkan, Metal, DX12, WebGPU) and `secondary` (GL); unlike wgpu, an
    /// unknown name is an error rather than ignored.
    fn from_str(s: &str) -> Result<Self> {
        let mut backends = wgpu::Backends::empty();
        for name in s.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            backends |= match name.as_str() {
                "" if s.trim().is_empty() => wgpu::Backends::all(),
                "auto" | "all" => wgpu::Backends::all(),
                "primary" => wgpu::Backends::PRIMARY,
                "secondary" => wgpu::Backends::SECONDARY,
                "vulkan" | "vk" => wgpu::Backends::VULKAN,
                "metal" | "mtl" => wgpu::Backends::METAL,
                "dx12" | "d3d12" => wgpu::Backends::DX12,
                "gl" | "gles" | "opengl" => wgpu::Backends::GL,
                "webgpu" => wgpu::Backends::BROWSER_WEBGPU,
                other => {
                    return Err(Error::invalid(format!(
                        "unknown backend '{other}' in '{s}': use auto, primary, secondary, vulkan, metal, dx12, gl \
                         or webgpu, or a comma-separated list of them (as wgpu's WGPU_BACKEND)"
                    )))
                }
            };
        }
        Ok(BackendChoice(backends))
    }
}

/// How to pick the adapter. Both fields are also read from the environment by the CLI
/// (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`), so tests and scripts can steer it too.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter name, e.g. "llvmpipe" or "RTX".
    pub adapter: Option<String>,
}

impl GpuOptions {
    /// Options from `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, the variables the CLI also reads.
    pub fn from_env() -> Result<Self> {
        let backend = match std::env::var("WGPU_BACKEND") {
            Ok(text) => text.parse()?,
            Err(_) => BackendChoice::AUTO,
        };
        let adapter = std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty());
        Ok(GpuOptions { backend, adapter })
    }
}

/// What the user should do when no adapter is found.
pub const NO_ADAPTER_HINT: &str = "wgpu-cnn needs a Vulkan, Metal, DX12 or OpenGL adapter. \
On Linux without a GPU, install Mesa's software Vulkan driver (lavapipe): \
`sudo apt-get install mesa-vulkan-drivers libvulkan1`. \
`wgpu-cnn info` lists the adapters that were found.";

/// The device and queue every GPU part of the CLI works on, what its adapter is, and the device's
/// pipelines (built once, shared by every engine on the context). Cloning shares all of them.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub kernels: crate::kernel::Kernels,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext").field("info", &self.info).finish()
    }
}

/// All adapters visible through `backend`, best first: hardware before software, then
/// Vulkan/Metal/DX12 before GL.
pub fn enumerate_adapters(backend: BackendChoice) -> Vec<wgpu::Adapter> {
    let instance = new_instance(backend);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backend.backends()));
    adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
    adapters
}

fn new_instance(backend: BackendChoice) -> wgpu::Instance {
    // `_from_env` keeps wgpu's own debugging switches (WGPU_DEBUG, WGPU_VALIDATION, ...) working.
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = backend.backends();
    wgpu::Instance::new(descriptor)
}

fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// True for adapters that run on the CPU (llvmpipe/lavapipe, WARP, SwiftShader): correct, but
/// far slower than the CPU engines, so they are for testing, not for timing.
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

impl GpuContext {
    /// Opens the best adapter matching `options`, with every limit the adapter offers (the full
    /// CIFAR-10 training set as u8 is larger than WebGPU's default 128 MiB binding), and timestamp
    /// queries and Bgra8Unorm storage where available. Blocks: native targets only (a browser
    /// awaits [`GpuContext::open`]).
    pub fn new(options: &GpuOptions) -> Result<Self> {
        pollster::block_on(Self::open(options))
    }

    /// [`GpuContext::new`] as a future, which a browser's event loop can await. In a browser the
    /// adapter is the one `navigator.gpu.requestAdapter()` offers (high-performance preferred),
    /// and the device asks for the adapter's limits rather than WebGPU's defaults (8 storage
    /// buffers per stage, 128 MiB per binding): no entry point binds more than 8, but the
    /// training set is bound whole, over 128 MiB for all of CIFAR-10.
    pub async fn open(options: &GpuOptions) -> Result<Self> {
        let adapter = choose_adapter(options).await?;
        let info = adapter.get_info();
        // Timestamps for `bench train --profile`; Bgra8Unorm storage for the texture convolution's
        // Bgra8Unorm output. Both only where the adapter has them.
        let required_features =
            adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::BGRA8UNORM_STORAGE);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-cnn"),
                required_features,
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|source| Error::RequestDevice { adapter: info.name.clone(), source })?;
        let kernels = crate::kernel::Kernels::new(&device);
        Ok(GpuContext { device, queue, info, kernels })
    }

    /// A context on an application's own device and queue: nothing is created but an empty
    /// pipeline cache, and the handles are the application's (wgpu handles are shared, so the
    /// application keeps using its own). The training engines take one.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let kernels = crate::kernel::Kernels::new(device);
        GpuContext { device: device.clone(), queue: queue.clone(), info: device.adapter_info(), kernels }
    }

    /// "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)".
    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    pub fn supports_timestamps(&self) -> bool {
        self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Uploads `bytes` into a new storage buffer (see [`upload`]).
    pub fn upload(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        upload(&self.device, label, bytes, usage)
    }

    /// Reads a whole buffer back (see [`read_buffer`]).
    pub fn read_buffer(&self, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
        read_buffer(&self.device, &self.queue, buffer)
    }
}

/// The first adapter of [`enumerate_adapters`] whose name matches.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
async fn choose_adapter(options: &GpuOptions) -> Result<wgpu::Adapter> {
    let wanted = options.adapter.as_deref().map(str::to_lowercase);
    enumerate_adapters(options.backend)
        .into_iter()
        .find(|a| match &wanted {
            Some(name) => a.get_info().name.to_lowercase().contains(name),
            None => true,
        })
        .ok_or_else(|| no_adapter_error(options))
}

/// What the user should do when a browser offers no WebGPU adapter.
pub const NO_WEBGPU_HINT: &str = "this browser offers no WebGPU adapter: use Chrome or Edge 113 or later, \
Safari 26, or Firefox 141 or later on Windows (on Linux, Chrome needs --enable-unsafe-webgpu; without a GPU it \
offers its software adapter, SwiftShader, only with that flag)";

/// A browser has no adapter list: the one `requestAdapter` gives.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
async fn choose_adapter(options: &GpuOptions) -> Result<wgpu::Adapter> {
    let instance = new_instance(options.backend);
    let request =
        wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
    instance
        .request_adapter(&request)
        .await
        .map_err(|_| Error::NoAdapter { wanted: String::new(), hint: NO_WEBGPU_HINT.to_string() })
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn no_adapter_error(options: &GpuOptions) -> Error {
    let mut wanted = String::new();
    if let Some(name) = &options.adapter {
        wanted.push_str(&format!(" whose name contains '{name}'"));
    }
    if options.backend != BackendChoice::AUTO {
        let name = |b: wgpu::Backends| match b {
            wgpu::Backends::VULKAN => "Vulkan",
            wgpu::Backends::METAL => "Metal",
            wgpu::Backends::DX12 => "DX12",
            wgpu::Backends::GL => "GL",
            wgpu::Backends::BROWSER_WEBGPU => "WebGPU",
            _ => "other",
        };
        let names: Vec<&str> = options.backend.0.iter().map(name).collect();
        wanted.push_str(&format!(" on the {} backend{}", names.join(", "), if names.len() == 1 { "" } else { "s" }));
    }
    let available: Vec<String> =
        enumerate_adapters(BackendChoice::AUTO).iter().map(|a| describe(&a.get_info())).collect();
    let hint = if available.is_empty() {
        NO_ADAPTER_HINT.to_string()
    } else {
        format!(
            "Adapters found: {}. Pick one by name and graphics API (WGPU_ADAPTER_NAME, WGPU_BACKEND).",
            available.join("; ")
        )
    };
    Error::NoAdapter { wanted, hint }
}

/// One line naming an adapter: name, backend and device type.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Creates a buffer holding `bytes`, padded with zeros to a multiple of 4 bytes (storage buffers
/// are read as u32 words), usable as STORAGE | COPY_SRC | COPY_DST plus `usage`.
///
/// Fails with [`Error::TooLarge`] when the data exceeds the device's storage binding limit, and
/// with [`Error::Gpu`] when the device is out of memory.
pub fn upload(device: &wgpu::Device, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    let size = padded_size(bytes.len() as u64);
    check_binding_size(device, label, size)?;
    with_error_scope(device, &format!("allocating buffer '{label}'"), || {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: true,
        });
        // A buffer mapped at creation is always mappable in full.
        let mut view = buffer.slice(..).get_mapped_range_mut().expect("a buffer mapped at creation can be written");
        // New buffers are zero-filled by wgpu, so the padding past `bytes` is already 0.
        view.slice(..bytes.len()).copy_from_slice(bytes);
        drop(view);
        buffer.unmap();
        buffer
    })
}

/// A uniform buffer holding `value`: a kernel's parameters, the per-step uniform. `COPY_DST` too,
/// so that the per-step uniform can be rewritten before each submit.
pub fn uniform_buffer<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// Creates a zero-initialised storage buffer of at least `bytes` bytes (rounded up to 4), usable
/// as STORAGE | COPY_SRC | COPY_DST.
pub fn storage_buffer(device: &wgpu::Device, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
    let size = padded_size(bytes);
    check_binding_size(device, label, size)?;
    with_error_scope(device, &format!("allocating buffer '{label}'"), || {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

/// Byte size rounded up to whole u32 words, and never 0 (wgpu rejects empty bindings).
pub fn padded_size(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

/// Fails with a clear message when one binding of `bytes` would exceed the device's limit.
pub fn check_binding_size(device: &wgpu::Device, what: &str, bytes: u64) -> Result<()> {
    let allowed = device.limits().max_storage_buffer_binding_size;
    if bytes > allowed {
        return Err(Error::TooLarge {
            what: what.to_string(),
            needed: bytes,
            allowed,
            hint: String::from(": use a smaller input, or an adapter with larger limits (see `wgpu-cnn info`)"),
        });
    }
    Ok(())
}

/// Buffer ranges on their way to the host: the crate's one readback mechanism.
///
/// [`Readback::record`] records copies of the ranges into a MAP_READ staging buffer in the
/// caller's encoder; after that encoder is submitted, [`Readback::map`] asks for the mapping.
/// Then either [`Readback::try_take`] looks without waiting (the training loop's live metrics), or
/// [`Readback::bytes`] is awaited: on native targets that future waits inside `device.poll` (wgpu
/// runs map callbacks only there); in a browser the map's promise resolves it and nothing blocks.
/// [`read_buffer`] and [`read_buffer_async`] are the whole-buffer shorthands.
pub struct Readback {
    device: wgpu::Device,
    staging: wgpu::Buffer,
    /// The map callback's channel (dropping the receiver would close it) and the future that
    /// resolves when the callback has run.
    mapped: Option<(MapReceiver, MapFuture)>,
}

type MapReceiver = futures_intrusive::channel::shared::OneshotReceiver<std::result::Result<(), wgpu::BufferAsyncError>>;

/// Resolves when the map callback has run: `None` if it never will (the device was lost).
type MapFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<std::result::Result<(), wgpu::BufferAsyncError>>>>>;

impl fmt::Debug for Readback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readback")
            .field("bytes", &self.staging.size())
            .field("mapping", &self.mapped.is_some())
            .finish()
    }
}

impl Readback {
    /// Records copies of `ranges` — (buffer, offset, bytes), each a multiple of 4 — into
    /// `encoder`, one after the other in the staging buffer.
    pub fn record(
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        ranges: &[(&wgpu::Buffer, u64, u64)],
    ) -> Self {
        let total: u64 = ranges.iter().map(|(_, _, bytes)| bytes).sum();
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-cnn readback"),
            size: total.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut at = 0;
        for &(buffer, offset, bytes) in ranges {
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(buffer, offset, &staging, at, bytes);
            }
            at += bytes;
        }
        Readback { device: device.clone(), staging, mapped: None }
    }

    /// Asks for the mapping; call it once the encoder holding the copies has been submitted.
    pub fn map(&mut self) {
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        self.staging.slice(..).map_async(wgpu::MapMode::Read, move |result| {
            // The receiver is gone only if the readback was dropped unread.
            let _ = sender.send(result);
        });
        let future = Box::pin(receiver.receive());
        self.mapped = Some((receiver, future));
    }

    /// The bytes, if the copies have landed and the mapping is done; never waits.
    pub fn try_take(&mut self) -> Option<Result<Vec<u8>>> {
        let _ = self.device.poll(wgpu::PollType::Poll);
        let (_, mapped) = self.mapped.as_mut()?;
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match mapped.as_mut().poll(&mut context) {
            std::task::Poll::Pending => None,
            std::task::Poll::Ready(result) => Some(self.finish(result)),
        }
    }

    /// The bytes, once they have landed.
    pub async fn bytes(mut self) -> Result<Vec<u8>> {
        let Some((receiver, mapped)) = self.mapped.take() else {
            return Err(Error::Readback("the readback was never mapped (call map after submitting)".into()));
        };
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        let result = mapped.await;
        drop(receiver);
        self.finish(result)
    }

    fn finish(&mut self, result: Option<std::result::Result<(), wgpu::BufferAsyncError>>) -> Result<Vec<u8>> {
        self.mapped = None;
        result
            .ok_or_else(|| Error::Readback("the device was lost before the buffer was mapped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let bytes = self.staging.slice(..).get_mapped_range().map_err(|e| Error::Readback(e.to_string()))?.to_vec();
        self.staging.unmap();
        Ok(bytes)
    }
}

/// Reads a whole buffer back (see [`Readback`]): the future resolves to its bytes.
pub fn read_buffer_async(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    buffer: &wgpu::Buffer,
) -> impl std::future::Future<Output = Result<Vec<u8>>> {
    let mut encoder =
        device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-cnn readback") });
    let mut readback = Readback::record(device, &mut encoder, &[(buffer, 0, buffer.size())]);
    queue.submit([encoder.finish()]);
    readback.map();
    readback.bytes()
}

/// Reads a whole buffer back, blocking until the GPU has finished all work submitted so far on
/// `queue` (native targets; a browser must await [`read_buffer_async`]). Keep it out of inner
/// loops: training reads metrics once per epoch.
pub fn read_buffer(device: &wgpu::Device, queue: &wgpu::Queue, buffer: &wgpu::Buffer) -> Result<Vec<u8>> {
    pollster::block_on(read_buffer_async(device, queue, buffer))
}

/// Reads level 0 of a 2-D texture of 4-byte texels back (it needs `COPY_SRC` usage), blocking
/// like [`read_buffer`]: `width × height × 4` bytes, rows packed, in the texture's memory order
/// (B, G, R, A for a Bgra8 format).
pub fn read_texture(device: &wgpu::Device, queue: &wgpu::Queue, texture: &wgpu::Texture) -> Result<Vec<u8>> {
    let texel = texture.format().block_copy_size(None);
    if texel != Some(4) {
        return Err(Error::invalid(format!(
            "read_texture reads 4-byte texels; a {:?} texel has {texel:?}",
            texture.format()
        )));
    }
    let (width, height) = (texture.width(), texture.height());
    let row = 4 * width;
    let padded_row = row.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let rows = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-cnn texture readback"),
        size: u64::from(padded_row) * u64::from(height),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder =
        device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-cnn texture readback") });
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &rows,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(padded_row), rows_per_image: None },
        },
        wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
    );
    let mut readback = Readback::record(device, &mut encoder, &[(&rows, 0, rows.size())]);
    with_error_scope(device, "reading a texture back", || queue.submit([encoder.finish()]))?;
    readback.map();
    let padded = pollster::block_on(readback.bytes())?;
    Ok(padded.chunks(padded_row as usize).flat_map(|r| &r[..row as usize]).copied().collect())
}

/// Why `texture` cannot be read as bytes by a shader (`round(v · 255)` of an 8-bit normalised
/// RGBA or BGRA texel), if it cannot: "is R8Unorm; …".
pub fn check_byte_texture(texture: &wgpu::Texture) -> std::result::Result<(), String> {
    use wgpu::TextureFormat::{Bgra8Unorm, Rgba8Unorm};
    match texture.format().remove_srgb_suffix() {
        Rgba8Unorm | Bgra8Unorm => Ok(()),
        _ => Err(format!(
            "is {:?}; it must be Rgba8Unorm or Bgra8Unorm (or their sRGB forms through a non-sRGB view, gpu::byte_view)",
            texture.format()
        )),
    }
}

/// A view of level 0 of `texture` in which a shader reads its bytes: the texture's own format,
/// or for an sRGB texture its non-sRGB twin, which must be in the texture's `view_formats`
/// (wgpu's validation error comes back as an [`Error`] otherwise). Through an sRGB view the GPU
/// would linearise the bytes before the shader saw them.
pub fn byte_view(device: &wgpu::Device, texture: &wgpu::Texture) -> Result<wgpu::TextureView> {
    let format = texture.format().remove_srgb_suffix();
    with_error_scope(device, &format!("making a {format:?} view of a {:?} texture", texture.format()), || {
        texture.create_view(&wgpu::TextureViewDescriptor {
            label: Some("wgpu-cnn byte view"),
            format: Some(format),
            base_mip_level: 0,
            mip_level_count: Some(1),
            ..Default::default()
        })
    })
}

/// Blocks until every submission on the device has finished (used to time GPU work).
pub fn wait_idle(device: &wgpu::Device) -> Result<()> {
    device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| Error::Readback(e.to_string()))
}

/// Runs `work` inside validation and out-of-memory error scopes and turns a captured error into
/// [`Error::Gpu`] instead of wgpu's default of panicking.
///
/// In a browser, where popping a scope is a promise that only the event loop resolves, `work`
/// runs without scopes and errors reach the device's uncaptured-error handler (the web page
/// shows them).
pub fn with_error_scope<T>(device: &wgpu::Device, context: &str, work: impl FnOnce() -> T) -> Result<T> {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    {
        let _ = (device, context);
        Ok(work())
    }
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    with_error_scopes(device, context, work)
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn with_error_scopes<T>(device: &wgpu::Device, context: &str, work: impl FnOnce() -> T) -> Result<T> {
    let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = work();
    let validation = pollster::block_on(validation.pop());
    let out_of_memory = pollster::block_on(out_of_memory.pop());
    match validation.or(out_of_memory) {
        None => Ok(value),
        Some(error) => Err(Error::Gpu { context: context.to_string(), message: error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_as_wgpu_s_own_variable_and_unknown_names_are_errors() {
        let parse = |s: &str| s.parse::<BackendChoice>().map(|b| b.backends());
        assert_eq!(parse("auto").unwrap(), wgpu::Backends::all());
        assert_eq!(parse("vulkan,gl").unwrap(), wgpu::Backends::VULKAN | wgpu::Backends::GL);
        assert_eq!(parse(" Vk , METAL ").unwrap(), wgpu::Backends::VULKAN | wgpu::Backends::METAL);
        assert_eq!(parse("primary").unwrap(), wgpu::Backends::PRIMARY);
        assert_eq!(parse("d3d12").unwrap(), wgpu::Backends::DX12);
        let message = parse("vulkan,bogus").unwrap_err().to_string();
        assert!(message.contains("unknown backend 'bogus' in 'vulkan,bogus'"), "{message}");
    }
}
