// segments.wgsl — the final sums of split weight-gradient reductions, as a function for the
// kernel that needs them: the layers' backward kernels wrote partial sums into their regions of
// one scratch buffer (`HiddenLayer::gpu_scratch_len`) and described each gradient range's sum as
// a Segment (`LayerPass::sums`): grads[dst + i] = Σ_{c < chunks} scratch[src + c·stride + i] for
// i < len, the chunks summed in order (deterministic, no atomics). Compiled before the shader
// that calls `segment_sum` (partial_sums.wgsl alone, adam.wgsl before its update). No entry points.
//
// Bindings (group 0)
//  13  segments  storage, read  [S] Segment, sorted by dst, not overlapping (src/partial_sums.rs)
//  14  scratch   storage, read  the partial sums of every layer

struct Segment {
    dst: u32,      // first gradient written
    len: u32,      // gradients written
    src: u32,      // first partial sum of chunk 0 in scratch
    chunks: u32,   // partial sums per gradient
    stride: u32,   // scratch elements from one chunk to the next
}

@group(0) @binding(13) var<storage, read> segments: array<Segment>;
@group(0) @binding(14) var<storage, read> scratch: array<f32>;

struct SegmentSum {
    covered: bool,   // whether a segment holds gradient i; sum is 0 where none does
    sum: f32,
}

// Gradient i's final sum, when a segment holds it. A walk over a handful of segments (two per
// convolution) beats a lookup table's extra load per invocation.
fn segment_sum(i: u32) -> SegmentSum {
    for (var k = 0u; k < arrayLength(&segments); k++) {
        let segment = segments[k];
        if (i < segment.dst) {
            break;
        }
        let j = i - segment.dst;
        if (j < segment.len) {
            var sum = 0.0;
            for (var chunk = 0u; chunk < segment.chunks; chunk++) {
                sum += scratch[segment.src + chunk * segment.stride + j];
            }
            return SegmentSum(true, sum);
        }
    }
    return SegmentSum(false, 0.0);
}
