//! Adam, exactly as Keras 3's `keras.optimizers.Adam` (lr 1e-3, β₁ 0.9, β₂ 0.999, ε 1e-7):
//! ```text
//! α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)          (t = 1, 2, ... ; on the host, in f64)
//! m ← m + (g − m)·(1 − β₁)
//! v ← v + (g² − v)·(1 − β₂)
//! w ← w − α·m / (√v + ε)
//! ```
//! One dispatch updates every trainable parameter: they share one flat buffer. In a GPU training
//! step the same dispatch first takes the final sums of the layers' split weight-gradient
//! reductions ([`crate::partial_sums::Segments`]) and the dense head's weight gradient
//! ([`DenseGradient`]), which had dispatches of their own ([`Taken`]). The CPU
//! reference is [`update`]; the GPU kernel `shaders/adam.wgsl` ([`bind`]); the fast CPU one
//! [`fast`].
//! β₁, β₂ and ε travel in Adam's own uniform ([`AdamShape`]); the bias-corrected step size α,
//! which changes every step, in the per-step uniform.

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use crate::error::Result;
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{arg, extended, floats, read_write, uniform, Binding, Dispatch, EntryPoint, Grid, Kernels, Shader};
use crate::layers::dense_softmax::{backward_weight, DenseGradient, DenseShape, GRADIENT_BINDINGS};
use crate::layers::StepParams;
use crate::partial_sums::{self, Segment, Segments};
use crate::rng::Rng;
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

/// Adam's hyper-parameters; `Default` is Keras'.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }
    }
}

impl AdamConfig {
    /// The bias-corrected step size of update `t` (1-based).
    pub fn alpha(&self, t: u64) -> f32 {
        let t = t as f64;
        (self.learning_rate * (1.0 - self.beta2.powf(t)).sqrt() / (1.0 - self.beta1.powf(t))) as f32
    }

    pub fn shape(&self, count: usize) -> AdamShape {
        AdamShape {
            count: count as u32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            epsilon: self.epsilon as f32,
        }
    }
}

/// Mirror of `AdamShape` in `shaders/adam.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamShape {
    pub count: u32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub epsilon: f32,
}

/// One Adam update of `params` from `grads`, in the shader's order of operations.
pub fn update<T: Float>(params: &mut [T], m: &mut [T], v: &mut [T], grads: &[T], alpha: f32, s: &AdamShape) {
    let cast = |value: f32| T::from(value).expect("f32 converts to T");
    let (b1, b2, epsilon, alpha) = (cast(s.one_minus_beta1), cast(s.one_minus_beta2), cast(s.epsilon), cast(alpha));
    for i in 0..s.count as usize {
        let g = grads[i];
        m[i] = m[i] + (g - m[i]) * b1;
        v[i] = v[i] + (g * g - v[i]) * b2;
        params[i] = params[i] - (m[i] * alpha) / (v[i].sqrt() + epsilon);
    }
}

const UPDATE: [Binding; 6] = [
    uniform(0, "step"),
    uniform(1, "shape"),
    read_write(2, "params"),
    read_write(3, "grads"),
    read_write(4, "m"),
    read_write(5, "v"),
];

/// `update`'s, and what it takes first (the partial sums' table and scratch, the dense gradient).
const SUM_AND_UPDATE: [Binding; 11] = extended(
    UPDATE,
    [partial_sums::SEGMENTS, partial_sums::SCRATCH, GRADIENT_BINDINGS[0], GRADIENT_BINDINGS[1], GRADIENT_BINDINGS[2]],
);

/// The binding table of `shaders/adam.wgsl`.
pub static SHADER: Shader = Shader {
    name: "adam",
    file: "adam.wgsl",
    source: shader_source!("common.wgsl", "segments.wgsl", "dense_gradient.wgsl", "adam.wgsl"),
    own: shader_own!("adam.wgsl"),
    entry_points: &[
        EntryPoint { name: "update", bindings: &UPDATE },
        EntryPoint { name: "sum_and_update", bindings: &SUM_AND_UPDATE },
    ],
};

/// The buffers Adam works on: the per-step uniform (for `adam_alpha`) and the flat vectors.
pub struct AdamBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    /// `STORAGE`: with `sums`, Adam writes the final sums into it.
    pub grads: &'a wgpu::Buffer,
    pub m: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// The gradients the update takes first (a training step's), or None for the gradients as
    /// they are.
    pub taken: Option<Taken<'a>>,
}

/// The gradients a training step's Adam dispatch computes before it updates, where each had a
/// dispatch of its own, and writes into grads.
#[derive(Clone, Copy)]
pub struct Taken<'a> {
    /// The split weight-gradient reductions' final sums, over the layers' partial-sum scratch.
    pub segments: &'a Segments,
    pub scratch: &'a wgpu::Buffer,
    /// The dense head's weight gradient ([`DenseGradient::none`] for none).
    pub dense: &'a DenseGradient,
}

/// Adam over `shape.count` parameters bound to `b`: one dispatch, and the uniform it made.
pub fn bind(kernels: &Kernels, shape: &AdamShape, b: &AdamBuffers<'_>) -> Result<(Dispatch, wgpu::Buffer)> {
    let device = kernels.device();
    let shape_buffer = uniform_buffer(device, "adam shape", shape);
    let bytes = floats(shape.count as usize);
    let mut args = vec![
        arg("step", b.step, 32),
        arg("shape", &shape_buffer, 16),
        arg("params", b.params, bytes),
        arg("grads", b.grads, bytes),
        arg("m", b.m, bytes),
        arg("v", b.v, bytes),
    ];
    let entry_point = match b.taken {
        Some(taken) => {
            args.extend(taken.segments.args(taken.scratch));
            args.extend(taken.dense.args());
            "sum_and_update"
        }
        None => "update",
    };
    let grid = Grid::Invocations(u64::from(shape.count));
    let update = Dispatch::new(device, &kernels.get(&SHADER, entry_point, &[])?, &args, grid)?;
    Ok((update, shape_buffer))
}

