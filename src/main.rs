//! `wgpu-cnn`: the command-line tool, a thin layer over the library. With no arguments it runs
//! the demo: the assignment's convolution figure on the embedded photo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use wgpu_cnn::bench::{self, ConvTiming};
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3, Plane};
use wgpu_cnn::gpu::{self, BackendChoice, GpuContext, GpuOptions};
use wgpu_cnn::picture::{self, Tile};
use wgpu_cnn::{Error, Result};

#[derive(Parser)]
#[command(
    name = "wgpu-cnn",
    version,
    about = "Image convolution and a small CNN as hand-written WGSL compute shaders, with CPU references",
    long_about = "Image convolution and a small CNN as hand-written WGSL compute shaders on wgpu \
                  (Vulkan, Metal, DX12, GL), with plain CPU references.\n\n\
                  With no command, runs the demo: the assignment's convolution figure (R_conv.jpg) \
                  on the embedded photo."
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct GpuArgs {
    /// Graphics API to use: auto, vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "WGPU_BACKEND", default_value = "auto", value_parser = parse_backend)]
    backend: BackendChoice,
    /// Use the first adapter whose name contains this text (case-insensitive), e.g. "llvmpipe".
    #[arg(long, global = true, env = "WGPU_ADAPTER_NAME")]
    adapter: Option<String>,
}

fn parse_backend(text: &str) -> std::result::Result<BackendChoice, String> {
    text.parse().map_err(|e: Error| e.to_string())
}

