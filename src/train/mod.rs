//! Training: the one loop ([`Trainer`]) that every engine runs, and the [`Engine`] trait that the
//! GPU ([`gpu::GpuEngine`]), the fast CPU (`fast::FastCpuEngine`, feature `fast-cpu`) and the
//! plain-loop reference ([`reference::ReferenceEngine`]) implement.
//!
//! The loop does everything that is the same wherever a step runs: the per-epoch shuffle, the
//! batches, Adam's step count and bias-corrected step size (in f64, on the host), the dropout
//! masks' step key, Keras' running and epoch metrics, validation, divergence detection, and
//! resuming at an epoch boundary. An engine does only what differs: a training step on a batch,
//! forward passes for evaluation and prediction, and reading and writing weights and Adam's
//! moments. The loop can be driven one step at a time ([`Trainer::advance`], a future): on the
//! GPU a step records and submits without waiting, and the only waits are the readbacks at the
//! end of an epoch, which a browser's event loop can await.
//!
//! Keras semantics reproduced here: the training rows are shuffled every epoch; the epoch's
//! `loss` is the batch-size-weighted mean of each step's `mean cross-entropy + L1 penalty`;
//! `accuracy` counts the training predictions made during the epoch (with dropout active);
//! `val_loss`/`val_accuracy` come from a pass over the validation rows after the epoch (no
//! dropout; the penalty of the final weights included).

#[cfg(feature = "fast-cpu")]
pub mod fast;
pub mod gpu;
pub mod reference;
pub mod target;

pub use target::{Device, Target};

use std::future::Future;
use std::pin::Pin;

use crate::adam::{AdamConfig, AdamShape};
use crate::bench::Instant;
use crate::data::{epoch_order, Dataset};
use crate::error::{DivergenceCause, Error, Result};
use crate::layers::RunSettings;
use crate::model::{Model, Weights};

/// Training settings; `Default` is the assignment's.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// λ of the head's L1 kernel regulariser.
    pub l1: f32,
    /// The last fraction of the training rows (before shuffling) held out for validation.
    pub validation_split: f64,
    pub seed: u64,
    pub learning_rate: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { epochs: 20, batch_size: 128, l1: 1e-4, validation_split: 0.1, seed: 42, learning_rate: 1e-3 }
    }
}

/// The largest batch: a batch's elements are indexed with u32 on the GPU.
pub const MAX_BATCH: usize = 65_536;

impl TrainConfig {
    /// Rejects settings that cannot train, naming the setting ([`Error::Setting`]) and the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting, message: String| Err(Error::Setting { setting, message });
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return bad("batch_size", format!("must be between 1 and {MAX_BATCH}, got {}", self.batch_size));
        }
        if !(0.0..1.0).contains(&self.validation_split) {
            return bad("validation_split", format!("must be in [0, 1), got {}", self.validation_split));
        }
        if !(self.l1 >= 0.0 && self.l1.is_finite()) {
            return bad("l1", format!("must be a finite number ≥ 0, got {}", self.l1));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", format!("must be a finite number > 0, got {}", self.learning_rate));
        }
        Ok(())
    }

    pub fn adam(&self) -> AdamConfig {
        AdamConfig { learning_rate: self.learning_rate, ..AdamConfig::default() }
    }

    /// The 32-bit seed the dropout masks are keyed with.
    pub fn dropout_seed(&self) -> u32 {
        (self.seed ^ (self.seed >> 32)) as u32
    }

    /// What the layers read of these settings.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings { l1: self.l1, seed: self.dropout_seed() }
    }
}

/// What an engine measured over a pass through some rows: per position, the loss and the
/// predicted class; per batch, the L1 penalty of the weights it was computed with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawMetrics {
    pub losses: Vec<f32>,
    pub predictions: Vec<u32>,
    pub penalties: Vec<f32>,
}

impl RawMetrics {
    /// Keras' loss and accuracy, given the label of each position and the batch size.
    pub fn summarise(&self, labels: impl Iterator<Item = u8>, batch_size: usize) -> (f64, f64) {
        let n = self.losses.len();
        if n == 0 {
            return (f64::NAN, f64::NAN);
        }
        let correct = self.predictions.iter().zip(labels).filter(|(p, l)| **p == u32::from(*l)).count();
        let cross_entropy: f64 = self.losses.iter().map(|&l| f64::from(l)).sum();
        let penalty: f64 = self
            .penalties
            .iter()
            .enumerate()
            .map(|(b, &p)| f64::from(p) * (n - b * batch_size).min(batch_size) as f64)
            .sum();
        ((cross_entropy + penalty) / n as f64, correct as f64 / n as f64)
    }
}

