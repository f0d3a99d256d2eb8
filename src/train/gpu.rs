//! Training and inference on the GPU. Everything is built once: pipelines (in the context's
//! [`Kernels`]), buffers, bind groups; each dataset is uploaded once as u8. A training step
//! writes the 32-byte step uniform, records every layer's dispatches into one compute pass of one
//! command encoder, and submits:
//!
//! gather → hidden layers forward → head forward (logits, softmax, CE, dlogits, L1 penalty, and
//! dx) → hidden layers backward (reversed) → Adam over the flat parameter buffer, which first
//! takes the final sums of every layer's split weight-gradient reduction and the head's weight
//! gradient.
//! Neighbouring layers share kernels as [`crate::layers::plan`] decides (a ReLU's backward is a
//! mask, elementwise layers are absorbed, a convolution stores the max-pool after it), and a
//! first convolution reads each batch from the dataset itself, in place of the gather (bound
//! once per dataset it prepares).
//!
//! Nothing is read back during an epoch but the live metrics for the progress bar, through a
//! copy that never stalls the queue: the per-sample loss and prediction land in a metrics buffer
//! indexed by position in the epoch, read once at its end.
//!
//! [`GpuInference`] is the forward pass alone (evaluation, prediction): no gradient, Adam or
//! training-set buffers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{
    check_engine_inputs, check_moments, DataId, Engine, EpochProgress, Inference, Moments, Pending, RawMetrics, Step,
    TrainConfig,
};
use crate::adam::{self, AdamBuffers, Taken};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gather::{self, BatchSource, GpuDataset};
use crate::gpu::{self, read_buffer_async, uniform_buffer, GpuContext, Readback};
use crate::kernel::{begin_pass, floats, Dispatch, Kernels};
use crate::layers::dense_softmax::DenseGradient;
use crate::layers::{
    Ctx, GpuGrads, GpuHead, GpuLayer, HiddenLayer, LayerPass, Placement, RunSettings, StepParams, Tuning,
};
use crate::model::{Model, Placed, Weights};
use crate::partial_sums::Segments;

/// A prepared dataset: its upload, the order buffer evaluation writes, and how its batches
/// reach the net.
struct GpuData {
    rows: usize,
    order: wgpu::Buffer,
    input: BatchInput,
    _data: GpuDataset,
}

/// How a dataset's batches reach the first layer.
enum BatchInput {
    /// The gather writes each into `x0`, which the net's first layer reads.
    Gather(Dispatch),
    /// The first layer reads the dataset itself ([`crate::layers::GpuFusion::reads_dataset`]):
    /// its pass bound to this dataset, which stands in for the net's.
    FirstLayer(LayerPass),
}

