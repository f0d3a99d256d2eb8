//! [`FastCpuBackend`]: the training step of [`crate::train::cpu::CpuBackend`] — the same layers
//! in the same order, the same dropout masks, the same batch-mean loss, Adam as
//! [`crate::layers::adam::update`] — built from the fast layers of [`crate::fast`].
//!
//! # A step
//! 1. Pack every layer's weights once ([`ConvPlan::pack_forward`], ...).
//! 2. Run the batch through the net in micro-batches of [`MICRO_BATCH`] images: gather,
//!    forward through every layer, softmax and loss (`dlogits` divided by the whole batch's
//!    size), backward through every layer, each micro-batch's weight gradients added to its
//!    worker's sums. A micro-batch's activations stay in L2 from one layer to the next, where a
//!    whole batch of 128 would stream through DRAM at every layer.
//! 3. Sum the workers' gradients (in worker order), add the L1 term, and run Adam.
//!
//! Every buffer is sized once, in [`FastCpuBackend::new`]; [`FastCpuBackend::step`] allocates
//! nothing (tests/fast_cpu.rs counts heap allocations to prove it). Activations are stored in
//! the layout their consumer reads (padded for a convolution), and a convolution followed by a
//! convolution or a pooling layer has its `dpre` written directly by that layer, through its
//! ReLU.
//!
//! # Threads
//! `threads` workers each take a contiguous range of micro-batches with their own buffers and
//! gradient sums, summed in worker order at the end of the step: one synchronisation per step,
//! and the same bits every run for a given thread count (not across thread counts: the sums are
//! grouped differently). `RAYON_NUM_THREADS` sets the count; [`default_threads`] otherwise.

use super::conv2d::{self, ConvPlan};
use super::dense_softmax::{self, DensePlan};
use super::dropout::{self, DropoutPlan};
use super::maxpool2d::{self, PoolPlan};
use super::simd::{multiversion, Isa, Simd};
use super::{adam, Layout};
use crate::checkpoint::OptimizerState;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::adam::{AdamConfig, AdamShape};
use crate::layers::dense_softmax::{l1_penalty, DenseShape};
use crate::model::{LayerSpec, Model};
use crate::train::cpu::check_state_len;
use crate::train::{layer_shapes, Backend, LayerShape, RawMetrics, StepProgress, TrainConfig};

/// Threads used when `RAYON_NUM_THREADS` is not set: every CPU this process may use
/// (`available_parallelism`; never more than a batch has micro-batches).
///
/// Measured on the 2-vCPU machine (AVX-512) this was tuned on, base net, batch 128,
/// `cargo test --release --test fast_cpu -- --ignored report_training`, 1 vs 2 threads in one
/// session: with the machine otherwise idle, 8,300–8,500 img/s vs 15,200–16,100 (1.85×; deep
/// net 12,600 vs 24,500); with one other busy process on the machine, 8,100–8,300 vs 7,600–8,200
/// (0.95×). The two vCPUs behave as two cores for this kernel mix — unlike PyTorch's OpenMP
/// threads there, which spin against each other — and a second thread never cost more than 5 %.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Images per micro-batch: small enough that a micro-batch's activations and gradients stay in
/// L2 across layers, large enough that per-call overheads vanish.
pub const MICRO_BATCH: usize = 8;

/// One hidden layer's plan.
#[derive(Clone, Debug)]
enum Hidden {
    Conv(ConvPlan),
    Pool(PoolPlan),
    Dropout(DropoutPlan),
}

/// The net for micro-batches of up to [`MICRO_BATCH`] images: every layer's plan (holding this
/// step's packed weights) and where its parameters are. Read-only while micro-batches run.
struct Net {
    shapes: Vec<LayerShape>,
    hidden: Vec<Hidden>,
    /// Whether layer i's dpre is written by layer i + 1's backward pass, through layer i's ReLU
    /// (a convolution followed by a convolution or a pooling layer).
    fused: Vec<bool>,
    dense: DenseShape,
    dense_plan: DensePlan,
    x0_layout: Layout,
    /// Images per micro-batch: [`MICRO_BATCH`], or the batch size when smaller.
    micro: usize,
}

