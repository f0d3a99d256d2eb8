//! The training step on the GPU. Everything is built once: pipelines, buffers, bind groups; the
//! training set is uploaded once as u8. A step writes the 32-byte step uniform, records every
//! layer's dispatches into one compute pass of one command encoder, and submits:
//!
//! gather → hidden layers forward → dense logits → softmax/CE/dlogits → L1 penalty → dense
//! backward → hidden layers backward (reversed) → Adam over the flat parameter buffer.
//!
//! Nothing is read back during an epoch: the per-sample loss and prediction land in a metrics
//! buffer indexed by position in the epoch, read once at its end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{layer_shapes, Backend, LayerShape, RawMetrics, StepProgress, TrainConfig};
use crate::checkpoint::OptimizerState;
use crate::data::Dataset;
use crate::error::Result;
use crate::gpu::uniform_buffer;
use crate::gpu::{self, GpuContext};
use crate::kernel::begin_pass;
use crate::layers::adam::{Adam, AdamBuffers, AdamConfig, AdamPass};
use crate::layers::conv2d::{Conv2d, Conv2dBuffers, Conv2dPass, Conv2dVariant};
use crate::layers::dense_softmax::{DenseBuffers, DenseSoftmax, DenseSoftmaxPass};
use crate::layers::dropout::{Dropout, DropoutPass};
use crate::layers::gather::{Gather, GatherBuffers, GatherPass, GpuDataset};
use crate::layers::maxpool2d::{MaxPool2d, MaxPool2dPass};
use crate::layers::{ActivationBuffers, StepParams};
use crate::model::Model;

/// Records one stage of a step into a compute pass (for [`GpuBackend::profile_step`]).
type Stage<'a> = Box<dyn Fn(&mut wgpu::ComputePass<'_>) + 'a>;

/// A hidden layer bound to its buffers.
enum HiddenPass {
    Conv(Conv2dPass),
    Pool(MaxPool2dPass),
    Dropout(DropoutPass),
}

impl HiddenPass {
    fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            HiddenPass::Conv(p) => p.record_forward(pass),
            HiddenPass::Pool(p) => p.record_forward(pass),
            HiddenPass::Dropout(p) => p.record_forward(pass),
        }
    }

    fn record_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            HiddenPass::Conv(p) => p.record_backward(pass),
            HiddenPass::Pool(p) => p.record_backward(pass),
            HiddenPass::Dropout(p) => p.record_backward(pass),
        }
    }
}

/// The compiled pipelines of every kernel family, built once per device.
#[derive(Clone, Debug)]
pub struct Kernels {
    pub conv2d: Conv2d,
    pub maxpool2d: MaxPool2d,
    pub dropout: Dropout,
    pub dense_softmax: DenseSoftmax,
    pub adam: Adam,
    pub gather: Gather,
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        Ok(Kernels {
            conv2d: Conv2d::new(device)?,
            maxpool2d: MaxPool2d::new(device)?,
            dropout: Dropout::new(device)?,
            dense_softmax: DenseSoftmax::new(device)?,
            adam: Adam::new(device)?,
            gather: Gather::new(device)?,
        })
    }
}

/// A model, its optimiser state, activations and training set, resident on one device.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    description: String,
    kernels: Kernels,
    adam: AdamConfig,
    dropout_seed: u32,
    batch: usize,
    step: wgpu::Buffer,
    params: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    x0: wgpu::Buffer,
    batch_labels: wgpu::Buffer,
    metrics: wgpu::Buffer,
    penalties: wgpu::Buffer,
    probs: wgpu::Buffer,
    classes: usize,
    hidden: Vec<HiddenPass>,
    dense: DenseSoftmaxPass,
    adam_pass: AdamPass,
    train_order: wgpu::Buffer,
    train_gather: GatherPass,
    /// Positions the metrics buffer holds: evaluation runs in chunks of this many rows.
    metrics_capacity: usize,
    /// The penalty slot evaluation writes to (after one per training batch).
    eval_penalty_slot: usize,
    steps: u64,
    /// Keras names of the hidden layers, for the per-stage profile.
    hidden_names: Vec<String>,
    /// Host copy of the training labels, to turn live predictions into a running accuracy.
    train_labels: Vec<u8>,
    live: LiveMetrics,
    // Kept alive for the bind groups above.
    _buffers: Vec<wgpu::Buffer>,
    _train_data: GpuDataset,
}