/// Adam's first and second moments over the flat parameter vector (same layout).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Adam's state, so training can resume exactly: the moments and the steps taken (Adam's t).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub steps: u64,
}

/// One training step, as the loop hands it to an engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The batch's index in the epoch (its penalty goes there).
    pub batch: usize,
    /// The position of its first row in the epoch's order, and its rows (the last batch of an
    /// epoch may be partial).
    pub start: usize,
    pub len: usize,
    /// Adam's step count after this step (1-based), and its bias-corrected step size for it.
    pub t: u64,
    pub alpha: f32,
}

impl Step {
    /// The 0-based training step the dropout masks are keyed by.
    pub fn dropout_step(&self) -> u32 {
        (self.t - 1) as u32
    }
}

/// A prepared dataset of an engine ([`Inference::prepare`]); the training set is [`DataId::TRAIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataId(pub usize);

impl DataId {
    pub const TRAIN: DataId = DataId(0);
}

/// A result on its way: a readback from the GPU, or a value a CPU engine already has.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + 'a>>;

/// A value that is there already.
pub fn ready<'a, T: 'a>(value: Result<T>) -> Pending<'a, T> {
    Box::pin(std::future::ready(value))
}

/// What is known of an epoch in progress without waiting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochProgress {
    /// Steps the engine has finished (on the GPU, fewer than submitted).
    pub steps_done: usize,
    /// Metrics of the first positions of the epoch, when some have arrived.
    pub metrics: Option<RawMetrics>,
}

/// Forward passes over prepared data: what evaluation and prediction need.
pub trait Inference {
    /// "GPU: NVIDIA ... (Vulkan)" / "CPU reference (1 thread)".
    fn describe(&self) -> String;
    /// Makes `data` resident where the engine runs (the GPU uploads it once), for [`evaluate`]
    /// and [`probabilities`].
    ///
    /// [`evaluate`]: Inference::evaluate
    /// [`probabilities`]: Inference::probabilities
    fn prepare(&mut self, data: &Dataset) -> Result<DataId>;
    /// Forward passes over `data` without dropout: per-row metrics, and one penalty (of the
    /// current weights).
    fn evaluate(&mut self, data: DataId) -> Pending<'_, RawMetrics>;
    /// Class probabilities `[rows, classes]` of `data`.
    fn probabilities(&mut self, data: DataId) -> Pending<'_, Vec<f32>>;
}

/// A place where a model's training steps run; a [`Trainer`] drives it.
pub trait Engine: Inference {
    /// Starts an epoch whose steps take their rows from `order` (rows of the training set the
    /// engine was built with).
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()>;
    /// One training step on `order[step.start..][..step.len]`: forward, loss, backward, Adam
    /// with `step.alpha`; its per-sample metrics at those positions, its penalty at `step.batch`.
    /// The GPU records and submits it and returns at once.
    fn train_step(&mut self, step: &Step) -> Result<()>;
    /// Consecutive steps, as [`Engine::train_step`] runs each one after the other; the GPU
    /// records them into one submission.
    fn train_steps(&mut self, steps: &[Step]) -> Result<()> {
        steps.iter().try_for_each(|step| self.train_step(step))
    }
    /// How many steps the loop hands to [`Engine::train_steps`] at once: 1 on the CPU, the
    /// steps of one submission on the GPU.
    fn steps_per_call(&self) -> usize {
        1
    }
    /// What is known of the epoch so far, without waiting.
    fn progress(&mut self) -> EpochProgress;
    /// The epoch's metrics, once its steps are done.
    fn epoch_metrics(&mut self) -> Pending<'_, RawMetrics>;
    /// The current weights.
    fn weights(&mut self) -> Pending<'_, Weights>;
    /// Adam's current moments.
    fn moments(&mut self) -> Pending<'_, Moments>;
    /// Continues from saved moments.
    fn set_moments(&mut self, moments: &Moments) -> Result<()>;
}

