//! The host–shader contract, and the one way to build, bind and dispatch a compute kernel.
//!
//! # The contract
//! Every WGSL file is a [`Shader`]: its source (with the preludes it is compiled with) and, for
//! each entry point, the binding table that entry point uses ([`EntryPoint`]: name, binding
//! number, uniform / read-only storage / read-write storage). The table is declared once, here on
//! the host side, beside the code that binds it; `tests/shaders.rs` checks every table against
//! naga's reflection of the WGSL (the bindings each entry point really uses, their numbers, names
//! and access), so the two cannot drift apart.
//!
//! From a table [`Kernels`] builds an explicit bind group layout **per entry point**, not per
//! file: a pipeline carries only the bindings its entry point uses (WebGPU allows 8 storage
//! buffers per stage by default; conv2d's tiled file declares 12).
//!
//! # Binding
//! There is one verb: [`Dispatch::new`] takes a kernel, its buffers by binding name ([`arg`],
//! with the bytes the kernel will touch) and a [`Grid`], checks that every binding of the table is
//! given exactly once, that each buffer has the usage its binding needs (`UNIFORM` or `STORAGE`)
//! and is large enough — saying which binding, which kernel and the sizes when not — and returns
//! a [`Dispatch`]: kernel, bind group and grid, fixed, ready to record into any compute pass.
//!
//! # Grids
//! Most kernels index their work as `gid.x + gid.y · num_workgroups.x · WORKGROUP_SIZE`
//! (`linear_index` in `shaders/common.wgsl`), so a 1-D problem of any size is laid out on a 2-D
//! grid that stays under `max_compute_workgroups_per_dimension` (65,535 by default):
//! [`Grid::Invocations`]. [`WORKGROUP_SIZE`] is the single Rust constant that both sets the
//! shaders' `WORKGROUP_SIZE` override and sizes those grids.
//!
//! # Shapes: override constants or uniforms
//! The convolution, most of a step's work, takes its shape as pipeline-override constants, so
//! that every extent is a literal in its compiled pipelines (index arithmetic divides by
//! constants; loads are picked at compile time): each layer gets pipelines of its own, built once
//! and cached by [`Kernels`]. The other kernels are cheap and take their shapes as uniforms, so one
//! pipeline serves every layer of their kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::with_error_scope;

/// Invocations per workgroup of every 1-D-indexed kernel. 256 is a multiple of every vendor's
/// subgroup size (32 on NVIDIA, 32/64 on AMD, 8–32 on Intel and lavapipe) and within WebGPU's
/// default limit.
pub const WORKGROUP_SIZE: u32 = 256;

/// How an entry point sees one binding; must be the WGSL declaration's address space and access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<uniform>`: the buffer needs `UNIFORM` usage.
    Uniform,
    /// `var<storage, read>`: `STORAGE` usage.
    Read,
    /// `var<storage, read_write>`: `STORAGE` usage.
    ReadWrite,
    /// `texture_2d<f32>`, read with `textureLoad` only (so the layout says unfilterable float,
    /// which every float and normalised format can be bound as): a view of a 2-D texture with
    /// `TEXTURE_BINDING` usage.
    Texture,
    /// `texture_storage_2d<format, write>`: a view of a 2-D texture of exactly that format with
    /// `STORAGE_BINDING` usage.
    StorageTexture(wgpu::TextureFormat),
}

/// One binding of an entry point (group 0): its number and its name in the WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub number: u32,
    pub name: &'static str,
    pub access: Access,
}

/// `var<uniform>` binding `number` called `name`.
pub const fn uniform(number: u32, name: &'static str) -> Binding {
    Binding { number, name, access: Access::Uniform }
}

/// `var<storage, read>` binding `number` called `name`.
pub const fn read(number: u32, name: &'static str) -> Binding {
    Binding { number, name, access: Access::Read }
}

/// `var<storage, read_write>` binding `number` called `name`.
pub const fn read_write(number: u32, name: &'static str) -> Binding {
    Binding { number, name, access: Access::ReadWrite }
}

/// `texture_2d<f32>` binding `number` called `name`.
pub const fn texture(number: u32, name: &'static str) -> Binding {
    Binding { number, name, access: Access::Texture }
}

/// `texture_storage_2d<format, write>` binding `number` called `name`.
pub const fn storage_texture(number: u32, name: &'static str, format: wgpu::TextureFormat) -> Binding {
    Binding { number, name, access: Access::StorageTexture(format) }
}