/// A first layer that reads each dataset itself, bound again for each: the layer, and what the
/// plan bound it with.
struct FirstLayer {
    layer: Placed<dyn HiddenLayer>,
    run: RunSettings,
    placement: Placement,
    y: wgpu::Buffer,
    /// In training: its dy and the gradients.
    training: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// The forward net on one device, shared by training, inference and the embedders' classifier
/// ([`crate::classify::Classifier`]).
pub(crate) struct GpuNet {
    pub(crate) device: wgpu::Device,
    queue: wgpu::Queue,
    description: String,
    pub(crate) kernels: Kernels,
    tuning: Tuning,
    pub(crate) batch: usize,
    pub(crate) classes: usize,
    /// Values per sample.
    sample_len: usize,
    /// The per-step uniform ([`StepParams`]).
    pub(crate) step: wgpu::Buffer,
    pub(crate) params: wgpu::Buffer,
    pub(crate) state: wgpu::Buffer,
    /// The first layer's input `[batch, H, W, C]`.
    pub(crate) x0: wgpu::Buffer,
    batch_labels: wgpu::Buffer,
    metrics: wgpu::Buffer,
    penalties: wgpu::Buffer,
    /// `[batch, classes]` the head's softmax outputs.
    pub(crate) probs: wgpu::Buffer,
    hidden: Vec<LayerPass>,
    /// Set when the first layer reads each dataset itself. `hidden[0]` is then bound on `x0` only
    /// for the classifier, whose input is not a dataset (`x0_input`), and is empty otherwise.
    first: Option<FirstLayer>,
    head: LayerPass,
    /// Keras names of the hidden layers, for the per-stage profile: of each one's forward and
    /// backward pass (with the layers it takes).
    hidden_names: Vec<[String; 2]>,
    datasets: Vec<GpuData>,
    /// Positions the metrics buffer holds: evaluation runs in chunks of this many rows.
    metrics_capacity: usize,
    /// The penalty slot evaluation writes to (after one per training batch).
    eval_penalty_slot: usize,
    /// Elements of the model's `state` (its buffer is never empty).
    state_len: usize,
    /// Where the layers write their split weight-gradient reductions' partial sums, in training.
    scratch: wgpu::Buffer,
    // Kept alive with the bind groups.
    _buffers: Vec<wgpu::Buffer>,
}

/// Buffer `i` of those the fusion plan keeps.
fn bound(buffers: &[Option<wgpu::Buffer>], i: usize) -> &wgpu::Buffer {
    buffers[i].as_ref().expect("the fusion plan binds only the buffers it keeps")
}

fn f32_buffer(device: &wgpu::Device, label: &str, len: usize) -> Result<wgpu::Buffer> {
    gpu::storage_buffer(device, label, floats(len))
}

/// A layer's input, output or gradient: rounded up to whole vec4s, since the convolution
/// kernels read some of them as vec4s.
fn activation_buffer(device: &wgpu::Device, label: &str, len: usize) -> Result<wgpu::Buffer> {
    f32_buffer(device, label, len.next_multiple_of(4))
}

impl GpuNet {
    /// Every layer of `model` bound for batches of `config.batch_size`, with `grads` for
    /// training; the metrics buffer holds `metrics_capacity` positions and the penalties buffer
    /// `penalty_slots` slots plus the evaluation's. With `x0_input`, the first layer also reads
    /// `x0` ([`GpuNet::record_forward`]) when it reads each dataset itself.
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &GpuContext,
        model: &Model,
        weights: &Weights,
        config: &TrainConfig,
        grads: Option<&wgpu::Buffer>,
        naive: bool,
        metrics_capacity: usize,
        penalty_slots: usize,
        x0_input: bool,
    ) -> Result<Self> {
        let device = &ctx.device;
        let (batch, run) = (config.batch_size, config.run_settings());
        let tuning = Tuning::for_adapter(&ctx.info);
        let kernels = &ctx.kernels;
        let step = uniform_buffer(device, "step", &StepParams::default());
        let params = ctx.upload("params", bytemuck::cast_slice(&weights.params), wgpu::BufferUsages::empty())?;
        let state = ctx.upload("state", bytemuck::cast_slice(&weights.state), wgpu::BufferUsages::empty())?;
        let sample_len: usize = model.input.iter().product();
        let x0 = activation_buffer(device, "batch images", batch * sample_len)?;
        let batch_labels = gpu::storage_buffer(device, "batch labels", floats(batch))?;
        let classes = model.classes();
        let probs = f32_buffer(device, "probabilities", batch * classes)?;
        let metrics = f32_buffer(device, "metrics", 2 * metrics_capacity)?;
        let penalties = f32_buffer(device, "penalties", penalty_slots + 1)?;

        // Which layers neighbours absorb, and where each binds (src/layers/fusion.rs).
        let mut fusions: Vec<_> =
            model.hidden.iter().map(|p| p.layer.gpu_fusion(&Ctx { at: &p.at, batch, run })).collect();
        // A first layer that reads each dataset itself is bound per dataset (`prepare`).
        let reads_dataset = !naive && fusions.first().is_some_and(|f| f.reads_dataset);
        // Pooling its output is the tiled kernels' reading x from a buffer.
        for (i, f) in fusions.iter_mut().enumerate() {
            f.pools_output &= !(naive || i == 0 && reads_dataset);
        }
        let plan = crate::layers::plan(&fusions, model.head.layer.gpu_fusion());
        // The activations and gradients some layer binds: an absorbed layer's neighbours write
        // past it, into the next layer's output and the previous layer's gradient.
        let kept = |i: usize, keep: bool, what: &str| -> Result<Option<wgpu::Buffer>> {
            let p = &model.hidden[i];
            keep.then(|| activation_buffer(device, &format!("{what}{} output", p.at.name), batch * p.at.output_len()))
                .transpose()
        };
        let acts = (0..model.hidden.len())
            .map(|i| kept(i, plan.hidden.iter().any(|at| !at.absorbed && at.y == i), ""))
            .collect::<Result<Vec<_>>>()?;
        let dacts = (0..model.hidden.len())
            .map(|i| kept(i, grads.is_some() && !plan.hidden[i].absorbed, "d "))
            .collect::<Result<Vec<_>>>()?;
        // Each layer's region of the partial-sum scratch, on 4-float boundaries (training only).
        let mut scratch_offsets = Vec::with_capacity(model.hidden.len());
        let mut scratch_len = 0;
        for p in &model.hidden {
            scratch_offsets.push(scratch_len as u32);
            if grads.is_some() {
                let len = p.layer.gpu_scratch_len(&Ctx { at: &p.at, batch, run }, tuning, naive);
                scratch_len += len.next_multiple_of(4);
            }
        }
        let scratch = f32_buffer(device, "partial-sum scratch", scratch_len.max(4))?;
        let hidden = model
            .hidden
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = &plan.hidden[i];
                if at.absorbed || (i == 0 && reads_dataset && !x0_input) {
                    return Ok(LayerPass::default());
                }
                debug_assert!(
                    at.mask_dx.dropout.is_none() || fusions[i].masks_dropout,
                    "the plan keeps keep masks to layers that recompute them"
                );
                let gpu = GpuLayer {
                    kernels,
                    tuning,
                    naive,
                    step: &step,
                    params: &params,
                    state: &state,
                    x: if i == 0 { &x0 } else { bound(&acts, i - 1) },
                    y: bound(&acts, at.y),
                    source: None,
                    backward: grads.map(|grads| GpuGrads {
                        dy: bound(&dacts, i),
                        dx: at.dx.map(|before| bound(&dacts, before)),
                        grads,
                        scratch: &scratch,
                        scratch_offset: scratch_offsets[i],
                        dy_masked: at.dy_masked,
                        mask_dx: at.mask_dx,
                    }),
                    epilogue: at.epilogue,
                    pooled: at.pooled.map(|j| bound(&acts, j)),
                    forward_by_before: at.forward_by_before,
                };
                p.layer.bind_gpu(&Ctx { at: &p.at, batch, run }, &gpu)
            })
            .collect::<Result<Vec<_>>>()?;
        let gpu_head = GpuHead {
            kernels,
            tuning,
            step: &step,
            params: &params,
            x: acts.len().checked_sub(1).map_or(&x0, |last| bound(&acts, last)),
            labels: &batch_labels,
            probs: &probs,
            metrics: &metrics,
            penalties: &penalties,
            backward: grads.map(|grads| (plan.head_dx.map(|i| bound(&dacts, i)), grads)),
            mask_dx: plan.head_mask,
            gradient_to_adam: true,
        };
        let head = model.head.layer.bind_gpu(&Ctx { at: &model.head.at, batch, run }, &gpu_head)?;
        let first = reads_dataset.then(|| FirstLayer {
            layer: model.hidden[0].clone(),
            run,
            placement: plan.hidden[0],
            y: bound(&acts, plan.hidden[0].y).clone(),
            training: grads.map(|grads| (bound(&dacts, 0).clone(), grads.clone())),
        });
        Ok(GpuNet {
            device: ctx.device.clone(),
            queue: ctx.queue.clone(),
            description: format!("GPU {}", ctx.describe()),
            kernels: kernels.clone(),
            tuning,
            batch,
            classes,
            sample_len,
            step,
            params,
            state,
            x0,
            batch_labels,
            metrics,
            penalties,
            probs,
            hidden,
            first,
            head,
            // A layer that applies the next ones' functions is named with them: "conv2d_3 +
            // dropout" (the layers up to the one whose output it writes), and its forward pass
            // with a max-pool it takes as well.
            hidden_names: (0..model.hidden.len())
                .map(|i| {
                    let at = &plan.hidden[i];
                    let names = |last: usize| {
                        model.hidden[i..=last].iter().map(|p| p.at.name.as_str()).collect::<Vec<_>>().join(" + ")
                    };
                    [names(at.pooled.unwrap_or(at.y)), names(at.y)]
                })
                .collect(),
            datasets: Vec::new(),
            metrics_capacity,
            eval_penalty_slot: penalty_slots,
            state_len: weights.state.len(),
            scratch,
            _buffers: acts.into_iter().chain(dacts).flatten().collect(),
        })
    }

    /// The forward pass alone, for batches of `config.batch_size`, with metrics for `capacity`
    /// positions: over prepared datasets (inference), and with `x0_input` over batches written
    /// into `x0` (the classifier).
    pub(crate) fn forward_only(
        ctx: &GpuContext,
        model: &Model,
        weights: &Weights,
        config: &TrainConfig,
        capacity: usize,
        x0_input: bool,
    ) -> Result<Self> {
        Self::new(ctx, model, weights, config, None, false, capacity, 0, x0_input)
    }

    /// Uploads `data` with an order buffer of `order_len` rows, and binds how its batches reach
    /// the net: the gather, or the first layer bound to read it (with its backward pass when
    /// `training`).
    fn prepare(&mut self, name: &str, data: &Dataset, order_len: usize, training: bool) -> Result<DataId> {
        super::check_labels(data, self.classes, name)?;
        if !data.is_empty() && data.images.len() != data.len() * self.sample_len {
            return Err(Error::invalid(format!(
                "{name}: {} image bytes for {} samples, where the model takes {} values a sample",
                data.images.len(),
                data.len(),
                self.sample_len
            )));
        }
        let sample_len = if data.is_empty() { 4 } else { self.sample_len };
        let upload = GpuDataset::upload(&self.device, name, &data.images, &data.labels, sample_len)?;
        let order = gpu::storage_buffer(&self.device, &format!("{name} order"), floats(order_len.max(1)))?;
        let source = BatchSource { data: &upload, order: &order, batch_labels: &self.batch_labels };
        let input = match &self.first {
            Some(first) => BatchInput::FirstLayer(self.bind_first(first, source, training)?),
            None => BatchInput::Gather(gather::bind(&self.kernels, self.batch, &self.step, &source, &self.x0)?),
        };
        self.datasets.push(GpuData { rows: data.len(), order, input, _data: upload });
        Ok(DataId(self.datasets.len() - 1))
    }

    /// The first layer bound to read `source`, as the plan placed it; in training, with its
    /// backward pass.
    fn bind_first(&self, first: &FirstLayer, source: BatchSource<'_>, training: bool) -> Result<LayerPass> {
        let at = &first.placement;
        let gpu = GpuLayer {
            kernels: &self.kernels,
            tuning: self.tuning,
            naive: false,
            step: &self.step,
            params: &self.params,
            state: &self.state,
            x: &self.x0,
            y: &first.y,
            source: Some(source),
            backward: first.training.as_ref().filter(|_| training).map(|(dy, grads)| GpuGrads {
                dy,
                dx: None,
                grads,
                scratch: &self.scratch,
                // The first layer's region opens the scratch.
                scratch_offset: 0,
                dy_masked: at.dy_masked,
                mask_dx: at.mask_dx,
            }),
            epilogue: at.epilogue,
            // A layer reading the dataset does not pool (`GpuNet::new`), and a first layer has
            // none before it.
            pooled: None,
            forward_by_before: false,
        };
        first.layer.layer.bind_gpu(&Ctx { at: &first.layer.at, batch: self.batch, run: first.run }, &gpu)
    }

    /// The hidden layers' passes over `data`'s batches, first to last, and the gather before
    /// them, if they need one.
    fn passes<'a>(
        &'a self,
        data: &'a GpuData,
    ) -> (Option<&'a Dispatch>, impl DoubleEndedIterator<Item = &'a LayerPass> + Clone) {
        let (gather, first) = match &data.input {
            BatchInput::Gather(gather) => (Some(gather), self.hidden.first()),
            BatchInput::FirstLayer(first) => (None, Some(first)),
        };
        (gather, first.into_iter().chain(self.hidden.iter().skip(1)))
    }

    fn data(&self, id: DataId) -> Result<&GpuData> {
        self.datasets.get(id.0).ok_or_else(|| Error::invalid(format!("no dataset {} was prepared", id.0)))
    }

    fn write_step(&self, step: &StepParams) {
        self.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(step));
    }

    /// Records the forward pass of `data`'s batch (the step uniform set for it): the gather if
    /// there is one, every hidden layer, then the head's probabilities.
    fn record_batch_forward(&self, data: &GpuData, pass: &mut wgpu::ComputePass<'_>) {
        let (gather, layers) = self.passes(data);
        gather.iter().for_each(|g| g.record(pass));
        layers.for_each(|l| l.record_forward(pass));
        self.head.record_forward(pass);
    }

    /// Records the forward pass of the batch in `x0` (the step uniform set for it): every hidden
    /// layer, then the head's probabilities. Only for a net built with `x0_input`.
    pub(crate) fn record_forward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for layer in &self.hidden {
            layer.record_forward(pass);
        }
        self.head.record_forward(pass);
    }

    /// Dispatches [`GpuNet::record_forward`] records (a net built with `x0_input`).
    pub(crate) fn forward_dispatches(&self) -> usize {
        self.hidden.iter().map(|l| l.forward.len()).sum::<usize>() + self.head.forward.len()
    }

    async fn read_f32(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_slice(&read_buffer_async(&self.device, &self.queue, buffer).await?).to_vec())
    }

    /// Forward passes over `data` in batches, without dropout: per-row metrics, the penalty of
    /// the current weights, and (when `probabilities`) the softmax outputs, read back per batch.
    async fn inference(&self, id: DataId, probabilities: bool) -> Result<(RawMetrics, Vec<f32>)> {
        let data = self.data(id)?;
        let (mut raw, mut probs) = (RawMetrics::default(), Vec::new());
        let rows: Vec<u32> = (0..data.rows as u32).collect();
        for chunk in rows.chunks(self.metrics_capacity) {
            self.queue.write_buffer(&data.order, 0, bytemuck::cast_slice(chunk));
            for batch_start in (0..chunk.len()).step_by(self.batch) {
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
                    self.record_batch_forward(data, &mut pass);
                }
                self.queue.submit([encoder.finish()]);
                if probabilities {
                    let batch_probs = self.read_f32(&self.probs).await?;
                    probs.extend_from_slice(&batch_probs[..nb * self.classes]);
                }
            }
            let metrics = self.read_f32(&self.metrics).await?;
            raw.losses.extend((0..chunk.len()).map(|p| metrics[2 * p]));
            raw.predictions.extend((0..chunk.len()).map(|p| metrics[2 * p + 1] as u32));
        }
        let penalties = self.read_f32(&self.penalties).await?;
        raw.penalties.push(penalties[self.eval_penalty_slot]);
        Ok((raw, probs))
    }
}