/// What every engine checks of the model, the weights and the settings it is built with.
pub fn check_engine_inputs(model: &Model, weights: &Weights, config: &TrainConfig) -> Result<()> {
    config.validate()?;
    model.check_weights(weights)
}

/// Fails, naming the first offending image, when a label of `data` is not one of the model's
/// `classes` (its final layer `fK` has one unit per class): a head with fewer units than the data
/// has classes would index past its outputs.
pub fn check_labels(data: &Dataset, classes: usize, what: &str) -> Result<()> {
    match data.labels.iter().position(|&label| usize::from(label) >= classes) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(format!(
            "image {i} of the {what} has label {}, but the model's final layer has {classes} unit{} (one per \
             class): end the architecture with f{} for these labels (f10 for CIFAR-10)",
            data.labels[i],
            if classes == 1 { "" } else { "s" },
            data.labels.iter().max().map_or(0, |&m| usize::from(m) + 1)
        ))),
    }
}

/// Fails unless `step` is 1 to `batch` positions of an epoch of `epoch_rows`.
pub(crate) fn check_step(step: &Step, epoch_rows: usize, batch: usize) -> Result<()> {
    if step.start + step.len > epoch_rows || step.len == 0 || step.len > batch {
        return Err(Error::invalid(format!(
            "step {} asks for positions {}..{} of an epoch of {epoch_rows} (batch {batch})",
            step.batch,
            step.start,
            step.start + step.len,
        )));
    }
    Ok(())
}

/// Fails when `moments` do not fit a model of `count` parameters.
pub fn check_moments(moments: &Moments, count: usize) -> Result<()> {
    if moments.m.len() != count || moments.v.len() != count {
        return Err(Error::invalid(format!(
            "the optimiser state holds {} and {} moments for a model of {count} parameters",
            moments.m.len(),
            moments.v.len()
        )));
    }
    Ok(())
}

/// What the CPU engines keep alike: weights, gradients, Adam's moments and settings, the
/// prepared datasets, the epoch's order and the metrics gathered so far.
pub(crate) struct HostState {
    pub weights: Weights,
    pub grads: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub adam: AdamShape,
    pub run: RunSettings,
    pub batch: usize,
    pub datasets: Vec<Dataset>,
    pub order: Vec<u32>,
    pub epoch: RawMetrics,
    pub steps_done: usize,
}

impl HostState {
    pub fn new(model: &Model, train: &Dataset, weights: Weights, config: &TrainConfig) -> Result<Self> {
        check_engine_inputs(model, &weights, config)?;
        check_labels(train, model.classes(), "training set")?;
        let count = model.param_count;
        Ok(HostState {
            weights,
            grads: vec![0.0; count],
            m: vec![0.0; count],
            v: vec![0.0; count],
            adam: config.adam().shape(count),
            run: config.run_settings(),
            batch: config.batch_size,
            datasets: vec![train.clone()],
            order: Vec::new(),
            epoch: RawMetrics::default(),
            steps_done: 0,
        })
    }

    pub fn prepare(&mut self, data: &Dataset, classes: usize) -> Result<DataId> {
        check_labels(data, classes, "data to evaluate")?;
        self.datasets.push(data.clone());
        Ok(DataId(self.datasets.len() - 1))
    }

    pub fn dataset(&self, id: DataId) -> Result<&Dataset> {
        self.datasets.get(id.0).ok_or_else(|| Error::invalid(format!("no dataset {} was prepared", id.0)))
    }