/// The bindings of `a`, then those of `b`: the table of an entry point that binds what another
/// does and more. `N` must be `A + B` (checked where the constant is evaluated).
pub const fn extended<const A: usize, const B: usize, const N: usize>(
    a: [Binding; A],
    b: [Binding; B],
) -> [Binding; N] {
    assert!(A + B == N, "an extended binding table holds both tables");
    let mut all = [uniform(0, ""); N];
    let mut i = 0;
    while i < N {
        all[i] = if i < A { a[i] } else { b[i - A] };
        i += 1;
    }
    all
}

/// An entry point and exactly the bindings it uses.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint {
    pub name: &'static str,
    pub bindings: &'static [Binding],
}

/// A WGSL file as compiled: `source` is the file with its preludes (`own`, the file as written in
/// `shaders/`, is its end), and `entry_points` the table of every entry point it has.
#[derive(Debug)]
pub struct Shader {
    /// Unique among the crate's shaders: the file's stem, with the variant of a file compiled
    /// after different preludes (`conv3x3_texture_rgba8`). Names pipelines, caches and exports.
    pub name: &'static str,
    /// The file name in `shaders/`, e.g. `conv2d_tiled.wgsl`.
    pub file: &'static str,
    pub source: &'static str,
    pub own: &'static str,
    pub entry_points: &'static [EntryPoint],
}

impl Shader {
    /// The table of entry point `name`.
    pub fn entry_point(&self, name: &str) -> Result<&'static EntryPoint> {
        self.entry_points.iter().find(|e| e.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.entry_points.iter().map(|e| e.name).collect();
            Error::invalid(format!("{} has no entry point '{name}' (it has {})", self.file, names.join(", ")))
        })
    }
}

/// A shader file of `shaders/` as compiled: `shader_source!("a.wgsl")` is the file alone,
/// `shader_source!("common.wgsl", "a.wgsl")` the file after the preludes named before it.
#[macro_export]
#[doc(hidden)]
macro_rules! shader_source {
    ($($file:literal),+) => {
        concat!($(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file)), "\n"),+)
    };
}

/// The last file of [`shader_source!`]'s list, alone.
#[macro_export]
#[doc(hidden)]
macro_rules! shader_own {
    ($file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file))
    };
}

/// The run-time checks naga adds to our shaders: every memory access stays bounds-checked, but
/// not every loop gets an iteration guard and not every integer `/` and `%` a zero check. Those
/// two cost 28% of a training step on lavapipe (212 → 270 img/s, `wgpu-cnn bench train`) because
/// the kernels' index arithmetic divides in every loop.
pub fn runtime_checks() -> wgpu::ShaderRuntimeChecks {
    wgpu::ShaderRuntimeChecks {
        force_loop_bounding: false,
        int_div_checks: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    }
}

fn compile(device: &wgpu::Device, shader: &Shader) -> Result<wgpu::ShaderModule> {
    with_error_scope(device, &format!("compiling shader '{}'", shader.name), || {
        // SAFETY: memory accesses keep their bounds checks. The two checks turned off guard
        // against endless loops and integer division by zero, and neither can happen in the
        // shaders of this crate: every loop counts up to a bound taken from a shape uniform or
        // override constant (sizes of tensors that exist, far below u32::MAX) or a constant, or
        // halves a power of two, and every divisor is a stride, a tensor extent or a lane count,
        // which the host makes ≥ 1 (Plane, Model and the layer shapes reject empty sizes; the
        // convolution's bind checks its lane count).
        unsafe {
            device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                },
                runtime_checks(),
            )
        }
    })
}

/// The bind group layout of `entry`'s table: exactly its bindings, nothing more.
fn layout_entries(entry: &EntryPoint) -> Vec<wgpu::BindGroupLayoutEntry> {
    entry
        .bindings
        .iter()
        .map(|b| {
            let buffer = |ty| wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None };
            let ty = match b.access {
                Access::Uniform => buffer(wgpu::BufferBindingType::Uniform),
                Access::Read => buffer(wgpu::BufferBindingType::Storage { read_only: true }),
                Access::ReadWrite => buffer(wgpu::BufferBindingType::Storage { read_only: false }),
                Access::Texture => wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                Access::StorageTexture(format) => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::WriteOnly,
                    format,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
            };
            wgpu::BindGroupLayoutEntry { binding: b.number, visibility: wgpu::ShaderStages::COMPUTE, ty, count: None }
        })
        .collect()
}

