//! [`FastCpuEngine`]: the reference engine's step — the same layers in the same order, the same
//! dropout masks, the same batch-mean loss, Adam as [`crate::adam::update`] — run with each
//! layer's fast CPU kernels ([`crate::fast`]), or its reference where it has none.
//!
//! # A step
//! 1. Pack every layer's weights once ([`FastLayer::pack`]).
//! 2. Run the batch through the net in micro-batches of [`MICRO_BATCH`] images: gather,
//!    forward through every layer, softmax and loss (`dlogits` divided by the whole batch's
//!    size), backward through every layer, each micro-batch's weight gradients **added** to its
//!    worker's sums. A micro-batch's activations stay in L2 from one layer to the next, where a
//!    whole batch of 128 would stream through DRAM at every layer.
//! 3. Sum the workers' gradients (in worker order), add the regulariser's, and run Adam.
//!
//! Every buffer is sized once, in [`FastCpuEngine::new`]; a step allocates nothing when every
//! layer has fast kernels (tests/fast_cpu.rs counts heap allocations to prove it). Activations
//! are stored in the layout their consumer reads (padded for a convolution, [`Fusion`]), and a
//! layer whose output is a ReLU's, followed by one that can write through it, has its dpre
//! written directly by that layer.
//!
//! # Threads
//! `threads` workers each take a contiguous range of micro-batches with their own buffers and
//! gradient sums, summed in worker order at the end of the step: one synchronisation per step,
//! and the same bits every run for a given thread count (not across thread counts: the sums are
//! grouped differently). `RAYON_NUM_THREADS` sets the count; [`default_threads`] otherwise.
//!
//! A net with a layer that needs the batch's statistics (batch normalisation) runs a step as one
//! pass of the whole batch instead, layer by layer (`Net::whole_batch`): that layer in one call,
//! every other layer's images split into one contiguous piece per worker, each worker's weight
//! gradients into its own sums, summed in worker order as above.

use std::sync::Arc;

use super::{DataId, Engine, HostState, Inference, Step, TrainConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fast::simd::{multiversion, Isa, Simd};
use crate::fast::{FastBackward, FastDx, FastHead, FastLayer, Fusion, Layout};
use crate::layers::{Backward, Ctx, HeadLayer, HeadOutputs, HiddenLayer, LayerAt, Pass, RunSettings};
use crate::model::{Model, Weights};

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

/// `RAYON_NUM_THREADS` when set to a positive number, else [`default_threads`].
pub fn threads_from_env() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(default_threads)
}

/// Images per micro-batch: small enough that a micro-batch's activations and gradients stay in
/// L2 across layers, large enough that per-call overheads vanish.
pub const MICRO_BATCH: usize = 8;

/// The net for micro-batches of up to [`MICRO_BATCH`] images: every layer's fast kernels
/// (holding this step's packed weights). Read-only while micro-batches run.
struct Net {
    hidden: Vec<Box<dyn FastLayer>>,
    fusion: Vec<Fusion>,
    /// Whether layer i's dpre is written by layer i + 1's backward pass, through layer i's ReLU.
    fused: Vec<bool>,
    head: Box<dyn FastHead>,
    isa: Isa,
    x0_layout: Layout,
    classes: usize,
    /// Images per micro-batch: [`MICRO_BATCH`], or the batch size when smaller, or the whole
    /// batch when a layer needs its statistics.
    micro: usize,
    /// Per hidden layer: whether it needs the whole batch ([`HiddenLayer::batch_statistics`]).
    /// When any does, a step is one pass of the whole batch, layer by layer, each other layer's
    /// images split between the threads ([`Net::whole_batch`]).
    whole_batch: Vec<bool>,
    strides: Strides,
}

/// Floats per image of each buffer of a [`Workspace`], for splitting a batch between threads.
struct Strides {
    x0: usize,
    acts: Vec<usize>,
    dacts: Vec<usize>,
    dpres: Vec<usize>,
}

impl Strides {
    fn new(x0: Layout, acts: &[Layout], dpres: &[Option<Layout>], model: &Model) -> Self {
        Strides {
            x0: x0.image_stride(),
            acts: acts.iter().map(Layout::image_stride).collect(),
            dacts: model.hidden.iter().map(|p| p.at.output_len()).collect(),
            dpres: dpres.iter().map(|l| l.map_or(0, |l| l.image_stride())).collect(),
        }
    }
}

