//! BatchNormalization over the channel axis, with Keras 3's semantics: `momentum=0.99`,
//! `epsilon=1e-3`, γ = 1, β = 0, moving mean 0 and moving variance 1 at the start. Keras:
//! `BatchNormalization()`. Token: `bn`.
//!
//! # Math
//! Per channel c over its M = N·H·W values of the batch (training) —
//! `mean = Σx / M`, `variance = Σ(x − mean)² / M` (biased, as Keras' `ops.moments`), then
//! `inv = γ / √(variance + ε)` and `y = x·inv + (β − mean·inv)` (TensorFlow's order); the moving
//! statistics move as `moving = moving·momentum + batch·(1 − momentum)`, once per training step.
//! Inference uses the moving statistics in place of the batch's. Backward (training), with
//! `x̂ = (x − mean) / √(variance + ε)`: `dβ = Σdy`, `dγ = Σdy·x̂`,
//! `dx = inv·(dy − (dβ + x̂·dγ) / M)`.
//!
//! γ and β are trainable (Adam, in `params`); the moving statistics are not (in `state`, saved in
//! checkpoints). The CPU sums in f64; the GPU in f32, two dispatches a pass over every channel
//! at once: partial sums per block of pixels, then their combination (Chan's pairwise update for
//! the moments) in block order and each element (no atomics: the same bits every run;
//! [`NormShape::for_batch`]). In training the backward block sums go to the step's scratch, and
//! their final sums, dγ and dβ, are the pass's `sums`, which Adam's dispatch takes as it takes a
//! convolution's: a first layer's backward pass is one dispatch.
//!
//! A training forward pass needs the whole batch (its statistics), so a model with this layer
//! runs each step of the fast CPU engine as one pass of the whole batch, layer by layer
//! ([`HiddenLayer::batch_statistics`]).
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/batch_norm.wgsl`; fast CPU [`fast`].

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{
    cast, epilogue_constants, epilogue_uniform, Backward, Ctx, GpuFusion, GpuLayer, HiddenLayer, Init, Kind, LayerAt, LayerInfo, LayerPass, Parsed, Pass, Reference,
    TensorSpec, Tuning,
};
use crate::error::{Error, Result};
use crate::gpu::{self, uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, Dispatch, EntryPoint, Grid, Shader};
use crate::partial_sums::Segment;
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// Keras 3's defaults.
pub const MOMENTUM: f32 = 0.99;
pub const EPSILON: f32 = 1e-3;

/// `1 − momentum` as Keras computes it (in f64, then as f32).
pub fn one_minus_momentum() -> f32 {
    (1.0 - f64::from(MOMENTUM)) as f32
}

/// Lanes of every workgroup of `shaders/batch_norm.wgsl` (its `STAT_LANES`).
pub const STAT_LANES: usize = 256;
/// About how many blocks of pixel rows the partial sums split a batch into.
pub const PARTIAL_BLOCKS: usize = 32;
/// Pixel rows of one channel each lane of the per-element kernels writes.
pub const ROWS_PER_LANE: usize = 32;

/// `bn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNorm;

pub static KIND: Kind = Kind {
    syntax: ("bn", "batch normalisation over channels (momentum 0.99, epsilon 1e-3)"),
    parse: |token| (token == "bn").then(|| Ok(Parsed::Hidden(std::sync::Arc::new(BatchNorm)))),
    shaders: &[&SHADER],
    checks,
    examples: &[("bn", [3, 4, 5]), ("bn", [1, 1, 6]), ("bn", [2, 5, 3])],
};

impl LayerInfo for BatchNorm {
    fn keras(&self) -> (&'static str, &'static str) {
        ("batch_normalization", "BatchNormalization")
    }

    fn token(&self) -> String {
        "bn".into()
    }

    fn output(&self, input: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok(input)
    }