/// One entry point compiled into a pipeline (with its override constants), and its bind group
/// layout. Cheap to clone: wgpu handles are reference-counted.
#[derive(Clone, Debug)]
pub struct Kernel {
    shader: &'static str,
    entry: &'static EntryPoint,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// `shader::entry_point`, for errors and profiles.
    pub fn label(&self) -> String {
        format!("{}::{}", self.shader, self.entry.name)
    }

    /// The entry point's name.
    pub fn entry_point(&self) -> &'static str {
        self.entry.name
    }
}

/// The compiled shaders and pipelines of one device, each built once: a layer that binds
/// pipelines of a shape already seen gets them from here. Cheap to clone (shared).
#[derive(Clone)]
pub struct Kernels {
    inner: Arc<KernelsInner>,
}

struct KernelsInner {
    device: wgpu::Device,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Kernel>>,
}

/// Shader name, entry point, and the override constants as bits.
type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pipelines = self.inner.pipelines.lock().map_or(0, |p| p.len());
        f.debug_struct("Kernels").field("pipelines", &pipelines).finish()
    }
}

impl Kernels {
    /// An empty cache for `device`: nothing is compiled until asked for.
    // A browser's wgpu handles are neither Send nor Sync; there the cache is shared by the
    // clones of one thread only.
    #[cfg_attr(all(target_arch = "wasm32", target_os = "unknown"), allow(clippy::arc_with_non_send_sync))]
    pub fn new(device: &wgpu::Device) -> Self {
        Kernels {
            inner: Arc::new(KernelsInner {
                device: device.clone(),
                modules: Mutex::new(HashMap::new()),
                pipelines: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The pipeline of `shader`'s entry point `entry` with `constants` set (and `WORKGROUP_SIZE`
    /// from the Rust constant): compiled on first use, then shared.
    pub fn get(&self, shader: &'static Shader, entry: &str, constants: &[(&'static str, f64)]) -> Result<Kernel> {
        let entry = shader.entry_point(entry)?;
        let key: PipelineKey = (shader.name, entry.name, constants.iter().map(|(n, v)| (*n, v.to_bits())).collect());
        // A poisoned lock only means another thread panicked while inserting; the map is intact.
        if let Some(kernel) = self.inner.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(kernel.clone());
        }
        let device = &self.inner.device;
        let module = {
            let mut modules = self.inner.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(shader.name) {
                Some(module) => module.clone(),
                None => {
                    let module = compile(device, shader)?;
                    modules.insert(shader.name, module.clone());
                    module
                }
            }
        };
        let label = format!("{}::{}", shader.name, entry.name);
        let mut all = vec![("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))];
        all.extend_from_slice(constants);
        let (pipeline, layout) = with_error_scope(device, &format!("building pipeline '{label}'"), || {
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &layout_entries(entry),
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry.name),
                compilation_options: wgpu::PipelineCompilationOptions { constants: &all, ..Default::default() },
                cache: None,
            });
            (pipeline, layout)
        })?;
        let kernel = Kernel { shader: shader.name, entry, pipeline, layout };
        self.inner.pipelines.lock().unwrap_or_else(|e| e.into_inner()).insert(key, kernel.clone());
        Ok(kernel)
    }

    /// Pipelines built so far (a shape seen twice adds none).
    pub fn pipeline_count(&self) -> usize {
        self.inner.pipelines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// What is bound to the binding called `name`.
#[derive(Clone, Copy, Debug)]
pub struct Arg<'a> {
    pub name: &'static str,
    pub resource: Resource<'a>,
    /// The bytes the kernel reads or writes of the buffer, where not its first `bytes` (a
    /// region past an offset, rows picked from a dataset): what [`Dispatch::bytes`] counts.
    pub traffic: Option<u64>,
}

/// A buffer, of which the kernel touches the first `bytes`, or a texture view.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    Buffer { buffer: &'a wgpu::Buffer, bytes: u64 },
    Texture(&'a wgpu::TextureView),
}

/// The buffer for binding `name`, of which the kernel touches the first `bytes` bytes.
pub fn arg<'a>(name: &'static str, buffer: &'a wgpu::Buffer, bytes: u64) -> Arg<'a> {
    Arg { name, resource: Resource::Buffer { buffer, bytes }, traffic: None }
}

impl Arg<'_> {
    /// The same binding, of which the kernel moves `bytes` (see [`Arg::traffic`]).
    pub fn moving(self, bytes: u64) -> Self {
        Arg { traffic: Some(bytes), ..self }
    }
}

