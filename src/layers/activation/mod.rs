//! Activations as layers of their own: ReLU and LeakyReLU. Keras: `Activation('relu')` and
//! `LeakyReLU(negative_slope=0.3)` (Keras 3's default slope). Tokens: `relu`, `lrelu` and
//! `lreluA` (slope A, e.g. `lrelu0.1`).
//!
//! `y = x` where `x > 0`, else `slope · x` (`0` for ReLU); `dx = dy` where `x > 0`, else
//! `slope · dy` — TensorFlow's gradient, which takes the slope at `x = 0`.
//!
//! A convolution's own `activation='relu'` (`cK`) stays fused into it; these layers are for
//! what comes after a `BatchNormalization` or a convolution without activation (`cKn`).
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/activation.wgsl` (length and slope in a uniform); fast CPU
//! [`fast`].

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{
    bind_forward_and_input_gradient, cast, Backward, Ctx, Elementwise, GpuFusion, GpuLayer, HiddenLayer, Kind, LayerAt, LayerInfo, LayerPass,
    Parsed, Pass, Reference, Tuning,
};
use crate::error::{Error, Result};
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, EntryPoint, Grid, Shader};
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// Keras 3's `LeakyReLU()` slope.
pub const LEAKY_RELU_SLOPE: f32 = 0.3;

/// `relu`, or `lrelu` with its negative slope.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f32 },
}

pub static KIND: Kind = Kind {
    syntax: ("relu, lrelu, lreluA", "ReLU; LeakyReLU with slope 0.3, or A"),
    parse,
    shaders: &[&SHADER],
    checks,
    examples: &[("relu", [3, 4, 5]), ("lrelu", [2, 3, 7]), ("lrelu0.1", [1, 1, 9])],
};

fn parse(token: &str) -> Option<std::result::Result<Parsed, String>> {
    let layer = |a: Activation| Some(Ok(Parsed::Hidden(std::sync::Arc::new(a))));
    if token == "relu" {
        return layer(Activation::Relu);
    }
    let slope = token.strip_prefix("lrelu")?;
    if slope.is_empty() {
        return layer(Activation::LeakyRelu { slope: LEAKY_RELU_SLOPE });
    }
    match slope.parse::<f32>() {
        Ok(slope) if slope.is_finite() && (0.0..1.0).contains(&slope) => layer(Activation::LeakyRelu { slope }),
        _ => Some(Err("the LeakyReLU slope must be a number in [0, 1), e.g. lrelu0.1".into())),
    }
}

impl Activation {
    /// The factor of negative inputs.
    pub fn slope(&self) -> f32 {
        match self {
            Activation::Relu => 0.0,
            Activation::LeakyRelu { slope } => *slope,
        }
    }
}

impl LayerInfo for Activation {
    fn keras(&self) -> (&'static str, &'static str) {
        match self {
            Activation::Relu => ("activation", "Activation"),
            Activation::LeakyRelu { .. } => ("leaky_re_lu", "LeakyReLU"),
        }
    }

    fn token(&self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu { slope } if *slope == LEAKY_RELU_SLOPE => "lrelu".into(),
            Activation::LeakyRelu { slope } => format!("lrelu{slope}"),
        }
    }

    fn output(&self, input: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok(input)
    }
}

/// Mirror of `ActivationShape` in `shaders/activation.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ActivationShape {
    pub sample_len: u32,
    /// 0 for ReLU.
    pub slope: f32,
    pub leaky: u32,
    pub _pad: u32,
}

impl ActivationShape {
    pub fn new(layer: &Activation, sample_len: usize) -> Self {
        let leaky = matches!(layer, Activation::LeakyRelu { .. });
        ActivationShape { sample_len: sample_len as u32, slope: layer.slope(), leaky: u32::from(leaky), _pad: 0 }
    }
}