/// One worker's buffers for a micro-batch, and its gradient sums over the step.
struct Workspace {
    /// The micro-batch's input (padded when the first layer is a convolution) and labels.
    x0: Vec<f32>,
    labels: Vec<u32>,
    /// Output of each hidden layer in the layout its consumer reads; dL/d(that output), plain,
    /// where a layer reads it; each convolution's dL/d(pre-activation), padded.
    acts: Vec<Vec<f32>>,
    dacts: Vec<Vec<f32>>,
    dpres: Vec<Vec<f32>>,
    dlogits: Vec<f32>,
    grads: Vec<f32>,
}

/// What one worker gets for a step: its index and buffers, its rows, and its slices of the
/// per-sample losses, predictions and probabilities.
type WorkerPart<'a> = (((usize, &'a mut Workspace), &'a [u32]), (&'a mut [f32], (&'a mut [u32], &'a mut [f32])));

/// A model, its optimiser state and its activations, on the CPU, fast.
pub struct FastCpuBackend {
    isa: Isa,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    net: Net,
    workspaces: Vec<Workspace>,
    adam: AdamConfig,
    adam_shape: AdamShape,
    dropout_seed: u32,
    batch: usize,
    train: Dataset,
    params: Vec<f32>,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Per sample of the last batch: probabilities, loss, predicted class.
    probs: Vec<f32>,
    losses: Vec<f32>,
    predicted: Vec<u32>,
    steps: u64,
}

impl FastCpuBackend {
    /// A backend training `model` from `params` on `train`, with the widest instruction set
    /// this CPU has and `RAYON_NUM_THREADS` (else [`default_threads`]) threads.
    pub fn new(model: &Model, train: &Dataset, params: Vec<f32>, config: &TrainConfig) -> Result<Self> {
        Self::with_options(model, train, params, config, Isa::best(), threads_from_env())
    }

