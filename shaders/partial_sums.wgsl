// partial_sums.wgsl — the final sums of split weight-gradient reductions on their own, for a
// program that reads the gradients (selftest, single layers in an embedder's app): one
// invocation per gradient, written where a segment holds it and untouched elsewhere. The
// engines' training steps take the sums inside Adam's dispatch instead (adam.wgsl,
// sum_and_update). Prepended with common.wgsl (linear_index) and segments.wgsl (Segment,
// segment_sum and their bindings).
//
// Bindings (group 0)
//   0  grads     storage, read_write  flat gradients, laid out like params
//  13  segments, 14 scratch           (segments.wgsl)

@group(0) @binding(0) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= arrayLength(&grads)) {
        return;
    }
    let summed = segment_sum(i);
    if (summed.covered) {
        grads[i] = summed.sum;
    }
}