fn f32_buffer(device: &wgpu::Device, label: &str, len: usize) -> Result<wgpu::Buffer> {
    gpu::storage_buffer(device, label, 4 * len as u64)
}

/// A layer's input, output or gradient: rounded up to whole vec4s, since the convolution
/// kernels read some of them as vec4s ([`Conv2dBuffers`]).
fn activation_buffer(device: &wgpu::Device, label: &str, len: usize) -> Result<wgpu::Buffer> {
    f32_buffer(device, label, len.next_multiple_of(4))
}

impl GpuBackend {
    /// Builds every pipeline and buffer for training `model` from `params` on `train`.
    pub fn new(ctx: &GpuContext, model: &Model, train: &Dataset, params: &[f32], config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        let kernels = Kernels::new(&ctx.device)?;
        Self::with_kernels(ctx, kernels, model, train, params, config, Conv2dVariant::Tiled)
    }

    /// As [`GpuBackend::new`], reusing pipelines already built on this device, with a choice of
    /// convolution kernels (the benchmark compares them).
    pub fn with_kernels(
        ctx: &GpuContext,
        kernels: Kernels,
        model: &Model,
        train: &Dataset,
        params: &[f32],
        config: &TrainConfig,
        variant: Conv2dVariant,
    ) -> Result<Self> {
        let device = &ctx.device;
        let batch = config.batch_size;
        let (mut shapes, dense_shape) = layer_shapes(model, batch, config.l1);
        for shape in &mut shapes {
            if let LayerShape::Conv(s) = shape {
                *s = s.for_adapter(&ctx.info);
            }
        }
        let sample_len: usize = model.input.iter().product();
        let count = model.param_count;

        let step = uniform_buffer(device, "step", &StepParams::default());
        let params_buffer = ctx.upload("params", bytemuck::cast_slice(params), wgpu::BufferUsages::empty())?;
        let grads = f32_buffer(device, "grads", count)?;
        let m = f32_buffer(device, "adam m", count)?;
        let v = f32_buffer(device, "adam v", count)?;
        let x0 = activation_buffer(device, "batch images", batch * sample_len)?;
        let dx0 = activation_buffer(device, "d batch images", batch * sample_len)?;
        let batch_labels = gpu::storage_buffer(device, "batch labels", 4 * batch as u64)?;
        let acts: Vec<wgpu::Buffer> = model.layers[..shapes.len()]
            .iter()
            .map(|l| activation_buffer(device, &format!("{} output", l.name), batch * l.output_len()))
            .collect::<Result<_>>()?;
        let dacts: Vec<wgpu::Buffer> = model.layers[..shapes.len()]
            .iter()
            .map(|l| activation_buffer(device, &format!("d {} output", l.name), batch * l.output_len()))
            .collect::<Result<_>>()?;
        let classes = dense_shape.classes as usize;
        let probs = f32_buffer(device, "probabilities", batch * classes)?;
        let dlogits = f32_buffer(device, "dlogits", batch * classes)?;
        let metrics_capacity = train.len().max(batch);
        let metrics = f32_buffer(device, "metrics", 2 * metrics_capacity)?;
        let train_batches = train.len().div_ceil(batch);
        let penalties = f32_buffer(device, "penalties", train_batches + 1)?;

        // Per convolution, dL/d(pre-activation); one partial-sum scratch shared by all of them.
        let dpres: Vec<Option<wgpu::Buffer>> = shapes
            .iter()
            .map(|shape| match shape {
                LayerShape::Conv(s) => activation_buffer(device, "dpre", s.output_len()).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let partials_len =
            shapes.iter().map(|s| if let LayerShape::Conv(s) = s { s.partials_len() } else { 0 }).max().unwrap_or(0);
        let partials = f32_buffer(device, "conv partial sums", partials_len)?;
        let hidden = shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let x = if i == 0 { &x0 } else { &acts[i - 1] };
                let dx = if i == 0 { &dx0 } else { &dacts[i - 1] };
                let (y, dy) = (&acts[i], &dacts[i]);
                match shape {
                    LayerShape::Conv(s) => Ok(HiddenPass::Conv(kernels.conv2d.bind(
                        device,
                        s,
                        &Conv2dBuffers {
                            step: &step,
                            x,
                            params: &params_buffer,
                            y,
                            dy,
                            dx: (i > 0).then_some(dx),
                            grads: &grads,
                            dpre: dpres[i].as_ref().expect("every convolution has a dpre buffer"),
                            partials: &partials,
                        },
                        variant,
                    )?)),
                    LayerShape::Pool(s) => Ok(HiddenPass::Pool(kernels.maxpool2d.bind(
                        device,
                        s,
                        &ActivationBuffers { step: &step, x, y, dy, dx },
                    ))),
                    LayerShape::Dropout(s) => Ok(HiddenPass::Dropout(kernels.dropout.bind(
                        device,
                        s,
                        &ActivationBuffers { step: &step, x, y, dy, dx },
                    ))),
                }
            })
            .collect::<Result<_>>()?;
        let dense = kernels.dense_softmax.bind(
            device,
            &dense_shape,
            &DenseBuffers {
                step: &step,
                x: acts.last().unwrap_or(&x0),
                params: &params_buffer,
                labels: &batch_labels,
                probs: &probs,
                dlogits: &dlogits,
                metrics: &metrics,
                grads: &grads,
                dx: dacts.last().unwrap_or(&dx0),
                penalties: &penalties,
            },
        );
        let adam_pass = kernels.adam.bind(
            device,
            &config.adam().shape(count),
            &AdamBuffers { step: &step, params: &params_buffer, grads: &grads, m: &m, v: &v },
        );
        let train_data = GpuDataset::upload(device, "training set", &train.images, &train.labels, sample_len)?;
        let train_order = gpu::storage_buffer(device, "training order", 4 * train.len() as u64)?;
        let train_gather = kernels.gather.bind(
            device,
            batch,
            &GatherBuffers { step: &step, data: &train_data, order: &train_order, x: &x0, batch_labels: &batch_labels },
        );

        let mut buffers = vec![grads, dx0, dlogits, partials];
        buffers.extend(dpres.into_iter().flatten());
        buffers.extend(acts);
        buffers.extend(dacts);
        Ok(GpuBackend {
            device: ctx.device.clone(),
            queue: ctx.queue.clone(),
            description: format!("GPU {}", ctx.describe()),
            kernels,
            adam: config.adam(),
            dropout_seed: config.dropout_seed(),
            batch,
            step,
            params: params_buffer,
            m,
            v,
            x0,
            batch_labels,
            metrics,
            penalties,
            probs,
            classes,
            hidden,
            dense,
            adam_pass,
            train_order,
            train_gather,
            metrics_capacity,
            eval_penalty_slot: train_batches,
            steps: 0,
            hidden_names: model.layers[..model.layers.len() - 1].iter().map(|l| l.name.clone()).collect(),
            train_labels: train.labels.clone(),
            live: LiveMetrics::new(device, 2 * metrics_capacity, train_batches)?,
            _buffers: buffers,
            _train_data: train_data,
        })
    }