    /// The same with a chosen instruction set and thread count (the tests run every
    /// instruction set the CPU supports).
    pub fn with_options(
        model: &Model,
        train: &Dataset,
        params: Vec<f32>,
        config: &TrainConfig,
        isa: Isa,
        threads: usize,
    ) -> Result<Self> {
        config.validate()?;
        if params.len() != model.param_count {
            return Err(Error::invalid(format!(
                "{} parameters given for a model of {}",
                params.len(),
                model.param_count
            )));
        }
        let batch = config.batch_size;
        let micro = MICRO_BATCH.min(batch);
        let threads = threads.clamp(1, batch.div_ceil(micro));
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
            Some(pool.map_err(|e| Error::invalid(format!("cannot start {threads} CPU threads: {e}")))?)
        } else {
            None
        };
        let (shapes, dense) = layer_shapes(model, micro, config.l1);
        let hidden_layers = &model.layers[..shapes.len()];
        // A tensor read by a convolution carries a one-pixel border of zeros.
        let pad = |i: usize| usize::from(matches!(model.layers.get(i).map(|l| l.spec), Some(LayerSpec::Conv { .. })));
        let x0_layout = Layout { pad: pad(0), ..Layout::plain(model.input) };
        let act_layouts: Vec<Layout> = hidden_layers
            .iter()
            .enumerate()
            .map(|(i, l)| Layout { pad: pad(i + 1), ..Layout::plain(l.output) })
            .collect();
        let input_pad = |i: usize| if i == 0 { x0_layout.pad } else { act_layouts[i - 1].pad };
        let hidden: Vec<Hidden> = shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| match shape {
                LayerShape::Conv(s) => Hidden::Conv(ConvPlan::new(s, isa, act_layouts[i].pad)),
                LayerShape::Pool(s) => Hidden::Pool(PoolPlan::new(s, isa, input_pad(i), act_layouts[i].pad)),
                LayerShape::Dropout(s) => {
                    Hidden::Dropout(DropoutPlan::new(s, isa, hidden_layers[i].input, input_pad(i), act_layouts[i].pad))
                }
            })
            .collect();
        let fused: Vec<bool> = (0..hidden.len())
            .map(|i| {
                matches!(hidden[i], Hidden::Conv(_))
                    && matches!(hidden.get(i + 1), Some(Hidden::Conv(_) | Hidden::Pool(_)))
            })
            .collect();
        let count = model.param_count;
        let classes = dense.classes as usize;
        let workspace = || Workspace {
            x0: x0_layout.zeros(micro),
            labels: vec![0; micro],
            acts: act_layouts.iter().map(|l| l.zeros(micro)).collect(),
            dacts: hidden_layers
                .iter()
                .zip(&fused)
                .map(|(l, &fused)| if fused { Vec::new() } else { vec![0.0; micro * l.output_len()] })
                .collect(),
            dpres: hidden
                .iter()
                .map(|h| match h {
                    Hidden::Conv(plan) => plan.dpre.zeros(micro),
                    _ => Vec::new(),
                })
                .collect(),
            dlogits: vec![0.0; micro * classes],
            grads: vec![0.0; count],
        };
        Ok(FastCpuBackend {
            isa,
            threads,
            pool,
            workspaces: (0..threads).map(|_| workspace()).collect(),
            net: Net { shapes, hidden, fused, dense_plan: DensePlan::new(&dense, isa), dense, x0_layout, micro },
            adam: config.adam(),
            adam_shape: config.adam().shape(count),
            dropout_seed: config.dropout_seed(),
            batch,
            train: train.clone(),
            grads: vec![0.0; count],
            m: vec![0.0; count],
            v: vec![0.0; count],
            params,
            probs: vec![0.0; batch * classes],
            losses: vec![0.0; batch],
            predicted: vec![0; batch],
            steps: 0,
        })
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// One training step on dataset rows `rows` (at most the batch size): forward, backward,
    /// Adam. Returns the L1 penalty of the weights the step started from; the per-sample losses
    /// and predictions are in [`FastCpuBackend::losses`] and [`FastCpuBackend::predictions`].
    /// Allocates nothing.
    pub fn step(&mut self, rows: &[u32]) -> f32 {
        let train = std::mem::take(&mut self.train);
        let penalty = self.step_on(&train, rows);
        self.train = train;
        penalty
    }

    /// Per-sample losses of the last step or forward pass (the first `rows` of it).
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    pub fn predictions(&self) -> &[u32] {
        &self.predicted
    }

    /// Floats (and labels) of every buffer the backend holds: constant from construction on (the
    /// tests check that it does not change across steps).
    pub fn buffer_capacity(&self) -> usize {
        let lists = |l: &[Vec<f32>]| l.iter().map(Vec::capacity).sum::<usize>();
        let plans: usize = self
            .net
            .hidden
            .iter()
            .map(|h| match h {
                Hidden::Conv(plan) => plan.scratch_capacity(),
                _ => 0,
            })
            .sum();
        let workspaces: usize = self
            .workspaces
            .iter()
            .map(|w| {
                w.x0.capacity()
                    + w.labels.capacity()
                    + lists(&w.acts)
                    + lists(&w.dacts)
                    + lists(&w.dpres)
                    + w.dlogits.capacity()
                    + w.grads.capacity()
            })
            .sum();
        plans
            + workspaces
            + self.net.dense_plan.scratch_capacity()
            + [&self.params, &self.grads, &self.m, &self.v, &self.probs, &self.losses]
                .iter()
                .map(|v| v.capacity())
                .sum::<usize>()
            + self.predicted.capacity()
    }

    fn step_on(&mut self, data: &Dataset, rows: &[u32]) -> f32 {
        let nb = rows.len();
        assert!(nb >= 1 && nb <= self.batch, "a step takes 1 to {} rows, got {nb}", self.batch);
        let training = Some((self.dropout_seed, self.steps as u32));
        self.net.pack(&self.params, true);
        for workspace in &mut self.workspaces {
            workspace.grads.fill(0.0);
        }
        self.run(data, rows, training);
        // The workers' sums, in worker order.
        let (first, rest) = self.workspaces.split_first().expect("at least one worker");
        self.grads.copy_from_slice(&first.grads);
        for workspace in rest {
            for (g, w) in self.grads.iter_mut().zip(&workspace.grads) {
                *g += w;
            }
        }
        let dense = &self.net.dense;
        let kernel = &self.params[dense.kernel_offset as usize..][..dense.kernel_len()];
        dense_softmax::add_l1(&mut self.grads[dense.kernel_offset as usize..], kernel, dense);
        let penalty = l1_penalty(kernel, dense);
        self.steps += 1;
        let alpha = self.adam.alpha(self.steps);
        adam::update(&mut self.params, &mut self.m, &mut self.v, &self.grads, alpha, &self.adam_shape, self.isa);
        penalty
    }

    /// Forward passes (no dropout) over `data` in batches, each batch's per-sample results in
    /// `probs`, `losses`, `predicted` before `each` sees them.
    fn infer(&mut self, data: &Dataset, each: &mut dyn FnMut(&Self, usize)) {
        self.net.pack(&self.params, false);
        let rows: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in rows.chunks(self.batch) {
            self.run(data, chunk, None);
            each(self, chunk.len());
        }
    }

    /// Runs `rows` through the net in micro-batches, on the workers: forward always, backward
    /// (into the workers' gradient sums) when `training`.
    fn run(&mut self, data: &Dataset, rows: &[u32], training: Option<(u32, u32)>) {
        let FastCpuBackend { net, workspaces, probs, losses, predicted, pool, .. } = self;
        let nb = rows.len();
        let classes = net.dense.classes as usize;
        let micro = net.micro;
        // Worker w takes the micro-batches of samples [w·per_worker, (w + 1)·per_worker).
        let per_worker = nb.div_ceil(micro).div_ceil(workspaces.len()) * micro;
        let work = |(((w, workspace), rows), (losses, (predicted, probs))): WorkerPart<'_>| {
            let outputs = rows.chunks(micro).zip(losses.chunks_mut(micro)).zip(predicted.chunks_mut(micro));
            for (i, ((rows, losses), predicted)) in outputs.enumerate() {
                let first = w * per_worker + i * micro;
                let probs = &mut probs[i * micro * classes..][..rows.len() * classes];
                net.micro_batch(workspace, data, rows, first, nb, training, losses, predicted, probs);
            }
        };
        let losses = &mut losses[..nb];
        let predicted = &mut predicted[..nb];
        let probs = &mut probs[..nb * classes];
        match pool {
            None => {
                let parts = workspaces.iter_mut().enumerate().zip(rows.chunks(per_worker)).zip(
                    losses
                        .chunks_mut(per_worker)
                        .zip(predicted.chunks_mut(per_worker).zip(probs.chunks_mut(per_worker * classes))),
                );
                parts.for_each(work);
            }
            Some(pool) => {
                use rayon::prelude::*;
                pool.install(|| {
                    let parts = workspaces.par_iter_mut().enumerate().zip(rows.par_chunks(per_worker)).zip(
                        losses
                            .par_chunks_mut(per_worker)
                            .zip(predicted.par_chunks_mut(per_worker).zip(probs.par_chunks_mut(per_worker * classes))),
                    );
                    parts.for_each(work);
                });
            }
        }
    }
}