/// The [`Inference`] methods of both GPU engines, over their forward net `self.net`.
macro_rules! gpu_inference {
    () => {
        fn describe(&self) -> String {
            self.net.description.clone()
        }

        fn prepare(&mut self, data: &Dataset) -> Result<DataId> {
            let capacity = self.net.metrics_capacity;
            self.net.prepare("evaluation set", data, data.len().min(capacity), false)
        }

        fn evaluate(&mut self, data: DataId) -> Pending<'_, RawMetrics> {
            Box::pin(async move { Ok(self.net.inference(data, false).await?.0) })
        }

        fn probabilities(&mut self, data: DataId) -> Pending<'_, Vec<f32>> {
            Box::pin(async move { Ok(self.net.inference(data, true).await?.1) })
        }
    };
}

/// A model, its optimiser state, activations and training set, resident on one device.
pub struct GpuEngine {
    net: GpuNet,
    /// Bound into the layers' backward passes and Adam's dispatch.
    _grads: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    adam: Dispatch,
    count: usize,
    /// Rows of the epoch so far, and steps submitted.
    positions: usize,
    submitted: usize,
    epoch_rows: usize,
    finished: Arc<AtomicUsize>,
    live: LiveMetrics,
    _adam_shape: wgpu::Buffer,
    /// What Adam's dispatch takes (kept alive with its bind group).
    _taken: (Segments, DenseGradient),
    /// The per-step uniforms of one submission, [`MAX_STEPS_PER_SUBMIT`] of them: each step's is
    /// copied into the step uniform before its pass, in the same encoder.
    step_table: wgpu::Buffer,
    steps_per_submit: usize,
}

