//! CPU implementations of Part I: the reference (the assignment's loop, the test oracle) and a
//! fast path (explicit AVX-512, AVX2, NEON or SIMD128 row kernels, chosen at run time by the
//! crate's one [`Isa`], 16-bit lanes for small integer kernels, rows in parallel; see
//! [`conv3x3_fast`]). Both give the same bits for every kernel.

#[cfg(feature = "fast-cpu")]
use rayon::prelude::*;

use super::{Kernel3x3, Plane};
use crate::isa::{Isa, Kind};

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

/// The fast CPU path, bit-identical to [`conv3x3_reference`] for every kernel.
///
/// - Integer kernels are computed exactly in 16-bit lanes when no sum can leave i16
///   (`Σ|k|·255 ≤ 32767`: k1, k2, Sobel, ...; 32 pixels per AVX-512 vector, and the clamp to
///   0..=255 is a saturating narrow), else in 32-bit lanes.
/// - Fractional kernels keep the reference's f32 arithmetic per pixel: nine products added to
///   0 in (ky, kx) order, unfused, then clamped and truncated — the same bits.
/// - Interior columns read the image rows directly (no padded copies); the two edge columns and
///   rows outside the image (zeros) take the same sums with the padding's zeros.
/// - AVX-512 (BW) or AVX2 is chosen at run time on x86-64, NEON on aarch64, SIMD128 in a wasm
///   module built with it; other CPUs run a portable loop.
/// - Rows run in parallel in tasks of `ROWS_PER_TASK` (rayon, with the `fast-cpu` feature;
///   `RAYON_NUM_THREADS` sets the count). With the vector kernels one thread nearly saturates memory bandwidth, so a second
///   one adds little, and nothing is lost when there is only one core.
pub fn conv3x3_fast(input: &Plane, kernel: &Kernel3x3) -> Plane {
    let (w, h) = (input.width as usize, input.height as usize);
    let method = Method::for_kernel(kernel);
    let isa = Isa::best();
    let zeros = vec![0u8; w];
    let mut output: Vec<u8> = Vec::with_capacity(w * h);
    let task = |(task, rows): (usize, &mut [std::mem::MaybeUninit<u8>])| {
        for (r, out) in rows.chunks_mut(w).enumerate() {
            let y = task * ROWS_PER_TASK + r;
            let row = |y: Option<usize>| y.filter(|&y| y < h).map_or(&zeros[..], |y| &input.pixels[y * w..][..w]);
            let window = [row(y.checked_sub(1)), row(Some(y)), row(Some(y + 1))];
            // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; `conv_row` writes all w bytes.
            let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), w) };
            conv_row(isa, &method, out, window);
        }
    };
    let rows = &mut output.spare_capacity_mut()[..w * h];
    #[cfg(feature = "fast-cpu")]
    rows.par_chunks_mut(w * ROWS_PER_TASK).enumerate().for_each(task);
    #[cfg(not(feature = "fast-cpu"))]
    rows.chunks_mut(w * ROWS_PER_TASK).enumerate().for_each(task);
    // SAFETY: every row of the w·h bytes was written above.
    unsafe { output.set_len(w * h) };
    Plane { width: input.width, height: input.height, pixels: output }
}

/// How a kernel's sums are computed (see [`conv3x3_fast`]).
#[derive(Clone, Copy, Debug)]
enum Method {
    /// Exact in i16: every product and partial sum stays within ±32767.
    I16([[i16; 3]; 3]),
    /// Exact in i32 (as the reference's i64: `Kernel3x3::integer_weights` bounds every sum).
    I32([[i32; 3]; 3]),
    /// The reference's f32 order.
    F32([[f32; 3]; 3]),
}

impl Method {
    fn for_kernel(kernel: &Kernel3x3) -> Method {
        match kernel.integer_weights() {
            Some(k) => {
                let magnitude: i64 = k.iter().flatten().map(|&v| i64::from(v).abs()).sum();
                if magnitude * 255 <= i64::from(i16::MAX) {
                    Method::I16(k.map(|row| row.map(|v| v as i16)))
                } else {
                    Method::I32(k)
                }
            }
            None => Method::F32(kernel.weights),
        }
    }

