//! A hidden Dense layer: Flatten (when its input is an image) + `Dense(U, activation='relu')`,
//! or with no activation. Keras: `Dense(U, activation='relu')` / `Dense(U)`, Glorot-uniform
//! kernel, zero bias, no regulariser (Keras' script puts the L1 penalty on the final layer only,
//! [`super::dense_softmax`]). Tokens: `hU` (ReLU) and `hUn` (no activation), before the final
//! `fK`; dropout and activations may follow it, convolutions and pooling may not (its output is
//! flat).
//!
//! # Shapes
//! x `[N, F]` (the NHWC tensor, flattened for free), kernel `[F, U]`, bias `[U]`, y `[N, U]`
//! (stored as `[N, 1, 1, U]`). With `dpre = dy · (y > 0)` (dy without the activation):
//! `dkernel = xᵀ·dpre`, `dbias = Σ_n dpre`, `dx = dpre·kernelᵀ`.
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/dense.wgsl`; fast CPU [`fast`], through the head's
//! register-tiled products ([`super::dense_softmax::fast::DensePlan`]).

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{
    positive, Backward, Ctx, GpuLayer, HiddenLayer, Init, Kind, LayerAt, LayerInfo, LayerPass, Parsed, Pass, Reference,
    SummaryRow, TensorSpec, Tuning,
};
use crate::error::{Error, Result};
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, Dispatch, EntryPoint, Grid, Shader};
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// `hU`: U units, ReLU; `hUn`: no activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub units: usize,
    pub relu: bool,
}

/// The most units a hidden dense layer may have.
pub const MAX_UNITS: usize = 65_536;

pub static KIND: Kind = Kind {
    syntax: ("hU, hUn", "hidden dense layer of U units with ReLU (n: no activation), e.g. h128"),
    parse,
    shaders: &[&SHADER],
    checks,
    examples: &[("h6", [2, 3, 4]), ("h5n", [1, 1, 7]), ("h9", [3, 3, 2])],
};

fn parse(token: &str) -> Option<std::result::Result<Parsed, String>> {
    let rest = token.strip_prefix('h')?;
    let (units, relu) = rest.strip_suffix('n').map_or((rest, true), |units| (units, false));
    Some(match positive(units) {
        Some(units) if units <= MAX_UNITS => Ok(Parsed::Hidden(std::sync::Arc::new(Dense { units, relu }))),
        Some(_) => Err(format!("at most {MAX_UNITS} units")),
        None => Err("the unit count must be a positive whole number, e.g. h128".into()),
    })
}

impl LayerInfo for Dense {
    fn keras(&self) -> (&'static str, &'static str) {
        ("dense", "Dense")
    }

    fn token(&self) -> String {
        format!("h{}{}", self.units, if self.relu { "" } else { "n" })
    }

    fn output(&self, _input: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        Ok([1, 1, self.units])
    }

    fn flat_output(&self, _flat_input: bool) -> std::result::Result<bool, String> {
        Ok(true)
    }

    /// Keras' fans: `(F, U)`.
    fn tensors(&self, input: [usize; 3], _: [usize; 3]) -> Vec<TensorSpec> {
        let (features, u) = (input.iter().product(), self.units);
        vec![
            TensorSpec::trainable("kernel", vec![features, u], Init::GlorotUniform { fan_in: features, fan_out: u }),
            TensorSpec::trainable("bias", vec![u], Init::Zeros),
        ]
    }

    fn summary_rows(&self, at: &LayerAt) -> Vec<SummaryRow> {
        super::dense_rows(at, self.units)
    }

    fn forward_macs(&self, at: &LayerAt) -> usize {
        at.input_len() * self.units
    }
}

/// Mirror of `HiddenDenseShape` in `shaders/dense.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HiddenDenseShape {
    pub batch: u32,
    pub features: u32,
    pub units: u32,
    pub kernel_offset: u32,
    pub bias_offset: u32,
    pub relu: u32,
    pub _pad: [u32; 2],
}