/// Training steps the GPU engine records into one submission by default: the host's gap between
/// submissions comes once per this many steps. Results are bit-identical for any count.
pub const STEPS_PER_SUBMIT: usize = 8;

/// The most steps one submission can hold ([`GpuEngine::set_steps_per_submit`]).
pub const MAX_STEPS_PER_SUBMIT: usize = 64;

impl GpuEngine {
    /// Builds every pipeline (or takes it from `ctx.kernels`) and buffer for training `model`
    /// from `weights` on `train`.
    pub fn new(
        ctx: &GpuContext,
        model: &Model,
        train: &Dataset,
        weights: &Weights,
        config: &TrainConfig,
    ) -> Result<Self> {
        Self::with_kernels(ctx, model, train, weights, config, false)
    }

    /// As [`GpuEngine::new`], with the naive baseline kernels where layers have them when
    /// `naive` (the benchmarks compare).
    pub fn with_kernels(
        ctx: &GpuContext,
        model: &Model,
        train: &Dataset,
        weights: &Weights,
        config: &TrainConfig,
        naive: bool,
    ) -> Result<Self> {
        check_engine_inputs(model, weights, config)?;
        let device = &ctx.device;
        let batch = config.batch_size;
        let count = model.param_count;
        let grads = f32_buffer(device, "grads", count)?;
        let train_batches = train.len().div_ceil(batch);
        let (capacity, slots) = (train.len().max(batch), train_batches);
        let mut net = GpuNet::new(ctx, model, weights, config, Some(&grads), naive, capacity, slots, false)?;
        net.prepare("training set", train, train.len(), true)?;
        let m = f32_buffer(device, "adam m", count)?;
        let v = f32_buffer(device, "adam v", count)?;
        // What Adam's dispatch takes before it updates: the final sums of every layer's split
        // weight-gradient reductions ([`crate::partial_sums`]; the first layer's as bound to the
        // training set), over the scratch where the layers write them, and the head's weight
        // gradient.
        let (_, layers) = net.passes(&net.datasets[0]);
        let sums: Vec<_> = layers.flat_map(|l| l.sums.iter().copied()).collect();
        let segments = Segments::upload(device, &sums, count)?;
        let dense = match net.head.dense_gradient.take() {
            Some(dense) => dense,
            None => DenseGradient::none(device)?,
        };
        let taken = Taken { segments: &segments, scratch: &net.scratch, dense: &dense };
        let buffers =
            AdamBuffers { step: &net.step, params: &net.params, grads: &grads, m: &m, v: &v, taken: Some(taken) };
        let (adam, adam_shape) = adam::bind(&ctx.kernels, &config.adam().shape(count), &buffers)?;
        let step_table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step table"),
            size: (MAX_STEPS_PER_SUBMIT * std::mem::size_of::<StepParams>()) as u64,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuEngine {
            net,
            _grads: grads,
            m,
            v,
            adam,
            count,
            positions: 0,
            submitted: 0,
            epoch_rows: 0,
            finished: Arc::new(AtomicUsize::new(0)),
            live: LiveMetrics::default(),
            _adam_shape: adam_shape,
            _taken: (segments, dense),
            step_table,
            steps_per_submit: STEPS_PER_SUBMIT,
        })
    }

    /// The flat f32 parameters on the device, in the model's layout (each layer's tensors,
    /// [`Model::layers`]): the buffer Adam updates every step, `STORAGE | COPY_SRC | COPY_DST`,
    /// for an application to bind, copy or read between steps.
    pub fn params_buffer(&self) -> &wgpu::Buffer {
        &self.net.params
    }

    /// The flat f32 non-trainable tensors (batch normalisation's moving statistics, which the
    /// training steps move), in the model's layout, `STORAGE | COPY_SRC | COPY_DST`.
    pub fn state_buffer(&self) -> &wgpu::Buffer {
        &self.net.state
    }

    /// Dispatches per training step (for reports): the gather, every layer's, Adam (with the
    /// partial sums and the head's weight gradient).
    pub fn dispatches_per_step(&self) -> usize {
        self.step_dispatches().count()
    }

    /// The bytes a training step's dispatches touch, each dispatch's buffers counted once
    /// ([`Dispatch::bytes`]): the memory side of a roofline.
    pub fn bytes_per_step(&self) -> u64 {
        self.step_dispatches().map(Dispatch::bytes).sum()
    }

    /// A training step's dispatches, in the order they are recorded: the gather (unless the
    /// first layer reads the training set itself), every layer's forward, the head's (its
    /// penalty and dx; its backward is empty when Adam takes its weight gradient), the hidden
    /// layers' backward in reverse, Adam (with the partial sums and the head's weight gradient).
    fn step_dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        let net = &self.net;
        let (gather, layers) = net.passes(&net.datasets[0]);
        let forward = layers.clone().chain([&net.head]).flat_map(|l| &l.forward);
        gather
            .into_iter()
            .chain(forward)
            .chain(&net.head.backward)
            .chain(layers.rev().flat_map(|l| &l.backward))
            .chain([&self.adam])
    }

    /// Sets how many training steps the engine records into one submission (1 to
    /// [`MAX_STEPS_PER_SUBMIT`]; default [`STEPS_PER_SUBMIT`]).
    pub fn set_steps_per_submit(&mut self, steps: usize) -> Result<()> {
        if !(1..=MAX_STEPS_PER_SUBMIT).contains(&steps) {
            return Err(Error::Setting {
                setting: "steps_per_submit",
                message: format!("must be between 1 and {MAX_STEPS_PER_SUBMIT}, got {steps}"),
            });
        }
        self.steps_per_submit = steps;
        Ok(())
    }

    /// Pipelines compiled on the device so far.
    pub fn pipelines(&self) -> usize {
        self.net.kernels.pipeline_count()
    }

    /// Records one training step's dispatches.
    fn record_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.step_dispatches().for_each(|d| d.record(pass));
    }

    /// One submission of at most [`MAX_STEPS_PER_SUBMIT`] consecutive steps (see
    /// [`Engine::train_steps`]).
    fn submit_steps(&mut self, steps: &[Step]) -> Result<()> {
        for step in steps {
            super::check_step(step, self.epoch_rows, self.net.batch)?;
        }
        let Some(last) = steps.last() else { return Ok(()) };
        let net = &self.net;
        let table: Vec<StepParams> = steps.iter().map(Self::step_params).collect();
        net.queue.write_buffer(&self.step_table, 0, bytemuck::cast_slice(&table));
        let row = std::mem::size_of::<StepParams>() as u64;
        let mut encoder =
            net.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train steps") });
        for k in 0..steps.len() as u64 {
            encoder.copy_buffer_to_buffer(&self.step_table, k * row, &net.step, 0, row);
            self.record_step(&mut begin_pass(&mut encoder, "train step"));
        }
        (self.positions, self.submitted) = (last.start + last.len, self.submitted + steps.len());
        self.live.request(&net.device, &mut encoder, &net.metrics, &net.penalties, self.positions, self.submitted);
        net.queue.submit([encoder.finish()]);
        self.live.map_if_requested();
        let (counter, done) = (self.finished.clone(), steps.len());
        net.queue.on_submitted_work_done(move || {
            counter.fetch_add(done, Ordering::Relaxed);
        });
        Ok(())
    }

    fn step_params(step: &Step) -> StepParams {
        StepParams {
            batch_size: step.len as u32,
            batch_start: step.start as u32,
            step: step.dropout_step(),
            training: 1,
            adam_alpha: step.alpha,
            penalty_slot: step.batch as u32,
            _pad: [0; 2],
        }
    }

    /// Times the stages of training step `step` of the epoch begun with [`Engine::begin_epoch`]
    /// with GPU timestamps, each stage in a compute pass of its own: (stage, milliseconds). The
    /// step really runs (the weights move). Needs timestamp queries (`wgpu-cnn info` says
    /// whether the adapter has them).
    pub fn profile_step(&mut self, step: &Step) -> Result<Vec<(String, f64)>> {
        let net = &self.net;
        if !net.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::invalid(format!("{} has no timestamp queries to profile with", net.description)));
        }
        net.write_step(&Self::step_params(step));
        type Stage<'a> = Box<dyn Fn(&mut wgpu::ComputePass<'_>) + 'a>;
        fn each(d: &Dispatch) -> Stage<'_> {
            Box::new(move |p| d.record(p))
        }
        let (gather, layers) = net.passes(&net.datasets[0]);
        let layers: Vec<&LayerPass> = layers.collect();
        let mut stages: Vec<(String, Stage<'_>)> = gather.map(|g| ("gather".into(), each(g))).into_iter().collect();
        // An absorbed layer has no stage of its own: its neighbours' include it. A first layer
        // that reads the dataset is named for the gather it does.
        for (i, (&layer, name)) in
            layers.iter().zip(&net.hidden_names).enumerate().filter(|(_, (l, _))| !l.forward.is_empty())
        {
            let name = if i == 0 && gather.is_none() { format!("gather + {}", name[0]) } else { name[0].clone() };
            stages.push((format!("{name} forward"), Box::new(move |p| layer.record_forward(p))));
        }
        // The head's kernels each on their own: what each fuses is in its entry point's name.
        for (part, dispatches) in [("forward", &net.head.forward), ("backward", &net.head.backward)] {
            for dispatch in dispatches {
                stages.push((format!("head {part}: {}", dispatch.entry_point()), each(dispatch)));
            }
        }
        for (&layer, name) in layers.iter().zip(&net.hidden_names).rev() {
            // A layer's backward may be several kernels (a convolution's is most of a step):
            // each is timed on its own.
            for dispatch in &layer.backward {
                stages.push((format!("{} backward: {}", name[1], dispatch.entry_point()), each(dispatch)));
            }
        }
        stages.push(("every layer's partial sums + the head's weight gradient + adam".into(), each(&self.adam)));

        let count = 2 * stages.len() as u32;
        let queries = net.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = net.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps"),
            size: 8 * u64::from(count),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut encoder = net.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
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
        net.queue.submit([encoder.finish()]);
        let ticks: Vec<u64> = bytemuck::cast_slice(&gpu::read_buffer(&net.device, &net.queue, &resolved)?).to_vec();
        let period_ns = f64::from(net.queue.get_timestamp_period());
        Ok(stages
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                (name.clone(), ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1e6)
            })
            .collect())
    }
}

