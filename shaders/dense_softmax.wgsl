// dense_softmax.wgsl — Flatten + Dense + softmax + categorical cross-entropy, fused so that the
// loss gradient is the stable `softmax − one_hot`, plus Keras' L1 kernel regulariser
// (`kernel_regularizer=l1(λ)`: λ·Σ|W| added to the loss, λ·sign(W) to the kernel gradient).
// Prepended with common.wgsl (Step, linear_index) and dense_dot.wgsl (the logits' product).
//
// Bindings (group 0)                                                          used by
//   0  step       uniform Step                                                all
//   1  shape      uniform DenseShape                                          all
//   2  x          storage, read        input [N, F], F = H·W·C in NHWC order  logits, backward_weight
//                                      (Flatten is free: NHWC is already that order)
//   3  params     storage, read        kernel [F, K] at shape.kernel_offset,  logits, backward_*, l1_penalty
//                                      bias [K] at shape.bias_offset
//   4  labels     storage, read        u32 class of each sample [N]           softmax_cross_entropy
//   5  probs      storage, read_write  [N, K]: logits, then softmax in place  logits, softmax_cross_entropy
//   6  dlogits    storage, read_write  dL/dlogits of the batch-mean loss      softmax_cross_entropy writes,
//                                      [N, K]                                 backward_* read
//   7  metrics    storage, read_write  per sample, at position batch_start    softmax_cross_entropy
//                                      + n of the epoch: [loss, predicted class]
//   8  grads      storage, read_write  flat gradients                         backward_weight
//   9  dx         storage, read_write  dL/dx [N, F]                           backward_input
//  10  penalties  storage, read_write  λ·Σ|W|, at step.penalty_slot         l1_penalty
//
// Forward = `logits` then `softmax_cross_entropy`; backward = `backward_weight` (kernel and
// bias in one dispatch) and `backward_input`. All gathers, gradients overwritten.

struct DenseShape {
    batch: u32,
    features: u32,
    classes: u32,
    kernel_offset: u32,
    bias_offset: u32,
    l1: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: DenseShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(7) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;
@group(0) @binding(10) var<storage, read_write> penalties: array<f32>;

// logits[n, j] = bias[j] + Σ_f x[n, f] · kernel[f, j]: one workgroup per (n, j) (dense_dot.wgsl).
@compute @workgroup_size(DOT_LANES)
fn logits(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_index) t: u32) {
    let i = workgroup.x + workgroup.y * groups.x;   // the same for the whole workgroup
    if (i >= step.batch_size * shape.classes) {
        return;
    }
    let j = i % shape.classes;
    let n = i / shape.classes;
    let logit = dense_dot(t, n, j, shape.features, shape.classes, shape.kernel_offset, shape.bias_offset);
    if (t == 0u) {
        probs[i] = logit;
    }
}

// Per sample: softmax in place, cross-entropy loss = logsumexp(logits) − logits[label], the
// predicted class (the first arg-max, as np.argmax), dlogits = (softmax − one_hot) / batch_size.
@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_cross_entropy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = linear_index(gid, groups);
    if (n >= step.batch_size) {
        return;
    }
    let base = n * shape.classes;
    let label = labels[n];
    var top = probs[base];
    var top_class = 0u;
    for (var j = 1u; j < shape.classes; j++) {
        if (probs[base + j] > top) {
            top = probs[base + j];
            top_class = j;
        }
    }
    // Subtracting the maximum keeps exp() in range.
    var total = 0.0;
    for (var j = 0u; j < shape.classes; j++) {
        total += exp(probs[base + j] - top);
    }
    let loss = log(total) - (probs[base + label] - top);
    let inverse_batch = 1.0 / f32(step.batch_size);
    for (var j = 0u; j < shape.classes; j++) {
        let p = exp(probs[base + j] - top) / total;
        probs[base + j] = p;
        dlogits[base + j] = (p - select(0.0, 1.0, j == label)) * inverse_batch;
    }
    let position = step.batch_start + n;
    metrics[2u * position] = loss;
    metrics[2u * position + 1u] = f32(top_class);
}

// dkernel[f, j] = Σ_n x[n, f] · dlogits[n, j] + λ·sign(kernel[f, j]) for i < F·K;
// dbias[j] = Σ_n dlogits[n, j] for the K invocations after those.
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let kernel_len = shape.features * shape.classes;
    if (i >= kernel_len + shape.classes) {
        return;
    }
    var sum = 0.0;
    if (i < kernel_len) {
        let j = i % shape.classes;
        let f = i / shape.classes;
        for (var n = 0u; n < step.batch_size; n++) {
            sum += x[n * shape.features + f] * dlogits[n * shape.classes + j];
        }
        // TensorFlow's sign(0) is 0.
        grads[shape.kernel_offset + i] = sum + shape.l1 * sign(params[shape.kernel_offset + i]);
    } else {
        let j = i - kernel_len;
        for (var n = 0u; n < step.batch_size; n++) {
            sum += dlogits[n * shape.classes + j];
        }
        grads[shape.bias_offset + j] = sum;
    }
}

// dx[n, f] = Σ_j dlogits[n, j] · kernel[f, j]
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.features) {
        return;
    }
    let f = i % shape.features;
    let n = i / shape.features;
    var sum = 0.0;
    for (var j = 0u; j < shape.classes; j++) {
        sum += dlogits[n * shape.classes + j] * params[shape.kernel_offset + f * shape.classes + j];
    }
    dx[i] = sum;
}

// penalties[slot] = λ·Σ|kernel|, one workgroup, fixed-order tree reduction (deterministic).
const REDUCE_SIZE: u32 = 256u;
var<workgroup> partial: array<f32, REDUCE_SIZE>;

@compute @workgroup_size(REDUCE_SIZE)
fn l1_penalty(@builtin(local_invocation_index) t: u32) {
    var sum = 0.0;
    for (var i = t; i < shape.features * shape.classes; i += REDUCE_SIZE) {
        sum += abs(params[shape.kernel_offset + i]);
    }
    partial[t] = sum;
    workgroupBarrier();
    for (var half = REDUCE_SIZE / 2u; half > 0u; half >>= 1u) {
        if (t < half) {
            partial[t] += partial[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        penalties[step.penalty_slot] = shape.l1 * partial[0];
    }
}
