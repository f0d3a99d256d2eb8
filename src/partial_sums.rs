//! The last stage of the split weight-gradient reductions, every layer's at once
//! (`shaders/segments.wgsl`). A layer whose weight gradients are sums over a batch too long for
//! one invocation (a convolution's) writes partial sums per chunk of positions into its region of
//! one scratch buffer ([`crate::layers::HiddenLayer::gpu_scratch_len`],
//! [`crate::layers::GpuGrads::scratch`]) and describes their final sums as [`Segment`]s
//! ([`crate::layers::LayerPass::sums`]). The engines upload every layer's into one table
//! ([`Segments`]) and take the sums inside Adam's dispatch ([`crate::adam::bind`]), where each
//! layer had a dispatch of its own and then the sums one; [`bind`] is the sums alone, for a
//! program that reads the gradients (`shaders/partial_sums.wgsl`).

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernel::{arg, floats, read, read_write, Arg, Binding, Dispatch, EntryPoint, Grid, Kernels, Shader};
use crate::rng::Rng;
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

/// Mirror of `Segment` in `shaders/segments.wgsl`: `grads[dst + i] = Σ_{c < chunks}
/// scratch[src + c·stride + i]` for `i < len`, the chunks in order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Segment {
    pub dst: u32,
    pub len: u32,
    pub src: u32,
    pub chunks: u32,
    pub stride: u32,
}

impl Segment {
    /// The scratch elements the segment reads: one past its last.
    pub fn scratch_end(&self) -> usize {
        if self.len == 0 || self.chunks == 0 {
            return 0;
        }
        (self.src + (self.chunks - 1) * self.stride + self.len) as usize
    }
}

/// The same sums on the CPU, in the shader's order.
pub fn reference(segments: &[Segment], scratch: &[f32], grads: &mut [f32]) {
    for s in segments {
        for i in 0..s.len as usize {
            let chunk = |c: u32| scratch[(s.src + c * s.stride) as usize + i];
            grads[s.dst as usize + i] = (0..s.chunks).fold(0.0, |sum, c| sum + chunk(c));
        }
    }
}

/// The segments of any length sorted by their first gradient, as `segment_sum` walks them; an
/// error if one writes past `grads_len` gradients or two write the same.
fn sorted(segments: &[Segment], grads_len: usize) -> Result<Vec<Segment>> {
    let mut segments: Vec<Segment> = segments.iter().copied().filter(|s| s.len > 0).collect();
    segments.sort_by_key(|s| s.dst);
    if let Some(s) = segments.iter().find(|s| (s.dst + s.len) as usize > grads_len) {
        return Err(Error::invalid(format!("a partial-sum segment writes past the {grads_len} gradients: {s:?}")));
    }
    if let Some(pair) = segments.windows(2).find(|w| w[0].dst + w[0].len > w[1].dst) {
        return Err(Error::invalid(format!("two partial-sum segments write the same gradients: {pair:?}")));
    }
    Ok(segments)
}

/// The binding table of `shaders/partial_sums.wgsl`.
pub static SHADER: Shader = Shader {
    name: "partial_sums",
    file: "partial_sums.wgsl",
    source: shader_source!("common.wgsl", "segments.wgsl", "partial_sums.wgsl"),
    own: shader_own!("partial_sums.wgsl"),
    entry_points: &[EntryPoint { name: "sum_chunks", bindings: &[read_write(0, "grads"), SEGMENTS, SCRATCH] }],
};

/// The bindings `shaders/segments.wgsl` declares, for the shaders that include it.
pub const SEGMENTS: Binding = read(13, "segments");
pub const SCRATCH: Binding = read(14, "scratch");

/// A table of segments on the device, checked against the gradients they write: what a kernel
/// that includes `shaders/segments.wgsl` binds.
pub struct Segments {
    table: wgpu::Buffer,
    bytes: u64,
    /// Floats of scratch the segments read: one past the last.
    scratch_end: usize,
    /// Floats the segments read, all chunks.
    scratch_read: u64,
}