impl Inference for GpuEngine {
    gpu_inference!();
}

impl Engine for GpuEngine {
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let train = &self.net.datasets[0];
        if order.len() > train.rows || order.iter().any(|&r| r as usize >= train.rows) {
            return Err(Error::invalid(format!(
                "an epoch's order of {} rows does not fit a training set of {}",
                order.len(),
                train.rows
            )));
        }
        self.net.queue.write_buffer(&train.order, 0, bytemuck::cast_slice(order));
        self.live.reset();
        (self.positions, self.submitted, self.epoch_rows) = (0, 0, order.len());
        self.finished.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn train_step(&mut self, step: &Step) -> Result<()> {
        self.train_steps(std::slice::from_ref(step))
    }

    /// Records `steps` into one submission: the step table is written once, and before each
    /// step's pass a copy puts its row into the step uniform, so no host work comes between them.
    fn train_steps(&mut self, steps: &[Step]) -> Result<()> {
        for chunk in steps.chunks(MAX_STEPS_PER_SUBMIT) {
            self.submit_steps(chunk)?;
        }
        Ok(())
    }

    fn steps_per_call(&self) -> usize {
        self.steps_per_submit
    }

    fn progress(&mut self) -> EpochProgress {
        // Runs the callbacks of finished work (the step counter, the live readback).
        let _ = self.net.device.poll(wgpu::PollType::Poll);
        EpochProgress { steps_done: self.finished.load(Ordering::Relaxed), metrics: self.live.take() }
    }

