//! `wgpu-cnn train`, `summary` and `bench train`: Part II.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::{choose_gpu, seconds, Device, GpuArgs};
use wgpu_cnn::bench;
use wgpu_cnn::data::{self, Cifar10, Dataset};
use wgpu_cnn::gpu::GpuContext;
use wgpu_cnn::io::write_atomic;
use wgpu_cnn::model::{group_thousands, Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::cpu::CpuBackend;
use wgpu_cnn::train::gpu::GpuBackend;
use wgpu_cnn::train::{fit, Backend, EpochRecord, Event, History, TrainConfig};
use wgpu_cnn::{Error, Result};

#[derive(Args, Clone)]
pub struct DataArgs {
    /// CIFAR-10 in the official binary format: a folder with data_batch_{1..5}.bin and
    /// test_batch.bin, or cifar-10-binary.tar.gz. Default: the real subset embedded in the binary
    /// (4,660 training and 846 test images).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on the first N training images only (as the assignment's x_train[:N]).
    #[arg(long)]
    pub train_size: Option<usize>,
}

impl DataArgs {
    pub fn load(&self) -> Result<Cifar10> {
        let mut data = match &self.data {
            Some(path) => data::load(path)?,
            None => data::embedded(),
        };
        if let Some(n) = self.train_size {
            if n == 0 {
                return Err(Error::invalid("--train-size must be at least 1"));
            }
            if n > data.train.len() {
                eprintln!(
                    "note: --train-size {n} is more than the {} training images available; using all",
                    data.train.len()
                );
            }
            data.train = data.train.take_first(n);
        }
        Ok(data)
    }
}

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// base, maxpool, deep, or a description such as c16,c16s2,c32,c32s2,d0.5,f10.
    #[arg(long, default_value = "base")]
    pub model: String,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// L1 weight of the dense layer's kernel regulariser.
    #[arg(long, default_value_t = 1e-4)]
    pub l1: f32,
    /// Fraction of the training rows (the last ones, before shuffling) held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub validation_split: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Where to train: auto picks a hardware GPU, else the CPU.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    #[command(flatten)]
    pub data: DataArgs,
    /// Folder for history.json (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            l1: self.l1,
            validation_split: self.validation_split,
            seed: self.seed,
            learning_rate: self.lr,
        }
    }
}

pub fn model(text: &str) -> Result<Model> {
    Model::new(&Architecture::parse(text)?, CIFAR_INPUT)
}

pub fn summary(text: &str) -> Result<()> {
    let model = model(text)?;
    print!("{}", model.summary());
    println!(
        " Forward pass: {:.2} M multiply-adds per image ({:.1} MFLOP per training image, forward + backward)",
        model.forward_macs() as f64 / 1e6,
        6.0 * model.forward_macs() as f64 / 1e6
    );
    Ok(())
}

/// A backend on the chosen device.
fn build_backend(
    ctx: Option<&GpuContext>,
    model: &Model,
    train: &Dataset,
    params: Vec<f32>,
    config: &TrainConfig,
) -> Result<Box<dyn Backend>> {
    Ok(match ctx {
        Some(ctx) => Box::new(GpuBackend::new(ctx, model, train, &params, config)?),
        None => Box::new(CpuBackend::new(model, train, params, config)?),
    })
}

/// "loss: 1.2345 - accuracy: 0.5678 - val_loss: ... - val_accuracy: ...", as Keras prints it.
pub fn keras_line(e: &EpochRecord) -> String {
    let mut line = format!("loss: {:.4} - accuracy: {:.4}", e.loss, e.accuracy);
    if let (Some(l), Some(a)) = (e.val_loss, e.val_accuracy) {
        line += &format!(" - val_loss: {l:.4} - val_accuracy: {a:.4}");
    }
    line
}

/// Prints Keras-style progress: a bar per epoch with live metrics, then one line per epoch.
pub fn progress_printer() -> impl FnMut(Event) {
    let style = ProgressStyle::with_template("{pos:>4}/{len:<4} {bar:24.cyan/blue} {elapsed:>4} {msg}")
        .expect("the progress template is valid")
        .progress_chars("━━╸");
    let mut bar: Option<ProgressBar> = None;
    let mut steps = 0;
    move |event| match event {
        Event::EpochStart { epoch, epochs, steps: s } => {
            println!("Epoch {}/{}", epoch + 1, epochs);
            steps = s;
            let b = ProgressBar::new(s as u64).with_style(style.clone());
            bar = Some(b);
        }
        Event::Step { progress, .. } => {
            if let Some(b) = &bar {
                b.set_position(progress.done as u64);
                if let Some((loss, accuracy)) = progress.running {
                    b.set_message(format!("loss: {loss:.4} - accuracy: {accuracy:.4}"));
                }
            }
        }
        Event::EpochEnd(record) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            println!("{steps}/{steps} - {} - {}", seconds(record.seconds), keras_line(&record));
        }
    }
}