impl Segments {
    /// `segments` (those of any length) on the device, sorted by their first gradient as
    /// `segment_sum` walks them; with none of any length, one of none (a binding is never
    /// empty). An error if one writes past `grads_len` gradients or two write the same.
    pub fn upload(device: &wgpu::Device, segments: &[Segment], grads_len: usize) -> Result<Segments> {
        let mut segments = sorted(segments, grads_len)?;
        if segments.is_empty() {
            segments.push(Segment::default());
        }
        let table = crate::gpu::upload(
            device,
            "partial-sum segments",
            bytemuck::cast_slice(&segments),
            wgpu::BufferUsages::empty(),
        )?;
        Ok(Segments {
            table,
            bytes: std::mem::size_of_val(segments.as_slice()) as u64,
            // At least one float: a binding is never empty.
            scratch_end: segments.iter().map(Segment::scratch_end).max().unwrap_or(0).max(1),
            scratch_read: segments.iter().map(|s| u64::from(s.len) * u64::from(s.chunks)).sum(),
        })
    }

    /// The two bindings of `shaders/segments.wgsl`, the segments reading `scratch`.
    pub fn args<'a>(&'a self, scratch: &'a wgpu::Buffer) -> [Arg<'a>; 2] {
        [
            arg(SEGMENTS.name, &self.table, self.bytes),
            arg(SCRATCH.name, scratch, floats(self.scratch_end)).moving(floats(self.scratch_read as usize)),
        ]
    }
}

/// One dispatch of every segment of `segments` over `scratch` into `grads` (`grads_len` floats),
/// and the segment table it made; None when there are no segments.
pub fn bind(
    kernels: &Kernels,
    segments: &[Segment],
    scratch: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    grads_len: usize,
) -> Result<Option<(Dispatch, Segments)>> {
    let device = kernels.device();
    if segments.iter().all(|s| s.len == 0) {
        return Ok(None);
    }
    let table = Segments::upload(device, segments, grads_len)?;
    let [segments_arg, scratch_arg] = table.args(scratch);
    let args = [arg("grads", grads, floats(grads_len)), segments_arg, scratch_arg];
    let grid = Grid::Invocations(grads_len as u64);
    let dispatch = Dispatch::new(device, &kernels.get(&SHADER, "sum_chunks", &[])?, &args, grid)?;
    Ok(Some((dispatch, table)))
}

/// Three segments (one of a single chunk, gaps between them in both buffers) against
/// [`reference()`], the gradients outside them untouched.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(15);
    let segments = [
        Segment { dst: 3, len: 300, src: 0, chunks: 7, stride: 310 },
        Segment { dst: 310, len: 5, src: 2200, chunks: 1, stride: 5 },
        Segment { dst: 320, len: 40, src: 2300, chunks: 3, stride: 41 },
    ];
    let scratch = selftest::random(&mut rng, 2500, 1.0);
    let grads_len = 370;
    let mut expected = vec![f32::NAN; grads_len];
    reference(&segments, &scratch, &mut expected);
    let (scratch_b, grads_b) = (selftest::upload(ctx, &scratch)?, selftest::sentinel(ctx, grads_len)?);
    let kernels = Kernels::new(&ctx.device);
    let (dispatch, _table) = bind(&kernels, &segments, &scratch_b, &grads_b, grads_len)?
        .ok_or_else(|| Error::invalid("three segments bind a dispatch"))?;
    selftest::run(ctx, |pass| dispatch.record(pass));
    let got = selftest::read(ctx, &grads_b, grads_len)?;
    let mut checks = Vec::new();
    let mut untouched = Vec::new();
    let mut end = 0;
    for (k, s) in segments.iter().enumerate() {
        let range = s.dst as usize..(s.dst + s.len) as usize;
        untouched.extend_from_slice(&got[end..range.start]);
        end = range.end;
        checks.push(Check::compare(
            format!("partial sums: segment {k}, {} chunks", s.chunks),
            &got[range.clone()],
            &expected[range],
            1e-6,
            1e-6,
        ));
    }
    untouched.extend_from_slice(&got[end..]);
    checks.push(Check::untouched("partial sums: gradients outside the segments".into(), &untouched));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(dst: u32, len: u32) -> Segment {
        Segment { dst, len, src: 0, chunks: 1, stride: len }
    }

    #[test]
    fn segments_are_sorted_and_checked() {
        let got = sorted(&[segment(10, 5), segment(0, 0), segment(2, 8)], 15).unwrap();
        assert_eq!(got, vec![segment(2, 8), segment(10, 5)]);
        let past = sorted(&[segment(10, 6)], 15).unwrap_err().to_string();
        assert!(past.contains("past the 15 gradients"), "{past}");
        let overlap = sorted(&[segment(10, 5), segment(2, 9)], 15).unwrap_err().to_string();
        assert!(overlap.contains("write the same gradients"), "{overlap}");
    }
}
