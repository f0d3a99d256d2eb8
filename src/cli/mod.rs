//! The command-line tool's pieces: options shared by several commands, and one module per
//! family of commands. Each function here parses nothing and computes little: it calls the
//! library and prints.

pub mod convolve;
pub mod train;

use std::time::Duration;

use clap::{Args, ValueEnum};

use wgpu_cnn::gpu::{self, BackendChoice, GpuContext, GpuOptions};
use wgpu_cnn::{Error, Result};

#[derive(Args, Clone)]
pub struct GpuArgs {
    /// Graphics API to use: auto, vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "WGPU_BACKEND", default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,
    /// Use the first adapter whose name contains this text (case-insensitive), e.g. "llvmpipe".
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME")]
    pub adapter: Option<String>,
}

fn parse_backend(text: &str) -> std::result::Result<BackendChoice, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

impl GpuArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions { backend: self.backend, adapter: self.adapter.clone() }
    }
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A hardware GPU when there is one, else the fast CPU backend.
    Auto,
    /// The selected adapter, software ones included.
    Gpu,
    /// The fast CPU backend.
    Cpu,
    /// The plain-loop CPU reference (the oracle the others are tested against).
    CpuReference,
}

/// Where a model runs: the GPU, or one of the two CPU backends.
pub enum Target {
    Gpu(Box<GpuContext>),
    CpuFast,
    CpuReference,
}

impl Target {
    pub fn gpu(&self) -> Option<&GpuContext> {
        match self {
            Target::Gpu(ctx) => Some(ctx),
            _ => None,
        }
    }
}

/// The target `device` asks for, and why (printed by the caller); see [`choose_gpu`].
pub fn choose_target(args: &GpuArgs, device: Device) -> Result<(Target, String)> {
    if device == Device::CpuReference {
        return Ok((Target::CpuReference, "CPU reference (plain loops, --device cpu-reference)".to_string()));
    }
    let (ctx, why) = choose_gpu(args, device, false)?;
    Ok(match ctx {
        Some(ctx) => (Target::Gpu(Box::new(ctx)), why),
        None => (Target::CpuFast, why),
    })
}

/// The GPU to run on, or None for the CPU, and why (printed by the caller).
///
/// `auto` takes a hardware adapter; a software one (llvmpipe, WARP, SwiftShader) only when
/// `software_ok` — for the 3×3 filter it is fine, for training it is slower than the CPU
/// backend (≈0.4 GFLOP/s for a naive f32 kernel on lavapipe), so training uses the CPU instead.
pub fn choose_gpu(args: &GpuArgs, device: Device, software_ok: bool) -> Result<(Option<GpuContext>, String)> {
    match device {
        Device::Cpu | Device::CpuReference => Ok((None, "CPU (--device cpu)".to_string())),
        Device::Gpu => {
            let ctx = GpuContext::new(&args.options())?;
            let why = format!("GPU {}", ctx.describe());
            Ok((Some(ctx), why))
        }
        Device::Auto => match GpuContext::new(&args.options()) {
            Ok(ctx) if software_ok || !ctx.is_software() => {
                let why = format!("GPU {}", ctx.describe());
                Ok((Some(ctx), why))
            }
            Ok(ctx) => Ok((
                None,
                format!(
                    "CPU: the only adapter, {}, is a software rasteriser that trains slower than the CPU \
                     backend (use --device gpu to run the shaders on it anyway)",
                    ctx.describe()
                ),
            )),
            Err(e @ Error::NoAdapter { .. }) => {
                Ok((None, format!("CPU: no GPU adapter ({})", e.to_string().lines().next().unwrap_or_default())))
            }
            Err(e) => Err(e),
        },
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// "1m 23.4s" / "12.3s".
pub fn seconds(s: f64) -> String {
    if s >= 60.0 {
        format!("{}m {:.1}s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1}s")
    }
}

pub fn info(args: &GpuArgs) -> Result<()> {
    let adapters = gpu::enumerate_adapters(args.backend);
    if adapters.is_empty() {
        println!("No adapter found.\n{}", gpu::NO_ADAPTER_HINT);
        return Ok(());
    }
    println!("{} adapter(s), best first:", adapters.len());
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        println!("\n[{i}] {}", info.name);
        println!("    backend:                      {:?}", info.backend);
        println!(
            "    device type:                  {:?}{}",
            info.device_type,
            if gpu::is_software(&info) { " (software: runs on the CPU; for testing, not for speed)" } else { "" }
        );
        println!("    driver:                       {} {}", info.driver, info.driver_info);
        println!("    max buffer size:              {}", bytes(limits.max_buffer_size));
        println!("    max storage binding:          {}", bytes(limits.max_storage_buffer_binding_size));
        println!("    storage buffers per stage:    {}", limits.max_storage_buffers_per_shader_stage);
        println!("    workgroup storage:            {}", bytes(u64::from(limits.max_compute_workgroup_storage_size)));
        println!("    invocations per workgroup:    {}", limits.max_compute_invocations_per_workgroup);
        println!(
            "    workgroup size (x, y, z):     {}, {}, {}",
            limits.max_compute_workgroup_size_x,
            limits.max_compute_workgroup_size_y,
            limits.max_compute_workgroup_size_z
        );
        println!("    workgroups per dimension:     {}", limits.max_compute_workgroups_per_dimension);
        println!(
            "    timestamp queries:            {}",
            if adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) { "yes" } else { "no" }
        );
    }
    match GpuContext::new(&args.options()) {
        Ok(ctx) => println!("\nSelected: {}", ctx.describe()),
        Err(e) => println!("\nNone selected: {e}"),
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1 << 20 {
        format!("{:.0} MiB ({n} bytes)", n as f64 / MIB)
    } else {
        format!("{} KiB ({n} bytes)", n / 1024)
    }
}

pub fn selftest(args: &GpuArgs) -> Result<()> {
    let ctx = GpuContext::new(&args.options())?;
    println!("Adapter: {}, driver {} {}", ctx.describe(), ctx.info.driver, ctx.info.driver_info);
    let start = std::time::Instant::now();
    let checks = wgpu_cnn::selftest::run_all(&ctx)?;
    let width = checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    for check in &checks {
        println!("{check:width$}");
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    println!("\n{} passed, {failed} failed ({})", checks.len() - failed, seconds(start.elapsed().as_secs_f64()));
    if failed > 0 {
        return Err(Error::invalid(format!(
            "{failed} kernel check(s) failed on {}: this driver computes differently from the CPU reference",
            ctx.describe()
        )));
    }
    Ok(())
}