impl Net {
    /// Packs this step's weights into the plans (and the transposed ones for the backward pass).
    fn pack(&mut self, params: &[f32], backward: bool) {
        for (shape, hidden) in self.shapes.iter().zip(&mut self.hidden) {
            if let (LayerShape::Conv(s), Hidden::Conv(plan)) = (shape, hidden) {
                let (kernel, bias) = params[s.kernel_offset as usize..].split_at(s.kernel_len());
                plan.pack_forward(kernel, &bias[..s.out_c as usize]);
                if backward {
                    plan.pack_backward(kernel);
                }
            }
        }
        let d = &self.dense;
        let (kernel, bias) = params[d.kernel_offset as usize..].split_at(d.kernel_len());
        self.dense_plan.pack(kernel, &bias[..d.classes as usize]);
    }

    /// One micro-batch: samples `first..first + rows.len()` of a batch of `batch`. Forward
    /// always; when training, backward with the weight gradients added to `w.grads`.
    #[allow(clippy::too_many_arguments)]
    fn micro_batch(
        &self,
        w: &mut Workspace,
        data: &Dataset,
        rows: &[u32],
        first: usize,
        batch: usize,
        training: Option<(u32, u32)>,
        losses: &mut [f32],
        predicted: &mut [u32],
        probs: &mut [f32],
    ) {
        let nb = rows.len();
        let Workspace { x0, labels, acts, dacts, dpres, dlogits, grads } = w;
        let sample_len = self.x0_layout.sample_len();
        gather_isa(self.dense_plan.isa, x0, &self.x0_layout, &data.images, rows, sample_len);
        for (label, &row) in labels.iter_mut().zip(rows) {
            *label = u32::from(data.labels[row as usize]);
        }

        for (i, hidden) in self.hidden.iter().enumerate() {
            let (before, after) = acts.split_at_mut(i);
            let x: &[f32] = if i == 0 { x0 } else { &before[i - 1] };
            let y = &mut after[0];
            match (self.shapes[i].with_batch(nb), hidden) {
                (LayerShape::Conv(s), Hidden::Conv(plan)) => conv2d::forward_packed(y, x, &s, plan),
                (LayerShape::Pool(s), Hidden::Pool(plan)) => maxpool2d::forward(y, x, &s, plan),
                (LayerShape::Dropout(s), Hidden::Dropout(plan)) => {
                    dropout::forward_part(y, x, training, first, &s, plan)
                }
                _ => unreachable!("plans are built from the shapes"),
            }
        }
        let features: &[f32] = acts.last().unwrap_or(x0);
        let dense = self.dense.with_batch(nb);
        dense_softmax::forward_part(
            probs,
            dlogits,
            losses,
            predicted,
            features,
            labels,
            batch,
            &dense,
            &self.dense_plan,
        );
        if training.is_none() {
            return;
        }

        let hidden = self.hidden.len();
        let (kernel_at, kernel_len) = (dense.kernel_offset as usize, dense.kernel_len());
        let (dkernel, dbias) = grads[kernel_at..].split_at_mut(kernel_len);
        dense_softmax::accumulate_weight(dkernel, dbias, dlogits, features, &dense, &self.dense_plan);
        if hidden > 0 {
            dense_softmax::backward_input_packed(&mut dacts[hidden - 1], dlogits, &dense, &self.dense_plan);
        }
        for i in (0..hidden).rev() {
            let (dacts_before, dacts_after) = dacts.split_at_mut(i);
            let (dpres_before, dpres_after) = dpres.split_at_mut(i);
            let dy = &dacts_after[0];
            let x: &[f32] = if i == 0 { x0 } else { &acts[i - 1] };
            let fused_before = i > 0 && self.fused[i - 1];
            match (self.shapes[i].with_batch(nb), &self.hidden[i]) {
                (LayerShape::Conv(s), Hidden::Conv(plan)) => {
                    let dpre = &mut dpres_after[0];
                    if !self.fused[i] {
                        conv2d::relu_backward(dpre, dy, &acts[i], &s, plan);
                    }
                    if fused_before {
                        conv2d::backward_input_relu_packed(&mut dpres_before[i - 1], dpre, x, &s, plan);
                    } else if i > 0 {
                        conv2d::backward_input_packed(&mut dacts_before[i - 1], dpre, &s, plan);
                    }
                    let (dkernel, dbias) = grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
                    conv2d::accumulate_weight(dkernel, dbias, dpre, x, &s, plan);
                }
                (LayerShape::Pool(s), Hidden::Pool(plan)) if fused_before => {
                    maxpool2d::backward_input_relu(&mut dpres_before[i - 1], dy, x, &s, plan)
                }
                (LayerShape::Pool(s), Hidden::Pool(plan)) if i > 0 => {
                    maxpool2d::backward_input(&mut dacts_before[i - 1], dy, x, &s, plan)
                }
                (LayerShape::Dropout(s), Hidden::Dropout(plan)) if i > 0 => {
                    dropout::backward_input_part(&mut dacts_before[i - 1], dy, training, first, &s, plan)
                }
                _ => {}
            }
        }
    }
}

