//! The training step on the CPU with every layer's plain-loop reference: the oracle the GPU and
//! the fast CPU engine are checked against, and a way to train with nothing but a CPU. Every
//! buffer is sized once, when the engine is built.

use super::{DataId, Engine, HostState, Inference, Step, TrainConfig};
use crate::adam;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gather;
use crate::layers::{Backward, Ctx, HeadOutputs, Pass};
use crate::model::{Model, Weights};

/// The most bytes of batch-sized buffers the reference engine allocates (4 GiB: batch 15,600 of
/// the base net).
pub const MAX_BATCH_BYTES: u64 = 4 << 30;

/// A model, its optimiser state and its activations, on the CPU, in plain loops.
pub struct ReferenceEngine {
    model: Model,
    host: HostState,
    sample_len: usize,
    /// The batch's input `[N, H, W, C]` and labels.
    x0: Vec<f32>,
    labels: Vec<u32>,
    /// Output of each hidden layer, and dL/d(that output).
    acts: Vec<Vec<f32>>,
    dacts: Vec<Vec<f32>>,
    probs: Vec<f32>,
    dlogits: Vec<f32>,
    losses: Vec<f32>,
    predicted: Vec<u32>,
}

impl ReferenceEngine {
    /// An engine training `model` from `weights` on `train`.
    pub fn new(model: &Model, train: &Dataset, weights: Weights, config: &TrainConfig) -> Result<Self> {
        let batch = config.batch_size;
        // Every hidden layer's output and its gradient, for the whole batch.
        let floats =
            model.hidden.iter().map(|p| p.at.output_len()).sum::<usize>() * 2 + model.input.iter().product::<usize>();
        let bytes = (batch as u64).saturating_mul(floats as u64 * 4);
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::invalid(format!(
                "the reference engine holds every layer's output and gradient for the whole batch: {} MiB for \
                 batch {batch} of {}, more than its limit of {} MiB; use a smaller --batch-size, or --device cpu, \
                 whose memory does not grow with the batch",
                bytes >> 20,
                model.architecture,
                MAX_BATCH_BYTES >> 20
            )));
        }
        let host = HostState::new(model, train, weights, config)?;
        let acts: Vec<Vec<f32>> = model.hidden.iter().map(|p| vec![0.0; batch * p.at.output_len()]).collect();
        let sample_len = model.input.iter().product();
        let classes = model.classes();
        Ok(ReferenceEngine {
            model: model.clone(),
            host,
            sample_len,
            dacts: acts.clone(),
            acts,
            x0: vec![0.0; batch * sample_len],
            labels: vec![0; batch],
            probs: vec![0.0; batch * classes],
            dlogits: vec![0.0; batch * classes],
            losses: vec![0.0; batch],
            predicted: vec![0; batch],
        })
    }

    /// Forward through every layer for `rows` of `data`.
    fn forward(&mut self, data: DataId, rows: &[u32], pass: Pass) -> Result<()> {
        let nb = rows.len();
        let data = self.host.dataset(data)?;
        gather::gather(&mut self.x0, &mut self.labels, &data.images, &data.labels, rows, self.sample_len);
        let (weights, run) = (&mut self.host.weights, self.host.run);
        for (i, p) in self.model.hidden.iter().enumerate() {
            let (before, after) = self.acts.split_at_mut(i);
            let x: &[f32] = if i == 0 { &self.x0 } else { &before[i - 1] };
            let c = Ctx { at: &p.at, batch: nb, run };
            p.layer.forward(&c, pass, x, &mut after[0], &weights.params, &mut weights.state);
        }
        let x = self.acts.last().unwrap_or(&self.x0);
        let head = &self.model.head;
        let out = HeadOutputs {
            probs: &mut self.probs,
            dlogits: &mut self.dlogits,
            losses: &mut self.losses,
            predicted: &mut self.predicted,
        };
        head.layer.forward(&Ctx { at: &head.at, batch: nb, run }, x, &weights.params, &self.labels, nb, out);
        Ok(())
    }

    /// Gradients of the batch-mean loss into `grads`, from the last forward pass.
    fn backward(&mut self, nb: usize, pass: Pass) {
        let (params, grads, run) = (&self.host.weights.params, &mut self.host.grads, self.host.run);
        let hidden = self.model.hidden.len();
        let head = &self.model.head;
        let x = self.acts.last().unwrap_or(&self.x0);
        let dx = self.dacts.last_mut();
        head.layer.backward(
            &Ctx { at: &head.at, batch: nb, run },
            x,
            &self.dlogits,
            dx.map(|d| &mut d[..]),
            params,
            grads,
        );
        for i in (0..hidden).rev() {
            let p = &self.model.hidden[i];
            let (before, after) = self.dacts.split_at_mut(i);
            let backward = Backward {
                x: if i == 0 { &self.x0 } else { &self.acts[i - 1] },
                y: &self.acts[i],
                dy: &after[0],
                dx: before.last_mut().map(|d| &mut d[..]),
                params,
                grads,
            };
            p.layer.backward(&Ctx { at: &p.at, batch: nb, run }, pass, backward);
        }
    }

    fn classes(&self) -> usize {
        self.model.classes()
    }

    fn penalty(&self) -> f32 {
        let head = &self.model.head;
        let c = Ctx { at: &head.at, batch: self.host.batch, run: self.host.run };
        head.layer.penalty(&c, &self.host.weights.params)
    }

    /// Forward passes over `data` in batches: `each` sees each batch's results.
    fn infer(&mut self, data: DataId, each: &mut dyn FnMut(&Self, usize)) -> Result<()> {
        let rows: Vec<u32> = (0..self.host.dataset(data)?.len() as u32).collect();
        for chunk in rows.chunks(self.host.batch) {
            self.forward(data, chunk, Pass::Inference)?;
            each(self, chunk.len());
        }
        Ok(())
    }
}

impl Inference for ReferenceEngine {
    fn describe(&self) -> String {
        "CPU reference (plain loops, 1 thread)".to_string()
    }

    super::cpu_inference!();
}

impl Engine for ReferenceEngine {
    super::cpu_engine!();

    fn train_step(&mut self, step: &Step) -> Result<()> {
        let rows = self.host.rows(step)?;
        let pass = Pass::Training { step: step.dropout_step(), first: 0 };
        self.forward(DataId::TRAIN, &rows, pass)?;
        let penalty = self.penalty();
        self.backward(rows.len(), pass);
        let head = &self.model.head;
        let c = Ctx { at: &head.at, batch: rows.len(), run: self.host.run };
        head.layer.penalty_backward(&c, &self.host.weights.params, &mut self.host.grads);
        let host = &mut self.host;
        adam::update(&mut host.weights.params, &mut host.m, &mut host.v, &host.grads, step.alpha, &host.adam);
        let n = rows.len();
        self.host.record(&self.losses[..n], &self.predicted[..n], penalty);
        Ok(())
    }
}
