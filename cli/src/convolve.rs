//! `wgpu-cnn convolve` and `wgpu-cnn bench conv`: Part I.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::args::{choose, ms, BenchOutputs, Device, GpuArgs};
use crate::picture::{self, Tile};
use wgpu_cnn::bench::{self, ConvTiming};
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3, Plane};
use wgpu_cnn::gpu::GpuContext;
use wgpu_cnn::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Channel {
    R,
    G,
    B,
    /// All three, convolved separately and shown in colour.
    All,
}

#[derive(Args)]
pub struct ConvolveArgs {
    /// Image to convolve (PNG or JPEG). Default: the embedded photo (assets/chelsea.png).
    pub image: Option<PathBuf>,
    /// Kernel: a name or nine numbers "a,b,c;d,e,f;g,h,i" (repeatable). Default: the assignment's k1 and k2.
    /// Names: k1, k2, vertical-edge, identity, sharpen, sobel-x, sobel-y, box.
    #[arg(long = "kernel", short = 'k', allow_hyphen_values = true)]
    pub kernels: Vec<String>,
    /// Channel to convolve.
    #[arg(long, value_enum, default_value_t = Channel::B)]
    pub channel: Channel,
    /// Figure to write (.jpg or .png).
    #[arg(long, short = 'o', default_value = "R_conv.jpg")]
    pub out: PathBuf,
    /// Where to run the convolution; the CPU is always timed too, for comparison.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The largest image accepted, in millions of pixels.
    #[arg(long, default_value_t = picture::DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: u64,
}

impl ConvolveArgs {
    /// The assignment's figure: embedded photo, B channel, kernels k1 and k2.
    pub fn demo() -> Self {
        ConvolveArgs {
            image: None,
            kernels: Vec::new(),
            channel: Channel::B,
            out: PathBuf::from("R_conv.jpg"),
            device: Device::Auto,
            max_megapixels: picture::DEFAULT_MAX_MEGAPIXELS,
        }
    }
}

pub fn convolve(gpu_args: &GpuArgs, args: &ConvolveArgs) -> Result<()> {
    picture::output_format(&args.out)?;
    let kernels: Vec<(String, Kernel3x3)> = if args.kernels.is_empty() {
        vec![("k1".into(), Kernel3x3::K1), ("k2".into(), Kernel3x3::K2)]
    } else {
        args.kernels.iter().map(|k| Ok((k.clone(), Kernel3x3::parse(k)?))).collect::<Result<_>>()?
    };
    let (source, planes) = match &args.image {
        Some(path) => (path.display().to_string(), picture::load_rgb(path, args.max_megapixels)?),
        None => (
            "assets/chelsea.png (embedded)".to_string(),
            picture::decode_rgb(picture::DEMO_IMAGE, picture::DEFAULT_MAX_MEGAPIXELS).map_err(Error::invalid)?,
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

    // The 3×3 filter is cheap enough that a software adapter is fine for it.
    let (target, why) = choose(gpu_args, args.device, true)?;
    let ctx = target.gpu();
    let conv = match &ctx {
        Some(ctx) => {
            Conv3x3::check_fits(&ctx.device, r.width, r.height)?;
            let start = Instant::now();
            let conv = Conv3x3::with_kernels(&ctx.kernels)?;
            // Drivers finish compiling a pipeline on its first dispatch: do that here, untimed.
            for kernel in [Kernel3x3::K1, Kernel3x3::new([[0.5; 3]; 3])] {
                conv.run(&ctx.device, &ctx.queue, &Plane::zeros(1, 1)?, &kernel)?;
            }
            println!("Device: {why} — pipelines built and warmed up in {}", ms(start.elapsed()));
            if ctx.is_software() {
                println!("        (a software adapter: correct, but slower than the CPU; timings here say nothing of a real GPU)");
            }
            Some(conv)
        }
        None => {
            println!(
                "Device: {why} — {}, {}, {} thread(s)",
                bench::cpu_name(),
                wgpu_cnn::isa::Isa::best(),
                bench::cpu_threads()
            );
            None
        }
    };

    let mut results_per_kernel = Vec::new();
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
        results_per_kernel.push(results);
    }
    let step = figure(&args.out, &planes, &channels, &results_per_kernel)?;
    let names: Vec<String> = kernels.iter().map(|(n, _)| format!("{channel_name}∗{n}")).collect();
    let shrunk = match step {
        1 => String::new(),
        _ => format!(", each panel shrunk 1/{step} to fit {} pixels", picture::MAX_CELL_SIDE),
    };
    println!("Wrote {} (top: R, G, B; bottom: {channel_name}, {}{shrunk})", args.out.display(), names.join(", "));
    Ok(())
}

/// The assignment's figure: R, G and B on top; below, the convolved channel(s) and one result per
/// kernel (each a list of planes, one per channel). Returns the factor the panels were shrunk by
/// ([`picture::save_grid`]).
pub fn figure(
    path: &std::path::Path,
    [r, g, b]: &[Plane; 3],
    channels: &[&Plane],
    results: &[Vec<Plane>],
) -> Result<u32> {
    let top = vec![Tile::Gray(r), Tile::Gray(g), Tile::Gray(b)];
    let mut bottom = vec![tile(channels)];
    bottom.extend(results.iter().map(|planes| tile(&planes.iter().collect::<Vec<_>>())));
    picture::save_grid(path, &[top, bottom])
}

/// Figure 1 of the assignment's write-up: the embedded photo's B channel and its convolutions
/// with k1 and k2 (on the fast CPU path, bit-identical to the reference).
pub fn assignment_figure(path: &std::path::Path) -> Result<()> {
    let planes = picture::decode_rgb(picture::DEMO_IMAGE, picture::DEFAULT_MAX_MEGAPIXELS).map_err(Error::invalid)?;
    let b = &planes[2];
    let results: Vec<Vec<Plane>> =
        [Kernel3x3::K1, Kernel3x3::K2].iter().map(|k| vec![cpu::conv3x3_fast(b, k)]).collect();
    figure(path, &planes, &[b], &results).map(drop)
}

fn tile<'a>(planes: &[&'a Plane]) -> Tile<'a> {
    match *planes {
        [r, g, b] => Tile::Rgb([r, g, b]),
        [p, ..] => Tile::Gray(p),
        [] => unreachable!("a channel selection has at least one plane"),
    }
}

