//! What the fast CPU kernels share — the vector instruction sets ([`simd`]), the two register-
//! tiled micro-kernels (`block`), the padded NHWC [`Layout`] — and the interface through which
//! the fast CPU engine ([`crate::train::fast::FastCpuEngine`]) runs a layer's fast kernels
//! ([`FastLayer`], [`FastHead`]). The kernels themselves live with their layers
//! (`src/layers/<kind>/fast.rs`).
//!
//! They are **not** a second reference: summation orders differ from the plain loops (so results
//! agree to f32 rounding, not bit for bit, except where noted), and they are f32 only.
//!
//! # How they are fast
//! - Two register-blocked micro-kernels (`block`) do all the multiply-adds, in AVX-512,
//!   AVX2 + FMA, NEON, wasm SIMD128 or portable SIMD, chosen at run time ([`simd::Isa`]).
//! - Convolutions are implicit GEMMs straight from NHWC: a 3×3 tap row `(kx, c)` of a padded
//!   NHWC image is 3·C contiguous floats, and the HWIO kernel rows for it are contiguous too,
//!   so the forward pass is `[N·OH·OW, 9C] × [9C, K]` without an im2col copy; the input
//!   gradient is the same kernel over the padded output gradient with transposed weights
//!   (stride 2 split into its four sub-pixel phases), and the weight gradient is
//!   `colᵀ · dpre` accumulated in registers, pixel chunk by pixel chunk, straight from the
//!   padded input. See [`crate::layers::conv2d::fast`].
//! - Fusion ([`Fusion`]): bias and ReLU in the forward tile's store; the ReLU's backward pass in
//!   the next layer's input gradient (a convolution or pooling layer writes the previous
//!   convolution's `dpre` directly); dropout's mask recomputed from its hash instead of stored;
//!   every activation written straight into the padded layout its consumer reads.
//! - The engine runs a step in micro-batches of 8 images (forward and backward through every
//!   layer, weight gradients **accumulated** into per-worker sums zeroed once per step), so
//!   activations stay in L2 instead of streaming through DRAM at every layer, and splits the
//!   micro-batches between threads.
//! - Every buffer is sized once, when the engine is built; a training step allocates nothing.
//!
//! # Layouts
//! Activations are NHWC as everywhere in the crate, but a tensor read by a convolution (its
//! input, and the gradient of its pre-activation output `dpre`) is stored with a one-pixel
//! border of zeros around each image ([`Layout`] with `pad = 1`): every 3×3 tap is then in
//! bounds, whatever the stride and TensorFlow's asymmetric 'same' padding (never more than one
//! pixel on a side for a 3×3 kernel). Kernels are HWIO `[3, 3, C, K]`, dense kernels `[F, K]`,
//! all parameters one flat vector, exactly as [`crate::model`].
//!
//! # How it is checked
//! `tests/fast_cpu.rs` runs every layer's fast kernels against its reference on random tensors
//! of odd shapes, for every instruction set the CPU has, with outputs pre-filled with NaN (and
//! padded borders checked to be still zero); then whole training epochs of the fast engine
//! against the reference engine from the same weights (batch 8 with a partial last batch;
//! several micro-batches and threads; every layer through the reference fallback too); and
//! counts heap allocations during a step (there are none). `benches/cpu_layers.rs` times each
//! layer and a whole step against the reference.
//!
//! # Requirements
//! The AVX-512 kernels need Rust 1.89 (when its intrinsics were stabilised).

pub(crate) mod block;
pub mod simd;

pub use simd::Isa;

use crate::layers::{HeadOutputs, Pass};

/// How a layer meets its neighbours in the fast CPU engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fusion {
    /// Pixels of zero border the layer reads its input with (1 for a 3×3 convolution, so that
    /// every tap is in bounds); the layer before writes its output in that layout.
    pub input_pad: usize,
    /// `Some(pad)`: the backward pass starts from dL/d(pre-activation) in a buffer of its own
    /// ([`FastBackward::dpre`]), shaped like the output with `pad` pixels of border (1 for a
    /// convolution, whose input gradient reads it through the taps; 0 for a dense layer).
    pub dpre_pad: Option<usize>,
    /// The output is `relu(pre-activation)` (with [`Fusion::dpre_pad`]): the next layer may write
    /// the dpre buffer through the ReLU.
    pub relu_output: bool,
    /// The backward pass can write `dx · (x > 0)` straight into the previous layer's dpre
    /// ([`FastDx::ThroughRelu`]): the ReLU's backward pass, fused.
    pub masked_dx: bool,
}

/// Where a fast layer's input gradient goes.
pub enum FastDx<'a> {
    /// Nowhere: the first layer.
    None,
    /// Plain NHWC.
    Plain(&'a mut [f32]),
    /// Through the previous layer's ReLU into its dpre (padded; only to layers whose
    /// [`Fusion::masked_dx`] is set, after a layer whose [`Fusion::relu_output`] is).
    ThroughRelu(&'a mut [f32]),
}

/// The tensors of a fast backward pass: x and y in the layouts the layer was built with, dy plain.
pub struct FastBackward<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub dy: &'a [f32],
    /// The layer's dL/d(pre-activation), for a layer with [`Fusion::dpre_pad`], in that layout.
    pub dpre: Option<&'a mut [f32]>,
    /// The next layer has already written `dpre` (through this layer's ReLU): `dy` is unused.
    pub dpre_ready: bool,
    pub dx: FastDx<'a>,
    /// The worker's gradient sums (the model's `params` layout): this micro-batch's are **added**.
    pub grads: &'a mut [f32],
}