    /// Keras' order: gamma, beta, moving_mean, moving_variance.
    fn tensors(&self, [_, _, c]: [usize; 3], _: [usize; 3]) -> Vec<TensorSpec> {
        vec![
            TensorSpec::trainable("gamma", vec![c], Init::Ones),
            TensorSpec::trainable("beta", vec![c], Init::Zeros),
            TensorSpec::non_trainable("moving_mean", vec![c], Init::Zeros),
            TensorSpec::non_trainable("moving_variance", vec![c], Init::Ones),
        ]
    }

    fn forward_macs(&self, at: &LayerAt) -> usize {
        at.output_len()
    }
}

/// Mirror of `NormShape` in `shaders/batch_norm.wgsl`: the sizes, and where the layer's tensors
/// live (beta follows gamma in `params`, the moving variance follows the moving mean in `state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct NormShape {
    pub channels: u32,
    pub pixels: u32,
    pub gamma_offset: u32,
    pub mean_offset: u32,
    pub epsilon: f32,
    pub momentum: f32,
    pub one_minus_momentum: f32,
    /// Pixel rows per block of the partial sums, the blocks of the bound batch, and the rows of
    /// each workgroup of the per-element kernels ([`NormShape::for_batch`]).
    pub block_rows: u32,
    pub blocks: u32,
    pub workgroup_rows: u32,
    /// Where the backward partial sums start in the step's scratch
    /// ([`crate::layers::GpuGrads::scratch`]).
    pub gradient_offset: u32,
}

impl NormShape {
    pub fn for_layer(at: &LayerAt) -> Self {
        let (gamma, beta) = (at.tensor("gamma"), at.tensor("beta"));
        let (mean, variance) = (at.tensor("moving_mean"), at.tensor("moving_variance"));
        debug_assert_eq!(beta.offset, gamma.offset + gamma.len(), "beta follows gamma");
        debug_assert_eq!(variance.offset, mean.offset + mean.len(), "the moving variance follows the moving mean");
        let [h, w, c] = at.input;
        NormShape {
            channels: c as u32,
            pixels: (h * w) as u32,
            gamma_offset: gamma.offset as u32,
            mean_offset: mean.offset as u32,
            epsilon: EPSILON,
            momentum: MOMENTUM,
            one_minus_momentum: one_minus_momentum(),
            block_rows: 0,
            blocks: 0,
            workgroup_rows: 0,
            gradient_offset: 0,
        }
    }

    /// The shape with the GPU's blocks for batches of `batch`: about [`PARTIAL_BLOCKS`] blocks
    /// of pixel rows, each summed by one workgroup with loads that follow memory (few enough that
    /// each per-element workgroup combines them all cheaply), and [`ROWS_PER_LANE`] rows of one
    /// channel per lane in the per-element kernels (their workgroups combine the blocks' sums
    /// once for that many elements).
    pub fn for_batch(self, batch: usize) -> Self {
        let rows = (batch * self.pixels as usize).max(1);
        let block_rows = rows.div_ceil(PARTIAL_BLOCKS);
        let lanes_per_channel = STAT_LANES / self.channels().clamp(1, STAT_LANES);
        NormShape {
            block_rows: block_rows as u32,
            blocks: rows.div_ceil(block_rows) as u32,
            workgroup_rows: (lanes_per_channel * ROWS_PER_LANE) as u32,
            ..self
        }
    }

    /// Workgroups of the per-element kernels for batches of `batch`.
    pub fn workgroups(&self, batch: usize) -> usize {
        (batch * self.pixels as usize).div_ceil(self.workgroup_rows.max(1) as usize)
    }

    pub fn channels(&self) -> usize {
        self.channels as usize
    }

    /// γ, β in `params`; moving mean, moving variance in `state`.
    pub fn gamma(&self) -> std::ops::Range<usize> {
        self.gamma_offset as usize..self.gamma_offset as usize + self.channels()
    }

