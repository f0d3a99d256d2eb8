//! The training step on the CPU with the plain-loop reference layers: the oracle the GPU is
//! checked against, and a way to train with no adapter at all. Every buffer is sized once, when
//! the backend is built; a step allocates nothing.

use super::{layer_shapes, Backend, LayerShape, RawMetrics, StepProgress, TrainConfig};
use crate::checkpoint::OptimizerState;
use crate::data::Dataset;
use crate::error::Result;
use crate::layers::adam::{self, AdamConfig, AdamShape};
use crate::layers::dense_softmax::{self, DenseShape};
use crate::layers::{conv2d, dropout, gather, maxpool2d};
use crate::model::Model;

/// A model, its optimiser state and its activations, on the CPU.
pub struct CpuBackend {
    shapes: Vec<LayerShape>,
    dense: DenseShape,
    adam: AdamConfig,
    adam_shape: AdamShape,
    dropout_seed: u32,
    batch: usize,
    sample_len: usize,
    train: Dataset,
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// The batch's input [N, 32, 32, 3] and labels.
    x0: Vec<f32>,
    labels: Vec<u32>,
    /// Output of each hidden layer, and dL/d(that output).
    acts: Vec<Vec<f32>>,
    dacts: Vec<Vec<f32>>,
    /// dL/d(input) of the first layer when it is not a convolution (computed, unused).
    dx0: Vec<f32>,
    probs: Vec<f32>,
    dlogits: Vec<f32>,
    losses: Vec<f32>,
    predicted: Vec<u32>,
    steps: u64,
}

impl CpuBackend {
    /// A backend training `model` from `params` on `train`.
    pub fn new(model: &Model, train: &Dataset, params: Vec<f32>, config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        let batch = config.batch_size;
        let (shapes, dense) = layer_shapes(model, batch, config.l1);
        let acts: Vec<Vec<f32>> =
            model.layers[..shapes.len()].iter().map(|l| vec![0.0; batch * l.output_len()]).collect();
        let sample_len = model.input.iter().product();
        let count = model.param_count;
        Ok(CpuBackend {
            dacts: acts.clone(),
            acts,
            shapes,
            dense,
            adam: config.adam(),
            adam_shape: config.adam().shape(count),
            dropout_seed: config.dropout_seed(),
            batch,
            sample_len,
            train: train.clone(),
            grads: vec![0.0; count],
            m: vec![0.0; count],
            v: vec![0.0; count],
            params,
            x0: vec![0.0; batch * sample_len],
            labels: vec![0; batch],
            dx0: vec![0.0; batch * sample_len],
            probs: vec![0.0; batch * dense.classes as usize],
            dlogits: vec![0.0; batch * dense.classes as usize],
            losses: vec![0.0; batch],
            predicted: vec![0; batch],
            steps: 0,
        })
    }

    /// Forward through every layer for the first `nb` samples of `x0`; `training` keys dropout.
    fn forward(&mut self, nb: usize, training: Option<(u32, u32)>) {
        for (i, shape) in self.shapes.iter().enumerate() {
            let (before, after) = self.acts.split_at_mut(i);
            let x: &[f32] = if i == 0 { &self.x0 } else { &before[i - 1] };
            let y = &mut after[0];
            match shape.with_batch(nb) {
                LayerShape::Conv(s) => {
                    let (kernel, bias) = self.params[s.kernel_offset as usize..].split_at(s.kernel_len());
                    conv2d::forward(y, x, kernel, bias, &s);
                }
                LayerShape::Pool(s) => maxpool2d::forward(y, x, &s),
                LayerShape::Dropout(s) => dropout::forward(y, x, training, &s),
            }
        }
        let x = self.acts.last().unwrap_or(&self.x0);
        let s = self.dense.with_batch(nb);
        let (kernel, bias) = self.params[s.kernel_offset as usize..].split_at(s.kernel_len());
        dense_softmax::forward(
            &mut self.probs,
            &mut self.dlogits,
            &mut self.losses,
            &mut self.predicted,
            x,
            kernel,
            bias,
            &self.labels,
            &s,
        );
    }

