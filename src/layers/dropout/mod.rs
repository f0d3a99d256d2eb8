//! Inverted dropout: in training each element is kept with probability `1 − rate` and scaled by
//! `1 / (1 − rate)`; at inference it passes unchanged. Keras: `Dropout(rate)`. Token: `dR`.
//!
//! The mask is a counter-based hash of (seed, step, layer, element index) — see
//! [`crate::rng::uniform_at`] — so a run is reproducible, nothing is stored between the forward
//! and backward passes, and the CPU reference draws the very same mask as the GPU.
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/dropout.wgsl` (shape, rate and seed in a uniform); fast CPU
//! [`fast`].

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{
    bind_forward_and_input_gradient, cast, Backward, Ctx, Elementwise, GpuFusion, Keep, GpuLayer, Mask, HiddenLayer, Kind, LayerAt, LayerInfo, LayerPass, Parsed, Pass, Reference,
    RunSettings, Tuning,
};
use crate::error::{Error, Result};
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, EntryPoint, Grid, Shader};
use crate::rng::{dropout_key, uniform_at};
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// `dR`: rate R in [0, 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub rate: f32,
}

pub static KIND: Kind = Kind {
    syntax: ("dR", "dropout, rate R"),
    parse,
    shaders: &[&SHADER],
    checks,
    examples: &[("d0.5", [1, 1, 333]), ("d0.3", [3, 4, 5])],
};

fn parse(token: &str) -> Option<std::result::Result<Parsed, String>> {
    let rate = token.strip_prefix('d')?;
    Some(match rate.parse::<f32>() {
        Err(_) => Err("the dropout rate must be a number".into()),
        Ok(rate) if !(0.0..1.0).contains(&rate) => Err("the dropout rate must be in [0, 1)".into()),
        Ok(rate) => Ok(Parsed::Hidden(std::sync::Arc::new(Dropout { rate }))),
    })
}

impl LayerInfo for Dropout {
    fn keras(&self) -> (&'static str, &'static str) {
        ("dropout", "Dropout")
    }

    fn token(&self) -> String {
        format!("d{}", self.rate)
    }

    fn output(&self, input: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok(input)
    }
}

/// Mirror of `DropoutShape` in `shaders/dropout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct DropoutShape {
    pub batch: u32,
    pub sample_len: u32,
    pub layer: u32,
    pub seed: u32,
    pub rate: f32,
    pub scale: f32,
    /// How dx is written for the layers before ([`crate::layers::GpuGrads::mask_dx`]).
    pub mask_pos: f32,
    pub mask_neg: f32,
}

impl DropoutShape {
    /// `batch` samples of `sample_len` elements through the dropout layer at position `layer` of
    /// a run seeded with `seed`.
    pub fn new(batch: usize, sample_len: usize, layer: usize, rate: f32, seed: u32) -> Self {
        DropoutShape {
            batch: batch as u32,
            sample_len: sample_len as u32,
            layer: layer as u32,
            seed,
            rate,
            scale: (1.0 / (1.0 - f64::from(rate))) as f32,
            mask_pos: 1.0,
            mask_neg: 1.0,
        }
    }

    /// The shape of `layer` at `c.at`, for `c.batch` samples.
    pub fn for_layer(layer: &Dropout, c: &Ctx<'_>) -> Self {
        Self::new(c.batch, c.at.input_len(), c.at.index, layer.rate, c.run.seed)
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        DropoutShape { batch: batch as u32, ..*self }
    }

    /// Its keep mask, for the kernels that absorb it.
    pub fn keep(&self) -> Keep {
        Keep { rate: self.rate, scale: self.scale, seed: self.seed, layer: self.layer }
    }

    pub fn len(&self) -> usize {
        (self.batch * self.sample_len) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What element `i` of the step's batch is multiplied by in training step `step`.
    pub fn factor(&self, step: u32, i: usize) -> f32 {
        let keep = uniform_at(dropout_key(self.seed, step, self.layer), i as u32) >= self.rate;
        if keep {
            self.scale
        } else {
            0.0
        }
    }
}

/// `y = x · mask / (1 − rate)` in training, `y = x` at inference, for `s.batch` samples (the
/// step's batch from sample `first` on, which keys the mask by whole-batch element index).
pub fn forward<T: Float>(y: &mut [T], x: &[T], pass: Pass, s: &DropoutShape) {
    for i in 0..s.len() {
        y[i] = match pass {
            Pass::Training { step, first } => x[i] * cast(s.factor(step, first * s.sample_len as usize + i)),
            Pass::Inference => x[i],
        };
    }
}

/// `dx = dy · mask / (1 − rate)`: the same mask as the forward pass of that step.
pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], pass: Pass, s: &DropoutShape) {
    forward(dx, dy, pass, s)
}