/// A hidden layer's fast kernels, built for micro-batches of up to some size. Shared by the
/// engine's workers while micro-batches run: only [`FastLayer::pack`] takes `&mut self`.
pub trait FastLayer: Send + Sync {
    /// Takes this step's weights (packed for the kernels), once per step; `backward` when the
    /// step trains.
    fn pack(&mut self, _params: &[f32], _backward: bool) {}
    /// `y = f(x)` for `batch` samples.
    fn forward(&self, batch: usize, pass: Pass, x: &[f32], y: &mut [f32], state: &[f32]);
    /// The backward pass of the last forward pass on these samples.
    fn backward(&self, batch: usize, pass: Pass, b: FastBackward<'_>);
    /// Once per training step, after its passes: moves the layer's non-trainable tensors in
    /// `state` (the model's layout), as the reference's training forward pass does.
    fn update_state(&self, _state: &mut [f32]) {}
    /// Floats of scratch the layer holds (for the allocation tests).
    fn scratch_capacity(&self) -> usize {
        0
    }
}

/// The head's fast kernels.
pub trait FastHead: Send + Sync {
    /// Takes this step's weights, once per step.
    fn pack(&mut self, params: &[f32]);
    /// Probabilities, losses, predictions and dlogits of `batch` samples of a batch of
    /// `mean_over`; x plain.
    fn forward(&self, batch: usize, x: &[f32], labels: &[u32], mean_over: usize, out: HeadOutputs<'_, f32>);
    /// Adds this micro-batch's dL/dθ (the data term) to `grads`, and writes dL/dx.
    fn backward(&self, batch: usize, x: &[f32], dlogits: &[f32], dx: Option<&mut [f32]>, grads: &mut [f32]);
    /// Once per step, after every micro-batch: adds the regulariser's gradient to `grads` and
    /// returns its penalty, both for `params` (the step's starting weights).
    fn regularize(&self, params: &[f32], grads: &mut [f32]) -> f32;
    /// The regulariser's penalty for `params`.
    fn penalty(&self, params: &[f32]) -> f32;
    /// Floats of scratch the head holds (for the allocation tests).
    fn scratch_capacity(&self) -> usize {
        0
    }
}

/// Lanes of the widest vectors any instruction set uses: packed weights are padded to this.
pub(crate) const MAX_LANES: usize = 16;

/// Where the pixels of an NHWC tensor sit in its buffer: `[N, H + 2·pad, W + 2·pad, C]` with
/// `pad` pixels of zeros around each image. `pad = 0` is the plain layout of [`crate::layers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pad: usize,
}

impl Layout {
    /// The plain NHWC layout.
    pub fn plain([height, width, channels]: [usize; 3]) -> Self {
        Layout { height, width, channels, pad: 0 }
    }

    /// With one pixel of zeros around each image: what a 3×3 convolution reads.
    pub fn padded([height, width, channels]: [usize; 3]) -> Self {
        Layout { height, width, channels, pad: 1 }
    }

    /// Floats between vertically adjacent pixels.
    pub fn row_stride(&self) -> usize {
        (self.width + 2 * self.pad) * self.channels
    }

    /// Floats per image, borders included.
    pub fn image_stride(&self) -> usize {
        (self.height + 2 * self.pad) * self.row_stride()
    }

    /// Floats a buffer of `batch` images needs.
    pub fn len(&self, batch: usize) -> usize {
        batch * self.image_stride()
    }

    /// Floats of one image's pixels, borders excluded.
    pub fn sample_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Index of channel 0 of pixel (y, x) of image n.
    pub fn at(&self, n: usize, y: usize, x: usize) -> usize {
        n * self.image_stride() + (y + self.pad) * self.row_stride() + (x + self.pad) * self.channels
    }

    /// Index of channel 0 of the stored pixel at row `sy`, column `sx` of image n, counting the
    /// border (so `(0, 0)` is the top-left border pixel of a padded layout).
    pub fn at_stored(&self, n: usize, sy: usize, sx: usize) -> usize {
        n * self.image_stride() + sy * self.row_stride() + sx * self.channels
    }

    /// Copies `batch` plain NHWC images into `out` in this layout, borders zeroed.
    pub fn pack(&self, out: &mut [f32], plain: &[f32], batch: usize) {
        let row = self.width * self.channels;
        out[..self.len(batch)].fill(0.0);
        for n in 0..batch {
            for y in 0..self.height {
                let from = (n * self.height + y) * row;
                out[self.at(n, y, 0)..][..row].copy_from_slice(&plain[from..][..row]);
            }
        }
    }

    /// Copies `batch` images in this layout out to plain NHWC.
    pub fn unpack(&self, out: &mut [f32], stored: &[f32], batch: usize) {
        let row = self.width * self.channels;
        for n in 0..batch {
            for y in 0..self.height {
                let to = (n * self.height + y) * row;
                out[to..][..row].copy_from_slice(&stored[self.at(n, y, 0)..][..row]);
            }
        }
    }

    /// A buffer for `batch` images in this layout, zeroed. Its borders stay zero: no function of
    /// [`crate::fast`] writes a border.
    pub fn zeros(&self, batch: usize) -> Vec<f32> {
        vec![0.0; self.len(batch)]
    }
}

/// `total` split into pieces of at most `tile`, as evenly as possible: `(start, len)`.
pub(crate) fn split(total: usize, tile: usize) -> impl Iterator<Item = (usize, usize)> {
    let pieces = total.div_ceil(tile.max(1));
    let (base, extra) = (total.checked_div(pieces).unwrap_or(0), total.checked_rem(pieces).unwrap_or(0));
    (0..pieces).map(move |i| (i * base + i.min(extra), base + usize::from(i < extra)))
}
