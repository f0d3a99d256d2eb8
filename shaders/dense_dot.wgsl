// dense_dot.wgsl — the dense product both dense shaders share (dense.wgsl, dense_softmax.wgsl),
// compiled after common.wgsl and before either; it reads their `x` and `params` bindings.
//
// bias + Σ_f x[n, f] · kernel[f, j], for the output (n, j) of one workgroup of DOT_LANES: each lane
// sums every DOT_LANES-th feature, then a fixed-order tree (deterministic). With one invocation
// per output, a batch of 128 gave a GPU only 1,280 invocations for the logits, each a 2,048-long
// chain of loads (10% of a training step on an H100). The tree, lanes_sum, serves the head's L1
// penalty too.

const DOT_LANES: u32 = 64u;
var<workgroup> dot_part: array<f32, DOT_LANES>;

// The output, read by every lane. Call as lanes_sum.
fn dense_dot(t: u32, n: u32, j: u32, features: u32, units: u32, kernel_offset: u32, bias_offset: u32) -> f32 {
    var sum = 0.0;
    for (var f = t; f < features; f += DOT_LANES) {
        sum += x[n * features + f] * params[kernel_offset + f * units + j];
    }
    return params[bias_offset + j] + lanes_sum(t, sum);
}

// Σ of every lane's `value` in a fixed-order tree (deterministic), read by every lane. Call from
// uniform control flow, and put a barrier between two calls (each reads dot_part[0] last).
fn lanes_sum(t: u32, value: f32) -> f32 {
    dot_part[t] = value;
    workgroupBarrier();
    for (var half = DOT_LANES / 2u; half > 0u; half >>= 1u) {
        if (t < half) {
            dot_part[t] += dot_part[t + half];
        }
        workgroupBarrier();
    }
    return dot_part[0];
}