    pub fn beta(&self) -> std::ops::Range<usize> {
        self.gamma().end..self.gamma().end + self.channels()
    }

    pub fn moving_mean(&self) -> std::ops::Range<usize> {
        self.mean_offset as usize..self.mean_offset as usize + self.channels()
    }

    pub fn moving_variance(&self) -> std::ops::Range<usize> {
        self.moving_mean().end..self.moving_mean().end + self.channels()
    }
}

/// Per-channel `(mean, variance)` of the first `m` pixels of `x` (`[m, C]`), summed in f64.
pub fn statistics<T: Float>(x: &[T], m: usize, channels: usize) -> (Vec<T>, Vec<T>) {
    let mut sums = vec![0f64; channels];
    for pixel in x[..m * channels].chunks_exact(channels) {
        for (s, v) in sums.iter_mut().zip(pixel) {
            *s += v.to_f64().expect("a float converts to f64");
        }
    }
    let of = |v: f64| T::from(v).expect("f64 converts to T");
    let mean: Vec<T> = sums.iter().map(|&s| of(s / m as f64)).collect();
    let mut squares = vec![0f64; channels];
    for pixel in x[..m * channels].chunks_exact(channels) {
        for ((s, &v), &mu) in squares.iter_mut().zip(pixel).zip(&mean) {
            let d = (v - mu).to_f64().expect("a float converts to f64");
            *s += d * d;
        }
    }
    (mean, squares.iter().map(|&s| of(s / m as f64)).collect())
}

/// `1 / √(variance + ε)` per channel.
pub fn inv_std<T: Float>(variance: &[T]) -> Vec<T> {
    variance.iter().map(|&v| T::one() / (v + cast(EPSILON)).sqrt()).collect()
}

/// `y = x·inv + (β − mean·inv)` with `inv = γ / √(variance + ε)`, for the first `m` pixels.
pub fn normalize<T: Float>(y: &mut [T], x: &[T], m: usize, mean: &[T], variance: &[T], gamma: &[T], beta: &[T]) {
    let channels = mean.len();
    let inv: Vec<T> = inv_std(variance).iter().zip(gamma).map(|(&r, &g)| r * g).collect();
    for (y, x) in y[..m * channels].chunks_exact_mut(channels).zip(x.chunks_exact(channels)) {
        for c in 0..channels {
            y[c] = x[c] * inv[c] + (beta[c] - mean[c] * inv[c]);
        }
    }
}

/// `moving = moving·momentum + batch·(1 − momentum)`.
pub fn update_moving<T: Float>(moving: &mut [T], batch: &[T]) {
    let (momentum, rest): (T, T) = (cast(MOMENTUM), cast(one_minus_momentum()));
    for (m, &b) in moving.iter_mut().zip(batch) {
        *m = *m * momentum + b * rest;
    }
}

/// `(dγ, dβ) = (Σdy·x̂, Σdy)` per channel over the first `m` pixels, summed in f64.
pub fn backward_weight<T: Float>(dy: &[T], x: &[T], m: usize, mean: &[T], inv_std: &[T]) -> (Vec<T>, Vec<T>) {
    let channels = mean.len();
    let (mut dgamma, mut dbeta) = (vec![0f64; channels], vec![0f64; channels]);
    for (g, x) in dy[..m * channels].chunks_exact(channels).zip(x.chunks_exact(channels)) {
        for c in 0..channels {
            let xhat = (x[c] - mean[c]) * inv_std[c];
            dbeta[c] += g[c].to_f64().expect("a float converts to f64");
            dgamma[c] += (g[c] * xhat).to_f64().expect("a float converts to f64");
        }
    }
    let of = |v: &Vec<f64>| v.iter().map(|&s| T::from(s).expect("f64 converts to T")).collect();
    (of(&dgamma), of(&dbeta))
}