    pub fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let rows = self.datasets[0].len();
        if let Some(bad) = order.iter().find(|&&r| r as usize >= rows) {
            return Err(Error::invalid(format!("the epoch's order names row {bad} of a training set of {rows}")));
        }
        self.order = order.to_vec();
        // Room for the whole epoch's metrics: recording a step allocates nothing.
        let steps = order.len().div_ceil(self.batch);
        self.epoch = RawMetrics {
            losses: Vec::with_capacity(order.len()),
            predictions: Vec::with_capacity(order.len()),
            penalties: Vec::with_capacity(steps),
        };
        self.steps_done = 0;
        Ok(())
    }

    /// Fails unless `step`'s positions are in the epoch.
    pub fn check_step(&self, step: &Step) -> Result<()> {
        check_step(step, self.order.len(), self.batch)
    }

    /// The dataset rows of `step`.
    pub fn rows(&self, step: &Step) -> Result<Vec<u32>> {
        self.check_step(step)?;
        Ok(self.order[step.start..step.start + step.len].to_vec())
    }

    /// A finished step's metrics.
    pub fn record(&mut self, losses: &[f32], predictions: &[u32], penalty: f32) {
        self.epoch.losses.extend_from_slice(losses);
        self.epoch.predictions.extend_from_slice(predictions);
        self.epoch.penalties.push(penalty);
        self.steps_done += 1;
    }

    pub fn progress(&self) -> EpochProgress {
        EpochProgress { steps_done: self.steps_done, metrics: Some(self.epoch.clone()) }
    }

    pub fn moments(&self) -> Moments {
        Moments { m: self.m.clone(), v: self.v.clone() }
    }

    pub fn set_moments(&mut self, moments: &Moments) -> Result<()> {
        check_moments(moments, self.weights.params.len())?;
        self.m.copy_from_slice(&moments.m);
        self.v.copy_from_slice(&moments.v);
        Ok(())
    }
}

/// The [`Inference`] methods the two CPU engines share, over their `host` ([`HostState`]), their
/// per-sample outputs of the last batch (`losses`, `predicted`, `probs`) and their
/// `infer(data, each)`, `penalty()` and `classes()`: written once, expanded in each `impl`.
macro_rules! cpu_inference {
    () => {
        fn prepare(&mut self, data: &$crate::data::Dataset) -> $crate::Result<$crate::train::DataId> {
            let classes = self.classes();
            self.host.prepare(data, classes)
        }

        fn evaluate(&mut self, data: $crate::train::DataId) -> $crate::train::Pending<'_, $crate::train::RawMetrics> {
            let mut raw = $crate::train::RawMetrics::default();
            let result = self.infer(data, &mut |engine, n| {
                raw.losses.extend_from_slice(&engine.losses[..n]);
                raw.predictions.extend_from_slice(&engine.predicted[..n]);
            });
            raw.penalties.push(self.penalty());
            $crate::train::ready(result.map(|()| raw))
        }

        fn probabilities(&mut self, data: $crate::train::DataId) -> $crate::train::Pending<'_, Vec<f32>> {
            let classes = self.classes();
            let mut probs = Vec::new();
            let result = self.infer(data, &mut |engine, n| probs.extend_from_slice(&engine.probs[..n * classes]));
            $crate::train::ready(result.map(|()| probs))
        }
    };
}
pub(crate) use cpu_inference;

/// The [`Engine`] methods the two CPU engines share, over their `host` ([`HostState`]): all but
/// `train_step`.
macro_rules! cpu_engine {
    () => {
        fn begin_epoch(&mut self, order: &[u32]) -> $crate::Result<()> {
            self.host.begin_epoch(order)
        }

        fn progress(&mut self) -> $crate::train::EpochProgress {
            self.host.progress()
        }

        fn epoch_metrics(&mut self) -> $crate::train::Pending<'_, $crate::train::RawMetrics> {
            $crate::train::ready(Ok(self.host.epoch.clone()))
        }

        fn weights(&mut self) -> $crate::train::Pending<'_, $crate::model::Weights> {
            $crate::train::ready(Ok(self.host.weights.clone()))
        }

        fn moments(&mut self) -> $crate::train::Pending<'_, $crate::train::Moments> {
            $crate::train::ready(Ok(self.host.moments()))
        }

        fn set_moments(&mut self, moments: &$crate::train::Moments) -> $crate::Result<()> {
            self.host.set_moments(moments)
        }
    };
}
pub(crate) use cpu_engine;

/// Progress within an epoch: steps finished, and Keras' running loss and accuracy over the
/// samples of those steps (on the GPU they arrive a little behind, through a readback that
/// never stalls the queue).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepProgress {
    pub done: usize,
    pub running: Option<(f64, f64)>,
}

/// One line of the history: Keras' `history.history` at one epoch.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
}

/// The whole run's history, written as `history.json`.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