    fn read_f32(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_slice(&gpu::read_buffer(&self.device, &self.queue, buffer)?).to_vec())
    }

    fn write_step(&self, step: &StepParams) {
        self.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(step));
    }

    /// Per-position metrics `0..positions` and the penalties `0..slots`, read back.
    fn read_metrics(&self, positions: usize) -> Result<(Vec<f32>, Vec<u32>)> {
        let metrics = self.read_f32(&self.metrics)?;
        let losses = (0..positions).map(|p| metrics[2 * p]).collect();
        let predictions = (0..positions).map(|p| metrics[2 * p + 1] as u32).collect();
        Ok((losses, predictions))
    }

    /// Forward passes over `data` in batches, without dropout: per-row metrics, the penalty of
    /// the current weights, and (when `probabilities`) the softmax outputs, read back per batch.
    fn inference(&mut self, data: &Dataset, probabilities: bool) -> Result<(RawMetrics, Vec<f32>)> {
        let sample_len = data.images.len() / data.len().max(1);
        let gpu_data = GpuDataset::upload(&self.device, "evaluation set", &data.images, &data.labels, sample_len)?;
        let order = gpu::storage_buffer(&self.device, "evaluation order", 4 * self.metrics_capacity as u64)?;
        let gather = self.kernels.gather.bind(
            &self.device,
            self.batch,
            &GatherBuffers {
                step: &self.step,
                data: &gpu_data,
                order: &order,
                x: &self.x0,
                batch_labels: &self.batch_labels,
            },
        );
        let (mut raw, mut probs) = (RawMetrics::default(), Vec::new());
        let rows: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in rows.chunks(self.metrics_capacity) {
            self.queue.write_buffer(&order, 0, bytemuck::cast_slice(chunk));
            for (b, batch_start) in (0..chunk.len()).step_by(self.batch).enumerate() {
                let nb = (chunk.len() - batch_start).min(self.batch);
                self.write_step(&StepParams {
                    batch_size: nb as u32,
                    batch_start: batch_start as u32,
                    training: 0,
                    penalty_slot: self.eval_penalty_slot as u32,
                    ..Default::default()
                });
                let mut encoder =
                    self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("inference") });
                {
                    let mut pass = begin_pass(&mut encoder, "inference");
                    gather.record(&mut pass);
                    for layer in &self.hidden {
                        layer.record_forward(&mut pass);
                    }
                    self.dense.record_forward(&mut pass);
                    if b == 0 {
                        self.dense.record_penalty(&mut pass);
                    }
                }
                self.queue.submit([encoder.finish()]);
                if probabilities {
                    let batch_probs = self.read_f32(&self.probs)?;
                    probs.extend_from_slice(&batch_probs[..nb * self.classes]);
                }
            }
            let (losses, predictions) = self.read_metrics(chunk.len())?;
            raw.losses.extend(losses);
            raw.predictions.extend(predictions);
        }
        let penalties = self.read_f32(&self.penalties)?;
        raw.penalties.push(penalties[self.eval_penalty_slot]);
        Ok((raw, probs))
    }

    /// Times the stages of one training step on the first batch of `order` with GPU timestamps,
    /// each stage in a compute pass of its own: (stage, milliseconds). The step really runs (the
    /// weights move). Needs timestamp queries (`wgpu-cnn info` says whether the adapter has them).
    pub fn profile_step(&mut self, order: &[u32]) -> Result<Vec<(String, f64)>> {
        if !self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(crate::Error::invalid(format!(
                "{} has no timestamp queries to profile with",
                self.description
            )));
        }
        self.queue.write_buffer(&self.train_order, 0, bytemuck::cast_slice(order));
        let nb = order.len().min(self.batch);
        self.steps += 1;
        self.write_step(&StepParams {
            batch_size: nb as u32,
            batch_start: 0,
            step: (self.steps - 1) as u32,
            training: 1,
            seed: self.dropout_seed,
            adam_alpha: self.adam.alpha(self.steps),
            penalty_slot: 0,
            _pad: 0,
        });
        let mut stages: Vec<(String, Stage<'_>)> = Vec::new();
        stages.push(("gather".into(), Box::new(|p| self.train_gather.record(p))));
        for (layer, name) in self.hidden.iter().zip(&self.hidden_names) {
            stages.push((format!("{name} forward"), Box::new(move |p| layer.record_forward(p))));
        }
        stages.push(("dense forward (logits, softmax, CE)".into(), Box::new(|p| self.dense.record_forward(p))));
        stages.push(("dense L1 penalty".into(), Box::new(|p| self.dense.record_penalty(p))));
        stages.push(("dense backward".into(), Box::new(|p| self.dense.record_backward(p))));
        for (layer, name) in self.hidden.iter().zip(&self.hidden_names).rev() {
            match layer {
                // A convolution's backward is most of a step: time each of its kernels.
                HiddenPass::Conv(conv) => {
                    for dispatch in conv.backward_dispatches() {
                        stages
                            .push((format!("{name} backward: {}", dispatch.label()), Box::new(|p| dispatch.record(p))));
                    }
                }
                _ => stages.push((format!("{name} backward"), Box::new(move |p| layer.record_backward(p)))),
            }
        }
        stages.push(("adam".into(), Box::new(|p| self.adam_pass.record(p))));

        let count = 2 * stages.len() as u32;
        let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: 8 * u64::from(count),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        for (i, (name, record)) in stages.iter().enumerate() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(name),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &queries,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            record(&mut pass);
        }
        encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
        self.queue.submit([encoder.finish()]);
        let ticks: Vec<u64> = bytemuck::cast_slice(&gpu::read_buffer(&self.device, &self.queue, &resolved)?).to_vec();
        let period_ns = f64::from(self.queue.get_timestamp_period());
        Ok(stages
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                (name.clone(), ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e6)
            })
            .collect())
    }

    /// Dispatches per training step (for reports).
    pub fn dispatches_per_step(&self) -> usize {
        let hidden: usize = self
            .hidden
            .iter()
            .map(|h| match h {
                HiddenPass::Conv(p) => p.dispatches(),
                _ => 2,
            })
            .sum();
        1 + hidden + 2 + 1 + 2 + 1
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn train_epoch(&mut self, order: &[u32], on_step: &mut dyn FnMut(StepProgress)) -> Result<RawMetrics> {
        self.queue.write_buffer(&self.train_order, 0, bytemuck::cast_slice(order));
        let finished = Arc::new(AtomicUsize::new(0));
        let mut reported = 0;
        let steps = order.len().div_ceil(self.batch);
        for b in 0..steps {
            let batch_start = b * self.batch;
            let nb = (order.len() - batch_start).min(self.batch);
            self.steps += 1;
            self.write_step(&StepParams {
                batch_size: nb as u32,
                batch_start: batch_start as u32,
                // The dropout masks are keyed by the 0-based step; Adam's t is 1-based.
                step: (self.steps - 1) as u32,
                training: 1,
                seed: self.dropout_seed,
                adam_alpha: self.adam.alpha(self.steps),
                penalty_slot: b as u32,
                _pad: 0,
            });
            let mut encoder =
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
            {
                let mut pass = begin_pass(&mut encoder, "train step");
                self.train_gather.record(&mut pass);
                for layer in &self.hidden {
                    layer.record_forward(&mut pass);
                }
                self.dense.record_forward(&mut pass);
                self.dense.record_penalty(&mut pass);
                self.dense.record_backward(&mut pass);
                for layer in self.hidden.iter().rev() {
                    layer.record_backward(&mut pass);
                }
                self.adam_pass.record(&mut pass);
            }
            self.live.request(&mut encoder, &self.metrics, &self.penalties, batch_start + nb, b + 1);
            self.queue.submit([encoder.finish()]);
            self.live.map_if_requested();
            let counter = finished.clone();
            self.queue.on_submitted_work_done(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            });
            // Non-blocking: runs the callbacks of finished work (step counter, live readback).
            let _ = self.device.poll(wgpu::PollType::Poll);
            let done = finished.load(Ordering::Relaxed);
            let running = self.live.take(order, &self.train_labels, self.batch);
            if done > reported || running.is_some() {
                reported = reported.max(done);
                on_step(StepProgress { done: reported, running });
            }
        }
        gpu::wait_idle(&self.device)?;
        self.live.reset();
        let (losses, predictions) = self.read_metrics(order.len())?;
        let penalties = self.read_f32(&self.penalties)?[..steps].to_vec();
        let raw = RawMetrics { losses, predictions, penalties };
        let running = raw.summarise(order.iter().map(|&r| self.train_labels[r as usize]), self.batch);
        on_step(StepProgress { done: steps, running: Some(running) });
        Ok(raw)
    }

    fn evaluate(&mut self, data: &Dataset) -> Result<RawMetrics> {
        Ok(self.inference(data, false)?.0)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.read_f32(&self.params)
    }

    fn steps_done(&self) -> u64 {
        self.steps
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState> {
        Ok(OptimizerState { m: self.read_f32(&self.m)?, v: self.read_f32(&self.v)?, steps: self.steps })
    }

    fn set_optimizer_state(&mut self, state: &OptimizerState) -> Result<()> {
        super::cpu::check_state_len(state, (self.m.size() / 4) as usize)?;
        self.queue.write_buffer(&self.m, 0, bytemuck::cast_slice(&state.m));
        self.queue.write_buffer(&self.v, 0, bytemuck::cast_slice(&state.v));
        self.steps = state.steps;
        Ok(())
    }

    fn probabilities(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        Ok(self.inference(data, true)?.1)
    }
}