    fn epoch_metrics(&mut self) -> Pending<'_, RawMetrics> {
        Box::pin(async move {
            let metrics = self.net.read_f32(&self.net.metrics).await?;
            let penalties = self.net.read_f32(&self.net.penalties).await?;
            self.live.reset();
            Ok(RawMetrics {
                losses: (0..self.positions).map(|p| metrics[2 * p]).collect(),
                predictions: (0..self.positions).map(|p| metrics[2 * p + 1] as u32).collect(),
                penalties: penalties[..self.submitted].to_vec(),
            })
        })
    }

    fn weights(&mut self) -> Pending<'_, Weights> {
        Box::pin(async move {
            let mut params = self.net.read_f32(&self.net.params).await?;
            let mut state = self.net.read_f32(&self.net.state).await?;
            // Buffers are padded to whole words and never empty.
            params.truncate(self.count);
            state.truncate(self.net.state_len);
            Ok(Weights { params, state })
        })
    }

    fn moments(&mut self) -> Pending<'_, Moments> {
        Box::pin(async move {
            let m = self.net.read_f32(&self.m).await?;
            let v = self.net.read_f32(&self.v).await?;
            Ok(Moments { m: m[..self.count].to_vec(), v: v[..self.count].to_vec() })
        })
    }

    fn set_moments(&mut self, moments: &Moments) -> Result<()> {
        check_moments(moments, self.count)?;
        self.net.queue.write_buffer(&self.m, 0, bytemuck::cast_slice(&moments.m));
        self.net.queue.write_buffer(&self.v, 0, bytemuck::cast_slice(&moments.v));
        Ok(())
    }
}