    /// Gradients of the batch-mean loss into `grads`, from the last forward pass.
    fn backward(&mut self, nb: usize, training: Option<(u32, u32)>) {
        let s = self.dense.with_batch(nb);
        let hidden = self.shapes.len();
        {
            let x = self.acts.last().unwrap_or(&self.x0);
            let kernel = &self.params[s.kernel_offset as usize..][..s.kernel_len()];
            let (dkernel, dbias) = self.grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
            dense_softmax::backward_weight(dkernel, dbias, &self.dlogits, x, kernel, &s);
            let dx = if hidden == 0 { &mut self.dx0 } else { &mut self.dacts[hidden - 1] };
            dense_softmax::backward_input(dx, &self.dlogits, kernel, &s);
        }
        for i in (0..hidden).rev() {
            let (before, after) = self.dacts.split_at_mut(i);
            let dy = &after[0];
            let dx: &mut [f32] = if i == 0 { &mut self.dx0 } else { &mut before[i - 1] };
            let x: &[f32] = if i == 0 { &self.x0 } else { &self.acts[i - 1] };
            match self.shapes[i].with_batch(nb) {
                LayerShape::Conv(s) => {
                    let y = &self.acts[i];
                    let kernel = &self.params[s.kernel_offset as usize..][..s.kernel_len()];
                    if i > 0 {
                        conv2d::backward_input(dx, dy, y, kernel, &s);
                    }
                    let (dkernel, dbias) = self.grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
                    conv2d::backward_weight(dkernel, dbias, dy, y, x, &s);
                }
                LayerShape::Pool(s) => maxpool2d::backward_input(dx, dy, x, &s),
                LayerShape::Dropout(s) => dropout::backward_input(dx, dy, training, &s),
            }
        }
    }

    fn load_batch(&mut self, data: &Dataset, rows: &[u32]) {
        gather::gather(&mut self.x0, &mut self.labels, &data.images, &data.labels, rows, self.sample_len);
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        "CPU reference (plain loops, 1 thread)".to_string()
    }

    fn train_epoch(&mut self, order: &[u32], on_step: &mut dyn FnMut(StepProgress)) -> Result<RawMetrics> {
        let mut raw = RawMetrics::default();
        let train = std::mem::take(&mut self.train);
        for (b, rows) in order.chunks(self.batch).enumerate() {
            let nb = rows.len();
            self.load_batch(&train, rows);
            let training = Some((self.dropout_seed, self.steps as u32));
            self.forward(nb, training);
            let dense = self.dense.with_batch(nb);
            raw.penalties.push(dense_softmax::l1_penalty(
                &self.params[dense.kernel_offset as usize..][..dense.kernel_len()],
                &dense,
            ));
            self.backward(nb, training);
            self.steps += 1;
            adam::update(
                &mut self.params,
                &mut self.m,
                &mut self.v,
                &self.grads,
                self.adam.alpha(self.steps),
                &self.adam_shape,
            );
            raw.losses.extend_from_slice(&self.losses[..nb]);
            raw.predictions.extend_from_slice(&self.predicted[..nb]);
            let labels = order[..raw.losses.len()].iter().map(|&r| train.labels[r as usize]);
            on_step(StepProgress { done: b + 1, running: Some(raw.summarise(labels, self.batch)) });
        }
        self.train = train;
        Ok(raw)
    }

    fn evaluate(&mut self, data: &Dataset) -> Result<RawMetrics> {
        let mut raw = RawMetrics::default();
        let rows: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in rows.chunks(self.batch) {
            self.load_batch(data, chunk);
            self.forward(chunk.len(), None);
            raw.losses.extend_from_slice(&self.losses[..chunk.len()]);
            raw.predictions.extend_from_slice(&self.predicted[..chunk.len()]);
        }
        let d = &self.dense;
        raw.penalties.push(dense_softmax::l1_penalty(&self.params[d.kernel_offset as usize..][..d.kernel_len()], d));
        Ok(raw)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    fn steps_done(&self) -> u64 {
        self.steps
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Ok(OptimizerState { m: self.m.clone(), v: self.v.clone(), steps: self.steps })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        check_state_len(state, self.params.len())?;
        (self.m, self.v, self.steps) = (state.m.clone(), state.v.clone(), state.steps);
        Ok(())
    }

    fn probabilities(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        let classes = self.dense.classes as usize;
        let mut probs = Vec::with_capacity(data.len() * classes);
        let rows: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in rows.chunks(self.batch) {
            self.load_batch(data, chunk);
            self.forward(chunk.len(), None);
            probs.extend_from_slice(&self.probs[..chunk.len() * classes]);
        }
        Ok(probs)
    }
}

/// Fails when an optimiser state does not fit a model of `count` parameters.
pub fn check_state_len(state: &OptimizerState, count: usize) -> Result<()> {
    if state.m.len() != count || state.v.len() != count {
        return Err(crate::Error::invalid(format!(
            "the optimiser state holds {} and {} moments for a model of {count} parameters",
            state.m.len(),
            state.v.len()
        )));
    }
    Ok(())
}