/// Three Adam steps over 1,000 parameters on the GPU against [`update`]: of the gradients as
/// they are, and with what a training step's takes first: two segments of partial sums (one of
/// a single chunk) and a dense layer's weight gradient over 5 of 6 samples.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(14);
    let count = 1000;
    let config = AdamConfig::default();
    let shape = config.shape(count);
    let kernels = Kernels::new(&ctx.device);
    // Out of order, as the layers list them; gradients outside all three are taken as they are.
    let segments = [
        Segment { dst: 600, len: 250, src: 0, chunks: 3, stride: 260 },
        Segment { dst: 10, len: 90, src: 800, chunks: 1, stride: 90 },
    ];
    let scratch_len = segments.iter().map(Segment::scratch_end).max().unwrap_or(0);
    let (batch, used, features, classes) = (6, 5, 30, 7);
    let dense = DenseShape {
        kernel_offset: 200,
        bias_offset: 200 + (features * classes) as u32,
        ..DenseShape::new(batch, features, classes, 1e-2)
    };
    let mut checks = Vec::new();
    for taken in [false, true] {
        let name = if taken { "adam, 3 steps, after partial sums and a dense gradient" } else { "adam, 3 steps" };
        let mut params = selftest::random(&mut rng, count, 1.0);
        params[205] = 0.0; // sign(0) = 0
        let (mut m, mut v) = (vec![0.0; count], vec![0.0; count]);
        let (params_b, m_b, v_b) =
            (selftest::upload(ctx, &params)?, selftest::upload(ctx, &m)?, selftest::upload(ctx, &v)?);
        let mut grads_got = Vec::new();
        let mut grads_expected = Vec::new();
        for t in 1..=3u64 {
            let mut grads = selftest::random(&mut rng, count, 0.1);
            let scratch = selftest::random(&mut rng, scratch_len, 0.1);
            let x = selftest::random(&mut rng, batch * features, 1.0);
            let dlogits = selftest::random(&mut rng, batch * classes, 0.1);
            let (grads_b, scratch_b) = (selftest::upload(ctx, &grads)?, selftest::upload(ctx, &scratch)?);
            let (x_b, dlogits_b) = (selftest::upload(ctx, &x)?, selftest::upload(ctx, &dlogits)?);
            let table = match taken {
                true => Some(Segments::upload(&ctx.device, &segments, count)?),
                false => None,
            };
            let gradient = DenseGradient::new(&ctx.device, &dense, &x_b, &dlogits_b);
            if taken {
                partial_sums::reference(&segments, &scratch, &mut grads);
                let s = dense.with_batch(used);
                let (dkernel, dbias) = grads[s.kernel_offset as usize..].split_at_mut(s.kernel_len());
                backward_weight(dkernel, dbias, &dlogits, &x, &params[s.kernel_range()], &s);
            }
            update(&mut params, &mut m, &mut v, &grads, config.alpha(t), &shape);
            let step = uniform_buffer(
                &ctx.device,
                "selftest step",
                &StepParams { adam_alpha: config.alpha(t), batch_size: used as u32, ..Default::default() },
            );
            let taken = table.as_ref().map(|segments| Taken { segments, scratch: &scratch_b, dense: &gradient });
            let buffers = AdamBuffers { step: &step, params: &params_b, grads: &grads_b, m: &m_b, v: &v_b, taken };
            let (dispatch, _shape) = bind(&kernels, &shape, &buffers)?;
            selftest::run(ctx, |pass| dispatch.record(pass));
            grads_got = selftest::read(ctx, &grads_b, count)?;
            grads_expected = grads;
        }
        checks.extend([
            Check::compare(format!("{name}: params"), &selftest::read(ctx, &params_b, count)?, &params, 1e-7, 1e-6),
            Check::compare(format!("{name}: m"), &selftest::read(ctx, &m_b, count)?, &m, 1e-9, 1e-6),
            Check::compare(format!("{name}: v"), &selftest::read(ctx, &v_b, count)?, &v, 1e-12, 1e-5),
            Check::compare(format!("{name}: grads"), &grads_got, &grads_expected, 1e-7, 1e-6),
        ]);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_adam_steps_match_keras_by_hand() {
        // With g constant, after step 1: m = 0.1·g, v = 0.001·g², α = lr·√0.001/0.1, so
        // w moves by α·m/(√v + ε) = lr·g/(|g| + ε/√0.001·...) ≈ lr·sign(g): Adam's first step is lr.
        let config = AdamConfig::default();
        let shape = config.shape(2);
        let (mut w, mut m, mut v) = (vec![1.0f64, -2.0], vec![0.0; 2], vec![0.0; 2]);
        update(&mut w, &mut m, &mut v, &[0.5, -4.0], config.alpha(1), &shape);
        assert!((w[0] - (1.0 - 1e-3)).abs() < 1e-8, "{}", w[0]);
        assert!((w[1] - (-2.0 + 1e-3)).abs() < 1e-8, "{}", w[1]);
        assert!((m[0] - 0.05).abs() < 1e-8 && (v[1] - 0.016).abs() < 1e-7, "{m:?} {v:?}");
        // α for t = 2: 1e-3·√(1 − 0.999²)/(1 − 0.9²) = 1e-3·0.044710/0.19 = 2.3531e-4.
        assert!((config.alpha(2) - 2.3531e-4).abs() < 1e-8);
    }
}