/// A trained model's forward pass on one device: evaluation and prediction, without any of
/// training's buffers (gradients, Adam's moments, the training set).
pub struct GpuInference {
    net: GpuNet,
}

/// Positions the inference engine's metrics buffer holds: evaluation reads back every this many.
const INFERENCE_CHUNK: usize = 16_384;

impl GpuInference {
    /// `model` with `weights`, for batches of `config.batch_size`; the penalty reported with
    /// the metrics is that of `config`'s L1 weight (the run's, for a trained model).
    pub fn new(ctx: &GpuContext, model: &Model, weights: &Weights, config: &TrainConfig) -> Result<Self> {
        check_engine_inputs(model, weights, config)?;
        let capacity = INFERENCE_CHUNK.max(config.batch_size);
        Ok(GpuInference { net: GpuNet::forward_only(ctx, model, weights, config, capacity, false)? })
    }

    /// Dispatches per batch of inference over `data` (from [`Inference::prepare`]): the gather
    /// (unless the first layer reads the dataset itself), then the forward pass.
    pub fn dispatches_per_batch(&self, data: DataId) -> Result<usize> {
        let (gather, layers) = self.net.passes(self.net.data(data)?);
        Ok(usize::from(gather.is_some()) + layers.chain([&self.net.head]).map(|l| l.forward.len()).sum::<usize>())
    }
}