impl GpuArgs {
    fn options(&self) -> GpuOptions {
        GpuOptions { backend: self.backend, adapter: self.adapter.clone() }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter found, with the limits that matter here.
    Info,
    /// Part I: convolve one channel of an image with 3×3 kernels and write the assignment's figure.
    Convolve(ConvolveArgs),
    /// Time the work on every device, side by side in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The 3×3 convolution: CPU reference, fast CPU, GPU kernel and GPU end to end, in Mpx/s.
    Conv {
        /// Image sizes to time, as WIDTHxHEIGHT (repeatable).
        #[arg(long = "size", default_values = ["451x300", "4096x4096"], value_parser = parse_size)]
        sizes: Vec<(u32, u32)>,
        /// Minimum time spent on each measurement, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        budget_ms: u64,
        /// Run only on the CPU (no adapter needed).
        #[arg(long)]
        cpu_only: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// The GPU when an adapter is found, else the CPU.
    Auto,
    Gpu,
    Cpu,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Channel {
    R,
    G,
    B,
    /// All three, convolved separately and shown in colour.
    All,
}

#[derive(Args)]
struct ConvolveArgs {
    /// Image to convolve (PNG or JPEG). Default: the embedded photo (assets/chelsea.png).
    image: Option<PathBuf>,
    /// Kernel: a name or nine numbers "a,b,c;d,e,f;g,h,i" (repeatable). Default: the assignment's k1 and k2.
    #[arg(long = "kernel", short = 'k', allow_hyphen_values = true)]
    kernels: Vec<String>,
    /// Channel to convolve.
    #[arg(long, value_enum, default_value_t = Channel::B)]
    channel: Channel,
    /// Figure to write (.jpg or .png).
    #[arg(long, short = 'o', default_value = "R_conv.jpg")]
    out: PathBuf,
    /// Where to run the convolution; the CPU is always timed too, for comparison.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => convolve(&cli.gpu, &ConvolveArgs::demo()),
        Some(Command::Info) => info(&cli.gpu),
        Some(Command::Convolve(args)) => convolve(&cli.gpu, &args),
        Some(Command::Bench(BenchCommand::Conv { sizes, budget_ms, cpu_only })) => {
            bench_conv(&cli.gpu, &sizes, Duration::from_millis(budget_ms), cpu_only)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_size(text: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{text}' is not a size: use WIDTHxHEIGHT with positive numbers, e.g. 451x300");
    let (w, h) = text.split_once(['x', '×']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

fn info(args: &GpuArgs) -> Result<()> {
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

impl ConvolveArgs {
    /// The assignment's figure: embedded photo, B channel, kernels k1 and k2.
    fn demo() -> Self {
        ConvolveArgs {
            image: None,
            kernels: Vec::new(),
            channel: Channel::B,
            out: PathBuf::from("R_conv.jpg"),
            device: Device::Auto,
        }
    }
}

/// Opens the GPU as `device` asks: required for `gpu`, optional for `auto` (with the reason printed).
fn open_gpu(args: &GpuArgs, device: Device) -> Result<Option<GpuContext>> {
    match device {
        Device::Cpu => Ok(None),
        Device::Gpu => GpuContext::new(&args.options()).map(Some),
        Device::Auto => match GpuContext::new(&args.options()) {
            Ok(ctx) => Ok(Some(ctx)),
            Err(e @ Error::NoAdapter { .. }) => {
                println!("No GPU adapter, running on the CPU ({e})");
                Ok(None)
            }
            Err(e) => Err(e),
        },
    }
}

fn convolve(gpu_args: &GpuArgs, args: &ConvolveArgs) -> Result<()> {
    picture::output_format(&args.out)?;
    let kernels: Vec<(String, Kernel3x3)> = if args.kernels.is_empty() {
        vec![("k1".into(), Kernel3x3::K1), ("k2".into(), Kernel3x3::K2)]
    } else {
        args.kernels.iter().map(|k| Ok((k.clone(), Kernel3x3::parse(k)?))).collect::<Result<_>>()?
    };
    let (source, planes) = match &args.image {
        Some(path) => (path.display().to_string(), picture::load_rgb(path)?),
        None => (
            "assets/chelsea.png (embedded)".to_string(),
            picture::decode_rgb(picture::DEMO_IMAGE).map_err(Error::invalid)?,
        ),
    };
    let [r, g, b] = &planes;
    let (channel_name, channels): (&str, Vec<&Plane>) = match args.channel {
        Channel::R => ("R", vec![r]),
        Channel::G => ("G", vec![g]),
        Channel::B => ("B", vec![b]),
        Channel::All => ("RGB", vec![r, g, b]),
    };
    println!("Image: {source}, {}×{}, channel {channel_name}", r.width, r.height);

    let ctx = open_gpu(gpu_args, args.device)?;
    let conv = match &ctx {
        Some(ctx) => {
            Conv3x3::check_fits(&ctx.device, r.width, r.height)?;
            let start = Instant::now();
            let conv = Conv3x3::new(&ctx.device)?;
            // Drivers finish compiling a pipeline on its first dispatch: do that here, untimed.
            for kernel in [Kernel3x3::K1, Kernel3x3::new([[0.5; 3]; 3])] {
                conv.run(&ctx.device, &ctx.queue, &Plane::zeros(1, 1)?, &kernel)?;
            }
            println!("Device: GPU {} — pipelines built and warmed up in {}", ctx.describe(), ms(start.elapsed()));
            if ctx.is_software() {
                println!("        (a software adapter: correct, but slower than the CPU; timings here say nothing of a real GPU)");
            }
            Some(conv)
        }
        None => {
            println!("Device: CPU ({}, {} thread(s))", bench::cpu_name(), rayon::current_num_threads());
            None
        }
    };

    let mut bottom = vec![tile(&channels.iter().map(|p| (*p).clone()).collect::<Vec<_>>())];
    for (name, kernel) in &kernels {
        let mut results = Vec::new();
        let (mut t_gpu, mut t_fast, mut t_reference) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut max_difference = 0u8;
        for plane in &channels {
            let start = Instant::now();
            let reference = cpu::conv3x3_reference(plane, kernel);
            t_reference += start.elapsed();
            let start = Instant::now();
            let fast = cpu::conv3x3_fast(plane, kernel);
            t_fast += start.elapsed();
            let result = match (&ctx, &conv) {
                (Some(ctx), Some(conv)) => {
                    let start = Instant::now();
                    let out = conv.run(&ctx.device, &ctx.queue, plane, kernel)?;
                    t_gpu += start.elapsed();
                    out
                }
                _ => fast,
            };
            max_difference = max_difference.max(max_abs_difference(&result, &reference));
            results.push(result);
        }
        let agreement =
            if max_difference == 0 { "identical".to_string() } else { format!("max difference {max_difference}") };
        let gpu_part = if ctx.is_some() { format!("GPU {} (end to end) | ", ms(t_gpu)) } else { String::new() };
        println!(
            "Kernel {name} {kernel}: {gpu_part}CPU fast {} | CPU reference {} | result vs CPU reference: {agreement}",
            ms(t_fast),
            ms(t_reference)
        );
        bottom.push(tile(&results));
    }
    let top = vec![Tile::Gray(r.clone()), Tile::Gray(g.clone()), Tile::Gray(b.clone())];
    picture::save_grid(&args.out, &[top, bottom])?;
    let names: Vec<String> = kernels.iter().map(|(n, _)| format!("{channel_name}∗{n}")).collect();
    println!("Wrote {} (top: R, G, B; bottom: {channel_name}, {})", display(&args.out), names.join(", "));
    Ok(())
}

fn tile(planes: &[Plane]) -> Tile {
    match planes {
        [r, g, b] => Tile::Rgb([r.clone(), g.clone(), b.clone()]),
        [p, ..] => Tile::Gray(p.clone()),
        [] => unreachable!("a channel selection has at least one plane"),
    }
}

fn max_abs_difference(a: &Plane, b: &Plane) -> u8 {
    a.pixels.iter().zip(&b.pixels).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn bench_conv(args: &GpuArgs, sizes: &[(u32, u32)], budget: Duration, cpu_only: bool) -> Result<()> {
    let ctx = if cpu_only { None } else { Some(GpuContext::new(&args.options())?) };
    println!(
        "CPU: {} ({} rayon thread(s); set RAYON_NUM_THREADS to change)",
        bench::cpu_name(),
        rayon::current_num_threads()
    );
    if let Some(ctx) = &ctx {
        println!("GPU: {}, driver {} {}", ctx.describe(), ctx.info.driver, ctx.info.driver_info);
        if ctx.is_software() {
            println!("     (a software adapter: its timings measure a CPU emulating a GPU)");
        }
    }
    let kernel = Kernel3x3::K1;
    println!("Kernel k1 {kernel}, u8 in, u8 out; each figure is the mean over at least {} ms.\n", budget.as_millis());
    println!("{:<12} {:<16} {:>12} {:>12} {:>12}", "size", "method", "time", "Mpx/s", "vs CPU fast");
    for &(width, height) in sizes {
        let rows = bench::conv_timings(ctx.as_ref(), width, height, &kernel, budget)?;
        let fast = rows.iter().find(|r| r.method == "CPU fast").map(|r| r.seconds).unwrap_or(f64::NAN);
        for ConvTiming { width, height, method, seconds } in &rows {
            let row = ConvTiming { width: *width, height: *height, method, seconds: *seconds };
            println!(
                "{:<12} {:<16} {:>12} {:>12.1} {:>11.2}×",
                format!("{width}×{height}"),
                method,
                ms(Duration::from_secs_f64(*seconds)),
                row.megapixels_per_second(),
                fast / seconds
            );
        }
    }
    println!("\n'vs CPU fast' > 1 means faster than the fast CPU path. GPU kernel = device-resident buffers, {} dispatches per submit; end to end adds upload and readback.", bench::DISPATCHES_PER_SUBMIT);
    Ok(())
}
