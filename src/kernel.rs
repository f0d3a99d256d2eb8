//! The one way to build a compute pipeline from WGSL and dispatch it.
//!
//! Every shader in `shaders/` declares `override WORKGROUP_SIZE: u32;` and indexes its work as
//! `gid.x + gid.y * num_workgroups.x * WORKGROUP_SIZE`, so a 1-D problem of any size can be laid
//! out on a 2-D grid that stays under `max_compute_workgroups_per_dimension` (65,535 by default).
//! [`WORKGROUP_SIZE`] is the single Rust constant that both sets the override and sizes the grid.

use crate::error::Result;
use crate::gpu::with_error_scope;

/// Invocations per workgroup of every 1-D-indexed kernel. 256 is a multiple of every vendor's
/// subgroup size (32 on NVIDIA, 32/64 on AMD, 8–32 on Intel and lavapipe) and within WebGPU's
/// default limit.
pub const WORKGROUP_SIZE: u32 = 256;

/// A compute pipeline for one entry point, with its bind group layout (group 0).
/// Cheap to clone: wgpu handles are reference-counted.
#[derive(Clone, Debug)]
pub struct ComputeKernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    label: String,
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

/// Compiles a WGSL source once; build several [`ComputeKernel`]s from its entry points.
pub fn shader_module(device: &wgpu::Device, label: &str, source: &str) -> Result<wgpu::ShaderModule> {
    with_error_scope(device, &format!("compiling shader '{label}'"), || {
        // SAFETY: memory accesses keep their bounds checks. The two checks turned off guard
        // against endless loops and integer division by zero, and neither can happen in the
        // shaders of this crate: every loop counts up to a bound taken from a shape uniform or
        // override constant (sizes of tensors that exist, far below u32::MAX) or a constant, or
        // halves a power of two, and every divisor is a stride, a tensor extent or a lane count,
        // which the host makes ≥ 1 (Plane, Model and the layer shapes reject empty sizes;
        // Conv2d::bind checks chunk_lanes).
        unsafe {
            device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(source.into()) },
                runtime_checks(),
            )
        }
    })
}

impl ComputeKernel {
    /// Builds the pipeline for `entry_point` with `WORKGROUP_SIZE` set from the Rust constant.
    /// The bind group layout is derived from the shader, so the WGSL bindings are the single
    /// source of truth for what a kernel takes.
    pub fn new(device: &wgpu::Device, module: &wgpu::ShaderModule, entry_point: &str) -> Result<Self> {
        Self::specialized(device, module, entry_point, &[])
    }

    /// Builds the pipeline for `entry_point` with the shader's `override` constants set from
    /// `constants` (and `WORKGROUP_SIZE` from the Rust constant).
    pub fn specialized(
        device: &wgpu::Device,
        module: &wgpu::ShaderModule,
        entry_point: &str,
        constants: &[(&str, f64)],
    ) -> Result<Self> {
        let label = entry_point.to_string();
        let mut all = vec![("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE))];
        all.extend_from_slice(constants);
        let pipeline = with_error_scope(device, &format!("building pipeline '{label}'"), || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions { constants: &all, ..Default::default() },
                cache: None,
            })
        })?;
        let layout = pipeline.get_bind_group_layout(0);
        Ok(ComputeKernel { pipeline, layout, label })
    }

    /// A bind group from `(binding, buffer)` pairs (whole buffers): exactly the bindings this entry point uses,
    /// with the numbers its shader declares (each shader lists them at the top).
    pub fn bind(&self, device: &wgpu::Device, buffers: &[(u32, &wgpu::Buffer)]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .map(|(binding, buffer)| wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.label),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Records one dispatch into an open compute pass.
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass<'_>, bind_group: &wgpu::BindGroup, workgroups: [u32; 3]) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// One kernel bound to its buffers, with its grid fixed: what a layer records every step, built
/// once when the layer is bound.
#[derive(Debug)]
pub struct Dispatch {
    kernel: ComputeKernel,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Dispatch {
    /// `kernel` on `buffers` (`(binding, buffer)` pairs, see [`ComputeKernel::bind`]) over `workgroups`.
    pub fn new(
        device: &wgpu::Device,
        kernel: &ComputeKernel,
        buffers: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Self {
        Dispatch { kernel: kernel.clone(), bind_group: kernel.bind(device, buffers), workgroups }
    }

    /// `kernel` on `buffers` over the 1-D grid of `invocations` ([`grid_for`] within the device's
    /// limit): the layout of every kernel indexed with `linear_index`.
    pub fn covering(
        device: &wgpu::Device,
        kernel: &ComputeKernel,
        buffers: &[(u32, &wgpu::Buffer)],
        invocations: u64,
    ) -> Self {
        let max = device.limits().max_compute_workgroups_per_dimension;
        Self::new(device, kernel, buffers, grid_for(invocations, max))
    }

    /// Records it into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.kernel.dispatch(pass, &self.bind_group, self.workgroups);
    }

    /// The entry point's name.
    pub fn label(&self) -> &str {
        self.kernel.label()
    }
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