impl<T: Float> Reference<T> for Dropout {
    fn forward(&self, c: &Ctx<'_>, pass: Pass, x: &[T], y: &mut [T], _params: &[T], _state: &mut [T]) {
        forward(y, x, pass, &DropoutShape::for_layer(self, c));
    }

    fn backward(&self, c: &Ctx<'_>, pass: Pass, b: Backward<'_, T>) {
        if let Some(dx) = b.dx {
            backward_input(dx, b.dy, pass, &DropoutShape::for_layer(self, c));
        }
    }
}

/// The binding tables of `shaders/dropout.wgsl`.
pub static SHADER: Shader = Shader {
    name: "dropout",
    file: "dropout.wgsl",
    source: shader_source!("common.wgsl", "dropout.wgsl"),
    own: shader_own!("dropout.wgsl"),
    entry_points: &[
        EntryPoint { name: "forward", bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read_write(3, "y")] },
        EntryPoint {
            name: "backward_input",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read(4, "dy"), read_write(5, "dx")],
        },
    ],
};

impl HiddenLayer for Dropout {
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        let mask = gpu.backward.map_or(Mask::NONE, |g| g.dx_mask());
        let s = DropoutShape { mask_pos: mask.pos, mask_neg: mask.neg, ..DropoutShape::for_layer(self, c) };
        let shape = uniform_buffer(gpu.kernels.device(), "dropout shape", &s);
        let (step, shape_arg, bytes) = (arg("step", gpu.step, 32), arg("shape", &shape, 32), floats(s.len()));
        let grid = Grid::Invocations(s.len() as u64);
        let forward = [step, shape_arg, arg("x", gpu.x, bytes), arg("y", gpu.y, bytes)];
        // The backward pass reads x only for a mask.
        let x_read = if mask.is_none() { 0 } else { bytes };
        let backward = gpu.backward.and_then(|g| g.dx.map(|dx| (g.dy, dx))).map(|(dy, dx)| {
            let x = arg("x", gpu.x, bytes).moving(x_read);
            (vec![step, shape_arg, x, arg("dy", dy, bytes), arg("dx", dx, bytes)], grid)
        });
        let mut pass = bind_forward_and_input_gradient(gpu, &SHADER, (&forward, grid, &[]), backward)?;
        pass.buffers.push(shape);
        Ok(pass)
    }

    fn gpu_fusion(&self, c: &Ctx<'_>) -> GpuFusion {
        // dx is dy times the mask's factor: it can take the ReLU before it as well. Absorbed,
        // the layer before applies the mask (the same hash of the same index) as it stores.
        let elementwise = Elementwise::Dropout(DropoutShape::for_layer(self, c).keep());
        GpuFusion { masks_dx: true, elementwise: Some(elementwise), ..Default::default() }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        c: &Ctx<'_>,
        isa: crate::fast::Isa,
        x: crate::fast::Layout,
        y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        Some(Box::new(fast::DropoutPlan::new(&DropoutShape::for_layer(self, c), isa, c.at.input, x.pad, y.pad)))
    }
}

/// Dropout masks must be bit-identical: the GPU and the CPU hash the same counters.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let layer = Dropout { rate: 0.5 };
    let at = LayerAt::place(&layer, 5, "dropout".into(), [1, 1, 333], 0, 0).map_err(Error::invalid)?;
    selftest::hidden_layer(
        ctx,
        &HiddenCheck {
            name: "dropout 0.5".into(),
            layer: &layer,
            at: &at,
            batch: 4,
            used: 4,
            first: false,
            tuning: Tuning::for_adapter(&ctx.info),
            naive: false,
            run: RunSettings { seed: 42, ..Default::default() },
            seed: 12,
            x: None,
            tolerance: Tolerance::EXACT,
        },
    )
}