/// The texture view for binding `name` (a sampled or a storage texture).
pub fn texture_arg<'a>(name: &'static str, view: &'a wgpu::TextureView) -> Arg<'a> {
    Arg { name, resource: Resource::Texture(view), traffic: None }
}

/// The bytes of `floats` f32 values (or u32 words).
pub fn floats(floats: usize) -> u64 {
    4 * floats as u64
}

/// How many workgroups a dispatch launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// Enough workgroups of [`WORKGROUP_SIZE`] for this many invocations, on the 2-D grid of
    /// `linear_index` (kernels that index invocations).
    Invocations(u64),
    /// This many workgroups, on a 2-D grid within the per-dimension limit (kernels that index
    /// workgroups, `workgroup_id.x + workgroup_id.y · num_workgroups.x`).
    Workgroups(u64),
}

impl Grid {
    fn size(self, max_per_dimension: u32) -> [u32; 3] {
        match self {
            Grid::Invocations(n) => grid_for(n, max_per_dimension),
            Grid::Workgroups(n) => workgroup_grid(n, max_per_dimension),
        }
    }
}

/// One kernel bound to its buffers, with its grid fixed: what a layer records every step, built
/// once when the layer is bound.
#[derive(Debug)]
pub struct Dispatch {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    bytes: u64,
}

impl Dispatch {
    /// `kernel` on `args` over `grid`. Fails, naming the kernel, the binding and the sizes, when a
    /// binding of its table is missing or given twice, a name is not in the table, a buffer lacks
    /// the usage its binding needs, or is smaller than the bytes the kernel will touch.
    pub fn new(device: &wgpu::Device, kernel: &Kernel, args: &[Arg<'_>], grid: Grid) -> Result<Self> {
        let label = kernel.label();
        let bad = |why: String| Error::invalid(format!("cannot bind {label}: {why}"));
        for a in args {
            if !kernel.entry.bindings.iter().any(|b| b.name == a.name) {
                let names: Vec<&str> = kernel.entry.bindings.iter().map(|b| b.name).collect();
                return Err(bad(format!("it has no binding '{}' (its bindings: {})", a.name, names.join(", "))));
            }
        }
        let mut entries = Vec::with_capacity(kernel.entry.bindings.len());
        for binding in kernel.entry.bindings {
            let mut given = args.iter().filter(|a| a.name == binding.name);
            let a = given
                .next()
                .ok_or_else(|| bad(format!("binding {} '{}' is not given", binding.number, binding.name)))?;
            if given.next().is_some() {
                return Err(bad(format!("binding {} '{}' is given twice", binding.number, binding.name)));
            }
            let resource = match a.resource {
                Resource::Buffer { buffer, bytes } => {
                    check_buffer(binding, buffer, bytes).map_err(bad)?;
                    buffer.as_entire_binding()
                }
                Resource::Texture(view) => {
                    check_texture(binding, view.texture()).map_err(bad)?;
                    wgpu::BindingResource::TextureView(view)
                }
            };
            entries.push(wgpu::BindGroupEntry { binding: binding.number, resource });
        }
        let bind_group = with_error_scope(device, &format!("binding {label}"), || {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&label),
                layout: &kernel.layout,
                entries: &entries,
            })
        })?;
        let workgroups = grid.size(device.limits().max_compute_workgroups_per_dimension);
        // Each buffer once, however many views of it are bound (x and x4).
        let mut touched: Vec<(&wgpu::Buffer, u64)> = Vec::new();
        for a in args {
            if let Resource::Buffer { buffer, bytes } = a.resource {
                let bytes = a.traffic.unwrap_or(bytes);
                match touched.iter_mut().find(|(b, _)| *b == buffer) {
                    Some((_, most)) => *most = (*most).max(bytes),
                    None => touched.push((buffer, bytes)),
                }
            }
        }
        let bytes = touched.iter().map(|(_, bytes)| bytes).sum();
        Ok(Dispatch { kernel: kernel.clone(), bind_group, workgroups, bytes })
    }

    /// Records it into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.kernel.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// `shader::entry_point`.
    pub fn label(&self) -> String {
        self.kernel.label()
    }

    /// The entry point's name.
    pub fn entry_point(&self) -> &'static str {
        self.kernel.entry_point()
    }

    /// The workgroups it launches.
    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// The bytes of its buffers the kernel moves, each buffer counted once (the larger of its
    /// bindings): its memory traffic if it reads or writes each of them once and nothing is in
    /// a cache before it runs, the memory side of a roofline. Each binding counts the bytes it
    /// declares ([`arg`]) or moves ([`Arg::moving`]); a kernel that reads some bytes twice or
    /// skips some (a partial batch) moves more or fewer, so it is an estimate.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Why `buffer` cannot serve `binding` for a kernel touching its first `bytes`, if it cannot.