#[cfg(feature = "serde")]
impl History {
    /// Keras' layout: `{"loss": [...], "accuracy": [...], "val_loss": [...], ...}`.
    pub fn to_keras_json(&self) -> serde_json::Value {
        let column = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> serde_json::Value {
            self.epochs.iter().map(|e| f(e).map_or(serde_json::Value::Null, serde_json::Value::from)).collect()
        };
        serde_json::json!({
            "loss": column(&|e| Some(e.loss)),
            "accuracy": column(&|e| Some(e.accuracy)),
            "val_loss": column(&|e| e.val_loss),
            "val_accuracy": column(&|e| e.val_accuracy),
            "seconds": column(&|e| Some(e.seconds)),
        })
    }
}

/// What the loop reports as it goes (the CLI draws progress bars from these).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    EpochStart { epoch: usize, epochs: usize, steps: usize },
    Step { progress: StepProgress, steps: usize },
    EpochEnd(EpochRecord),
}

/// A warning when training is exploding before it diverges: `record`'s loss is above 10 and more
/// than 100 times `first`'s (an earlier epoch's, the first of the run or of this session), or
/// more than 100 times a fresh model's, ln(`classes`) (a run that exploded in its first epoch).
pub fn explosion_warning(first: &EpochRecord, record: &EpochRecord, classes: usize) -> Option<String> {
    let fresh = (classes.max(2) as f64).ln();
    if !record.loss.is_finite() || record.loss <= 10.0 {
        return None;
    }
    let advice = "training is exploding; a lower learning rate (or L1 weight) would train";
    if record.loss > 100.0 * first.loss && first.loss <= 100.0 * fresh {
        return Some(format!(
            "warning: the loss grew from {:.4} (epoch {}) to {:.4e} in epoch {}: {advice}",
            first.loss, first.epoch, record.loss, record.epoch
        ));
    }
    (record.loss > 100.0 * fresh).then(|| {
        format!(
            "warning: the loss is {:.4e} in epoch {}, over 100 times a fresh model's (ln {classes} = {fresh:.2}): {advice}",
            record.loss, record.epoch
        )
    })
}

/// Everything a checkpoint holds of a run in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub weights: Weights,
    pub optimizer: OptimizerState,
    pub config: TrainConfig,
    pub history: History,
}

/// The epoch in progress.
struct EpochRun {
    order: Vec<u32>,
    steps: usize,
    next: usize,
    start: Instant,
    reported: usize,
}

/// Keras' `model.fit(x, y, batch_size, epochs, validation_data=(x_val, y_val), shuffle=True)`
/// on an engine built on `train`: the one training loop.
pub struct Trainer<'e> {
    engine: Held<'e>,
    config: TrainConfig,
    adam: AdamConfig,
    train_labels: Vec<u8>,
    validation: Option<(DataId, Vec<u8>)>,
    history: History,
    steps: u64,
    epoch: Option<EpochRun>,
    last_metrics: Option<RawMetrics>,
}

/// The engine a [`Trainer`] drives: the caller's, or its own (a web page's run outlives every
/// borrow it could take).
enum Held<'e> {
    Borrowed(&'e mut dyn Engine),
    Owned(Box<dyn Engine>),
}

impl Held<'_> {
    fn get(&mut self) -> &mut dyn Engine {
        match self {
            Held::Borrowed(engine) => &mut **engine,
            Held::Owned(engine) => engine.as_mut(),
        }
    }
}

impl Trainer<'static> {
    /// [`Trainer::new`] on an engine the trainer owns.
    pub fn owning(
        engine: Box<dyn Engine>,
        train: &Dataset,
        validation: &Dataset,
        config: &TrainConfig,
    ) -> Result<Self> {
        Self::with_engine(Held::Owned(engine), train, validation, config)
    }
}

impl<'e> Trainer<'e> {
    /// A new run of `config.epochs` on `engine`, which was built on `train`; `validation` is
    /// prepared on the engine once (it may be empty: no validation).
    pub fn new(
        engine: &'e mut dyn Engine,
        train: &Dataset,
        validation: &Dataset,
        config: &TrainConfig,
    ) -> Result<Self> {
        Self::with_engine(Held::Borrowed(engine), train, validation, config)
    }

