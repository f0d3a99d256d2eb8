//! Part I of the assignment: `conv(arr, k)` on one channel of an image.
//!
//! Semantics, exactly as the assignment's NumPy loop: pad the plane with one pixel of zeros, slide
//! the 3×3 kernel **without flipping it** (cross-correlation), sum the nine products, clip the sum
//! to 0..=255 and store it as `u8`; the output has the input's size.
//!
//! - Integer kernels (every weight a whole number, and `sum(|k|) * 255` within i32) are computed
//!   exactly, and the GPU result is bit-identical to the CPU reference.
//! - Fractional kernels accumulate in f32 in row-major tap order, are clipped to 0..=255, then
//!   truncated toward zero (NumPy's `np.clip(...).astype(np.uint8)`; NumPy itself sums in f64, so a
//!   sum within f32 rounding of an integer may land one grey level lower or higher). The GPU may
//!   fuse multiply-adds, so GPU and CPU agree within one grey level.
//!
//! Three implementations with one interface: [`cpu::conv3x3_reference`] (the assignment's loop,
//! the test oracle), [`cpu::conv3x3_fast`] (row-parallel, vectorisable), and [`Conv3x3`] on the GPU
//! (packed u8 planes in storage buffers); [`Conv3x3Texture`] runs the same maths on the caller's
//! textures.

pub mod cpu;
mod gpu;
pub mod texture;

pub use gpu::{Conv3x3, Conv3x3Dispatch, Conv3x3Params, SHADER};
pub use texture::{Conv3x3Texture, TextureChannels};

use crate::error::{Error, Result};

/// One 8-bit channel, row-major, `width * height` bytes with no row padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plane {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Plane {
    /// A plane from its pixels; fails if the length does not match or a side is zero.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!("an image must be at least 1×1 pixels, got {width}×{height}")));
        }
        let expected = width as u64 * height as u64;
        if pixels.len() as u64 != expected {
            return Err(Error::invalid(format!(
                "a {width}×{height} plane needs {expected} pixels, got {}",
                pixels.len()
            )));
        }
        Ok(Plane { width, height, pixels })
    }

    /// A plane of zeros.
    pub fn zeros(width: u32, height: u32) -> Result<Self> {
        Self::new(width, height, vec![0; width as usize * height as usize])
    }

    pub fn get(&self, y: usize, x: usize) -> u8 {
        self.pixels[y * self.width as usize + x]
    }
}

/// A 3×3 kernel, `weights[ky][kx]`, applied without flipping.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kernel3x3 {
    pub weights: [[f32; 3]; 3],
}

/// Kernels known by name on the command line.
pub const NAMED_KERNELS: &[(&str, &str, [[f32; 3]; 3])] = &[
    (
        "k1",
        "the assignment's first kernel (8-neighbour edge detector)",
        [[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]],
    ),
    (
        "k2",
        "the assignment's second kernel (4-neighbour edge detector, centre 8)",
        [[0.0, -1.0, 0.0], [-1.0, 8.0, -1.0], [0.0, -1.0, 0.0]],
    ),
    ("vertical-edge", "the assignment's worked example", [[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]),
    ("identity", "copies the image", [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
    ("sharpen", "classic sharpening", [[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
    ("sobel-x", "horizontal gradient", [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]),
    ("sobel-y", "vertical gradient", [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]),
    ("box", "3×3 mean (fractional weights)", [[1.0 / 9.0; 3]; 3]),
];

impl Kernel3x3 {
    pub const fn new(weights: [[f32; 3]; 3]) -> Self {
        Kernel3x3 { weights }
    }

    /// The assignment's first kernel `[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]`.
    pub const K1: Kernel3x3 = Kernel3x3::new([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]);
    /// The assignment's second kernel `[[0,-1,0],[-1,8,-1],[0,-1,0]]`.
    pub const K2: Kernel3x3 = Kernel3x3::new([[0.0, -1.0, 0.0], [-1.0, 8.0, -1.0], [0.0, -1.0, 0.0]]);

    /// Parses a kernel name (`k1`, `sobel-x`, ...; see [`NAMED_KERNELS`]) or nine numbers, rows
    /// separated by `;` and values by `,`: `"-1,-1,-1;-1,8,-1;-1,-1,-1"`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some((_, _, weights)) = NAMED_KERNELS.iter().find(|(name, _, _)| name.eq_ignore_ascii_case(text)) {
            return Ok(Kernel3x3::new(*weights));
        }
        let names: Vec<&str> = NAMED_KERNELS.iter().map(|(name, _, _)| *name).collect();
        let bad = |why: String| {
            Error::invalid(format!(
                "invalid kernel '{text}': {why}. Give three rows of three numbers, rows separated by ';' \
                 and values by ',' (e.g. \"-1,-1,-1;-1,8,-1;-1,-1,-1\"), or a name: {}",
                names.join(", ")
            ))
        };
        let rows: Vec<&str> = text.split(';').collect();
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if !text.contains([';', ',']) && text.parse::<f32>().is_err() {
            return Err(bad("not a kernel name, nor numbers".into()));
        }
        if rows.len() != 3 {
            return Err(bad(format!("found {} row(s), expected 3", rows.len())));
        }
        let mut weights = [[0.0f32; 3]; 3];
        for (ky, row) in rows.iter().enumerate() {
            let values: Vec<&str> = row.split(',').collect();
            if values.len() != 3 {
                return Err(bad(format!("row {} has {} value(s), expected 3", ky + 1, values.len())));
            }
            for (kx, value) in values.iter().enumerate() {
                let value = value.trim();
                let number: f32 =
                    value.parse().map_err(|_| bad(format!("'{value}' in row {} is not a number", ky + 1)))?;
                if !number.is_finite() {
                    return Err(bad(format!("'{value}' in row {} is not finite", ky + 1)));
                }
                weights[ky][kx] = number;
            }
        }
        Ok(Kernel3x3::new(weights))
    }

    /// The weights as integers when the exact integer path applies: every weight whole, and
    /// `sum(|k|) * 255` small enough that no partial sum overflows i32.
    pub fn integer_weights(&self) -> Option<[[i32; 3]; 3]> {
        let mut out = [[0i32; 3]; 3];
        let mut magnitude = 0f64;
        for ky in 0..3 {
            for kx in 0..3 {
                let w = self.weights[ky][kx];
                if w.fract() != 0.0 || !w.is_finite() {
                    return None;
                }
                magnitude += f64::from(w.abs());
                out[ky][kx] = w as i32;
            }
        }
        (magnitude * 255.0 <= f64::from(i32::MAX)).then_some(out)
    }
}

impl std::fmt::Display for Kernel3x3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<String> =
            self.weights.iter().map(|row| row.iter().map(|w| format!("{w}")).collect::<Vec<_>>().join(",")).collect();
        write!(f, "[{}]", rows.join("; "))
    }
}