fn max_abs_difference(a: &Plane, b: &Plane) -> u8 {
    a.pixels.iter().zip(&b.pixels).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

pub fn parse_size(text: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{text}' is not a size: use WIDTHxHEIGHT with positive numbers, e.g. 451x300");
    let (w, h) = text.split_once(['x', '×']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
    if w == 0 || h == 0 {
        return Err(bad());
    }
    // The benchmark holds the input, the outputs and a copy of each on the GPU: about 4 bytes a
    // pixel, 1 GiB at this limit.
    let pixels = u64::from(w) * u64::from(h);
    if pixels > 1 << 28 {
        return Err(format!(
            "{w}×{h} is {} megapixels, more than the 268 (16384×16384) a benchmark image may have",
            pixels / 1_000_000
        ));
    }
    Ok((w, h))
}

/// `wgpu-cnn bench conv`.
#[derive(Args)]
pub struct BenchConvArgs {
    /// Image sizes to time, as WIDTHxHEIGHT (repeatable).
    #[arg(long = "size", default_values = ["451x300", "4096x4096"], value_parser = parse_size)]
    pub sizes: Vec<(u32, u32)>,
    /// Minimum time spent on each measurement, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub budget_ms: u64,
    /// Run only on the CPU (no adapter needed).
    #[arg(long)]
    pub cpu_only: bool,
    #[command(flatten)]
    pub outputs: BenchOutputs,
}

pub fn bench_conv(gpu_args: &GpuArgs, args: &BenchConvArgs) -> Result<()> {
    args.outputs.check()?;
    let budget = Duration::from_millis(args.budget_ms);
    let ctx = if args.cpu_only { None } else { Some(GpuContext::new(&gpu_args.options()?)?) };
    println!(
        "CPU: {}, fast path {} ({} rayon thread(s); set RAYON_NUM_THREADS to change)",
        bench::cpu_name(),
        wgpu_cnn::isa::Isa::best(),
        bench::cpu_threads()
    );
    if let Some(ctx) = &ctx {
        println!("GPU: {}, driver {} {}", ctx.describe(), ctx.info.driver, ctx.info.driver_info);
        if ctx.is_software() {
            println!("     (a software adapter: its timings measure a CPU emulating a GPU)");
        }
    }
    let kernel = Kernel3x3::K1;
    println!("Kernel k1 {kernel}, u8 in, u8 out; each figure is the mean over at least {} ms.\n", budget.as_millis());
    println!("{:<12} {:<28} {:>12} {:>12} {:>12}", "size", "method", "time", "Mpx/s", "vs CPU fast");
    let (mut groups, mut json_rows) = (Vec::new(), Vec::new());
    for &(width, height) in &args.sizes {
        let rows = bench::conv_timings(ctx.as_ref(), width, height, &kernel, budget)?;
        let fast = rows.iter().find(|r| r.method == "CPU fast").map(|r| r.seconds).unwrap_or(f64::NAN);
        for row in &rows {
            let ConvTiming { width, height, method, seconds } = row;
            println!(
                "{:<12} {:<28} {:>12} {:>12.1} {:>11.2}×",
                format!("{width}×{height}"),
                method,
                ms(Duration::from_secs_f64(*seconds)),
                row.megapixels_per_second(),
                fast / seconds
            );
            json_rows.push(serde_json::json!({
                "size": format!("{width}x{height}"), "method": method, "seconds": seconds,
                "megapixels_per_second": row.megapixels_per_second(), "vs_cpu_fast": fast / seconds,
            }));
        }
        let bars = rows.iter().map(|r| (r.method.to_string(), r.megapixels_per_second())).collect();
        groups.push(crate::plot::BarGroup { label: format!("{width}×{height}"), bars });
    }
    println!(
        "\n'vs CPU fast' > 1 means faster than the fast CPU path. GPU kernel = device-resident buffers, {} dispatches per submit; end to end adds upload and readback; 3 in flight overlaps one plane's upload and kernel with another's readback. bound = one plane's upload alone plus its readback alone: a pixel is a byte each way, so twice its Mpx/s is the measured host-device MB/s, and a stream of planes at best takes the larger of the kernel and this per plane.",
        bench::DISPATCHES_PER_SUBMIT
    );
    let fields = serde_json::Map::from_iter([("kernel".into(), "k1".into()), ("results".into(), json_rows.into())]);
    args.outputs.write("Part I: 3×3 convolution with k1", "Mpx/s", &groups, ctx.as_ref(), fields)
}