/// Images `first..first + len` of `buffer` (`stride` floats each), or what of them it holds.
fn images(buffer: &[f32], stride: usize, first: usize, len: usize) -> &[f32] {
    let start = (first * stride).min(buffer.len());
    &buffer[start..(start + len * stride).min(buffer.len())]
}

/// The workers' buffers during a whole-batch pass: each thread takes its own gradient sums.
#[derive(Clone, Copy)]
struct WorkspacesPtr(*mut Workspace);

// SAFETY: see `grads`.
unsafe impl Send for WorkspacesPtr {}
unsafe impl Sync for WorkspacesPtr {}

impl WorkspacesPtr {
    /// Worker `w`'s gradient sums.
    ///
    /// # Safety
    /// `w` is in bounds and no other thread takes worker `w`'s sums meanwhile; the field alone is
    /// borrowed, so the first worker's other buffers may be borrowed too.
    #[allow(clippy::mut_from_ref)]
    unsafe fn grads<'a>(self, w: usize) -> &'a mut [f32] {
        // SAFETY: the caller's.
        unsafe { &mut (*self.0.add(w)).grads }
    }
}

/// A buffer (of floats, or of predicted classes) that the threads of a whole-batch pass write
/// in disjoint ranges of images.
struct Shared<T>(*mut T, usize);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: every use takes a range of images no other thread of the same pass takes (`piece`).
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn new(buffer: &mut [T]) -> Self {
        Shared(buffer.as_mut_ptr(), buffer.len())
    }

    /// Images `first..first + len` of `stride` elements each.
    ///
    /// # Safety
    /// No other live slice of this buffer overlaps those images.
    #[allow(clippy::mut_from_ref)]
    unsafe fn piece<'a>(self, stride: usize, first: usize, len: usize) -> &'a mut [T] {
        assert!((first + len) * stride <= self.1, "a piece inside its buffer");
        // SAFETY: in bounds (checked), and disjoint from the other threads' pieces (the caller).
        unsafe { std::slice::from_raw_parts_mut(self.0.add(first * stride), len * stride) }
    }
}

/// One worker's buffers for a micro-batch, and its gradient sums over the step.
struct Workspace {
    /// The micro-batch's input (padded when the first layer reads it padded) and labels.
    x0: Vec<f32>,
    labels: Vec<u32>,
    /// Output of each hidden layer in the layout its consumer reads; dL/d(that output), plain,
    /// where a layer reads it; the dL/d(pre-activation) of each layer with a ReLU output, padded.
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
pub struct FastCpuEngine {
    isa: Isa,
    threads: usize,
    pool: Option<rayon::ThreadPool>,
    net: Net,
    workspaces: Vec<Workspace>,
    host: HostState,
    /// Per sample of the last batch: probabilities, loss, predicted class.
    probs: Vec<f32>,
    losses: Vec<f32>,
    predicted: Vec<u32>,
}

impl FastCpuEngine {
    /// An engine training `model` from `weights` on `train`, with the widest instruction set
    /// this CPU has and `RAYON_NUM_THREADS` (else [`default_threads`]) threads.
    pub fn new(model: &Model, train: &Dataset, weights: Weights, config: &TrainConfig) -> Result<Self> {
        Self::with_options(model, train, weights, config, &FastOptions::default())
    }