    fn with_engine(mut engine: Held<'e>, train: &Dataset, validation: &Dataset, config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        if train.is_empty() {
            return Err(Error::invalid("there are no training images left after the validation split"));
        }
        let validation = match validation.is_empty() {
            true => None,
            false => Some((engine.get().prepare(validation)?, validation.labels.clone())),
        };
        Ok(Trainer {
            engine,
            config: config.clone(),
            adam: config.adam(),
            train_labels: train.labels.clone(),
            validation,
            history: History::default(),
            steps: 0,
            epoch: None,
            last_metrics: None,
        })
    }

    /// Continues a run after the epochs of `history`, from Adam's `state`, exactly as the
    /// uninterrupted run would have gone on (epochs keep their numbers, so the shuffles match).
    /// The engine holds the run's weights (it was built from the checkpoint's).
    pub fn resume(mut self, history: History, state: &OptimizerState) -> Result<Self> {
        self.engine.get().set_moments(&Moments { m: state.m.clone(), v: state.v.clone() })?;
        self.steps = state.steps;
        self.history = history;
        Ok(self)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Adam's t: training steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether every epoch of the run is done.
    pub fn is_done(&self) -> bool {
        self.history.epochs.len() >= self.config.epochs && self.epoch.is_none()
    }

    /// The raw metrics of the last finished epoch.
    pub fn last_metrics(&self) -> Option<&RawMetrics> {
        self.last_metrics.as_ref()
    }

    pub fn engine(&mut self) -> &mut dyn Engine {
        self.engine.get()
    }

    /// The next piece of work: starts an epoch, or runs the engine's next training steps (one on
    /// the CPU; on the GPU, one submission's worth, recorded and submitted), or finishes an epoch (reads its metrics back and validates). `None` once
    /// every epoch is done.
    pub async fn advance(&mut self) -> Result<Option<Event>> {
        let Some(run) = &mut self.epoch else {
            let epoch = self.history.epochs.len();
            if epoch >= self.config.epochs {
                return Ok(None);
            }
            let order = epoch_order(self.train_labels.len(), self.config.seed, epoch as u64);
            self.engine.get().begin_epoch(&order)?;
            let steps = order.len().div_ceil(self.config.batch_size);
            self.epoch = Some(EpochRun { order, steps, next: 0, start: Instant::now(), reported: 0 });
            return Ok(Some(Event::EpochStart { epoch, epochs: self.config.epochs, steps }));
        };
        if run.next < run.steps {
            let batch = self.config.batch_size;
            let count = self.engine.get().steps_per_call().clamp(1, run.steps - run.next);
            let steps: Vec<Step> = (run.next..run.next + count)
                .map(|b| {
                    self.steps += 1;
                    let start = b * batch;
                    let len = (run.order.len() - start).min(batch);
                    Step { batch: b, start, len, t: self.steps, alpha: self.adam.alpha(self.steps) }
                })
                .collect();
            self.engine.get().train_steps(&steps)?;
            run.next += count;
            let progress = self.engine.get().progress();
            let running = progress.metrics.map(|raw| {
                let labels = run.order[..raw.losses.len()].iter().map(|&r| self.train_labels[r as usize]);
                raw.summarise(labels, batch)
            });
            run.reported = run.reported.max(progress.steps_done);
            let progress = StepProgress { done: run.reported, running };
            return Ok(Some(Event::Step { progress, steps: run.steps }));
        }
        let run = self.epoch.take().expect("an epoch is in progress");
        let raw = self.engine.get().epoch_metrics().await?;
        let labels = run.order.iter().map(|&r| self.train_labels[r as usize]);
        let (loss, accuracy) = raw.summarise(labels, self.config.batch_size);
        let epoch = self.history.epochs.len() + 1;
        if !loss.is_finite() {
            return Err(self.diverged(epoch, loss, &raw));
        }
        let (val_loss, val_accuracy) = match &self.validation {
            None => (None, None),
            Some((id, labels)) => {
                let (l, a) = self.engine.get().evaluate(*id).await?.summarise(labels.iter().copied(), usize::MAX);
                (Some(l), Some(a))
            }
        };
        let record =
            EpochRecord { epoch, loss, accuracy, val_loss, val_accuracy, seconds: run.start.elapsed().as_secs_f64() };
        self.history.epochs.push(record.clone());
        self.last_metrics = Some(raw);
        Ok(Some(Event::EpochEnd(record)))
    }

    /// Runs every remaining epoch, blocking: `on_event` sees every event, `after_epoch` runs after
    /// each epoch (the CLI saves a checkpoint there, so a crash loses at most one epoch).
    pub fn fit(
        &mut self,
        on_event: &mut dyn FnMut(Event),
        after_epoch: &mut dyn FnMut(&mut Self) -> Result<()>,
    ) -> Result<History> {
        while let Some(event) = pollster::block_on(self.advance())? {
            let ended = matches!(event, Event::EpochEnd(_));
            on_event(event);
            if ended {
                after_epoch(self)?;
            }
        }
        Ok(self.history.clone())
    }

    /// One more epoch, blocking: its record and raw metrics. Past `config.epochs` the run's
    /// epoch count grows by one (benchmarks and tests run epoch after epoch this way).
    pub fn run_epoch(&mut self) -> Result<(EpochRecord, RawMetrics)> {
        self.config.epochs = self.config.epochs.max(self.history.epochs.len() + 1);
        loop {
            if let Some(Event::EpochEnd(record)) = pollster::block_on(self.advance())? {
                let raw = self.last_metrics.clone().expect("a finished epoch has metrics");
                return Ok((record, raw));
            }
        }
    }

    /// The divergence error for `epoch`: the first step whose loss or penalty is not a number,
    /// and the likely cause — in the run's first step (before any update) the L1 weight if its
    /// penalty overflowed, else the data; later, the learning rate.
    fn diverged(&self, epoch: usize, loss: f64, raw: &RawMetrics) -> Error {
        let batch = self.config.batch_size;
        let loss_step = raw.losses.iter().position(|l| !l.is_finite()).map(|p| p / batch);
        let penalty_step = raw.penalties.iter().position(|p| !p.is_finite());
        let step = match (loss_step, penalty_step) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        };
        // Before any update the weights are Glorot-small: a penalty that overflows there is the
        // L1 weight's doing, a loss that is no number the data's. Later, the updates grew them.
        let first_step = epoch == 1 && step == 0 && self.history.epochs.is_empty();
        let cause = if first_step && penalty_step == Some(0) {
            DivergenceCause::L1Weight { l1: self.config.l1 }
        } else if first_step {
            DivergenceCause::Data
        } else {
            DivergenceCause::LearningRate { learning_rate: self.config.learning_rate }
        };
        Error::Diverged { epoch, step: step + 1, loss, cause }
    }

    /// The weights, Adam's state, the settings and the history, for a checkpoint.
    pub async fn snapshot_async(&mut self) -> Result<Snapshot> {
        let weights = self.engine.get().weights().await?;
        let Moments { m, v } = self.engine.get().moments().await?;
        Ok(Snapshot {
            weights,
            optimizer: OptimizerState { m, v, steps: self.steps },
            config: self.config.clone(),
            history: self.history.clone(),
        })
    }

    /// [`Trainer::snapshot_async`], blocking.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        pollster::block_on(self.snapshot_async())
    }
}

