//! Options shared by several commands, the choice of device, the library's errors in the tool's
//! terms (its flags), `info`, `selftest` and small formatting helpers.

use std::time::Duration;

use clap::{Args, ValueEnum};

use wgpu_cnn::error::ResumeError;
use wgpu_cnn::gpu::{self, BackendChoice, GpuContext, GpuOptions};
use wgpu_cnn::train::{self, Target};
use wgpu_cnn::{Error, Result};

#[derive(Args, Clone)]
pub struct GpuArgs {
    /// Graphics API to use: auto, primary, secondary, vulkan, metal, dx12, gl, or a
    /// comma-separated list of them (as wgpu's WGPU_BACKEND). Read only by commands that use a GPU.
    #[arg(long, global = true, env = "WGPU_BACKEND", default_value = "auto")]
    pub backend: String,
    /// Use the first adapter whose name contains this text (case-insensitive), e.g. "llvmpipe".
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME")]
    pub adapter: Option<String>,
}

impl GpuArgs {
    /// The adapter choice, or why `--backend` (or `WGPU_BACKEND`) names none: parsed here, when
    /// a command needs a GPU, so that a value meant for another program never stops a CPU one.
    pub fn options(&self) -> Result<GpuOptions> {
        let backend: BackendChoice = self.backend.parse()?;
        Ok(GpuOptions { backend, adapter: self.adapter.clone() })
    }
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A hardware GPU when there is one, else the fast CPU engine.
    Auto,
    /// The selected adapter, software ones included.
    Gpu,
    /// The fast CPU engine.
    Cpu,
    /// The plain-loop CPU reference (the oracle the others are tested against).
    CpuReference,
}

impl From<Device> for train::Device {
    fn from(device: Device) -> Self {
        match device {
            Device::Auto => train::Device::Auto,
            Device::Gpu => train::Device::Gpu,
            Device::Cpu => train::Device::Cpu,
            Device::CpuReference => train::Device::CpuReference,
        }
    }
}

/// The target `device` asks for on the adapter `args` select, and why (see [`Target::choose`]).
pub fn choose(args: &GpuArgs, device: Device, software_ok: bool) -> Result<(Target, String)> {
    let options = match device {
        Device::Cpu | Device::CpuReference => GpuOptions::default(),
        Device::Auto | Device::Gpu => args.options()?,
    };
    let (target, why) = Target::choose(device.into(), &options, software_ok)?;
    let flag = match target {
        Target::Gpu(_) => "",
        _ if device == Device::Auto => " (--device gpu runs the shaders on a software adapter anyway)",
        Target::CpuFast => " (--device cpu)",
        Target::CpuReference => " (--device cpu-reference)",
    };
    let why = why.replace(" (ask for the GPU device to run the shaders on it anyway)", "");
    Ok((target, format!("{why}{flag}")))
}

/// The tool's flag for a training setting of the library ([`Error::Setting`]).
fn flag(setting: &str) -> &str {
    match setting {
        "epochs" => "--epochs",
        "batch_size" => "--batch-size",
        "l1" => "--l1",
        "validation_split" => "--validation-split",
        "seed" => "--seed",
        "learning_rate" => "--lr",
        other => other,
    }
}

/// The message of a library error in the tool's terms: settings named by their flags.
pub fn message(error: &Error) -> String {
    match error {
        Error::Setting { setting, message } => format!("{} {message}", flag(setting)),
        Error::Resume(ResumeError::OtherData { trained_on, given }) => format!(
            "the run was trained on \"{trained_on}\", but this one would use \"{given}\"; resume with the \
             same --data and --train-size"
        ),
        Error::Resume(ResumeError::Done { epochs_done }) => {
            format!("already trained for {epochs_done} epochs; ask for more with --epochs")
        }
        Error::NoAdapter { .. } => {
            error.to_string().replace("(WGPU_ADAPTER_NAME, WGPU_BACKEND)", "(--adapter NAME, --backend)")
        }
        Error::TooLarge { .. } => error.to_string().replace("use fewer images", "use fewer images (--train-size)"),
        Error::Diverged { .. } => error
            .to_string()
            .replace(
                "the weights of the epochs before are still good",
                "the checkpoint of the epoch before is still good",
            )
            .replace("try a lower learning rate", "try a lower --lr")
            .replace("try a smaller L1 weight", "try a smaller --l1"),
        other => other.to_string(),
    }
}