/// `dx = inv·(dy − (dβ + x̂·dγ) / M)` (training: the statistics are the batch's and depend on x).
#[allow(clippy::too_many_arguments)]
pub fn backward_input<T: Float>(
    dx: &mut [T],
    dy: &[T],
    x: &[T],
    m: usize,
    mean: &[T],
    inv_std: &[T],
    gamma: &[T],
    (dgamma, dbeta): (&[T], &[T]),
) {
    let channels = mean.len();
    let count = T::from(m).expect("a count converts to T");
    let rows = dx[..m * channels].chunks_exact_mut(channels).zip(dy.chunks_exact(channels)).zip(x.chunks_exact(channels));
    for ((dx, g), x) in rows {
        for c in 0..channels {
            let xhat = (x[c] - mean[c]) * inv_std[c];
            dx[c] = inv_std[c] * gamma[c] * (g[c] - (dbeta[c] + xhat * dgamma[c]) / count);
        }
    }
}

impl<T: Float> Reference<T> for BatchNorm {
    fn forward(&self, c: &Ctx<'_>, pass: Pass, x: &[T], y: &mut [T], params: &[T], state: &mut [T]) {
        let s = NormShape::for_layer(c.at);
        let m = c.batch * s.pixels as usize;
        let (gamma, beta) = (&params[s.gamma()], &params[s.beta()]);
        if pass.is_training() {
            let (mean, variance) = statistics(x, m, s.channels());
            normalize(y, x, m, &mean, &variance, gamma, beta);
            update_moving(&mut state[s.moving_mean()], &mean);
            update_moving(&mut state[s.moving_variance()], &variance);
        } else {
            normalize(y, x, m, &state[s.moving_mean()], &state[s.moving_variance()], gamma, beta);
        }
    }

    /// In training, through the batch statistics; the reference is never asked for an inference
    /// backward pass, where the statistics would be constants.
    fn backward(&self, c: &Ctx<'_>, _pass: Pass, b: Backward<'_, T>) {
        let s = NormShape::for_layer(c.at);
        let m = c.batch * s.pixels as usize;
        let (mean, variance) = statistics(b.x, m, s.channels());
        let inv = inv_std(&variance);
        let (dgamma, dbeta) = backward_weight(b.dy, b.x, m, &mean, &inv);
        if let Some(dx) = b.dx {
            backward_input(dx, b.dy, b.x, m, &mean, &inv, &b.params[s.gamma()], (&dgamma, &dbeta));
        }
        b.grads[s.gamma()].copy_from_slice(&dgamma);
        b.grads[s.beta()].copy_from_slice(&dbeta);
    }
}

/// The binding tables of `shaders/batch_norm.wgsl`.
pub static SHADER: Shader = Shader {
    name: "batch_norm",
    file: "batch_norm.wgsl",
    source: shader_source!("common.wgsl", "epilogue.wgsl", "batch_norm.wgsl"),
    own: shader_own!("batch_norm.wgsl"),
    entry_points: &[
        EntryPoint {
            name: "moments",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read_write(10, "partials")],
        },
        EntryPoint {
            name: "forward",
            bindings: &[
                uniform(0, "step"),
                uniform(1, "shape"),
                read(2, "x"),
                read(3, "params"),
                read_write(4, "state"),
                read_write(5, "stats"),
                read_write(6, "y"),
                read_write(10, "partials"),
                uniform(15, "epilogue"),
            ],
        },
        EntryPoint {
            name: "backward_partials",
            bindings: &[
                uniform(0, "step"),
                uniform(1, "shape"),
                read(2, "x"),
                read_write(5, "stats"),
                read(7, "dy"),
                read_write(10, "partials"),
            ],
        },
        EntryPoint {
            name: "backward",
            bindings: &[
                uniform(0, "step"),
                uniform(1, "shape"),
                read(2, "x"),
                read(3, "params"),
                read_write(5, "stats"),
                read(7, "dy"),
                read_write(9, "dx"),
                read_write(10, "partials"),
            ],
        },
    ],
};