    /// The same with a chosen instruction set, thread count, and whether to run every layer
    /// through its reference (the tests check every instruction set and the fallback).
    pub fn with_options(
        model: &Model,
        train: &Dataset,
        weights: Weights,
        config: &TrainConfig,
        options: &FastOptions,
    ) -> Result<Self> {
        let host = HostState::new(model, train, weights, config)?;
        let (isa, batch) = (options.isa, config.batch_size);
        // A layer that normalises with the batch's statistics needs the whole batch in one pass.
        let statistics: Vec<bool> = model.hidden.iter().map(|p| p.layer.batch_statistics()).collect();
        let whole_batch = statistics.contains(&true);
        let micro = if whole_batch { batch } else { MICRO_BATCH.min(batch) };
        // Whole-batch passes split each layer's images between the threads instead.
        let threads = options.threads.clamp(1, if whole_batch { batch } else { batch.div_ceil(micro) });
        // WebAssembly without shared memory (a browser tab's default, WASI) has no threads.
        let threads = if cfg!(all(target_family = "wasm", not(target_feature = "atomics"))) { 1 } else { threads };
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
            Some(pool.map_err(|e| Error::invalid(format!("cannot start {threads} CPU threads: {e}")))?)
        } else {
            None
        };
        let run = host.run;
        let reference = options.reference_only;
        let fusion: Vec<Fusion> =
            model.hidden.iter().map(|p| if reference { Fusion::default() } else { p.layer.fast_fusion() }).collect();
        // A layer writes its output in the layout its consumer reads.
        let input_pad = |i: usize| fusion.get(i).map_or(0, |f| f.input_pad);
        let x0_layout = Layout { pad: input_pad(0), ..Layout::plain(model.input) };
        let act_layouts: Vec<Layout> = model
            .hidden
            .iter()
            .enumerate()
            .map(|(i, p)| Layout { pad: input_pad(i + 1), ..Layout::plain(p.at.output) })
            .collect();
        let hidden: Vec<Box<dyn FastLayer>> = model
            .hidden
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let x = if i == 0 { x0_layout } else { act_layouts[i - 1] };
                let c = Ctx { at: &p.at, batch: micro, run };
                let fast = if reference { None } else { p.layer.fast(&c, isa, x, act_layouts[i]) };
                fast.unwrap_or_else(|| Box::new(ReferenceLayer::new(&p.layer, &p.at, run, x, act_layouts[i])))
            })
            .collect();
        let fused: Vec<bool> = (0..hidden.len())
            .map(|i| fusion[i].relu_output && fusion.get(i + 1).is_some_and(|f| f.masked_dx))
            .collect();
        let head_c = Ctx { at: &model.head.at, batch: micro, run };
        let head = match if reference { None } else { model.head.layer.fast(&head_c, isa) } {
            Some(fast) => fast,
            None => Box::new(ReferenceHead {
                layer: model.head.layer.clone(),
                at: model.head.at.clone(),
                run,
                params: Vec::new(),
            }),
        };
        let (count, classes) = (model.param_count, model.classes());
        let dpre_layouts: Vec<Option<Layout>> = model
            .hidden
            .iter()
            .zip(&fusion)
            .map(|(p, f)| f.dpre_pad.map(|pad| Layout { pad, ..Layout::plain(p.at.output) }))
            .collect();
        let grads_only = || Workspace {
            x0: Vec::new(),
            labels: Vec::new(),
            acts: Vec::new(),
            dacts: Vec::new(),
            dpres: Vec::new(),
            dlogits: Vec::new(),
            grads: vec![0.0; count],
        };
        let workspace = || Workspace {
            x0: x0_layout.zeros(micro),
            labels: vec![0; micro],
            acts: act_layouts.iter().map(|l| l.zeros(micro)).collect(),
            dacts: model
                .hidden
                .iter()
                .zip(&fused)
                .map(|(p, &fused)| if fused { Vec::new() } else { vec![0.0; micro * p.at.output_len()] })
                .collect(),
            dpres: dpre_layouts.iter().map(|l| l.map_or_else(Vec::new, |l| l.zeros(micro))).collect(),
            dlogits: vec![0.0; micro * classes],
            grads: vec![0.0; count],
        };
        Ok(FastCpuEngine {
            isa,
            threads,
            pool,
            // Whole-batch passes: the first worker holds the activations, every one its gradient sums.
            workspaces: (0..threads).map(|w| if w == 0 || !whole_batch { workspace() } else { grads_only() }).collect(),
            net: Net {
                hidden,
                fusion,
                fused,
                head,
                isa,
                x0_layout,
                classes,
                micro,
                whole_batch: statistics,
                strides: Strides::new(x0_layout, &act_layouts, &dpre_layouts, model),
            },
            host,
            probs: vec![0.0; batch * classes],
            losses: vec![0.0; batch],
            predicted: vec![0; batch],
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

    /// Floats (and labels) of every buffer the engine holds: constant from construction on (the
    /// tests check that it does not change across steps).
    pub fn buffer_capacity(&self) -> usize {
        let lists = |l: &[Vec<f32>]| l.iter().map(Vec::capacity).sum::<usize>();
        let plans: usize = self.net.hidden.iter().map(|h| h.scratch_capacity()).sum();
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
        let host = &self.host;
        plans
            + workspaces
            + self.net.head.scratch_capacity()
            + [&host.weights.params, &host.grads, &host.m, &host.v, &self.probs, &self.losses]
                .iter()
                .map(|v| v.capacity())
                .sum::<usize>()
            + self.predicted.capacity()
    }

    fn classes(&self) -> usize {
        self.net.classes
    }

    /// The regulariser's penalty for the current weights.
    fn penalty(&self) -> f32 {
        self.net.head.penalty(&self.host.weights.params)
    }

    /// Forward passes (no dropout) over `data` in batches, each batch's per-sample results in
    /// `probs`, `losses`, `predicted` before `each` sees them.
    fn infer(&mut self, data: DataId, each: &mut dyn FnMut(&Self, usize)) -> Result<()> {
        let params = std::mem::take(&mut self.host.weights.params);
        self.net.pack(&params, false);
        self.host.weights.params = params;
        let data = self.host.datasets.get(data.0).cloned();
        let data = data.ok_or_else(|| Error::invalid("no such dataset was prepared"))?;
        let rows: Vec<u32> = (0..data.len() as u32).collect();
        for chunk in rows.chunks(self.host.batch) {
            self.run(&data, chunk, Pass::Inference);
            each(self, chunk.len());
        }
        Ok(())
    }

    /// Runs `rows` through the net in micro-batches, on the workers: forward always, backward
    /// (into the workers' gradient sums) in training.
    fn run(&mut self, data: &Dataset, rows: &[u32], pass: Pass) {
        let FastCpuEngine { net, workspaces, probs, losses, predicted, pool, host, .. } = self;
        let state = &host.weights.state;
        let nb = rows.len();
        let (classes, micro) = (net.classes, net.micro);
        // Worker w takes the micro-batches of samples [w·per_worker, (w + 1)·per_worker).
        let per_worker = nb.div_ceil(micro).div_ceil(workspaces.len()) * micro;
        let work = |(((w, workspace), rows), (losses, (predicted, probs))): WorkerPart<'_>| {
            let outputs = rows.chunks(micro).zip(losses.chunks_mut(micro)).zip(predicted.chunks_mut(micro));
            for (i, ((rows, losses), predicted)) in outputs.enumerate() {
                let first = w * per_worker + i * micro;
                let pass = match pass {
                    Pass::Training { step, .. } => Pass::Training { step, first },
                    Pass::Inference => Pass::Inference,
                };
                let probs = &mut probs[i * micro * classes..][..rows.len() * classes];
                net.micro_batch(workspace, data, rows, nb, pass, state, (probs, losses, predicted));
            }
        };
        let losses = &mut losses[..nb];
        let predicted = &mut predicted[..nb];
        let probs = &mut probs[..nb * classes];
        if net.whole_batch.iter().any(|&w| w) {
            net.whole_batch(workspaces, pool.as_ref(), data, rows, pass, state, (probs, losses, predicted));
            return;
        }
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

/// How [`FastCpuEngine::with_options`] runs.
#[derive(Clone, Copy, Debug)]
pub struct FastOptions {
    pub isa: Isa,
    /// Worker threads (1 in WebAssembly without threads, whatever is asked).
    pub threads: usize,
    /// Every layer through its reference (as a layer without fast kernels runs).
    pub reference_only: bool,
}

impl Default for FastOptions {
    /// The widest instruction set, `RAYON_NUM_THREADS` (else every CPU), fast kernels.
    fn default() -> Self {
        FastOptions { isa: Isa::best(), threads: threads_from_env(), reference_only: false }
    }
}

impl Net {
    /// Packs this step's weights into the layers' kernels (and the transposed ones for the
    /// backward pass).
    fn pack(&mut self, params: &[f32], backward: bool) {
        for layer in &mut self.hidden {
            layer.pack(params, backward);
        }
        self.head.pack(params);
    }

    /// The whole batch `rows` layer by layer: a layer that needs the batch's statistics in one
    /// call, every other layer's images split into one contiguous piece per worker, run in
    /// parallel, each worker's weight gradients added to its own sums. The same layers, layouts
    /// and fusions as [`Net::micro_batch`], whose buffers the first worker holds for the batch.
    #[allow(clippy::too_many_arguments)]
    fn whole_batch(
        &self,
        workspaces: &mut [Workspace],
        pool: Option<&rayon::ThreadPool>,
        data: &Dataset,
        rows: &[u32],
        pass: Pass,
        state: &[f32],
        (probs, losses, predicted): (&mut [f32], &mut [f32], &mut [u32]),
    ) {
        let nb = rows.len();
        let workers = workspaces.len().min(nb).max(1);
        let per = nb.div_ceil(workers);
        let ws = WorkspacesPtr(workspaces.as_mut_ptr());
        // SAFETY: the first worker's buffers, each field borrowed alone; the workers below touch
        // only their own `grads` field (see `WorkspacesPtr::grads`).
        let (x0, labels, acts, dacts, dpres, dlogits) = unsafe {
            let w = ws.0;
            (&mut (*w).x0, &mut (*w).labels, &mut (*w).acts, &mut (*w).dacts, &mut (*w).dpres, &mut (*w).dlogits)
        };
        gather_isa(self.isa, x0, &self.x0_layout, &data.images, rows, self.x0_layout.sample_len());
        for (label, &row) in labels.iter_mut().zip(rows) {
            *label = u32::from(data.labels[row as usize]);
        }
        let (x0, labels): (&[f32], &[u32]) = (x0, labels);
        let st = &self.strides;
        let at = |first: usize| match pass {
            Pass::Training { step, .. } => Pass::Training { step, first },
            Pass::Inference => Pass::Inference,
        };
        // Runs `f(worker, first image, images)` on every worker's piece, in parallel.
        let split = |f: &(dyn Fn(usize, usize, usize) + Sync)| {
            let piece = |w: usize| {
                let first = w * per;
                if first < nb {
                    f(w, first, per.min(nb - first));
                }
            };
            match pool {
                Some(pool) if workers > 1 => {
                    use rayon::prelude::*;
                    pool.install(|| (0..workers).into_par_iter().for_each(piece));
                }
                _ => (0..workers).for_each(piece),
            }
        };

        for (i, layer) in self.hidden.iter().enumerate() {
            let (before, after) = acts.split_at_mut(i);
            let (x, x_stride): (&[f32], usize) = if i == 0 { (x0, st.x0) } else { (&before[i - 1], st.acts[i - 1]) };
            if self.whole_batch[i] {
                layer.forward(nb, pass, x, &mut after[0], state);
                continue;
            }
            let y = Shared::new(&mut after[0]);
            split(&|_, first, len| {
                // SAFETY: each worker writes its own images of y.
                let y = unsafe { y.piece(st.acts[i], first, len) };
                layer.forward(len, at(first), &x[first * x_stride..][..len * x_stride], y, state);
            });
        }
        let features: &[f32] = acts.last().map_or(x0, |a| &a[..]);
        let f_stride = st.acts.last().copied().unwrap_or(st.x0);
        let classes = self.classes;
        let (probs, dlogits_s, losses) = (Shared::new(probs), Shared::new(dlogits), Shared::new(losses));
        let predicted = Shared::new(predicted);
        split(&|_, first, len| {
            // SAFETY: each worker writes its own samples' outputs.
            let out = unsafe {
                HeadOutputs {
                    probs: probs.piece(classes, first, len),
                    dlogits: dlogits_s.piece(classes, first, len),
                    losses: losses.piece(1, first, len),
                    predicted: predicted.piece(1, first, len),
                }
            };
            self.head.forward(len, &features[first * f_stride..][..len * f_stride], &labels[first..][..len], nb, out);
        });
        if !pass.is_training() {
            return;
        }

        let dlogits: &[f32] = dlogits;
        let last_dact = dacts.last_mut().map(|d| Shared::new(d));
        let last_stride = st.dacts.last().copied().unwrap_or(0);
        split(&|w, first, len| {
            // SAFETY: this worker's gradient sums and its own images of dx.
            let (grads, dx) = unsafe { (ws.grads(w), last_dact.map(|d| d.piece(last_stride, first, len))) };
            let (x, g) =
                (&features[first * f_stride..][..len * f_stride], &dlogits[first * classes..][..len * classes]);
            self.head.backward(len, x, g, dx, grads);
        });
        for i in (0..self.hidden.len()).rev() {
            let x: (&[f32], usize) = if i == 0 { (x0, st.x0) } else { (&acts[i - 1], st.acts[i - 1]) };
            let y = (&acts[i][..], st.acts[i]);
            let (dacts_before, dacts_after) = dacts.split_at_mut(i);
            let (dpres_before, dpres_after) = dpres.split_at_mut(i);
            let dy = (&dacts_after[0][..], st.dacts[i]);
            let dpre = self.fusion[i].dpre_pad.map(|_| Shared::new(&mut dpres_after[0]));
            // Where dx goes, and the floats per image there.
            let dx = match i {
                0 => None,
                _ if self.fused[i - 1] => Some((true, Shared::new(&mut dpres_before[i - 1]), st.dpres[i - 1])),
                _ => Some((false, Shared::new(&mut dacts_before[i - 1]), st.dacts[i - 1])),
            };
            let run = |w: usize, first: usize, len: usize| {
                // SAFETY: this worker's gradient sums and its own images of dpre and dx.
                let (grads, dpre, dx) = unsafe {
                    (
                        ws.grads(w),
                        dpre.map(|d| d.piece(st.dpres[i], first, len)),
                        match dx {
                            None => FastDx::None,
                            Some((true, d, stride)) => FastDx::ThroughRelu(d.piece(stride, first, len)),
                            Some((false, d, stride)) => FastDx::Plain(d.piece(stride, first, len)),
                        },
                    )
                };
                // A fused layer's dy is never read (nor allocated): its piece is empty.
                let backward = FastBackward {
                    x: images(x.0, x.1, first, len),
                    y: images(y.0, y.1, first, len),
                    dy: images(dy.0, dy.1, first, len),
                    dpre,
                    dpre_ready: self.fused[i],
                    dx,
                    grads,
                };
                self.hidden[i].backward(len, at(first), backward);
            };
            if self.whole_batch[i] {
                run(0, 0, nb);
            } else {
                split(&run);
            }
        }
    }

    /// One micro-batch: the samples of `rows`, part of a batch of `batch`. Forward always; in
    /// training, backward with the weight gradients added to `w.grads`.
    #[allow(clippy::too_many_arguments)]
    fn micro_batch(
        &self,
        w: &mut Workspace,
        data: &Dataset,
        rows: &[u32],
        batch: usize,
        pass: Pass,
        state: &[f32],
        (probs, losses, predicted): (&mut [f32], &mut [f32], &mut [u32]),
    ) {
        let nb = rows.len();
        let Workspace { x0, labels, acts, dacts, dpres, dlogits, grads } = w;
        let sample_len = self.x0_layout.sample_len();
        gather_isa(self.isa, x0, &self.x0_layout, &data.images, rows, sample_len);
        for (label, &row) in labels.iter_mut().zip(rows) {
            *label = u32::from(data.labels[row as usize]);
        }

        for (i, layer) in self.hidden.iter().enumerate() {
            let (before, after) = acts.split_at_mut(i);
            let x: &[f32] = if i == 0 { x0 } else { &before[i - 1] };
            layer.forward(nb, pass, x, &mut after[0], state);
        }
        let features: &[f32] = acts.last().unwrap_or(x0);
        let out = HeadOutputs { probs, dlogits: &mut dlogits[..], losses, predicted };
        self.head.forward(nb, features, labels, batch, out);
        if !pass.is_training() {
            return;
        }

        let hidden = self.hidden.len();
        // The head writes plain dx: the last hidden layer is never fused with it.
        self.head.backward(nb, features, dlogits, dacts.last_mut().map(|d| &mut d[..]), grads);
        for i in (0..hidden).rev() {
            let (dacts_before, dacts_after) = dacts.split_at_mut(i);
            let (dpres_before, dpres_after) = dpres.split_at_mut(i);
            let dx = match i {
                0 => FastDx::None,
                _ if self.fused[i - 1] => FastDx::ThroughRelu(&mut dpres_before[i - 1]),
                _ => FastDx::Plain(&mut dacts_before[i - 1]),
            };
            let dpre = self.fusion[i].dpre_pad.map(|_| &mut dpres_after[0][..]);
            let backward = FastBackward {
                x: if i == 0 { x0 } else { &acts[i - 1] },
                y: &acts[i],
                dy: &dacts_after[0],
                dpre,
                dpre_ready: self.fused[i],
                dx,
                grads,
            };
            self.hidden[i].backward(nb, pass, backward);
        }
    }
}

multiversion!(fn gather_isa = gather_impl(x: &mut [f32], layout: &Layout, images: &[u8], rows: &[u32], sample_len: usize));

/// [`crate::gather::gather`] into `layout`: pixels scaled by `/ 255` exactly as there.
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

impl Inference for FastCpuEngine {
    fn describe(&self) -> String {
        let threads = if self.threads == 1 { "1 thread".to_string() } else { format!("{} threads", self.threads) };
        format!("CPU fast ({}, {threads})", self.isa)
    }

    super::cpu_inference!();
}

impl Engine for FastCpuEngine {
    super::cpu_engine!();

    fn train_step(&mut self, step: &Step) -> Result<()> {
        self.host.check_step(step)?;
        // Taken out and put back, not copied: a step allocates nothing.
        let order = std::mem::take(&mut self.host.order);
        let rows = &order[step.start..step.start + step.len];
        let pass = Pass::Training { step: step.dropout_step(), first: 0 };
        let params = std::mem::take(&mut self.host.weights.params);
        self.net.pack(&params, true);
        self.host.weights.params = params;
        for workspace in &mut self.workspaces {
            workspace.grads.fill(0.0);
        }
        let train = std::mem::take(&mut self.host.datasets[0]);
        self.run(&train, rows, pass);
        self.host.datasets[0] = train;
        for layer in &self.net.hidden {
            layer.update_state(&mut self.host.weights.state);
        }
        // The workers' sums, in worker order.
        let host = &mut self.host;
        let (first, rest) = self.workspaces.split_first().expect("at least one worker");
        host.grads.copy_from_slice(&first.grads);
        for workspace in rest {
            for (g, w) in host.grads.iter_mut().zip(&workspace.grads) {
                *g += w;
            }
        }
        let penalty = self.net.head.regularize(&host.weights.params, &mut host.grads);
        crate::adam::fast::update(
            &mut host.weights.params,
            &mut host.m,
            &mut host.v,
            &host.grads,
            step.alpha,
            &host.adam,
            self.isa,
        );
        let n = rows.len();
        self.host.order = order;
        self.host.record(&self.losses[..n], &self.predicted[..n], penalty);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The reference in place of fast kernels.

/// A hidden layer without fast kernels: its reference on plain copies of the engine's tensors
/// (allocated per call: this path is for correctness, not speed).
struct ReferenceLayer {
    layer: Arc<dyn HiddenLayer>,
    at: LayerAt,
    run: RunSettings,
    x: Layout,
    y: Layout,
    params: Vec<f32>,
    /// The state as the last training forward pass left it, for [`FastLayer::update_state`].
    trained_state: std::sync::Mutex<Option<Vec<f32>>>,
}

impl ReferenceLayer {
    fn new(layer: &Arc<dyn HiddenLayer>, at: &LayerAt, run: RunSettings, x: Layout, y: Layout) -> Self {
        ReferenceLayer {
            layer: layer.clone(),
            at: at.clone(),
            run,
            x,
            y,
            params: Vec::new(),
            trained_state: std::sync::Mutex::new(None),
        }
    }

    fn plain(layout: &Layout, stored: &[f32], batch: usize) -> Vec<f32> {
        let mut plain = vec![0.0; batch * layout.sample_len()];
        layout.unpack(&mut plain, stored, batch);
        plain
    }
}

impl FastLayer for ReferenceLayer {
    fn pack(&mut self, params: &[f32], _backward: bool) {
        self.params.clear();
        self.params.extend_from_slice(params);
    }

    fn forward(&self, batch: usize, pass: Pass, x: &[f32], y: &mut [f32], state: &[f32]) {
        let c = Ctx { at: &self.at, batch, run: self.run };
        let x = Self::plain(&self.x, x, batch);
        let mut plain_y = vec![0.0; batch * self.y.sample_len()];
        // A layer that updates its state in training sees the whole batch (batch_statistics).
        let mut state = state.to_vec();
        self.layer.forward(&c, pass, &x, &mut plain_y, &self.params, &mut state);
        self.y.pack(y, &plain_y, batch);
        if pass.is_training() {
            *self.trained_state.lock().expect("no reference pass panicked") = Some(state);
        }
    }

    fn update_state(&self, state: &mut [f32]) {
        if let Some(trained) = self.trained_state.lock().expect("no reference pass panicked").take() {
            for tensor in self.at.tensors.iter().filter(|t| !t.spec.trainable) {
                state[tensor.range()].copy_from_slice(&trained[tensor.range()]);
            }
        }
    }

    fn backward(&self, batch: usize, pass: Pass, b: FastBackward<'_>) {
        let c = Ctx { at: &self.at, batch, run: self.run };
        let (x, y) = (Self::plain(&self.x, b.x, batch), Self::plain(&self.y, b.y, batch));
        let mut grads = vec![0.0; self.params.len()];
        let mut dx = vec![0.0; batch * self.x.sample_len()];
        let wants_dx = matches!(b.dx, FastDx::Plain(_));
        let backward = Backward {
            x: &x,
            y: &y,
            dy: &b.dy[..batch * self.y.sample_len()],
            dx: wants_dx.then_some(&mut dx[..]),
            params: &self.params,
            grads: &mut grads,
        };
        self.layer.backward(&c, pass, backward);
        match b.dx {
            FastDx::Plain(out) => out[..dx.len()].copy_from_slice(&dx),
            FastDx::None => {}
            FastDx::ThroughRelu(_) => unreachable!("the reference in place of fast kernels sets no Fusion"),
        }
        for tensor in self.at.tensors.iter().filter(|t| t.spec.trainable) {
            for (sum, g) in b.grads[tensor.range()].iter_mut().zip(&grads[tensor.range()]) {
                *sum += g;
            }
        }
    }
}

/// The head without fast kernels: its reference.
struct ReferenceHead {
    layer: Arc<dyn HeadLayer>,
    at: LayerAt,
    run: RunSettings,
    params: Vec<f32>,
}

impl ReferenceHead {
    fn add_own(&self, sums: &mut [f32], own: &[f32]) {
        for tensor in self.at.tensors.iter().filter(|t| t.spec.trainable) {
            for (sum, g) in sums[tensor.range()].iter_mut().zip(&own[tensor.range()]) {
                *sum += g;
            }
        }
    }
}

impl FastHead for ReferenceHead {
    fn pack(&mut self, params: &[f32]) {
        self.params.clear();
        self.params.extend_from_slice(params);
    }

    fn forward(&self, batch: usize, x: &[f32], labels: &[u32], mean_over: usize, out: HeadOutputs<'_, f32>) {
        let c = Ctx { at: &self.at, batch, run: self.run };
        self.layer.forward(&c, x, &self.params, labels, mean_over, out);
    }

    fn backward(&self, batch: usize, x: &[f32], dlogits: &[f32], dx: Option<&mut [f32]>, grads: &mut [f32]) {
        let c = Ctx { at: &self.at, batch, run: self.run };
        let mut own = vec![0.0; grads.len()];
        self.layer.backward(&c, x, dlogits, dx, &self.params, &mut own);
        self.add_own(grads, &own);
    }

    fn regularize(&self, params: &[f32], grads: &mut [f32]) -> f32 {
        let c = Ctx { at: &self.at, batch: 1, run: self.run };
        self.layer.penalty_backward(&c, params, grads);
        self.layer.penalty(&c, params)
    }

    fn penalty(&self, params: &[f32]) -> f32 {
        self.layer.penalty(&Ctx { at: &self.at, batch: 1, run: self.run }, params)
    }
}
