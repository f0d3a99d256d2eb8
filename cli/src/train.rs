//! `wgpu-cnn train`, `summary` and `bench train`: Part II.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{choose, seconds, BenchOutputs, Device, GpuArgs};
use crate::experiment::SetReport;
use crate::plot::{self, BarGroup};
use crate::{assets, picture};
use wgpu_cnn::bench;
use wgpu_cnn::checkpoint::Checkpoint;
use wgpu_cnn::data::{self, Cifar10, Dataset};
use wgpu_cnn::gpu::GpuContext;
use wgpu_cnn::io::write_atomic;
use wgpu_cnn::metrics::baseline_accuracy;
use wgpu_cnn::model::{group_thousands, Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::fast::FastCpuEngine;
use wgpu_cnn::train::gpu::{GpuEngine, STEPS_PER_SUBMIT};
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{wait, EpochRecord, Event, Inference, Target, TrainConfig, Trainer};
use wgpu_cnn::{Error, Result};

/// Where the CIFAR-10 files come from, and how much of them may be read.
#[derive(Args, Clone)]
pub struct DataSource {
    /// CIFAR-10 in the official binary format: a folder with data_batch_{1..5}.bin and
    /// test_batch.bin, or cifar-10-binary.tar.gz. Default: the real subset embedded in the binary
    /// (4,660 training and 846 test images).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The most MiB of CIFAR-10 files --data may hold (or its archive expand to); the official
    /// release is 176 MiB.
    #[arg(long, default_value_t = data::DEFAULT_MAX_DATA_BYTES >> 20)]
    pub max_data_mib: u64,
}

impl DataSource {
    pub fn load(&self) -> Result<Cifar10> {
        match &self.data {
            Some(path) => data::load_limited(path, self.max_data_mib.saturating_mul(1 << 20)),
            None => Ok(assets::cifar10()),
        }
    }
}

#[derive(Args, Clone)]
pub struct DataArgs {
    #[command(flatten)]
    pub source: DataSource,
    /// Train on the first N training images only (as the assignment's x_train[:N]).
    #[arg(long)]
    pub train_size: Option<usize>,
}

impl DataArgs {
    pub fn load(&self) -> Result<Cifar10> {
        let mut data = self.source.load()?;
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
    /// base, maxpool, deep, cifar_bn, or a description such as c16,c16s2,c32,c32s2,d0.5,f10 (tokens: see README or an error message).
    #[arg(long, conflicts_with = "resume", default_value = "base")]
    pub model: String,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, conflicts_with = "resume", default_value_t = 128)]
    pub batch_size: usize,
    /// L1 weight of the dense layer's kernel regulariser.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "resume", default_value_t = 1e-4)]
    pub l1: f32,
    /// Fraction of the training rows (the last ones, before shuffling) held out for validation.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "resume", default_value_t = 0.1)]
    pub validation_split: f64,
    #[arg(long, conflicts_with = "resume", default_value_t = 42)]
    pub seed: u64,
    /// Adam's learning rate.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "resume", default_value_t = 1e-3)]
    pub lr: f64,
    /// Where to train: auto picks a hardware GPU, else the CPU.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    #[command(flatten)]
    pub data: DataArgs,
    /// Folder for model.safetensors (saved after every epoch), history.json and history.png
    /// (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Continue the run saved in this checkpoint up to --epochs (settings and architecture come
    /// from the checkpoint, so --model, --batch-size, --l1, --validation-split, --seed and --lr
    /// are refused with it; give the same training images, --data and --train-size, as the
    /// original run: they are checked by content).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace the model.safetensors of another run in --out (without it, a new run refuses to).
    #[arg(long)]
    pub overwrite: bool,
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

/// "loss: 1.2345 - accuracy: 0.5678 - val_loss: ... - val_accuracy: ...", as Keras prints it.
pub fn keras_line(e: &EpochRecord) -> String {
    let mut line = format!("loss: {:.4} - accuracy: {:.4}", e.loss, e.accuracy);
    if let (Some(l), Some(a)) = (e.val_loss, e.val_accuracy) {
        line += &format!(" - val_loss: {l:.4} - val_accuracy: {a:.4}");
    }
    line
}

/// Prints Keras-style progress: a bar per epoch with live metrics, then one line per epoch; warns
/// (once) when the loss of a model of `classes` classes explodes.
pub fn progress_printer(classes: usize) -> impl FnMut(Event) {
    let style = ProgressStyle::with_template("{pos:>4}/{len:<4} {bar:24.cyan/blue} {elapsed:>4} {msg}")
        .expect("the progress template is valid")
        .progress_chars("━━╸");
    let mut bar: Option<ProgressBar> = None;
    let (mut steps, mut first_loss, mut warned) = (0, None, false);
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
            let first = first_loss.get_or_insert_with(|| record.clone());
            // Once a run: an exploding run would otherwise repeat it every epoch.
            if !warned {
                if let Some(warning) = wgpu_cnn::train::explosion_warning(first, &record, classes) {
                    eprintln!("{}", warning.replace("a lower learning rate (or L1 weight)", "a lower --lr (or --l1)"));
                    warned = true;
                }
            }
        }
    }
}