pub fn train(gpu_args: &GpuArgs, args: &TrainArgs) -> Result<()> {
    let config = args.config();
    config.validate()?;
    let model = model(&args.model)?;
    let data = args.data.load()?;
    let (train, validation) = data.train.split_validation(config.validation_split)?;
    println!("Model: {} — {} parameters", model.architecture, group_thousands(model.param_count));
    println!(
        "Data: {} — {} training, {} validation, {} test images",
        data.source,
        group_thousands(train.len()),
        group_thousands(validation.len()),
        group_thousands(data.test.len())
    );
    let (ctx, why) = choose_gpu(gpu_args, args.device, false)?;
    println!("Device: {why}");
    println!(
        "Settings: {} epochs, batch {}, Adam lr {}, L1 {}, seed {}",
        config.epochs, config.batch_size, config.learning_rate, config.l1, config.seed
    );

    let start = Instant::now();
    let mut backend = build_backend(ctx.as_ref(), &model, &train, model.init_params(config.seed), &config)?;
    let build = start.elapsed();
    let start = Instant::now();
    let history = fit(backend.as_mut(), &train, &validation, &config, 0, &mut progress_printer())?;
    let training = start.elapsed().as_secs_f64();
    println!(
        "Running time: {} ({} per epoch; pipelines and buffers built in {})",
        seconds(training),
        seconds(training / config.epochs as f64),
        seconds(build.as_secs_f64())
    );

    let test = backend.evaluate(&data.test)?;
    let (test_loss, test_accuracy) = test.summarise(data.test.labels.iter().copied(), usize::MAX);
    let (label, baseline) = train.majority_baseline();
    let test_baseline = data.test.labels.iter().filter(|&&l| l == label).count() as f64 / data.test.len().max(1) as f64;
    println!(
        "Test: loss {test_loss:.4}, accuracy {test_accuracy:.4} (most-common-label baseline: {} — {:.4} train, {:.4} test)",
        data::CLASS_NAMES[label as usize],
        baseline,
        test_baseline
    );

    write_history(&args.out, &history)?;
    Ok(())
}

fn write_history(out: &std::path::Path, history: &History) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join("history.json");
    let text = serde_json::to_string_pretty(&history.to_keras_json()).expect("a history serialises");
    write_atomic(&path, text.as_bytes())?;
    println!("Wrote {}", path.display());
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    Gpu,
    Cpu,
    All,
}

pub fn bench_train(
    gpu_args: &GpuArgs,
    model_text: &str,
    batch: usize,
    images: usize,
    device: BenchDevice,
    budget: Duration,
) -> Result<()> {
    let model = model(model_text)?;
    let config = TrainConfig { batch_size: batch, ..Default::default() };
    config.validate()?;
    let data = data::embedded().train.take_first(images.max(batch));
    let params = model.init_params(1);
    println!(
        "Training throughput of {} ({} parameters, {:.1} MFLOP per image), batch {batch}, {} images per epoch",
        model.architecture,
        group_thousands(model.param_count),
        6.0 * model.forward_macs() as f64 / 1e6,
        data.len()
    );
    println!("CPU: {}", bench::cpu_name());
    let mut rows: Vec<(String, f64)> = Vec::new();
    if device != BenchDevice::Cpu {
        let ctx = GpuContext::new(&gpu_args.options())?;
        let mut gpu = GpuBackend::new(&ctx, &model, &data, &params, &config)?;
        println!("GPU: {} ({} dispatches, 1 submit per step)", ctx.describe(), gpu.dispatches_per_step());
        rows.push((gpu.describe(), bench::train_images_per_second(&mut gpu, &data, budget)?));
    }
    if device != BenchDevice::Gpu {
        let mut cpu = CpuBackend::new(&model, &data, params.clone(), &config)?;
        rows.push((cpu.describe(), bench::train_images_per_second(&mut cpu, &data, budget)?));
    }
    println!("\n{:<60} {:>10} {:>10} {:>12}", "backend", "images/s", "GFLOP/s", "vs first");
    let first = rows[0].1;
    for (name, rate) in &rows {
        let gflops = rate * 6.0 * model.forward_macs() as f64 / 1e9;
        println!("{name:<60} {rate:>10.1} {gflops:>10.2} {:>11.2}×", rate / first);
    }
    Ok(())
}