    /// Output x from the window, the padding's zeros included, exactly as the reference sums.
    fn pixel(&self, window: [&[u8]; 3], x: usize) -> u8 {
        let at = |ky: usize, kx: usize| (x + kx).checked_sub(1).and_then(|i| window[ky].get(i)).copied().unwrap_or(0);
        match self {
            Method::I16(k) => {
                let mut sum = 0i32;
                for ky in 0..3 {
                    for kx in 0..3 {
                        sum += i32::from(k[ky][kx]) * i32::from(at(ky, kx));
                    }
                }
                sum.clamp(0, 255) as u8
            }
            Method::I32(k) => {
                let mut sum = 0i64;
                for ky in 0..3 {
                    for kx in 0..3 {
                        sum += i64::from(k[ky][kx]) * i64::from(at(ky, kx));
                    }
                }
                sum.clamp(0, 255) as u8
            }
            Method::F32(k) => {
                let mut sum = 0f32;
                for ky in 0..3 {
                    for kx in 0..3 {
                        sum += k[ky][kx] * f32::from(at(ky, kx));
                    }
                }
                sum.clamp(0.0, 255.0) as u8
            }
        }
    }
}

/// One output row from the three input rows around it (`window[1]` is the row itself; rows
/// outside the image are zeros). Columns 0 and w − 1 see the padding; the others do not.
fn conv_row(isa: Isa, method: &Method, out: &mut [u8], window: [&[u8]; 3]) {
    let w = out.len();
    out[0] = method.pixel(window, 0);
    if w > 1 {
        out[w - 1] = method.pixel(window, w - 1);
    }
    if w <= 2 {
        return;
    }
    let done = match isa.kind() {
        // SAFETY: an `Isa` exists only for features the CPU has; the kernels read
        // window[ky][x - 1 ..= x + 1] for interior x only and write out[1..w - 1].
        #[cfg(target_arch = "x86_64")]
        Kind::Avx512 => unsafe { x86::interior_avx512(method, out, window) },
        #[cfg(target_arch = "x86_64")]
        Kind::Avx2 => unsafe { x86::interior_avx2(method, out, window) },
        #[cfg(target_arch = "aarch64")]
        Kind::Neon => unsafe { arm::interior_neon(method, out, window) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Kind::Simd128 => unsafe { wasm::interior_simd128(method, out, window) },
        Kind::Portable => interior_portable(method, out, window),
    };
    // Whatever the vector loop left (the portable path: everything).
    for x in done..w - 1 {
        out[x] = method.pixel(window, x);
    }
}

/// Interior columns in chunks of plain loops over the nine shifted tap slices, which LLVM
/// vectorises for whatever the target has (NEON, SSE2); returns w − 1.
fn interior_portable(method: &Method, out: &mut [u8], window: [&[u8]; 3]) -> usize {
    const CHUNK: usize = 256;
    let w = out.len();
    let mut x = 1;
    while x < w - 1 {
        let n = (w - 1 - x).min(CHUNK);
        // Tap (ky, kx) of columns x.. is window[ky][x - 1 + kx..].
        let taps = |ky: usize, kx: usize| &window[ky][x - 1 + kx..][..n];
        let out = &mut out[x..][..n];
        match method {
            Method::I16(_) | Method::I32(_) => {
                let k = match *method {
                    Method::I16(k) => k.map(|row| row.map(i32::from)),
                    Method::I32(k) => k,
                    Method::F32(_) => unreachable!(),
                };
                let mut sums = [0i32; CHUNK];
                for ky in 0..3 {
                    for kx in 0..3 {
                        for (sum, &p) in sums[..n].iter_mut().zip(taps(ky, kx)) {
                            *sum += k[ky][kx] * i32::from(p);
                        }
                    }
                }
                for (o, &sum) in out.iter_mut().zip(&sums[..n]) {
                    *o = sum.clamp(0, 255) as u8;
                }
            }
            Method::F32(k) => {
                let mut sums = [0f32; CHUNK];
                for ky in 0..3 {
                    for kx in 0..3 {
                        for (sum, &p) in sums[..n].iter_mut().zip(taps(ky, kx)) {
                            *sum += k[ky][kx] * f32::from(p);
                        }
                    }
                }
                for (o, &sum) in out.iter_mut().zip(&sums[..n]) {
                    *o = sum.clamp(0.0, 255.0) as u8;
                }
            }
        }
        x += n;
    }
    w - 1
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Method;

    /// Interior columns 1..w − 1 of a row, 32 (i16) or 16 (i32, f32) at a time, the last ones
    /// masked. Returns w − 1: every interior column written.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn interior_avx512(method: &Method, out: &mut [u8], window: [&[u8]; 3]) -> usize {
        let w = out.len();
        let rows = window.map(|r| r.as_ptr());
        let dst = out.as_mut_ptr();
        match *method {
            Method::I16(k) => {
                let weights = k.map(|row| row.map(|v| _mm512_set1_epi16(v)));
                let mut x = 1;
                while x < w - 1 {
                    let n = (w - 1 - x).min(32);
                    let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
                    let mut sum = _mm512_setzero_si512();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm256_maskz_loadu_epi8(mask, rows[ky].add(x + kx - 1).cast());
                            sum =
                                _mm512_add_epi16(sum, _mm512_mullo_epi16(_mm512_cvtepu8_epi16(taps), weights[ky][kx]));
                        }
                    }
                    // max(·, 0), then the unsigned saturating narrow clamps to 255.
                    let bytes = _mm512_cvtusepi16_epi8(_mm512_max_epi16(sum, _mm512_setzero_si512()));
                    _mm256_mask_storeu_epi8(dst.add(x).cast(), mask, bytes);
                    x += n;
                }
            }
            Method::I32(k) => {
                let weights = k.map(|row| row.map(|v| _mm512_set1_epi32(v)));
                let mut x = 1;
                while x < w - 1 {
                    let n = (w - 1 - x).min(16);
                    let mask = if n == 16 { u16::MAX } else { (1u16 << n) - 1 };
                    let mut sum = _mm512_setzero_si512();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm_maskz_loadu_epi8(mask, rows[ky].add(x + kx - 1).cast());
                            sum =
                                _mm512_add_epi32(sum, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(taps), weights[ky][kx]));
                        }
                    }
                    let bytes = _mm512_cvtusepi32_epi8(_mm512_max_epi32(sum, _mm512_setzero_si512()));
                    _mm_mask_storeu_epi8(dst.add(x).cast(), mask, bytes);
                    x += n;
                }
            }
            Method::F32(k) => {
                let weights = k.map(|row| row.map(|v| _mm512_set1_ps(v)));
                // Four 16-pixel chunks at a time: each pixel's nine additions are a chain of
                // dependent adds, so four independent chains keep the adder busy.
                let mut x = 1;
                while x + 64 < w {
                    let mut sums = [_mm512_setzero_ps(); 4];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            for (u, sum) in sums.iter_mut().enumerate() {
                                let taps = _mm_loadu_si128(rows[ky].add(x + 16 * u + kx - 1).cast());
                                let p = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(taps));
                                *sum = _mm512_add_ps(*sum, _mm512_mul_ps(weights[ky][kx], p));
                            }
                        }
                    }
                    for (u, &sum) in sums.iter().enumerate() {
                        _mm_storeu_si128(dst.add(x + 16 * u).cast(), f32_to_bytes(sum));
                    }
                    x += 64;
                }
                while x < w - 1 {
                    let n = (w - 1 - x).min(16);
                    let mask = if n == 16 { u16::MAX } else { (1u16 << n) - 1 };
                    // 0 + k·p, tap after tap, unfused: the reference's bits.
                    let mut sum = _mm512_setzero_ps();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm_maskz_loadu_epi8(mask, rows[ky].add(x + kx - 1).cast());
                            let p = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(taps));
                            sum = _mm512_add_ps(sum, _mm512_mul_ps(weights[ky][kx], p));
                        }
                    }
                    _mm_mask_storeu_epi8(dst.add(x).cast(), mask, f32_to_bytes(sum));
                    x += n;
                }
            }
        }
        w - 1
    }

    /// 16 f32 sums clamped to 0..=255 (max returns 0 for NaN, as `NaN as u8` is 0), truncated,
    /// as bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f32_to_bytes(sum: __m512) -> __m128i {
        let clamped = _mm512_min_ps(_mm512_max_ps(sum, _mm512_setzero_ps()), _mm512_set1_ps(255.0));
        _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(clamped))
    }

    /// Interior columns with AVX2, 16 (i16) or 8 (i32, f32) at a time; returns the first column
    /// it did not write (the rest, fewer than a vector, are left to the scalar loop).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn interior_avx2(method: &Method, out: &mut [u8], window: [&[u8]; 3]) -> usize {
        let w = out.len();
        let rows = window.map(|r| r.as_ptr());
        let dst = out.as_mut_ptr();
        let mut x = 1;
        match *method {
            Method::I16(k) => {
                let weights = k.map(|row| row.map(|v| _mm256_set1_epi16(v)));
                while x + 16 < w {
                    let mut sum = _mm256_setzero_si256();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm_loadu_si128(rows[ky].add(x + kx - 1).cast());
                            sum =
                                _mm256_add_epi16(sum, _mm256_mullo_epi16(_mm256_cvtepu8_epi16(taps), weights[ky][kx]));
                        }
                    }
                    // packus saturates i16 to 0..=255 per 128-bit half: pack the halves together.
                    let bytes = _mm_packus_epi16(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
                    _mm_storeu_si128(dst.add(x).cast(), bytes);
                    x += 16;
                }
            }
            Method::I32(k) => {
                let weights = k.map(|row| row.map(|v| _mm256_set1_epi32(v)));
                while x + 8 < w {
                    let mut sum = _mm256_setzero_si256();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm_loadl_epi64(rows[ky].add(x + kx - 1).cast());
                            sum =
                                _mm256_add_epi32(sum, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(taps), weights[ky][kx]));
                        }
                    }
                    store8(dst.add(x), sum);
                    x += 8;
                }
            }
            Method::F32(k) => {
                let weights = k.map(|row| row.map(|v| _mm256_set1_ps(v)));
                // Four independent chains of dependent adds, as in the AVX-512 loop.
                while x + 32 < w {
                    let mut sums = [_mm256_setzero_ps(); 4];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            for (u, sum) in sums.iter_mut().enumerate() {
                                let taps = _mm_loadl_epi64(rows[ky].add(x + 8 * u + kx - 1).cast());
                                let p = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(taps));
                                *sum = _mm256_add_ps(*sum, _mm256_mul_ps(weights[ky][kx], p));
                            }
                        }
                    }
                    for (u, &sum) in sums.iter().enumerate() {
                        let clamped = _mm256_min_ps(_mm256_max_ps(sum, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
                        store8(dst.add(x + 8 * u), _mm256_cvttps_epi32(clamped));
                    }
                    x += 32;
                }
                while x + 8 < w {
                    let mut sum = _mm256_setzero_ps();
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = _mm_loadl_epi64(rows[ky].add(x + kx - 1).cast());
                            let p = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(taps));
                            sum = _mm256_add_ps(sum, _mm256_mul_ps(weights[ky][kx], p));
                        }
                    }
                    let clamped = _mm256_min_ps(_mm256_max_ps(sum, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
                    store8(dst.add(x), _mm256_cvttps_epi32(clamped));
                    x += 8;
                }
            }
        }
        x
    }

    /// Eight i32 lanes clamped to 0..=255 (signed then unsigned saturation), as bytes.
    #[target_feature(enable = "avx2")]
    unsafe fn store8(dst: *mut u8, v: __m256i) {
        let words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        _mm_storel_epi64(dst.cast(), _mm_packus_epi16(words, words));
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::Method;

    /// Interior columns with NEON, 16 (i16) or 8 (i32, f32) at a time; returns the first column
    /// it did not write (the rest, fewer than a vector, are left to the scalar loop).
    pub(super) unsafe fn interior_neon(method: &Method, out: &mut [u8], window: [&[u8]; 3]) -> usize {
        let w = out.len();
        let rows = window.map(|r| r.as_ptr());
        let dst = out.as_mut_ptr();
        let mut x = 1;
        match *method {
            Method::I16(k) => {
                let weights = k.map(|row| row.map(|v| vdupq_n_s16(v)));
                while x + 16 < w {
                    let (mut lo, mut hi) = (vdupq_n_s16(0), vdupq_n_s16(0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = vld1q_u8(rows[ky].add(x + kx - 1));
                            lo = vmlaq_s16(lo, vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(taps))), weights[ky][kx]);
                            hi = vmlaq_s16(hi, vreinterpretq_s16_u16(vmovl_high_u8(taps)), weights[ky][kx]);
                        }
                    }
                    // The signed-to-unsigned saturating narrow clamps to 0..=255.
                    vst1q_u8(dst.add(x), vcombine_u8(vqmovun_s16(lo), vqmovun_s16(hi)));
                    x += 16;
                }
            }
            Method::I32(k) => {
                let weights = k.map(|row| row.map(|v| vdupq_n_s32(v)));
                while x + 8 < w {
                    let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = vmovl_u8(vld1_u8(rows[ky].add(x + kx - 1)));
                            lo = vmlaq_s32(lo, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(taps))), weights[ky][kx]);
                            hi = vmlaq_s32(hi, vreinterpretq_s32_u32(vmovl_high_u16(taps)), weights[ky][kx]);
                        }
                    }
                    // i32 → u16 → u8, saturating both times: negatives to 0, over 255 to 255.
                    vst1_u8(dst.add(x), vqmovn_u16(vcombine_u16(vqmovun_s32(lo), vqmovun_s32(hi))));
                    x += 8;
                }
            }
            Method::F32(k) => {
                let weights = k.map(|row| row.map(|v| vdupq_n_f32(v)));
                while x + 8 < w {
                    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = vmovl_u8(vld1_u8(rows[ky].add(x + kx - 1)));
                            let p_lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(taps)));
                            let p_hi = vcvtq_f32_u32(vmovl_high_u16(taps));
                            // 0 + k·p, tap after tap, a multiply then an add (not fmla): the
                            // reference's bits.
                            lo = vaddq_f32(lo, vmulq_f32(weights[ky][kx], p_lo));
                            hi = vaddq_f32(hi, vmulq_f32(weights[ky][kx], p_hi));
                        }
                    }
                    let words = vcombine_u16(vmovn_u32(f32_to_u32(lo)), vmovn_u32(f32_to_u32(hi)));
                    vst1_u8(dst.add(x), vmovn_u16(words));
                    x += 8;
                }
            }
        }
        x
    }

    /// Clamps to 0..=255 (fmaxnm gives 0 for NaN, as `NaN as u8` is 0) and truncates.
    #[inline(always)]
    unsafe fn f32_to_u32(sum: float32x4_t) -> uint32x4_t {
        vcvtq_u32_f32(vminnmq_f32(vmaxnmq_f32(sum, vdupq_n_f32(0.0)), vdupq_n_f32(255.0)))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use std::arch::wasm32::*;

    use super::Method;

    /// Interior columns with SIMD128, 16 (i16) or 8 (i32, f32) at a time; returns the first
    /// column it did not write.
    pub(super) unsafe fn interior_simd128(method: &Method, out: &mut [u8], window: [&[u8]; 3]) -> usize {
        let w = out.len();
        let rows = window.map(|r| r.as_ptr());
        let dst = out.as_mut_ptr();
        let mut x = 1;
        match *method {
            Method::I16(k) => {
                let weights = k.map(|row| row.map(|v| i16x8_splat(v)));
                while x + 16 < w {
                    let (mut lo, mut hi) = (i16x8_splat(0), i16x8_splat(0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = v128_load(rows[ky].add(x + kx - 1).cast());
                            lo = i16x8_add(lo, i16x8_mul(u16x8_extend_low_u8x16(taps), weights[ky][kx]));
                            hi = i16x8_add(hi, i16x8_mul(u16x8_extend_high_u8x16(taps), weights[ky][kx]));
                        }
                    }
                    // The signed-to-unsigned saturating narrow clamps to 0..=255.
                    v128_store(dst.add(x).cast(), u8x16_narrow_i16x8(lo, hi));
                    x += 16;
                }
            }
            Method::I32(k) => {
                let weights = k.map(|row| row.map(|v| i32x4_splat(v)));
                while x + 8 < w {
                    let (mut lo, mut hi) = (i32x4_splat(0), i32x4_splat(0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = u16x8_extend_low_u8x16(v128_load64_zero(rows[ky].add(x + kx - 1).cast()));
                            lo = i32x4_add(lo, i32x4_mul(u32x4_extend_low_u16x8(taps), weights[ky][kx]));
                            hi = i32x4_add(hi, i32x4_mul(u32x4_extend_high_u16x8(taps), weights[ky][kx]));
                        }
                    }
                    store8(dst.add(x), lo, hi);
                    x += 8;
                }
            }
            Method::F32(k) => {
                let weights = k.map(|row| row.map(|v| f32x4_splat(v)));
                while x + 8 < w {
                    let (mut lo, mut hi) = (f32x4_splat(0.0), f32x4_splat(0.0));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let taps = u16x8_extend_low_u8x16(v128_load64_zero(rows[ky].add(x + kx - 1).cast()));
                            let p_lo = f32x4_convert_u32x4(u32x4_extend_low_u16x8(taps));
                            let p_hi = f32x4_convert_u32x4(u32x4_extend_high_u16x8(taps));
                            // 0 + k·p, a multiply then an add: the reference's bits.
                            lo = f32x4_add(lo, f32x4_mul(weights[ky][kx], p_lo));
                            hi = f32x4_add(hi, f32x4_mul(weights[ky][kx], p_hi));
                        }
                    }
                    // pmax(0, s) is `0 < s ? s : 0` (0 for NaN); pmin(255, s) is `s < 255 ? s : 255`.
                    let clamp =
                        |s| i32x4_trunc_sat_f32x4(f32x4_pmin(f32x4_splat(255.0), f32x4_pmax(f32x4_splat(0.0), s)));
                    store8(dst.add(x), clamp(lo), clamp(hi));
                    x += 8;
                }
            }
        }
        x
    }

    /// Eight i32 lanes clamped to 0..=255, as bytes.
    #[inline(always)]
    unsafe fn store8(dst: *mut u8, lo: v128, hi: v128) {
        let clamp = |v| i32x4_min(i32x4_max(v, i32x4_splat(0)), i32x4_splat(255));
        let words = i16x8_narrow_i32x4(clamp(lo), clamp(hi));
        v128_store64_lane::<0>(u8x16_narrow_i16x8(words, words), dst.cast());
    }
}