/// Running metrics during an epoch without stalling the queue: after a step, the metrics written
/// so far are copied into a staging buffer in the same submission and mapped asynchronously;
/// while a copy is in flight no other is requested, so at most one small copy is pending.
struct LiveMetrics {
    staging: wgpu::Buffer,
    penalty_offset: u64,
    /// (positions, steps) of the copy in flight, and whether its mapping has completed.
    in_flight: Option<(usize, usize)>,
    requested: bool,
    mapped: Arc<std::sync::atomic::AtomicBool>,
}

impl LiveMetrics {
    fn new(device: &wgpu::Device, metric_floats: usize, penalty_slots: usize) -> Result<Self> {
        let penalty_offset = 4 * metric_floats as u64;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("live metrics"),
            size: penalty_offset + 4 * (penalty_slots as u64 + 1),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(LiveMetrics { staging, penalty_offset, in_flight: None, requested: false, mapped: Default::default() })
    }

    /// Records a copy of metrics `0..positions` and penalties `0..steps`, unless one is pending.
    fn request(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        metrics: &wgpu::Buffer,
        penalties: &wgpu::Buffer,
        positions: usize,
        steps: usize,
    ) {
        if self.in_flight.is_some() {
            return;
        }
        encoder.copy_buffer_to_buffer(metrics, 0, &self.staging, 0, 8 * positions as u64);
        encoder.copy_buffer_to_buffer(penalties, 0, &self.staging, self.penalty_offset, 4 * steps as u64);
        self.in_flight = Some((positions, steps));
        self.requested = true;
    }

