//! `wgpu-cnn`: the command line of the tool (its parts are in this crate's library). With no
//! arguments it runs the demo: the assignment's convolution figure on the embedded photo, then
//! the assignment's CNN trained on the embedded CIFAR-10 subset.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use wgpu_cnn_cli::args::{self, GpuArgs};
use wgpu_cnn_cli::convolve::{self, ConvolveArgs};
use wgpu_cnn_cli::train::{self, TrainArgs};

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
        /// base, maxpool, deep, cifar_bn, or a description such as c16,c16s2,c32,c32s2,d0.5,f10 (tokens: see README or an error message).
        #[arg(long, default_value = "base")]
        model: String,
    },
    /// Run every kernel on the chosen adapter against the CPU reference: pass/fail and max error.
    Selftest,
    /// List every WGSL shader with its entry points, workgroup sizes and bindings; with --out,
    /// write each source and shaders.json (the same as data) for other renderers.
    Shaders {
        /// Folder to write <name>.wgsl for every shader and shaders.json into.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Time the work on every device, side by side in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The 3×3 convolution: CPU reference, fast CPU, GPU kernel and GPU end to end, in Mpx/s.
    Conv(convolve::BenchConvArgs),
    /// Training steps: images/s on the GPU and on the CPU, with the ratio.
    Train(train::BenchTrainArgs),
    /// Inference as an embedding app runs it: the classifier on a buffer and on a texture, and
    /// the fast CPU engine, in images/s per batch size.
    Classify(train::BenchClassifyArgs),
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
        Some(Command::Shaders { out }) => args::shaders(out.as_deref()),
        Some(Command::Bench(BenchCommand::Conv(args))) => convolve::bench_conv(&cli.gpu, &args),
        Some(Command::Bench(BenchCommand::Train(args))) => train::bench_train(&cli.gpu, &args),
        Some(Command::Bench(BenchCommand::Classify(args))) => train::bench_classify(&cli.gpu, &args),
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
    // The demo writes out/ each time, replacing its previous output (the README says so).
    let mut args = Defaults::parse_from(["train"]).train;
    args.overwrite = true;
    train::train(gpu, &args)
}