#[cfg(test)]
mod fast_row_tests {
    use super::*;

    /// Every row kernel this CPU runs, against the reference, bit for bit: i16, i32 and f32
    /// kernels (saturating both ways), widths around the vector lengths, 1- and 2-pixel rows.
    #[test]
    fn fast_rows_equal_the_reference_on_every_instruction_set() {
        let isas = Isa::supported();
        let kernels = [
            Kernel3x3::K1,
            Kernel3x3::new([[3.0, -7.0, 1.0], [0.0, 9.0, -2.0], [5.0, 0.0, -4.0]]),
            Kernel3x3::new([[900.0, -1200.0, 0.0], [7.0, 3000.0, -1.0], [0.0, 0.0, -900.0]]),
            Kernel3x3::new([[0.1, -0.7, 0.33], [1.5, 0.25, -0.9], [0.05, 2.5, -1.1]]),
            Kernel3x3::new([[1e30, -1e30, 1e30], [0.0; 3], [0.0; 3]]),
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for &(w, h) in &[(1, 1), (2, 3), (3, 2), (17, 5), (18, 3), (33, 4), (34, 2), (35, 3), (64, 2), (100, 3)] {
            let pixels = (0..w * h)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect();
            let input = Plane { width: w as u32, height: h as u32, pixels };
            for kernel in &kernels {
                let expected = conv3x3_reference(&input, kernel);
                let method = Method::for_kernel(kernel);
                for &isa in &isas {
                    for y in 0..h {
                        let row = |y: Option<usize>| y.filter(|&y| y < h).map(|y| &input.pixels[y * w..][..w]);
                        let zeros = vec![0u8; w];
                        let window = [y.checked_sub(1), Some(y), Some(y + 1)].map(|r| row(r).unwrap_or(&zeros));
                        let mut out = vec![0xAAu8; w];
                        conv_row(isa, &method, &mut out, window);
                        assert_eq!(out, expected.pixels[y * w..][..w], "{isa:?} {method:?} {w}×{h} row {y}");
                    }
                }
            }
        }
    }
}
