//! Training: the loop shared by every backend, Keras' bookkeeping (shuffling, validation split,
//! epoch metrics), and the [`Backend`] trait that the GPU ([`gpu::GpuBackend`]) and the CPU
//! ([`cpu::CpuBackend`]) implement.
//!
//! Keras semantics reproduced here: the training rows are shuffled every epoch; the epoch's
//! `loss` is the batch-size-weighted mean of each step's `mean cross-entropy + L1 penalty`;
//! `accuracy` counts the training predictions made during the epoch (with dropout active);
//! `val_loss`/`val_accuracy` come from a pass over the validation rows after the epoch (no
//! dropout; the penalty of the final weights included).

pub mod cpu;
pub mod gpu;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint::OptimizerState;
use crate::data::{epoch_order, Dataset};
use crate::error::{Error, Result};
use crate::layers::adam::AdamConfig;
use crate::layers::conv2d::Conv2dShape;
use crate::layers::dense_softmax::DenseShape;
use crate::layers::dropout::DropoutShape;
use crate::layers::maxpool2d::PoolShape;
use crate::model::{LayerSpec, Model};

/// Training settings; `Default` is the assignment's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// λ of the dense layer's L1 kernel regulariser.
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

impl TrainConfig {
    /// Rejects settings that cannot train, saying which and why.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("--epochs must be at least 1"));
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            return Err(Error::invalid(format!("--batch-size must be between 1 and 65536, got {}", self.batch_size)));
        }
        if !(0.0..1.0).contains(&self.validation_split) {
            return Err(Error::invalid(format!("--validation-split must be in [0, 1), got {}", self.validation_split)));
        }
        if !(self.l1 >= 0.0 && self.l1.is_finite()) {
            return Err(Error::invalid(format!("--l1 must be a finite number ≥ 0, got {}", self.l1)));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(Error::invalid(format!("--lr must be a finite number > 0, got {}", self.learning_rate)));
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
}

/// The shapes of one layer for batches of up to `batch` samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerShape {
    Conv(Conv2dShape),
    Pool(PoolShape),
    Dropout(DropoutShape),
}

impl LayerShape {
    pub fn with_batch(&self, batch: usize) -> Self {
        match self {
            LayerShape::Conv(s) => LayerShape::Conv(s.with_batch(batch)),
            LayerShape::Pool(s) => LayerShape::Pool(s.with_batch(batch)),
            LayerShape::Dropout(s) => LayerShape::Dropout(s.with_batch(batch)),
        }
    }
}

/// The hidden layers' shapes and the dense layer's, for batches of up to `batch`.
pub fn layer_shapes(model: &Model, batch: usize, l1: f32) -> (Vec<LayerShape>, DenseShape) {
    let (hidden, dense) = model.layers.split_at(model.layers.len() - 1);
    let shapes = hidden
        .iter()
        .enumerate()
        .map(|(i, layer)| match layer.spec {
            LayerSpec::Conv { .. } => LayerShape::Conv(Conv2dShape::for_layer(layer, batch)),
            LayerSpec::MaxPool => LayerShape::Pool(PoolShape::new(batch, layer.input)),
            LayerSpec::Dropout { rate } => LayerShape::Dropout(DropoutShape::new(batch, layer.input_len(), i, rate)),
            LayerSpec::Dense { .. } => unreachable!("the dense layer is always last"),
        })
        .collect();
    (shapes, DenseShape::for_layer(&dense[0], batch, l1))
}

/// What a backend measured over a pass through some rows: per position, the loss and the
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

