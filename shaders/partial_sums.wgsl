// partial_sums.wgsl — the last stage of every split weight-gradient reduction of a training step,
// all layers' in one dispatch: per segment, grads[dst + i] = Σ_{c < chunks} scratch[src + c·stride
// + i] for i < len, the chunks summed in order (deterministic, no atomics). The layers' backward
// kernels wrote the partial sums into their regions of the shared scratch buffer
// (`HiddenLayer::gpu_scratch_len`); the segments are theirs (`LayerPass::sums`). Prepended with
// common.wgsl (linear_index).
//
// Bindings (group 0)
//   0  segments  storage, read        [S] Segment, in the order of their invocations
//   1  scratch   storage, read        the partial sums of every layer
//   2  grads     storage, read_write  flat gradients, laid out like params
//
// Invocation i takes element i of the segments laid end to end: a walk over a handful of
// segments (two per convolution) beats a lookup table's extra load per invocation.

struct Segment {
    dst: u32,      // first gradient written
    len: u32,      // gradients written
    src: u32,      // first partial sum of chunk 0 in scratch
    chunks: u32,   // partial sums per gradient
    stride: u32,   // scratch elements from one chunk to the next
}

@group(0) @binding(0) var<storage, read> segments: array<Segment>;
@group(0) @binding(1) var<storage, read> scratch: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    var i = linear_index(gid, groups);
    for (var k = 0u; k < arrayLength(&segments); k++) {
        let segment = segments[k];
        if (i < segment.len) {
            var sum = 0.0;
            for (var chunk = 0u; chunk < segment.chunks; chunk++) {
                sum += scratch[segment.src + chunk * segment.stride + i];
            }
            grads[segment.dst + i] = sum;
            return;
        }
        i -= segment.len;
    }
}