    /// Starts mapping the copy recorded by `request`, after its submission.
    fn map_if_requested(&mut self) {
        if !std::mem::take(&mut self.requested) {
            return;
        }
        let mapped = self.mapped.clone();
        self.staging.slice(..).map_async(wgpu::MapMode::Read, move |result| {
            mapped.store(result.is_ok(), Ordering::Release);
        });
    }

    /// The running (loss, accuracy) once the pending copy has been mapped.
    fn take(&mut self, order: &[u32], labels: &[u8], batch: usize) -> Option<(f64, f64)> {
        let (positions, steps) = self.in_flight?;
        if !self.mapped.swap(false, Ordering::Acquire) {
            return None;
        }
        let running = {
            let view = self.staging.slice(..).get_mapped_range().ok()?;
            let floats: &[f32] = bytemuck::cast_slice(&view);
            let penalty_start = (self.penalty_offset / 4) as usize;
            let raw = RawMetrics {
                losses: (0..positions).map(|p| floats[2 * p]).collect(),
                predictions: (0..positions).map(|p| floats[2 * p + 1] as u32).collect(),
                penalties: floats[penalty_start..penalty_start + steps].to_vec(),
            };
            raw.summarise(order[..positions].iter().map(|&r| labels[r as usize]), batch)
        };
        self.staging.unmap();
        self.in_flight = None;
        Some(running)
    }

    /// After the epoch's final wait: drop a copy whose result nobody will read.
    fn reset(&mut self) {
        if self.in_flight.take().is_some() && self.mapped.swap(false, Ordering::Acquire) {
            self.staging.unmap();
        }
    }
}