pub fn train(gpu_args: &GpuArgs, args: &TrainArgs) -> Result<()> {
    // The output is checked first, so that no work is done for a run that could not be saved:
    // one writer per --out, and no run silently replacing another's checkpoint.
    let _lock = wgpu_cnn::io::OutputLock::acquire(&args.out)?;
    let checkpoint_path = args.out.join("model.safetensors");
    check_replaces_no_run(&checkpoint_path, args)?;
    let resumed = args.resume.as_deref().map(|path| Checkpoint::load(path).map(|c| (c, path))).transpose()?;
    let data = args.data.load()?;
    let data_description = describe_data(&data, args.data.train_size);
    // --resume checks the training rows by content, not by where they were read from.
    let data_digest = wgpu_cnn::checkpoint::data_digest(&data.train);
    let (model, config, weights) = match &resumed {
        None => {
            let config = args.config();
            config.validate()?;
            let model = model(&args.model)?;
            let weights = model.init(config.seed);
            (model, config, weights)
        }
        // The run's settings are the checkpoint's, except how many epochs to reach.
        Some((checkpoint, path)) => {
            let config = checkpoint
                .resume_config(args.epochs, &data_description, Some(&data_digest))
                .map_err(|e| Error::invalid(format!("{}: {}", path.display(), crate::args::message(&e))))?;
            (checkpoint.model()?, config, checkpoint.weights.clone())
        }
    };
    // One unit per class, as Keras' sparse cross-entropy expects: more would train classes the
    // data never has, and a model evaluate's report cannot describe.
    if model.classes() != data.class_names.len() {
        return Err(Error::invalid(format!(
            "the model's final layer {} has {} units, but the data has {} classes ({}): end the \
             architecture with f{}",
            model.head.layer.token(),
            model.classes(),
            data.class_names.len(),
            data.class_names.join(", "),
            data.class_names.len()
        )));
    }
    let (train, validation) = data.train.split_validation(config.validation_split)?;
    println!("Model: {} — {} parameters", model.architecture, group_thousands(model.param_count));
    println!(
        "Data: {} — {} training, {} validation, {} test images",
        data.source,
        group_thousands(train.len()),
        group_thousands(validation.len()),
        group_thousands(data.test.len())
    );
    let (target, why) = choose(gpu_args, args.device, false)?;
    println!("Device: {why}");
    println!(
        "Settings: {} epochs, batch {}, Adam lr {}, L1 {}, seed {}",
        config.epochs, config.batch_size, config.learning_rate, config.l1, config.seed
    );

    let start = Instant::now();
    let mut engine = target.engine(&model, &train, weights, &config)?;
    println!("Engine: {}", engine.describe());
    let mut trainer = Trainer::new(engine.as_mut(), &train, &validation, &config)?;
    if let Some((checkpoint, _)) = &resumed {
        let state = checkpoint.optimizer.as_ref().expect("resume_config checked the optimiser state");
        trainer = trainer.resume(checkpoint.history.clone(), state)?;
        println!("Resuming after epoch {} (step {})", checkpoint.epochs_done, state.steps);
    }
    let build = start.elapsed();
    let start = Instant::now();
    let mut save = Checkpoint::saver(&checkpoint_path, &model.architecture, &data_description, Some(&data_digest));
    let first_new_epoch = trainer.history().epochs.len();
    let history = trainer.fit(&mut progress_printer(model.classes()), &mut save)?;
    drop(trainer);
    let training = start.elapsed().as_secs_f64();
    let epochs_run = (config.epochs - first_new_epoch).max(1);
    println!(
        "Running time: {} ({} per epoch; pipelines and buffers built in {})",
        seconds(training),
        seconds(training / epochs_run as f64),
        seconds(build.as_secs_f64())
    );

    let test_id = engine.prepare(&data.test)?;
    let test = wait(engine.evaluate(test_id))?;
    let (test_loss, test_accuracy) = test.summarise(data.test.labels.iter().copied(), usize::MAX);
    let (label, baseline) = baseline_accuracy(&train.labels, &train.labels);
    let (_, test_baseline) = baseline_accuracy(&train.labels, &data.test.labels);
    println!(
        "Test: loss {test_loss:.4}, accuracy {test_accuracy:.4} (most-common-label baseline, always '{}': {baseline:.4} train, {test_baseline:.4} test)",
        data.class_names.get(label as usize).map_or("?", String::as_str),
    );

    let history_path = args.out.join("history.json");
    let text = serde_json::to_string_pretty(&history.to_keras_json()).expect("a history serialises");
    write_atomic(&history_path, text.as_bytes())?;
    let plot_path = args.out.join("history.png");
    plot::history_curves(&plot_path, &format!("{} on {}", model.architecture.name, data.source), &history)?;
    println!("Wrote {}, {} and {}", checkpoint_path.display(), history_path.display(), plot_path.display());
    Ok(())
}

