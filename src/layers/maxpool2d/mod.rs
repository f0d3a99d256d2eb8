//! MaxPooling2D: 2×2 window, stride 2, 'valid' padding. Keras: `MaxPooling2D((2, 2))`.
//! Token: `p`.
//!
//! # Shapes
//! x `[N, H, W, C]`, y `[N, H/2, W/2, C]` (floor). The gradient goes to the first maximum of
//! each window (row-major), as TensorFlow's.
//!
//! # Where it runs
//! CPU reference below; GPU `shaders/maxpool2d.wgsl` (shape in a uniform); fast CPU [`fast`].

#[cfg(feature = "fast-cpu")]
pub mod fast;

use bytemuck::{Pod, Zeroable};
use num_traits::Float;

use super::{bind_forward_and_input_gradient, epilogue_constants, epilogue_uniform, Backward, Ctx, GpuFusion, GpuLayer, Mask, HiddenLayer, Kind, LayerAt, LayerInfo, LayerPass, Parsed, Pass, Reference, Tuning};
use crate::error::{Error, Result};
use crate::gpu::{uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, EntryPoint, Grid, Shader};
use crate::selftest::{self, Check, HiddenCheck, Tolerance};
use crate::{shader_own, shader_source};

/// `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d;

pub static KIND: Kind = Kind {
    syntax: ("p", "2×2 max-pooling"),
    parse: |token| (token == "p" || token == "p2").then(|| Ok(Parsed::Hidden(std::sync::Arc::new(MaxPool2d)))),
    shaders: &[&SHADER],
    checks,
    examples: &[("p", [7, 6, 5]), ("p", [4, 4, 8])],
};

impl LayerInfo for MaxPool2d {
    fn keras(&self) -> (&'static str, &'static str) {
        ("max_pooling2d", "MaxPooling2D")
    }

    fn token(&self) -> String {
        "p".into()
    }

    fn flat_output(&self, flat_input: bool) -> std::result::Result<bool, String> {
        super::needs_image(flat_input, "max-pooling")
    }

    fn output(&self, [h, w, c]: [usize; 3]) -> std::result::Result<[usize; 3], String> {
        if h < 2 || w < 2 {
            return Err(format!("a 2×2 max-pool needs at least 2×2 input, but gets {h}×{w}"));
        }
        Ok([h / 2, w / 2, c])
    }
}

/// Mirror of `PoolShape` in `shaders/maxpool2d.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct PoolShape {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub channels: u32,
    pub out_h: u32,
    pub out_w: u32,
    /// How dx is written for the layers before ([`crate::layers::GpuGrads::mask_dx`]).
    pub mask_pos: f32,
    pub mask_neg: f32,
}

impl PoolShape {
    pub fn new(batch: usize, input: [usize; 3]) -> Self {
        let [h, w, c] = input.map(|v| v as u32);
        PoolShape { batch: batch as u32, in_h: h, in_w: w, channels: c, out_h: h / 2, out_w: w / 2, mask_pos: 1.0, mask_neg: 1.0 }
    }

    /// The shape of the pooling layer at `c.at`, for `c.batch` samples.
    pub fn for_layer(c: &Ctx<'_>) -> Self {
        Self::new(c.batch, c.at.input)
    }

    pub fn with_batch(&self, batch: usize) -> Self {
        PoolShape { batch: batch as u32, ..*self }
    }

    pub fn input_len(&self) -> usize {
        (self.batch * self.in_h * self.in_w * self.channels) as usize
    }

    pub fn output_len(&self) -> usize {
        (self.batch * self.out_h * self.out_w * self.channels) as usize
    }
}

/// Index into x of the first maximum of window (n, oy, ox, c).
fn argmax<T: Float>(x: &[T], s: &PoolShape, n: usize, oy: usize, ox: usize, c: usize) -> usize {
    let (in_h, in_w, channels) = (s.in_h as usize, s.in_w as usize, s.channels as usize);
    let mut best = ((n * in_h + 2 * oy) * in_w + 2 * ox) * channels + c;
    for t in 1..4 {
        let i = ((n * in_h + 2 * oy + t / 2) * in_w + 2 * ox + t % 2) * channels + c;
        if x[i] > x[best] {
            best = i;
        }
    }
    best
}

pub fn forward<T: Float>(y: &mut [T], x: &[T], s: &PoolShape) {
    let (out_h, out_w, channels) = (s.out_h as usize, s.out_w as usize, s.channels as usize);
    for n in 0..s.batch as usize {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for c in 0..channels {
                    y[((n * out_h + oy) * out_w + ox) * channels + c] = x[argmax(x, s, n, oy, ox, c)];
                }
            }
        }
    }
}

pub fn backward_input<T: Float>(dx: &mut [T], dy: &[T], x: &[T], s: &PoolShape) {
    let (out_h, out_w, channels) = (s.out_h as usize, s.out_w as usize, s.channels as usize);
    dx[..s.input_len()].fill(T::zero());
    for n in 0..s.batch as usize {
        for oy in 0..out_h {
            for ox in 0..out_w {
                for c in 0..channels {
                    dx[argmax(x, s, n, oy, ox, c)] = dy[((n * out_h + oy) * out_w + ox) * channels + c];
                }
            }
        }
    }
}