impl HiddenDenseShape {
    pub fn for_layer(layer: &Dense, c: &Ctx<'_>) -> Self {
        let (kernel, bias) = (c.at.tensor("kernel"), c.at.tensor("bias"));
        debug_assert_eq!(bias.offset, kernel.offset + kernel.len(), "the bias follows the kernel");
        HiddenDenseShape {
            batch: c.batch as u32,
            features: c.at.input_len() as u32,
            units: layer.units as u32,
            kernel_offset: kernel.offset as u32,
            bias_offset: bias.offset as u32,
            relu: u32::from(layer.relu),
            _pad: [0; 2],
        }
    }

    pub fn kernel_range(&self) -> std::ops::Range<usize> {
        self.kernel_offset as usize..(self.kernel_offset + self.features * self.units) as usize
    }

    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias_offset as usize..(self.bias_offset + self.units) as usize
    }

    /// The head's shape for the same product (its fast kernels are this layer's).
    pub fn as_dense_shape(&self) -> super::dense_softmax::DenseShape {
        super::dense_softmax::DenseShape {
            batch: self.batch,
            features: self.features,
            classes: self.units,
            kernel_offset: self.kernel_offset,
            bias_offset: self.bias_offset,
            ..super::dense_softmax::DenseShape::new(0, 0, 0, 0.0)
        }
    }
}

/// `y = relu(x·kernel + bias)` (no ReLU when `!relu`) for `batch` samples.
pub fn forward<T: Float>(y: &mut [T], x: &[T], kernel: &[T], bias: &[T], batch: usize, relu: bool) {
    let (units, features) = (bias.len(), kernel.len() / bias.len().max(1));
    for n in 0..batch {
        for j in 0..units {
            let mut sum = bias[j];
            for f in 0..features {
                sum = sum + x[n * features + f] * kernel[f * units + j];
            }
            y[n * units + j] = if relu { sum.max(T::zero()) } else { sum };
        }
    }
}

/// `dpre = dy · (y > 0)`, or `dy` without the activation.
pub fn dpre<T: Float>(dy: &[T], y: &[T], relu: bool) -> Vec<T> {
    dy.iter().zip(y).map(|(&g, &v)| if !relu || v > T::zero() { g } else { T::zero() }).collect()
}

/// `dkernel = xᵀ·dpre`, `dbias = Σ_n dpre` (overwritten) for `batch` samples.
pub fn backward_weight<T: Float>(dkernel: &mut [T], dbias: &mut [T], dpre: &[T], x: &[T], batch: usize) {
    let (units, features) = (dbias.len(), dkernel.len() / dbias.len().max(1));
    for f in 0..features {
        for j in 0..units {
            dkernel[f * units + j] = (0..batch).fold(T::zero(), |s, n| s + x[n * features + f] * dpre[n * units + j]);
        }
    }
    for j in 0..units {
        dbias[j] = (0..batch).fold(T::zero(), |s, n| s + dpre[n * units + j]);
    }
}

/// `dx = dpre·kernelᵀ` for `batch` samples.
pub fn backward_input<T: Float>(dx: &mut [T], dpre: &[T], kernel: &[T], batch: usize, units: usize) {
    let features = kernel.len() / units.max(1);
    for n in 0..batch {
        for f in 0..features {
            dx[n * features + f] = (0..units).fold(T::zero(), |s, j| s + dpre[n * units + j] * kernel[f * units + j]);
        }
    }
}

impl<T: Float> Reference<T> for Dense {
    fn forward(&self, c: &Ctx<'_>, _pass: Pass, x: &[T], y: &mut [T], params: &[T], _state: &mut [T]) {
        let s = HiddenDenseShape::for_layer(self, c);
        forward(y, x, &params[s.kernel_range()], &params[s.bias_range()], c.batch, self.relu);
    }

    fn backward(&self, c: &Ctx<'_>, _pass: Pass, b: Backward<'_, T>) {
        let s = HiddenDenseShape::for_layer(self, c);
        let n = c.batch * self.units;
        let dpre = dpre(&b.dy[..n], &b.y[..n], self.relu);
        if let Some(dx) = b.dx {
            backward_input(dx, &dpre, &b.params[s.kernel_range()], c.batch, self.units);
        }
        let (dkernel, dbias) = b.grads[s.kernel_offset as usize..s.bias_range().end].split_at_mut(s.kernel_range().len());
        backward_weight(dkernel, dbias, &dpre, b.x, c.batch);
    }
}