impl HiddenLayer for BatchNorm {
    fn batch_statistics(&self) -> bool {
        true
    }

    fn gpu_fusion(&self, _c: &Ctx<'_>) -> GpuFusion {
        // The forward kernel writes each output once: it can apply an activation after it.
        GpuFusion { takes_epilogue: true, ..Default::default() }
    }

    fn gpu_scratch_len(&self, c: &Ctx<'_>, _tuning: Tuning, _naive: bool) -> usize {
        // Σdy and Σdy·x̂ of every channel, per block.
        let s = NormShape::for_layer(c.at).for_batch(c.batch);
        2 * s.channels() * s.blocks as usize
    }

    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        let s = NormShape {
            gradient_offset: gpu.backward.map_or(0, |g| g.scratch_offset),
            ..NormShape::for_layer(c.at).for_batch(c.batch)
        };
        let device = gpu.kernels.device();
        let shape = uniform_buffer(device, "batch norm shape", &s);
        let channels = s.channels();
        let stats_buffer = gpu::storage_buffer(device, "batch norm statistics", floats(2 * channels))?;
        let partials_len = 2 * channels * s.blocks as usize;
        let partials_buffer = gpu::storage_buffer(device, "batch norm partial sums", floats(partials_len))?;
        let len = c.batch * c.at.input_len();
        let size = std::mem::size_of::<NormShape>() as u64;
        let (step, shape_arg, bytes) = (arg("step", gpu.step, 32), arg("shape", &shape, size), floats(len));
        let x = arg("x", gpu.x, bytes);
        let params = arg("params", gpu.params, floats(s.beta().end));
        let state = arg("state", gpu.state, floats(s.moving_variance().end));
        let stats = arg("stats", &stats_buffer, floats(2 * channels));
        let partials = arg("partials", &partials_buffer, floats(partials_len));
        let (blocks, elements) = (Grid::Workgroups(u64::from(s.blocks)), Grid::Workgroups(s.workgroups(c.batch) as u64));
        // A hardware GPU shares each channel's combined sums through workgroup memory; on a
        // software adapter every lane combines them itself (`SHARED_VALUES`).
        let shared = ("SHARED_VALUES", f64::from(u8::from(gpu.tuning == Tuning::Hardware)));
        // Each pipeline keyed by the constants its kernel reads.
        let kernel = |entry: &str, constants: &[(&'static str, f64)]| gpu.kernels.get(&SHADER, entry, constants);
        let mut pass = LayerPass::default();
        pass.forward.push(Dispatch::new(device, &kernel("moments", &[])?, &[step, shape_arg, x, partials], blocks)?);
        let epilogue = epilogue_uniform(gpu);
        pass.forward.push(Dispatch::new(
            device,
            &kernel("forward", &[epilogue_constants(gpu)[0], shared])?,
            &[step, shape_arg, x, params, state, stats, arg("y", gpu.y, bytes), partials, arg("epilogue", &epilogue, 32)],
            elements,
        )?);
        pass.buffers.push(epilogue);
        if let Some(g) = gpu.backward {
            let dy = arg("dy", g.dy, bytes);
            // The backward partial sums in the layer's region of the scratch, whose final sums,
            // dbeta and dgamma, are the pass's `sums`.
            let len = 2 * channels as u32 * s.blocks;
            let partials = arg("partials", g.scratch, floats((s.gradient_offset + len) as usize)).moving(floats(len as usize));
            pass.backward.push(Dispatch::new(
                device,
                &kernel("backward_partials", &[])?,
                &[step, shape_arg, x, stats, dy, partials],
                blocks,
            )?);
            if let Some(dx) = g.dx {
                pass.backward.push(Dispatch::new(
                    device,
                    &kernel("backward", &[shared])?,
                    &[step, shape_arg, x, params, stats, dy, arg("dx", dx, bytes), partials],
                    elements,
                )?);
            }
            let (c, blocks) = (channels as u32, s.blocks);
            let segment = |dst: u32, src: u32| Segment { dst, len: c, src, chunks: blocks, stride: 2 * c };
            pass.sums = vec![
                segment(s.gamma_offset, s.gradient_offset + c),
                segment(s.gamma_offset + c, s.gradient_offset),
            ];
        }
        pass.buffers.extend([shape, stats_buffer, partials_buffer]);
        Ok(pass)
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        c: &Ctx<'_>,
        isa: crate::fast::Isa,
        x: crate::fast::Layout,
        y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        Some(Box::new(fast::NormPlan::new(NormShape::for_layer(c.at), isa, x, y, c.batch)))
    }
}

/// The GPU's statistics, normalisation, moving statistics and gradients against the reference,
/// on partial batches, with the layer's tensors at offsets past others': of one block and of
/// many (a partial batch leaves some empty), channels that share a chunk's lanes unevenly (7,
/// 10) and more channels than a workgroup has lanes (300), and as a first layer (no dx).
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    // Both ways of sharing a channel's sums (SHARED_VALUES), whatever this adapter is.
    let (adapter, hardware) = (Tuning::for_adapter(&ctx.info), Tuning::Hardware);
    let cases = [
        ([5, 6, 7], 4, 3, false, adapter),
        ([1, 1, 10], 5, 5, false, adapter),
        ([16, 16, 16], 8, 8, false, adapter),
        ([16, 16, 16], 8, 5, false, adapter),
        ([2, 3, 300], 3, 2, false, adapter),
        ([5, 6, 7], 4, 4, true, adapter),
        ([16, 16, 16], 8, 5, false, hardware),
        ([2, 3, 300], 3, 2, false, hardware),
        ([1, 1, 10], 5, 5, false, hardware),
    ];
    for (input, batch, used, first, tuning) in cases {
        let at = LayerAt::place(&BatchNorm, 3, "batch_normalization".into(), input, 12, 6).map_err(Error::invalid)?;
        let blocks = NormShape::for_layer(&at).for_batch(batch).blocks;
        let role = match (first, tuning) {
            (true, _) => ", first layer",
            (false, Tuning::Hardware) => ", sums shared",
            (false, Tuning::Software) => "",
        };
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        checks.extend(selftest::hidden_layer(
            ctx,
            &HiddenCheck {
                name: format!("batch norm {input:?}, batch {used}/{batch}, {blocks} block{}{role}", plural(blocks)),
                layer: &BatchNorm,
                at: &at,
                batch,
                used,
                first,
                tuning,
                naive: false,
                run: Default::default(),
                seed: 77 + input[2] as u64,
                x: None,
                tolerance: Tolerance { y: (1e-5, 1e-4), dx: (1e-5, 1e-4), grads: (1e-5, 1e-4) },
            },
        )?);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_batch() {
        let at = |input| LayerAt::place(&BatchNorm, 0, "bn".into(), input, 0, 0).unwrap();
        for (input, batch) in [([32, 32, 16], 128), ([8, 8, 32], 128), ([1, 1, 10], 5), ([3, 3, 300], 1), ([1, 1, 1], 1)] {
            let s = NormShape::for_layer(&at(input)).for_batch(batch);
            let rows = batch * input[0] * input[1];
            let (block_rows, blocks) = (s.block_rows as usize, s.blocks as usize);
            assert!(blocks <= PARTIAL_BLOCKS && block_rows * blocks >= rows, "{input:?}: {s:?}");
            assert!(block_rows * (blocks - 1) < rows, "no empty block: {input:?}: {s:?}");
            assert!(s.workgroups(batch) * s.workgroup_rows as usize >= rows);
        }
        // 16 channels: 16 lanes each, 32 rows a lane.
        assert_eq!(NormShape::for_layer(&at([32, 32, 16])).for_batch(128).workgroup_rows, 512);
    }
}
