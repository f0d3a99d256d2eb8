//! The fast CPU implementation of every layer, and [`FastCpuBackend`], the training step built
//! from them: the same math as the plain-loop references in [`crate::layers`] (the oracle it is
//! tested against), written for speed on one core.
//!
//! It is **not** a second reference: summation orders differ from the plain loops (so results
//! agree to f32 rounding, not bit for bit, except where noted), and it is f32 only.
//!
//! # How it is fast
//! - Two register-blocked micro-kernels (`block`) do all the multiply-adds, in AVX-512,
//!   AVX2 + FMA or portable SIMD, chosen at run time ([`simd::Isa`]).
//! - Convolutions are implicit GEMMs straight from NHWC: a 3×3 tap row `(kx, c)` of a padded
//!   NHWC image is 3·C contiguous floats, and the HWIO kernel rows for it are contiguous too,
//!   so the forward pass is `[N·OH·OW, 9C] × [9C, K]` without an im2col copy; the input
//!   gradient is the same kernel over the padded output gradient with transposed weights
//!   (stride 2 split into its four sub-pixel phases), and the weight gradient is
//!   `colᵀ · dpre` accumulated in registers, pixel chunk by pixel chunk, straight from the
//!   padded input. See [`conv2d`].
//! - Fusion: bias and ReLU in the forward tile's store; the ReLU's backward pass in the next
//!   layer's input gradient (a convolution or pooling layer writes the previous convolution's
//!   `dpre` directly); dropout's mask recomputed from its hash instead of stored; every
//!   activation written straight into the padded layout its consumer reads.
//! - [`FastCpuBackend`] runs a step in micro-batches of 8 images (forward and backward through
//!   every layer, weight gradients summed), so activations stay in L2 instead of streaming
//!   through DRAM at every layer, and splits the micro-batches between threads.
//! - Every buffer is sized once, when the backend is built; a training step allocates nothing.
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
//! `tests/fast_cpu.rs` runs every layer against [`crate::layers`] on random tensors of odd
//! shapes, for every instruction set the CPU has, with outputs pre-filled with NaN (and padded
//! borders checked to be still zero); then whole training epochs of [`FastCpuBackend`] against
//! [`crate::train::cpu::CpuBackend`] from the same weights (batch 8 with a partial last batch;
//! several micro-batches and threads); and counts heap allocations during a step (there are
//! none). `benches/cpu_layers.rs` times each layer and a whole step against the reference.
//!
//! # Requirements
//! The AVX-512 kernels need Rust 1.89 (when its intrinsics were stabilised).

pub mod adam;
pub mod backend;
pub(crate) mod block;
pub mod conv2d;
pub mod dense_softmax;
pub mod dropout;
pub mod maxpool2d;
pub mod simd;

pub use backend::FastCpuBackend;
pub use simd::Isa;

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