/// `RAYON_NUM_THREADS` when set to a positive number, else [`default_threads`].
pub fn threads_from_env() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(default_threads)
}

multiversion!(fn gather_isa = gather_impl(x: &mut [f32], layout: &Layout, images: &[u8], rows: &[u32], sample_len: usize));

/// [`crate::layers::gather::gather`] into `layout`: pixels scaled by `/ 255` exactly as there.
#[inline(always)]
fn gather_impl<S: Simd>(x: &mut [f32], layout: &Layout, images: &[u8], rows: &[u32], sample_len: usize) {
    let row = layout.width * layout.channels;
    for (n, &image) in rows.iter().enumerate() {
        let image = &images[image as usize * sample_len..][..sample_len];
        for y in 0..layout.height {
            let out = &mut x[layout.at(n, y, 0)..][..row];
            for (o, &byte) in out.iter_mut().zip(&image[y * row..][..row]) {
                *o = f32::from(byte) / 255.0;
            }
        }
    }
}

impl Backend for FastCpuBackend {
    fn describe(&self) -> String {
        let threads = if self.threads == 1 { "1 thread".to_string() } else { format!("{} threads", self.threads) };
        format!("CPU fast ({}, {threads})", self.isa)
    }

    fn train_epoch(&mut self, order: &[u32], on_step: &mut dyn FnMut(StepProgress)) -> Result<RawMetrics> {
        let mut raw = RawMetrics::default();
        let train = std::mem::take(&mut self.train);
        for (b, rows) in order.chunks(self.batch).enumerate() {
            raw.penalties.push(self.step_on(&train, rows));
            raw.losses.extend_from_slice(&self.losses[..rows.len()]);
            raw.predictions.extend_from_slice(&self.predicted[..rows.len()]);
            let labels = order[..raw.losses.len()].iter().map(|&r| train.labels[r as usize]);
            on_step(StepProgress { done: b + 1, running: Some(raw.summarise(labels, self.batch)) });
        }
        self.train = train;
        Ok(raw)
    }

    fn evaluate(&mut self, data: &Dataset) -> Result<RawMetrics> {
        let mut raw = RawMetrics::default();
        self.infer(data, &mut |backend, n| {
            raw.losses.extend_from_slice(&backend.losses[..n]);
            raw.predictions.extend_from_slice(&backend.predicted[..n]);
        });
        let d = &self.net.dense;
        raw.penalties.push(l1_penalty(&self.params[d.kernel_offset as usize..][..d.kernel_len()], d));
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
        self.m.copy_from_slice(&state.m);
        self.v.copy_from_slice(&state.v);
        self.steps = state.steps;
        Ok(())
    }

    fn probabilities(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        let classes = self.net.dense.classes as usize;
        let mut probs = Vec::with_capacity(data.len() * classes);
        self.infer(data, &mut |backend, n| probs.extend_from_slice(&backend.probs[..n * classes]));
        Ok(probs)
    }
}