/// A place where the model's steps run: the GPU or the CPU.
pub trait Backend {
    /// "GPU: NVIDIA ... (Vulkan)" / "CPU reference (1 thread)".
    fn describe(&self) -> String;
    /// One epoch: a training step per batch of `order` (rows of the training set the backend
    /// was built with). `on_step` reports finished steps and, when known, the running metrics.
    fn train_epoch(&mut self, order: &[u32], on_step: &mut dyn FnMut(StepProgress)) -> Result<RawMetrics>;
    /// Forward passes over `data` without dropout; one penalty (of the current weights).
    fn evaluate(&mut self, data: &Dataset) -> Result<RawMetrics>;
    /// The current parameters (the flat vector of [`Model`]).
    fn params(&mut self) -> Result<Vec<f32>>;
    /// Training steps done so far (Adam's t).
    fn steps_done(&self) -> u64;
    /// Adam's moments and step count, for a checkpoint.
    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Err(Error::invalid(format!("{} cannot save its optimiser state", self.describe())))
    }
    /// Continues from a checkpoint's optimiser state.
    fn set_optimizer_state(&mut self, _state: &OptimizerState) -> Result<()> {
        Err(Error::invalid(format!("{} cannot resume an optimiser state", self.describe())))
    }
    /// Class probabilities `[rows, classes]` of `data` (inference, no dropout).
    fn probabilities(&mut self, _data: &Dataset) -> Result<Vec<f32>> {
        Err(Error::invalid(format!("{} cannot predict", self.describe())))
    }
}

/// Progress within an epoch: steps finished, and Keras' running loss and accuracy over the
/// samples of those steps (on the GPU they arrive a little behind, through a readback that
/// never stalls the queue).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepProgress {
    pub done: usize,
    pub running: Option<(f64, f64)>,
}

/// One line of the history: Keras' `history.history` at one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
}

/// The whole run's history, written as `history.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

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
#[derive(Clone, Debug)]
pub enum Event {
    EpochStart { epoch: usize, epochs: usize, steps: usize },
    Step { progress: StepProgress, steps: usize },
    EpochEnd(EpochRecord),
}

/// Called after every epoch with the backend and the history so far (the CLI saves a checkpoint
/// there, so a crash loses at most one epoch).
pub type AfterEpoch<'a> = &'a mut dyn FnMut(&mut dyn Backend, &History) -> Result<()>;

/// Keras' `model.fit(x, y, batch_size, epochs, validation_data=(x_val, y_val), shuffle=True)`
/// on `backend`, which was built on `train`. Epochs are numbered from `first_epoch` (0 for a
/// new run), so that a resumed run shuffles exactly as an uninterrupted one; `history` holds the
/// epochs already done and grows by the new ones.
pub fn fit(
    backend: &mut dyn Backend,
    train: &Dataset,
    validation: &Dataset,
    config: &TrainConfig,
    mut history: History,
    on_event: &mut dyn FnMut(Event),
    after_epoch: AfterEpoch<'_>,
) -> Result<History> {
    config.validate()?;
    if train.is_empty() {
        return Err(Error::invalid("there are no training images left after the validation split"));
    }
    let steps = train.len().div_ceil(config.batch_size);
    for epoch in history.epochs.len()..config.epochs {
        on_event(Event::EpochStart { epoch, epochs: config.epochs, steps });
        let start = Instant::now();
        let order = epoch_order(train.len(), config.seed, epoch as u64);
        let raw = backend.train_epoch(&order, &mut |progress| on_event(Event::Step { progress, steps }))?;
        let (loss, accuracy) = raw.summarise(order.iter().map(|&r| train.labels[r as usize]), config.batch_size);
        let (val_loss, val_accuracy) = if validation.is_empty() {
            (None, None)
        } else {
            let raw = backend.evaluate(validation)?;
            let (l, a) = raw.summarise(validation.labels.iter().copied(), usize::MAX);
            (Some(l), Some(a))
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            loss,
            accuracy,
            val_loss,
            val_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_event(Event::EpochEnd(record.clone()));
        history.epochs.push(record);
        after_epoch(backend, &history)?;
    }
    Ok(history)
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
    fn bad_settings_are_rejected_with_the_value() {
        let bad = |c: TrainConfig| c.validate().unwrap_err().to_string();
        assert!(bad(TrainConfig { epochs: 0, ..Default::default() }).contains("--epochs"));
        assert!(bad(TrainConfig { batch_size: 0, ..Default::default() }).contains("got 0"));
        assert!(bad(TrainConfig { validation_split: 1.0, ..Default::default() }).contains("got 1"));
        assert!(bad(TrainConfig { validation_split: -0.1, ..Default::default() }).contains("[0, 1)"));
        assert!(bad(TrainConfig { l1: f32::NAN, ..Default::default() }).contains("--l1"));
        assert!(bad(TrainConfig { learning_rate: 0.0, ..Default::default() }).contains("--lr"));
        TrainConfig::default().validate().unwrap();
    }
}