/// The binding tables of `shaders/dense.wgsl`.
pub static SHADER: Shader = Shader {
    name: "dense",
    file: "dense.wgsl",
    source: shader_source!("common.wgsl", "dense_dot.wgsl", "dense.wgsl"),
    own: shader_own!("dense.wgsl"),
    entry_points: &[
        EntryPoint {
            name: "forward",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read(3, "params"), read_write(4, "y")],
        },
        EntryPoint {
            name: "backward_weight",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read_write(4, "y"), read(5, "dy"), read_write(6, "grads")],
        },
        EntryPoint {
            name: "backward_input",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(3, "params"), read_write(4, "y"), read(5, "dy"), read_write(7, "dx")],
        },
    ],
};

impl HiddenLayer for Dense {
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        let s = HiddenDenseShape::for_layer(self, c);
        let device = gpu.kernels.device();
        let kernel = |entry: &str| gpu.kernels.get(&SHADER, entry, &[]);
        let shape = uniform_buffer(device, "dense shape", &s);
        let (batch, features, units) = (c.batch, s.features as usize, self.units);
        let (step, shape_arg) = (arg("step", gpu.step, 32), arg("shape", &shape, 32));
        let x = arg("x", gpu.x, floats(batch * features));
        let params = arg("params", gpu.params, floats(s.bias_range().end));
        let y = arg("y", gpu.y, floats(batch * units));
        let mut pass = LayerPass::default();
        // One workgroup per output.
        pass.forward.push(Dispatch::new(
            device,
            &kernel("forward")?,
            &[step, shape_arg, x, params, y],
            Grid::Workgroups((batch * units) as u64),
        )?);
        if let Some(g) = gpu.backward {
            let dy = arg("dy", g.dy, floats(batch * units));
            pass.backward.push(Dispatch::new(
                device,
                &kernel("backward_weight")?,
                &[step, shape_arg, x, y, dy, arg("grads", g.grads, floats(s.bias_range().end))],
                Grid::Invocations(((features + 1) * units) as u64),
            )?);
            if let Some(dx) = g.dx {
                pass.backward.push(Dispatch::new(
                    device,
                    &kernel("backward_input")?,
                    &[step, shape_arg, params, y, dy, arg("dx", dx, floats(batch * features))],
                    Grid::Invocations((batch * features) as u64),
                )?);
            }
        }
        pass.buffers.push(shape);
        Ok(pass)
    }

    #[cfg(feature = "fast-cpu")]
    fn fast_fusion(&self) -> crate::fast::Fusion {
        // dpre in a plain buffer of the engine's: the products read it as a matrix.
        crate::fast::Fusion { dpre_pad: Some(0), ..Default::default() }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        c: &Ctx<'_>,
        isa: crate::fast::Isa,
        x: crate::fast::Layout,
        y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        // The products read x and write y plain: a dense layer reads its input unpadded (no
        // input_pad) and is followed by no convolution (its output is flat).
        debug_assert!(x.pad == 0 && y.pad == 0, "a dense layer's neighbours never pad: {x:?}, {y:?}");
        Some(Box::new(fast::HiddenDensePlan::new(&HiddenDenseShape::for_layer(self, c), isa)))
    }
}

/// Both activations, a partial batch, the layer's tensors past others'.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for (layer, input, first) in [(Dense { units: 12, relu: true }, [4, 5, 3], false), (Dense { units: 7, relu: false }, [1, 1, 70], true)] {
        let at = LayerAt::place(&layer, 4, "dense".into(), input, 9, 0).map_err(Error::invalid)?;
        checks.extend(selftest::hidden_layer(
            ctx,
            &HiddenCheck {
                name: format!("dense {input:?}→{}{}", layer.units, if layer.relu { " relu" } else { "" }),
                layer: &layer,
                at: &at,
                batch: 5,
                used: 4,
                first,
                tuning: Tuning::for_adapter(&ctx.info),
                naive: false,
                run: Default::default(),
                seed: 91 + layer.units as u64,
                x: None,
                tolerance: Tolerance { y: (1e-5, 1e-4), dx: (1e-5, 1e-4), grads: (1e-5, 1e-4) },
            },
        )?);
    }
    Ok(checks)
}