/// `y = x > 0 ? x : slope·x` (ReLU: `max(x, 0)`).
pub fn forward<T: Float>(y: &mut [T], x: &[T], layer: &Activation) {
    let slope: T = cast(layer.slope());
    for (y, &x) in y.iter_mut().zip(x) {
        *y = match layer {
            Activation::Relu => x.max(T::zero()),
            Activation::LeakyRelu { .. } if x > T::zero() => x,
            Activation::LeakyRelu { .. } => slope * x,
        };
    }
}

/// `dx = x > 0 ? dy : slope·dy`.
pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], x: &[T], layer: &Activation) {
    let slope: T = cast(layer.slope());
    for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
        *dx = if x > T::zero() { dy } else { slope * dy };
    }
}

impl<T: Float> Reference<T> for Activation {
    fn forward(&self, c: &Ctx<'_>, _pass: Pass, x: &[T], y: &mut [T], _params: &[T], _state: &mut [T]) {
        let n = c.batch * c.at.input_len();
        forward(&mut y[..n], &x[..n], self);
    }

    fn backward(&self, c: &Ctx<'_>, _pass: Pass, b: Backward<'_, T>) {
        if let Some(dx) = b.dx {
            let n = c.batch * c.at.input_len();
            backward_input(&mut dx[..n], &b.dy[..n], &b.x[..n], self);
        }
    }
}

/// The binding tables of `shaders/activation.wgsl`.
pub static SHADER: Shader = Shader {
    name: "activation",
    file: "activation.wgsl",
    source: shader_source!("common.wgsl", "activation.wgsl"),
    own: shader_own!("activation.wgsl"),
    entry_points: &[
        EntryPoint { name: "forward", bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read_write(3, "y")] },
        EntryPoint {
            name: "backward_input",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read(4, "dy"), read_write(5, "dx")],
        },
    ],
};

impl HiddenLayer for Activation {
    fn gpu_fusion(&self, _c: &Ctx<'_>) -> GpuFusion {
        let elementwise = match *self {
            Activation::Relu => Elementwise::Relu,
            Activation::LeakyRelu { slope } => Elementwise::LeakyRelu { slope },
        };
        GpuFusion { elementwise: Some(elementwise), ..Default::default() }
    }

    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        let s = ActivationShape::new(self, c.at.input_len());
        let shape = uniform_buffer(gpu.kernels.device(), "activation shape", &s);
        let len = c.batch * c.at.input_len();
        let (step, shape_arg, bytes) = (arg("step", gpu.step, 32), arg("shape", &shape, 16), floats(len));
        let grid = Grid::Invocations(len as u64);
        let x = arg("x", gpu.x, bytes);
        let forward = [step, shape_arg, x, arg("y", gpu.y, bytes)];
        let backward = gpu.backward.and_then(|g| g.dx.map(|dx| (g.dy, dx))).map(|(dy, dx)| {
            (vec![step, shape_arg, x, arg("dy", dy, bytes), arg("dx", dx, bytes)], grid)
        });
        let mut pass = bind_forward_and_input_gradient(gpu, &SHADER, (&forward, grid, &[]), backward)?;
        pass.buffers.push(shape);
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
        Some(Box::new(fast::ActivationPlan { layer: *self, isa, x, y, batch: c.batch }))
    }
}

/// Both activations on the GPU against the reference, with inputs that include exact zeros.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (layer, name) in [(Activation::Relu, "relu"), (Activation::LeakyRelu { slope: LEAKY_RELU_SLOPE }, "leaky relu 0.3")] {
        let at = LayerAt::place(&layer, 2, "activation".into(), [3, 5, 7], 0, 0).map_err(Error::invalid)?;
        let mut x = selftest::random(&mut crate::rng::Rng::new(5), 4 * at.input_len(), 1.0);
        x[..7].fill(0.0);
        checks.extend(selftest::hidden_layer(
            ctx,
            &HiddenCheck {
                name: format!("{name} [3, 5, 7]"),
                layer: &layer,
                at: &at,
                batch: 4,
                used: 3,
                first: false,
                tuning: Tuning::for_adapter(&ctx.info),
                naive: false,
                run: Default::default(),
                seed: 31,
                x: Some(x),
                tolerance: Tolerance::EXACT,
            },
        )?);
    }
    Ok(checks)
}