/// Fails before any work when `path` cannot be an output file ending in `.extension`: another
/// extension, a folder, or a parent folder that does not exist.
pub fn check_output(path: &std::path::Path, extension: &str) -> Result<()> {
    if !path.extension().is_some_and(|e| e.eq_ignore_ascii_case(extension)) {
        return Err(Error::invalid(format!("{}: use a file name ending in .{extension}", path.display())));
    }
    if path.is_dir() {
        return Err(Error::invalid(format!("{}: is a folder, not a file name", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() {
        return Err(Error::invalid(format!("{}: the folder {} does not exist", path.display(), parent.display())));
    }
    Ok(())
}

/// Writes `value` to `path` as pretty JSON, atomically.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    wgpu_cnn::io::write_atomic(path, text.as_bytes())
}

/// `--chart` and `--json` of the `bench` commands.
#[derive(Args)]
pub struct BenchOutputs {
    /// Also draw the results as a bar chart, each bar with its ratio to the first of its group (.png).
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
    /// Also write the results as JSON, with the machine's CPU and GPU.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl BenchOutputs {
    /// Fails before any timing when an output could not be written (see [`check_output`]).
    pub fn check(&self) -> Result<()> {
        if let Some(path) = &self.chart {
            check_output(path, "png")?;
        }
        if let Some(path) = &self.json {
            check_output(path, "json")?;
        }
        Ok(())
    }

    /// Draws `groups` (values in `unit`) and writes `fields` as JSON with `"machine"` (the CPU, and
    /// the GPU when one ran) and `"unit"` added, to the files asked for.
    pub fn write(
        &self,
        title: &str,
        unit: &str,
        groups: &[crate::plot::BarGroup],
        gpu: Option<&GpuContext>,
        mut fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        if let Some(path) = &self.chart {
            crate::plot::bar_chart(path, title, unit, groups)?;
            println!("Wrote {}", path.display());
        }
        if let Some(path) = &self.json {
            let machine = serde_json::json!({ "cpu": wgpu_cnn::bench::cpu_name(), "gpu": gpu.map(|c| c.describe()) });
            fields.insert("machine".into(), machine);
            fields.insert("unit".into(), unit.into());
            write_json(path, &serde_json::Value::Object(fields))?;
            println!("Wrote {}", path.display());
        }
        Ok(())
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
    let adapters = gpu::enumerate_adapters(args.options()?.backend);
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
            if adapter.features().contains(wgpu_cnn::wgpu::Features::TIMESTAMP_QUERY) { "yes" } else { "no" }
        );
    }
    match GpuContext::new(&args.options()?) {
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

/// `wgpu-cnn shaders`: every shader's entry points, workgroup sizes and bindings; with `out`,
/// `<name>.wgsl` (the source as compiled, preludes included) per shader and `shaders.json`.
pub fn shaders(out: Option<&std::path::Path>) -> Result<()> {
    use wgpu_cnn::shaders::WorkgroupDimension;
    let manifest = wgpu_cnn::shaders::manifest()?;
    for shader in &manifest {
        let overrides: Vec<String> = shader
            .overrides
            .iter()
            .map(|o| match o.default {
                Some(default) => format!("{} = {default}", o.name),
                None => o.name.clone(),
            })
            .collect();
        println!("{} ({}; overrides: {})", shader.name, shader.file, overrides.join(", "));
        for entry in &shader.entry_points {
            let size: Vec<String> = entry
                .workgroup_size
                .iter()
                .map(|d| match d {
                    WorkgroupDimension::Fixed(n) => n.to_string(),
                    WorkgroupDimension::Override(name) => name.clone(),
                })
                .collect();
            let bindings: Vec<String> = entry
                .bindings
                .iter()
                .map(|b| match &b.format {
                    Some(format) => format!("{} {} ({} {format})", b.binding, b.name, b.kind),
                    None => format!("{} {} ({})", b.binding, b.name, b.kind),
                })
                .collect();
            println!("  {} @workgroup_size({}): {}", entry.name, size.join(", "), bindings.join(", "));
        }
    }
    if let Some(folder) = out {
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        for shader in &manifest {
            wgpu_cnn::io::write_atomic(&folder.join(format!("{}.wgsl", shader.name)), shader.source.as_bytes())?;
        }
        let json = serde_json::to_value(&manifest).expect("the manifest serialises");
        write_json(&folder.join("shaders.json"), &json)?;
        println!(
            "
Wrote {} shaders and shaders.json to {}",
            manifest.len(),
            folder.display()
        );
    }
    Ok(())
}

pub fn selftest(args: &GpuArgs) -> Result<()> {
    let ctx = GpuContext::new(&args.options()?)?;
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