impl<T: Float> Reference<T> for MaxPool2d {
    fn forward(&self, c: &Ctx<'_>, _pass: Pass, x: &[T], y: &mut [T], _params: &[T], _state: &mut [T]) {
        forward(y, x, &PoolShape::for_layer(c));
    }

    fn backward(&self, c: &Ctx<'_>, _pass: Pass, b: Backward<'_, T>) {
        if let Some(dx) = b.dx {
            backward_input(dx, b.dy, b.x, &PoolShape::for_layer(c));
        }
    }
}

/// The binding tables of `shaders/maxpool2d.wgsl`.
pub static SHADER: Shader = Shader {
    name: "maxpool2d",
    file: "maxpool2d.wgsl",
    source: shader_source!("common.wgsl", "epilogue.wgsl", "maxpool2d.wgsl"),
    own: shader_own!("maxpool2d.wgsl"),
    entry_points: &[
        EntryPoint {
            name: "forward",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read_write(3, "y"), uniform(15, "epilogue")],
        },
        EntryPoint {
            name: "backward_input",
            bindings: &[uniform(0, "step"), uniform(1, "shape"), read(2, "x"), read(4, "dy"), read_write(5, "dx")],
        },
    ],
};

impl HiddenLayer for MaxPool2d {
    fn bind_gpu(&self, c: &Ctx<'_>, gpu: &GpuLayer<'_>) -> Result<LayerPass> {
        let mask = gpu.backward.map_or(Mask::NONE, |g| g.dx_mask());
        let s = PoolShape { mask_pos: mask.pos, mask_neg: mask.neg, ..PoolShape::for_layer(c) };
        let shape = uniform_buffer(gpu.kernels.device(), "maxpool2d shape", &s);
        let (x_bytes, y_bytes) = (floats(s.input_len()), floats(s.output_len()));
        let (step, shape_arg, x) = (arg("step", gpu.step, 32), arg("shape", &shape, 32), arg("x", gpu.x, x_bytes));
        // forward: one invocation per output element; backward: one per input element (a gather).
        let epilogue = epilogue_uniform(gpu);
        let forward = [step, shape_arg, x, arg("y", gpu.y, y_bytes), arg("epilogue", &epilogue, 32)];
        let backward = gpu.backward.and_then(|g| g.dx.map(|dx| (g.dy, dx))).map(|(dy, dx)| {
            (vec![step, shape_arg, x, arg("dy", dy, y_bytes), arg("dx", dx, x_bytes)], Grid::Invocations(s.input_len() as u64))
        });
        let constants = epilogue_constants(gpu);
        let forward = (&forward[..], Grid::Invocations(s.output_len() as u64), &constants[..]);
        let mut pass = bind_forward_and_input_gradient(gpu, &SHADER, forward, backward)?;
        pass.buffers.extend([shape, epilogue]);
        Ok(pass)
    }

    fn gpu_fusion(&self, _c: &Ctx<'_>) -> GpuFusion {
        // The gradient goes to each window's maximum, where x > 0 ⇔ the window's output > 0;
        // each output is one of the inputs, so a ReLU's outputs stay ReLU outputs.
        // The convolution before can take the forward pass (max_pool).
        GpuFusion { masks_dx: true, passes_relu: true, takes_epilogue: true, max_pool: true, ..Default::default() }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast_fusion(&self) -> crate::fast::Fusion {
        // The gradient of each window's maximum can be written through the ReLU before it.
        crate::fast::Fusion { masked_dx: true, ..Default::default() }
    }

    #[cfg(feature = "fast-cpu")]
    fn fast(
        &self,
        c: &Ctx<'_>,
        isa: crate::fast::Isa,
        x: crate::fast::Layout,
        y: crate::fast::Layout,
    ) -> Option<Box<dyn crate::fast::FastLayer>> {
        Some(Box::new(fast::PoolPlan::new(&PoolShape::for_layer(c), isa, x.pad, y.pad)))
    }
}

/// Max-pooling on an odd input with a tie, bit for bit.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let at = LayerAt::place(&MaxPool2d, 0, "max_pooling2d".into(), [7, 6, 5], 0, 0).map_err(Error::invalid)?;
    let mut x = selftest::random(&mut crate::rng::Rng::new(11), 3 * at.input_len(), 1.0);
    x[0] = x[1]; // a tie: the gradient goes to the first
    selftest::hidden_layer(
        ctx,
        &HiddenCheck {
            name: "maxpool2d [7, 6, 5]".into(),
            layer: &MaxPool2d,
            at: &at,
            batch: 3,
            used: 2,
            first: false,
            tuning: Tuning::for_adapter(&ctx.info),
            naive: false,
            run: Default::default(),
            seed: 11,
            x: Some(x),
            tolerance: Tolerance::EXACT,
        },
    )
}