impl Inference for GpuInference {
    gpu_inference!();
}

/// Running metrics during an epoch without stalling the queue: after a step, the metrics written
/// so far are copied into a staging buffer in the same submission and mapped asynchronously;
/// while a copy is in flight no other is requested, so at most one small copy is pending.
#[derive(Default)]
struct LiveMetrics {
    /// The copy in flight, with the positions and steps it holds.
    in_flight: Option<(Readback, usize, usize)>,
    requested: bool,
}

impl LiveMetrics {
    /// Records a copy of metrics `0..positions` and penalties `0..steps`, unless one is pending.
    fn request(
        &mut self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        metrics: &wgpu::Buffer,
        penalties: &wgpu::Buffer,
        positions: usize,
        steps: usize,
    ) {
        if self.in_flight.is_some() {
            return;
        }
        let ranges = [(metrics, 0, 8 * positions as u64), (penalties, 0, 4 * steps as u64)];
        self.in_flight = Some((Readback::record(device, encoder, &ranges), positions, steps));
        self.requested = true;
    }

    /// Starts mapping the copy recorded by `request`, after its submission.
    fn map_if_requested(&mut self) {
        if std::mem::take(&mut self.requested) {
            if let Some((readback, ..)) = &mut self.in_flight {
                readback.map();
            }
        }
    }

    /// The metrics of the pending copy once it has landed.
    fn take(&mut self) -> Option<RawMetrics> {
        let (readback, positions, steps) = self.in_flight.as_mut()?;
        let (positions, steps) = (*positions, *steps);
        let bytes = readback.try_take()?;
        self.in_flight = None;
        let bytes = bytes.ok()?;
        let floats: &[f32] = bytemuck::cast_slice(&bytes);
        Some(RawMetrics {
            losses: (0..positions).map(|p| floats[2 * p]).collect(),
            predictions: (0..positions).map(|p| floats[2 * p + 1] as u32).collect(),
            penalties: floats[2 * positions..2 * positions + steps].to_vec(),
        })
    }

    /// Drops a copy whose result nobody will read.
    fn reset(&mut self) {
        self.in_flight = None;
        self.requested = false;
    }
}