/// Fails when `checkpoint` holds another run than the one continued with `--resume`, unless
/// `--overwrite` says to replace it.
fn check_replaces_no_run(checkpoint: &Path, args: &TrainArgs) -> Result<()> {
    if args.overwrite || !checkpoint.exists() {
        return Ok(());
    }
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
    if args.resume.as_deref().is_some_and(|resumed| same(resumed, checkpoint)) {
        return Ok(());
    }
    let what = match Checkpoint::load(checkpoint) {
        Ok(c) => format!(
            "a run of {} trained for {} epoch{}",
            c.architecture,
            c.epochs_done,
            if c.epochs_done == 1 { "" } else { "s" }
        ),
        Err(_) => "a file this run would replace".to_string(),
    };
    Err(Error::invalid(format!(
        "{} holds {what}; continue it with --resume {0}, choose another --out, or pass --overwrite to replace it",
        checkpoint.display()
    )))
}

/// Where the training rows came from, stored in checkpoints so that --resume uses the same ones.
fn describe_data(data: &Cifar10, train_size: Option<usize>) -> String {
    match train_size {
        Some(n) => format!("{}, first {} training images", data.source, n.min(data.train.len())),
        None => data.source.clone(),
    }
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// A checkpoint written by `wgpu-cnn train` (model.safetensors).
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Print one JSON document instead of the reports.
    #[arg(long)]
    pub json: bool,
    /// Folder for the confusion-matrix heat maps (confusion_train.png, confusion_test.png).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

/// A checkpoint's model on the chosen device, for inference only (the GPU binds no gradient
/// buffers), and why that device.
fn inference(gpu_args: &GpuArgs, device: Device, checkpoint: &Checkpoint) -> Result<(Box<dyn Inference>, String)> {
    let model = checkpoint.model()?;
    let config = TrainConfig { batch_size: 256, ..checkpoint.config.clone() };
    let (target, why) = choose(gpu_args, device, false)?;
    Ok((target.inference(&model, checkpoint.weights.clone(), &config)?, why))
}

pub fn evaluate(gpu_args: &GpuArgs, args: &EvaluateArgs) -> Result<()> {
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let data = args.data.load()?;
    let (mut engine, why) = inference(gpu_args, args.device, &checkpoint)?;
    let names = &data.class_names;
    let mut sets = Vec::new();
    for (name, set) in [("train", &data.train), ("test", &data.test)] {
        let start = Instant::now();
        let report = SetReport::of(engine.as_mut(), set, &data.train.labels, names)?;
        sets.push((name, report, start.elapsed().as_secs_f64()));
    }
    if args.json {
        let json: serde_json::Value = sets
            .iter()
            .map(|(name, r, secs)| {
                (
                    name.to_string(),
                    serde_json::json!({
                        "images": r.images, "loss": r.loss, "accuracy": r.accuracy,
                        "confusion_matrix": r.confusion_matrix, "report": r.report,
                        "baseline": {
                            "label": r.baseline_label, "class": names.get(usize::from(r.baseline_label)),
                            "accuracy": r.baseline,
                        },
                        "seconds": secs,
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(), "architecture": checkpoint.architecture.description(),
            "device": why, "data": data.source, "sets": json,
        })).expect("the report serialises"));
    } else {
        println!(
            "Model: {} from {} ({} epoch{})",
            checkpoint.architecture,
            args.checkpoint.display(),
            checkpoint.epochs_done,
            if checkpoint.epochs_done == 1 { "" } else { "s" }
        );
        println!("Data: {}\nDevice: {why}", data.source);
        for (name, r, secs) in &sets {
            println!("\n== {name} set: {} images, {} ==", group_thousands(r.images), seconds(*secs));
            println!("loss {:.4}, accuracy {:.4}", r.loss, r.accuracy);
            println!(
                "most-common-label baseline (always '{}', the most common training label): {:.4}\n",
                names.get(usize::from(r.baseline_label)).map_or("?", String::as_str),
                r.baseline
            );
            println!("{}", r.report.render(2));
            println!("Confusion matrix (rows: true class, columns: predicted):\n{}", r.confusion_matrix.render(names));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    for (name, r, _) in &sets {
        let path = args.out.join(format!("confusion_{name}.png"));
        plot::confusion_heatmap(
            &path,
            &format!("{} — {name} set, accuracy {:.3}", checkpoint.architecture.name, r.accuracy),
            &r.confusion_matrix,
            names,
        )?;
        if !args.json {
            println!("Wrote {}", path.display());
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct PredictArgs {
    /// A checkpoint written by `wgpu-cnn train`.
    pub checkpoint: PathBuf,
    /// Images to classify (PNG or JPEG, any size: resized to 32×32).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// The largest image accepted, in millions of pixels.
    #[arg(long, default_value_t = picture::DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: u64,
}

pub fn predict(gpu_args: &GpuArgs, args: &PredictArgs) -> Result<()> {
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let mut images = Vec::new();
    for path in &args.images {
        images.extend(picture::load_resized(path, data::WIDTH as u32, data::HEIGHT as u32, args.max_megapixels)?);
    }
    let set = Dataset { labels: vec![0; args.images.len()], images };
    let (mut engine, _) = inference(gpu_args, args.device, &checkpoint)?;
    let id = engine.prepare(&set)?;
    let probs = wait(engine.probabilities(id))?;
    let classes = checkpoint.model()?.classes();
    for (path, row) in args.images.iter().zip(probs.chunks(classes)) {
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(args.top.max(1))
            .map(|(c, p)| format!("{} {:.1}%", data::CLASS_NAMES.get(*c).copied().unwrap_or("?"), 100.0 * p))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchDevice {
    Gpu,
    Cpu,
    All,
}

/// `wgpu-cnn bench train`.
#[derive(Args)]
pub struct BenchTrainArgs {
    /// Model to time: base, maxpool, deep, cifar_bn or a description (repeatable: one row group each).
    #[arg(long = "model", default_values = ["base"])]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Images per timed epoch.
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    #[arg(long, value_enum, default_value_t = BenchDevice::All)]
    pub device: BenchDevice,
    /// Minimum time spent on each measurement, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub budget_ms: u64,
    /// Also time each stage of one GPU training step with timestamp queries.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub outputs: BenchOutputs,
}

pub fn bench_train(gpu_args: &GpuArgs, args: &BenchTrainArgs) -> Result<()> {
    args.outputs.check()?;
    let models = args.models.iter().map(|m| model(m)).collect::<Result<Vec<_>>>()?;
    let batch = args.batch_size;
    let config = TrainConfig { batch_size: batch, ..Default::default() };
    config.validate()?;
    let budget = Duration::from_millis(args.budget_ms);
    let data = assets::cifar10().train.take_first(args.images.max(batch));
    println!("CPU: {}", bench::cpu_name());
    let ctx = match args.device {
        BenchDevice::Cpu => None,
        _ => Some(GpuContext::new(&gpu_args.options()?)?),
    };
    // The device's own rates, for each net's roofline.
    let rates = match &ctx {
        Some(ctx) => {
            println!("GPU: {}", ctx.describe());
            let rates = bench::device_rates(ctx, Duration::from_millis(20))?;
            println!(
                "GPU rates (shaders/probe.wgsl, this run): {:.1} GFLOP/s f32 FMA, {:.1} GB/s copy, {:.1} µs a dependent dispatch",
                rates.flop_per_second / 1e9,
                rates.bytes_per_second / 1e9,
                rates.dispatch_seconds * 1e6
            );
            Some(rates)
        }
        None => None,
    };
    let (mut groups, mut json_rows, mut roofline_rows) = (Vec::new(), Vec::new(), Vec::new());
    for model in &models {
        let weights = model.init(1);
        let flop = 6.0 * model.forward_macs() as f64;
        println!(
            "\nTraining throughput of {} ({} parameters, {:.1} MFLOP per image), batch {batch}, {} images per epoch",
            model.architecture,
            group_thousands(model.param_count),
            flop / 1e6,
            data.len()
        );
        let mut rows: Vec<(String, f64)> = Vec::new();
        let mut roofline = None;
        if let (Some(ctx), Some(rates)) = (&ctx, &rates) {
            let mut gpu = GpuEngine::new(ctx, model, &data, &weights, &config)?;
            println!("GPU step: {} dispatches; {STEPS_PER_SUBMIT} steps a submission", gpu.dispatches_per_step());
            // Side by side: the host's gap between submissions after every step, and after 8.
            for steps in [1, STEPS_PER_SUBMIT] {
                gpu.set_steps_per_submit(steps)?;
                let rate = bench::train_images_per_second(&mut gpu, &data, &config, budget)?;
                let per = if steps == 1 { "1 step".to_string() } else { format!("{steps} steps") };
                rows.push((format!("{}, {per} a submission", gpu.describe()), rate));
            }
            let measured = batch as f64 / rows.last().map_or(f64::NAN, |r| r.1);
            roofline = Some(Roofline::of(
                rates,
                flop * batch as f64,
                gpu.bytes_per_step(),
                gpu.dispatches_per_step(),
                measured,
            ));
            if args.profile {
                let order: Vec<u32> = (0..data.len() as u32).collect();
                wgpu_cnn::train::Engine::begin_epoch(&mut gpu, &order)?;
                let (len, alpha) = (batch.min(data.len()), config.adam().alpha(1));
                let stages = gpu.profile_step(&wgpu_cnn::train::Step { batch: 0, start: 0, len, t: 1, alpha })?;
                let total: f64 = stages.iter().map(|(_, ms)| ms).sum();
                let width = stages.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
                println!("\nOne GPU training step, stage by stage (timestamp queries, one pass per stage):");
                for (name, ms) in &stages {
                    println!("  {name:<width$} {ms:>9.2} ms {:>6.1}%", 100.0 * ms / total);
                }
                println!("  {:<width$} {total:>9.2} ms", "total");
            }
        }
        if args.device != BenchDevice::Gpu {
            let mut fast = FastCpuEngine::new(model, &data, weights.clone(), &config)?;
            rows.push((fast.describe(), bench::train_images_per_second(&mut fast, &data, &config, budget)?));
            let mut reference = ReferenceEngine::new(model, &data, weights.clone(), &config)?;
            rows.push((reference.describe(), bench::train_images_per_second(&mut reference, &data, &config, budget)?));
        }
        let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0).max(60);
        println!("\n{:<width$} {:>10} {:>10} {:>12}", "engine", "images/s", "GFLOP/s", "vs first");
        let first = rows[0].1;
        for (name, rate) in &rows {
            let gflops = rate * flop / 1e9;
            println!("{name:<width$} {rate:>10.1} {gflops:>10.2} {:>11.2}×", rate / first);
            json_rows.push(serde_json::json!({
                "model": model.architecture.to_string(), "engine": name, "images_per_second": rate,
                "gflops": gflops, "vs_first": rate / first,
            }));
        }
        if let Some(r) = &roofline {
            r.print(batch);
            roofline_rows.push(serde_json::json!({ "model": model.architecture.to_string(), "roofline": r.json() }));
        }
        groups.push(BarGroup { label: model.architecture.name.clone(), bars: rows });
    }
    let mut fields = serde_json::Map::from_iter([
        ("batch".into(), batch.into()),
        ("images_per_epoch".into(), data.len().into()),
        ("results".into(), json_rows.into()),
    ]);
    if let Some(r) = rates {
        fields.insert("rooflines".into(), roofline_rows.into());
        fields.insert(
            "gpu_rates".into(),
            serde_json::json!({
                "flop_per_second": r.flop_per_second, "bytes_per_second": r.bytes_per_second,
                "dispatch_seconds": r.dispatch_seconds,
            }),
        );
    }
    args.outputs.write(&format!("Training throughput, batch {batch}"), "images/s", &groups, ctx.as_ref(), fields)
}

/// One GPU training step against what the device's rates allow: each side of the roofline's
/// time, the largest of them (the bound) and the step as measured.
struct Roofline {
    flop: f64,
    bytes: u64,
    dispatches: usize,
    rates: bench::DeviceRates,
    /// Seconds per step, measured at the default steps a submission.
    measured: f64,
}

impl Roofline {
    fn of(rates: &bench::DeviceRates, flop: f64, bytes: u64, dispatches: usize, measured: f64) -> Self {
        Roofline { flop, bytes, dispatches, rates: *rates, measured }
    }

    /// (side, seconds): compute, memory, dispatch.
    fn sides(&self) -> [(&'static str, f64); 3] {
        [
            ("compute", self.flop / self.rates.flop_per_second),
            ("memory", self.bytes as f64 / self.rates.bytes_per_second),
            ("dispatch", self.dispatches as f64 * self.rates.dispatch_seconds),
        ]
    }

    fn bound(&self) -> (&'static str, f64) {
        self.sides().into_iter().fold(("", 0.0), |best, side| if side.1 > best.1 { side } else { best })
    }

    fn print(&self, batch: usize) {
        let [compute, memory, dispatch] = self.sides().map(|(_, s)| s * 1e3);
        let (side, bound) = self.bound();
        println!("\nRoofline of one GPU step (batch {batch}), from the rates above:");
        let flop = format!("{:.3} GFLOP at the f32 FMA rate", self.flop / 1e9);
        let bytes = format!("{:.1} MB its dispatches touch, at the copy rate", self.bytes as f64 / 1e6);
        let dispatches = format!("{} dispatches, each after the one before", self.dispatches);
        let width = [&flop, &bytes, &dispatches].iter().map(|s| s.chars().count()).max().unwrap_or(0);
        println!("  compute   {flop:<width$} {compute:>9.3} ms");
        println!("  memory    {bytes:<width$} {memory:>9.3} ms");
        println!("  dispatch  {dispatches:<width$} {dispatch:>9.3} ms");
        println!(
            "  bound     {:.3} ms ({side}); measured {:.3} ms at {STEPS_PER_SUBMIT} steps a submission: {:.2}× the bound",
            bound * 1e3,
            self.measured * 1e3,
            self.measured / bound
        );
    }

    fn json(&self) -> serde_json::Value {
        let [compute, memory, dispatch] = self.sides().map(|(_, s)| s);
        let (side, bound) = self.bound();
        serde_json::json!({
            "flop_per_step": self.flop, "bytes_per_step": self.bytes, "dispatches_per_step": self.dispatches,
            "compute_seconds": compute, "memory_seconds": memory, "dispatch_seconds": dispatch,
            "bound_seconds": bound, "bound_by": side, "measured_seconds": self.measured,
        })
    }
}

/// `wgpu-cnn bench classify`.
#[derive(Args)]
pub struct BenchClassifyArgs {
    /// Model to time: base, maxpool, deep, cifar_bn or a description.
    #[arg(long, default_value = "base")]
    pub model: String,
    /// Images per call (repeatable).
    #[arg(long = "batch", default_values_t = [1usize, 256])]
    pub batches: Vec<usize>,
    /// Minimum time spent on each measurement, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub budget_ms: u64,
    #[command(flatten)]
    pub outputs: BenchOutputs,
}

/// Inference throughput of the embedders' classifier (buffer and texture input) and of the fast
/// CPU engine's evaluation, per batch size.
pub fn bench_classify(gpu_args: &GpuArgs, args: &BenchClassifyArgs) -> Result<()> {
    args.outputs.check()?;
    let model = model(&args.model)?;
    let ctx = GpuContext::new(&gpu_args.options()?)?;
    println!("CPU: {}\nGPU: {}", bench::cpu_name(), ctx.describe());
    let images = assets::cifar10().test.clone();
    let rows = bench::classify_timings(&ctx, &model, &images, &args.batches, Duration::from_millis(args.budget_ms))?;
    let dispatches = rows.iter().find_map(|r| r.dispatches).unwrap_or(0);
    println!(
        "\nInference of {} ({} parameters): one call per submit ({dispatches} dispatches), probabilities left on the device\n",
        model.architecture,
        group_thousands(model.param_count)
    );
    println!("{:<28} {:>6} {:>12} {:>10}", "method", "batch", "images/s", "vs first");
    let (mut groups, mut json_rows) = (Vec::new(), Vec::new());
    for &batch in &args.batches {
        let of_batch: Vec<&bench::ClassifyTiming> = rows.iter().filter(|r| r.batch == batch).collect();
        let first = of_batch[0].images_per_second;
        for row in &of_batch {
            println!(
                "{:<28} {:>6} {:>12.1} {:>9.2}×",
                row.method,
                batch,
                row.images_per_second,
                row.images_per_second / first
            );
            json_rows.push(serde_json::json!({
                "method": row.method, "batch": batch, "images_per_second": row.images_per_second,
                "vs_first": row.images_per_second / first,
            }));
        }
        let bars = of_batch.iter().map(|r| (r.method.clone(), r.images_per_second)).collect();
        groups.push(BarGroup { label: format!("batch {batch}"), bars });
    }
    let fields = serde_json::Map::from_iter([
        ("model".into(), model.architecture.to_string().into()),
        ("results".into(), json_rows.into()),
    ]);
    args.outputs.write(
        &format!("Inference throughput, {}", model.architecture.name),
        "images/s",
        &groups,
        Some(&ctx),
        fields,
    )
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExperimentName {
    DataSize,
    L1,
    Architecture,
    All,
}

#[derive(Args)]
pub struct ExperimentArgs {
    /// Which sweep to run.
    #[arg(value_enum)]
    pub which: ExperimentName,
    #[command(flatten)]
    pub data: DataSource,
    /// Folder for report.md, results.json and the figures.
    #[arg(long, default_value = "experiments")]
    pub out: PathBuf,
    /// 2 epochs on a few hundred images: every table and figure in minutes.
    #[arg(long)]
    pub quick: bool,
    /// Also time every training run on the CPU, for a GPU/CPU ratio per row.
    #[arg(long)]
    pub compare_cpu: bool,
    /// Epochs per run (default: 20, or 2 with --quick).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

pub fn experiment(gpu_args: &GpuArgs, args: &ExperimentArgs) -> Result<()> {
    use crate::experiment::{self, Environment, Settings, Sweep};
    let mut settings = if args.quick { Settings::quick() } else { Settings::full() };
    if let Some(epochs) = args.epochs {
        settings.epochs = epochs;
    }
    TrainConfig { epochs: settings.epochs, ..settings.base.clone() }.validate()?;
    // One report per folder at a time (a second one would interleave its files with this one's).
    let _lock = wgpu_cnn::io::OutputLock::acquire(&args.out)?;
    let sweeps: Vec<Sweep> = match args.which {
        ExperimentName::DataSize => vec![Sweep::DataSize],
        ExperimentName::L1 => vec![Sweep::L1],
        ExperimentName::Architecture => vec![Sweep::Architecture],
        ExperimentName::All => Sweep::ALL.to_vec(),
    };
    let data = args.data.load()?;
    let (target, why) = choose(gpu_args, args.device, false)?;
    println!(
        "Experiments: {} on {}\nDevice: {why}",
        sweeps.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        data.source
    );
    // The comparison is against the CPU at its best: the fast engine.
    let compare = match (args.compare_cpu, &target) {
        (true, Target::Gpu(_)) => Some(Target::CpuFast),
        (true, _) => {
            println!("note: --compare-cpu: the runs already train on the CPU");
            None
        }
        (false, _) => None,
    };
    let mut printer = |run: &str, event: Event| {
        if let Event::EpochEnd(record) = event {
            println!("{run}: epoch {} - {} - {}", record.epoch, seconds(record.seconds), keras_line(&record));
        }
    };
    let start = Instant::now();
    let (results, notes) = experiment::run(&sweeps, &data, &settings, &target, compare.as_ref(), &mut printer)?;
    let device = match target.gpu() {
        Some(ctx) => format!("{why}, driver {} {}", ctx.info.driver, ctx.info.driver_info),
        None => format!("{why} — {}", bench::cpu_name()),
    };
    let total = start.elapsed().as_secs_f64();
    let environment =
        Environment { device, cpu: bench::cpu_name(), data: data.source.clone(), settings, seconds: total };
    experiment::write_report(&args.out, &environment, &results, &notes)?;
    for note in &notes {
        println!("note: {note}");
    }
    println!(
        "Wrote {} (and results.json, figures) — {} runs in {}",
        args.out.join("report.md").display(),
        results.len(),
        experiment::running_time(total)
    );
    Ok(())
}