fn check_buffer(binding: &Binding, buffer: &wgpu::Buffer, bytes: u64) -> std::result::Result<(), String> {
    let (usage, what) = match binding.access {
        Access::Uniform => (wgpu::BufferUsages::UNIFORM, "UNIFORM"),
        Access::Read | Access::ReadWrite => (wgpu::BufferUsages::STORAGE, "STORAGE"),
        Access::Texture | Access::StorageTexture(_) => {
            return Err(format!("binding {} '{}' takes a texture view, not a buffer", binding.number, binding.name))
        }
    };
    if !buffer.usage().contains(usage) {
        return Err(format!(
            "the {} buffer needs {what} usage (binding {}); it has {:?}",
            binding.name,
            binding.number,
            buffer.usage()
        ));
    }
    if buffer.size() < bytes.max(4) {
        return Err(format!(
            "the {} buffer holds {} bytes, but binding {} needs {}",
            binding.name,
            buffer.size(),
            binding.number,
            bytes.max(4)
        ));
    }
    Ok(())
}

/// Why a view of `texture` cannot serve `binding`, if it cannot: the usage, the dimension, the
/// sample count and, for a storage texture, the format.
fn check_texture(binding: &Binding, texture: &wgpu::Texture) -> std::result::Result<(), String> {
    let (usage, what) = match binding.access {
        Access::Texture => (wgpu::TextureUsages::TEXTURE_BINDING, "TEXTURE_BINDING"),
        Access::StorageTexture(_) => (wgpu::TextureUsages::STORAGE_BINDING, "STORAGE_BINDING"),
        _ => return Err(format!("binding {} '{}' takes a buffer, not a texture view", binding.number, binding.name)),
    };
    let name = binding.name;
    if !texture.usage().contains(usage) {
        return Err(format!(
            "the {name} texture needs {what} usage (binding {}); it has {:?}",
            binding.number,
            texture.usage()
        ));
    }
    if texture.dimension() != wgpu::TextureDimension::D2 || texture.sample_count() != 1 {
        return Err(format!("the {name} texture must be 2-D and single-sampled"));
    }
    if let Access::StorageTexture(format) = binding.access {
        if texture.format() != format {
            return Err(format!(
                "the {name} texture must be {format:?} (binding {}); it is {:?}",
                binding.number,
                texture.format()
            ));
        }
    }
    Ok(())
}

/// The 2-D grid of workgroups covering `invocations` 1-D work items: as few rows as needed so
/// that no dimension exceeds `max_per_dimension`.
pub fn grid_for(invocations: u64, max_per_dimension: u32) -> [u32; 3] {
    workgroup_grid(invocations.div_ceil(u64::from(WORKGROUP_SIZE)), max_per_dimension)
}

/// The 2-D grid of `workgroups` workgroups (for kernels that index workgroups, not invocations):
/// as few rows as needed so that no dimension exceeds `max_per_dimension`.
pub fn workgroup_grid(workgroups: u64, max_per_dimension: u32) -> [u32; 3] {
    let groups = workgroups.max(1);
    let max = u64::from(max_per_dimension.max(1));
    let rows = groups.div_ceil(max);
    let columns = groups.div_ceil(rows);
    [columns as u32, rows as u32, 1]
}

/// Opens a compute pass on `encoder`, labelled for debuggers and profilers.
pub fn begin_pass<'e>(encoder: &'e mut wgpu::CommandEncoder, label: &str) -> wgpu::ComputePass<'e> {
    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_invocation_within_the_per_dimension_limit() {
        for &(n, max) in &[
            (1u64, 65_535u32),
            (256, 65_535),
            (257, 65_535),
            (16_777_216, 65_535),
            (u32::MAX as u64, 65_535),
            (1000, 3),
        ] {
            let [x, y, z] = grid_for(n, max);
            assert!(x <= max && y <= max && z == 1, "grid {x}x{y} for {n} exceeds {max}");
            let capacity = u64::from(x) * u64::from(y) * u64::from(WORKGROUP_SIZE);
            assert!(capacity >= n, "grid {x}x{y} holds {capacity} < {n} invocations");
            assert!(
                capacity < n + u64::from(y) * u64::from(WORKGROUP_SIZE) + u64::from(WORKGROUP_SIZE),
                "grid {x}x{y} is wasteful for {n}"
            );
        }
    }
}
