//! `wgpu-cnn`: the command line of the tool (its parts are in this crate's library). With no
//! arguments it runs the demo: the assignment's convolution figure on the embedded photo, then
//! the assignment's CNN trained on the embedded CIFAR-10 subset.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use wgpu_cnn_cli::args::{self, GpuArgs};
use wgpu_cnn_cli::convolve::{self, ConvolveArgs};
use wgpu_cnn_cli::train::{self, BenchDevice, TrainArgs};

#[derive(Parser)]
#[command(
    name = "wgpu-cnn",
    version,
    about = "Image convolution and a small CNN as hand-written WGSL compute shaders, with CPU references",
    long_about = "Image convolution and a small CNN as hand-written WGSL compute shaders on wgpu \
                  (Vulkan, Metal, DX12, GL), with plain CPU references.\n\n\
                  With no command, runs the demo: the assignment's convolution figure (R_conv.jpg) on the \
                  embedded photo, then the assignment's CNN trained on the embedded CIFAR-10 subset (out/)."
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter found, with the limits that matter here.
    Info,
    /// Part I: convolve one channel of an image with 3×3 kernels and write the assignment's figure.
    Convolve(ConvolveArgs),
    /// Part II: train a CNN on CIFAR-10 (Keras semantics), printing Keras-style progress.
    Train(TrainArgs),
    /// Evaluate a checkpoint on the training and test sets: classification reports, confusion
    /// matrices, the most-common-label baseline.
    Evaluate(train::EvaluateArgs),
    /// Classify image files with a checkpoint.
    Predict(train::PredictArgs),
    /// Run the assignment's experiments (data size, L1 weight, architecture) and write a report.
    Experiment(train::ExperimentArgs),
    /// Print a Keras-like summary of a model: layers, output shapes, parameters.
    Summary {
        /// base, maxpool, deep, or a description such as c16,c16s2,c32,c32s2,d0.5,f10.
        #[arg(long, default_value = "base")]
        model: String,
    },
    /// Run every kernel on the chosen adapter against the CPU reference: pass/fail and max error.
    Selftest,
    /// Time the work on every device, side by side in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The 3×3 convolution: CPU reference, fast CPU, GPU kernel and GPU end to end, in Mpx/s.
    Conv {
        /// Image sizes to time, as WIDTHxHEIGHT (repeatable).
        #[arg(long = "size", default_values = ["451x300", "4096x4096"], value_parser = convolve::parse_size)]
        sizes: Vec<(u32, u32)>,
        /// Minimum time spent on each measurement, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        budget_ms: u64,
        /// Run only on the CPU (no adapter needed).
        #[arg(long)]
        cpu_only: bool,
    },
    /// Training steps: images/s on the GPU and on the CPU, with the ratio.
    Train {
        #[arg(long, default_value = "base")]
        model: String,
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Images per timed epoch.
        #[arg(long, default_value_t = 512)]
        images: usize,
        #[arg(long, value_enum, default_value_t = BenchDevice::All)]
        device: BenchDevice,
        /// Minimum time spent on each measurement, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        budget_ms: u64,
        /// Also time each stage of one GPU training step with timestamp queries.
        #[arg(long)]
        profile: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => demo(&cli.gpu),
        Some(Command::Info) => args::info(&cli.gpu),
        Some(Command::Convolve(args)) => convolve::convolve(&cli.gpu, &args),
        Some(Command::Train(args)) => train::train(&cli.gpu, &args),
        Some(Command::Evaluate(args)) => train::evaluate(&cli.gpu, &args),
        Some(Command::Predict(args)) => train::predict(&cli.gpu, &args),
        Some(Command::Experiment(args)) => train::experiment(&cli.gpu, &args),
        Some(Command::Summary { model }) => train::summary(&model),
        Some(Command::Selftest) => args::selftest(&cli.gpu),
        Some(Command::Bench(BenchCommand::Conv { sizes, budget_ms, cpu_only })) => {
            convolve::bench_conv(&cli.gpu, &sizes, Duration::from_millis(budget_ms), cpu_only)
        }
        Some(Command::Bench(BenchCommand::Train { model, batch_size, images, device, budget_ms, profile })) => {
            let budget = Duration::from_millis(budget_ms);
            train::bench_train(&cli.gpu, &model, batch_size, images, device, budget, profile)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", args::message(&error));
            ExitCode::FAILURE
        }
    }
}

/// The assignment, end to end, with no flags: Part I's figure, then Part II's base CNN.
fn demo(gpu: &GpuArgs) -> wgpu_cnn::Result<()> {
    println!("== Part I: image convolution ==");
    convolve::convolve(gpu, &ConvolveArgs::demo())?;
    println!("\n== Part II: CIFAR-10 CNN ==");
    // `train` with every option at its default, as clap would build it.
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        train: TrainArgs,
    }
    train::train(gpu, &Defaults::parse_from(["train"]).train)
}
