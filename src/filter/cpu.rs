//! CPU implementations of Part I: the reference (the assignment's loop, the test oracle) and a
//! fast path (row-parallel, branch-free inner loop that the compiler vectorises). Both give the
//! same bits for every kernel.

use rayon::prelude::*;

use super::{Kernel3x3, Plane};

/// The assignment's loop, written as plainly as the NumPy original: pad with one pixel of zeros,
/// for every output pixel sum the nine products of the window and the kernel, clip, store.
pub fn conv3x3_reference(input: &Plane, kernel: &Kernel3x3) -> Plane {
    let (w, h) = (input.width as usize, input.height as usize);
    let mut padded = vec![0u8; (w + 2) * (h + 2)];
    for y in 0..h {
        padded[(y + 1) * (w + 2) + 1..][..w].copy_from_slice(&input.pixels[y * w..][..w]);
    }
    let at = |y: usize, x: usize| padded[y * (w + 2) + x];
    let mut output = vec![0u8; w * h];
    match kernel.integer_weights() {
        Some(k) => {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0i64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            sum += i64::from(k[ky][kx]) * i64::from(at(y + ky, x + kx));
                        }
                    }
                    output[y * w + x] = sum.clamp(0, 255) as u8;
                }
            }
        }
        None => {
            let k = kernel.weights;
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0f32;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            sum += k[ky][kx] * f32::from(at(y + ky, x + kx));
                        }
                    }
                    output[y * w + x] = sum.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    Plane { width: input.width, height: input.height, pixels: output }
}

/// Rows per parallel task: big enough that task overhead vanishes, small enough to balance.
const ROWS_PER_TASK: usize = 16;

/// The fast CPU path: rows in parallel (rayon; `RAYON_NUM_THREADS` sets the thread count), each
/// row computed from three zero-padded row copies with a branch-free inner loop over the
/// interior, which LLVM turns into SIMD. Same bits as [`conv3x3_reference`].
pub fn conv3x3_fast(input: &Plane, kernel: &Kernel3x3) -> Plane {
    let (w, h) = (input.width as usize, input.height as usize);
    let mut output = vec![0u8; w * h];
    let integer = kernel.integer_weights();
    output.par_chunks_mut(w * ROWS_PER_TASK).enumerate().for_each(|(task, rows)| {
        // Three padded rows (w + 2 wide), reused across this task's rows.
        let mut window = [vec![0u8; w + 2], vec![0u8; w + 2], vec![0u8; w + 2]];
        let mut sums_i = vec![0i32; w];
        let mut sums_f = vec![0f32; w];
        for (r, out_row) in rows.chunks_mut(w).enumerate() {
            let y = task * ROWS_PER_TASK + r;
            for (ky, padded) in window.iter_mut().enumerate() {
                // Row y + ky - 1 of the image, or zeros above the top and below the bottom.
                match (y + ky).checked_sub(1).filter(|&row| row < h) {
                    Some(row) => padded[1..=w].copy_from_slice(&input.pixels[row * w..][..w]),
                    None => padded.fill(0),
                }
            }
            match &integer {
                Some(k) => {
                    sums_i.fill(0);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let weight = k[ky][kx];
                            let taps = &window[ky][kx..kx + w];
                            for (sum, &p) in sums_i.iter_mut().zip(taps) {
                                *sum += weight * i32::from(p);
                            }
                        }
                    }
                    for (o, &s) in out_row.iter_mut().zip(&sums_i) {
                        *o = s.clamp(0, 255) as u8;
                    }
                }
                None => {
                    // Same tap order as the reference (ky, then kx), so the f32 sums are identical.
                    sums_f.fill(0.0);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let weight = kernel.weights[ky][kx];
                            let taps = &window[ky][kx..kx + w];
                            for (sum, &p) in sums_f.iter_mut().zip(taps) {
                                *sum += weight * f32::from(p);
                            }
                        }
                    }
                    for (o, &s) in out_row.iter_mut().zip(&sums_f) {
                        *o = s.clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    });
    Plane { width: input.width, height: input.height, pixels: output }
}