/// Blocking shorthand for an engine's pending result (native targets).
pub fn wait<T>(pending: Pending<'_, T>) -> Result<T> {
    pollster::block_on(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_loss_weights_each_batch_penalty_by_its_size() {
        // Two batches of sizes 2 and 1 with penalties 0.5 and 0.25:
        // ((1 + 2 + 3) + 2·0.5 + 1·0.25) / 3.
        let raw = RawMetrics { losses: vec![1.0, 2.0, 3.0], predictions: vec![0, 1, 1], penalties: vec![0.5, 0.25] };
        let (loss, accuracy) = raw.summarise([0u8, 1, 2].into_iter(), 2);
        assert!((loss - (6.0 + 1.0 + 0.25) / 3.0).abs() < 1e-12);
        assert!((accuracy - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_settings_are_rejected_naming_the_setting_and_the_value() {
        let bad = |c: TrainConfig| c.validate().unwrap_err().to_string();
        assert!(bad(TrainConfig { epochs: 0, ..Default::default() }).contains("epochs"));
        assert!(bad(TrainConfig { batch_size: 0, ..Default::default() }).contains("got 0"));
        assert!(bad(TrainConfig { validation_split: 1.0, ..Default::default() }).contains("got 1"));
        assert!(bad(TrainConfig { validation_split: -0.1, ..Default::default() }).contains("[0, 1)"));
        assert!(bad(TrainConfig { l1: f32::NAN, ..Default::default() }).contains("l1"));
        assert!(bad(TrainConfig { learning_rate: 0.0, ..Default::default() }).contains("learning_rate"));
        TrainConfig::default().validate().unwrap();
    }
}
