// dense_softmax.wgsl — Flatten + Dense + softmax + categorical cross-entropy, fused so that the
// loss gradient is the stable `softmax − one_hot`, plus Keras' L1 kernel regulariser
// (`kernel_regularizer=l1(λ)`: λ·Σ|W| added to the loss, λ·sign(W) to the kernel gradient).
// Prepended with common.wgsl (Step, linear_index, mask_gradient), dense_dot.wgsl (DOT_LANES
// and its tree, lanes_sum, whose order of sums the logits keep) and dense_gradient.wgsl (the
// weight gradient, which Adam's dispatch shares).
//
// Bindings (group 0)                                                          used by
//   0  step       uniform Step                                                all
//   1  shape      uniform DenseShape                                          all
//   2  x          storage, read        input [N, F], F = H·W·C in NHWC order  forward*
//                                      (Flatten is free: NHWC is already that order)
//   3  params     storage, read        kernel [F, K] at shape.kernel_offset,  all
//                                      bias [K] at shape.bias_offset
//   4  labels     storage, read        u32 class of each sample [N]           forward, forward_backward
//   5  probs      storage, read_write  [N, K]: logits, then softmax in place  forward, forward_backward
//   6  dlogits    storage, read_write  dL/dlogits of the batch-mean loss      forward*
//                                      [N, K]
//   7  metrics    storage, read_write  per sample, at position batch_start    forward, forward_backward
//                                      + n of the epoch: [loss, predicted class]
//   8  grads      storage, read_write  flat gradients                         backward_weight
//   9  dx         storage, read_write  dL/dx [N, F], through the mask         forward_backward
//                                      (shape.mask_*: a dropout's keep mask,
//                                      then mask_pos, mask_neg)
//  10  penalties  storage, read_write  λ·Σ|W|, at step.penalty_slot           forward, forward_backward
//  16-18  dense, dense_x, dense_dlogits   (dense_gradient.wgsl: x and dlogits)  backward_weight
//
// One dispatch for everything per sample: `forward` is a workgroup per sample (the logits, then
// softmax, loss and dlogits), plus one workgroup for the L1 penalty; `forward_backward` also
// writes the sample's dx in training steps. Then the weight gradient (kernel and bias, a sum
// over the batch): `backward_weight` when the head is bound alone, Adam's dispatch in a training
// step. All gathers, gradients overwritten.

struct DenseShape {
    batch: u32,
    features: u32,
    classes: u32,
    kernel_offset: u32,
    bias_offset: u32,
    l1: f32,
    mask_pos: f32,  // dx through the layers before (mask_gradient): 1, 1 for none
    mask_neg: f32,
    // Before that, through a dropout absorbed with an activation before it (DropoutShape's
    // rate, scale, seed and layer; a rate of 0 for none), as the dropout's backward would.
    mask_rate: f32,
    mask_scale: f32,
    mask_seed: u32,
    mask_layer: u32,
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

// Classes whose logits a workgroup sums at once: one pass over x and one tree for all of them.
const CLASS_BLOCK: u32 = 16u;
var<workgroup> class_part: array<f32, CLASS_BLOCK * DOT_LANES>;   // [class in block][lane]

// Per sample: the logits, then, in lane 0, softmax_cross_entropy: softmax in place,
// cross-entropy loss = logsumexp(logits) − logits[label], the predicted class (the first
// arg-max, as np.argmax), dlogits = (softmax − one_hot) / batch_size. Each lane sums every
// DOT_LANES-th feature for up to CLASS_BLOCK classes at once, in the order dense_dot.wgsl sums
// one, and the lanes meet in its tree: the same bits as a dense_dot per logit, with one read
// of x and log2(DOT_LANES) barriers per block instead of per class. Called by every invocation
// of the workgroup (it holds barriers).
fn sample_forward(n: u32, t: u32) {
    let base = n * shape.classes;
    for (var j0 = 0u; j0 < shape.classes; j0 += CLASS_BLOCK) {
        let block = min(CLASS_BLOCK, shape.classes - j0);
        // In registers: loops of a constant count, so the indices are constants once unrolled.
        var sums: array<f32, CLASS_BLOCK>;
        for (var f = t; f < shape.features; f += DOT_LANES) {
            let value = x[n * shape.features + f];
            let row = shape.kernel_offset + f * shape.classes + j0;
            for (var j = 0u; j < CLASS_BLOCK; j++) {
                if (j < block) {
                    sums[j] += value * params[row + j];
                }
            }
        }
        for (var j = 0u; j < CLASS_BLOCK; j++) {
            class_part[j * DOT_LANES + t] = sums[j];
        }
        workgroupBarrier();
        for (var half = DOT_LANES / 2u; half > 0u; half >>= 1u) {
            if (t < half) {
                for (var j = 0u; j < block; j++) {
                    class_part[j * DOT_LANES + t] += class_part[j * DOT_LANES + t + half];
                }
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            for (var j = 0u; j < block; j++) {
                probs[base + j0 + j] = params[shape.bias_offset + j0 + j] + class_part[j * DOT_LANES];
            }
        }
        workgroupBarrier();   // lane 0 has read class_part before the next block writes it
    }
    if (t == 0u) {
        softmax_cross_entropy(n);
    }
}

// In one invocation, from the sample's logits in probs.
fn softmax_cross_entropy(n: u32) {
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

// penalties[slot] = λ·Σ|kernel|: one workgroup, dense_dot.wgsl's fixed-order tree.
fn l1_penalty(t: u32) {
    var sum = 0.0;
    for (var i = t; i < shape.features * shape.classes; i += DOT_LANES) {
        sum += abs(params[shape.kernel_offset + i]);
    }
    let total = lanes_sum(t, sum);
    if (t == 0u) {
        penalties[step.penalty_slot] = shape.l1 * total;
    }
}

// The workgroup's index: samples 0..shape.batch, then the penalty's. The same for the whole
// workgroup, so the branches on it keep the barriers in uniform control flow.
fn workgroup_index(workgroup: vec3<u32>, groups: vec3<u32>) -> u32 {
    return workgroup.x + workgroup.y * groups.x;
}

// Workgroup w's share of the forward pass: sample w, or the penalty; whether it was a sample of
// the batch.
fn sample_or_penalty(w: u32, t: u32) -> bool {
    if (w == shape.batch) {
        l1_penalty(t);
        return false;
    }
    if (w >= step.batch_size) {
        return false;
    }
    sample_forward(w, t);
    return true;
}

@compute @workgroup_size(DOT_LANES)
fn forward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    _ = sample_or_penalty(workgroup_index(workgroup, groups), t);
}

// forward, then in training steps dx[n, f] = Σ_j dlogits[n, j] · kernel[f, j] for the sample's
// features, a lane every DOT_LANES-th (same order of the sum as a gather per element).
@compute @workgroup_size(DOT_LANES)
fn forward_backward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                    @builtin(local_invocation_index) t: u32) {
    let n = workgroup_index(workgroup, groups);
    if (!sample_or_penalty(n, t) || step.training == 0u) {
        return;
    }
    storageBarrier();   // lane 0's dlogits, visible to the workgroup
    let logits = n * shape.classes;
    for (var f = t; f < shape.features; f += DOT_LANES) {
        var sum = 0.0;
        let row = shape.kernel_offset + f * shape.classes;
        for (var j0 = 0u; j0 < shape.classes; j0 += CLASS_BLOCK) {
            for (var j = 0u; j < CLASS_BLOCK; j++) {
                if (j0 + j < shape.classes) {
                    sum += dlogits[logits + j0 + j] * params[row + j0 + j];
                }
            }
        }
        let i = n * shape.features + f;
        if (shape.mask_rate > 0.0) {
            let key = dropout_key(shape.mask_seed, step.step, shape.mask_layer);
            sum = sum * dropout_factor(step.training != 0u, key, shape.mask_rate, shape.mask_scale, i);
        }
        // Without a mask, x is not read again (a uniform branch).
        if (shape.mask_pos != 1.0 || shape.mask_neg != 1.0) {
            sum = mask_gradient(sum, x[i], shape.mask_pos, shape.mask_neg);
        }
        dx[i] = sum;
    }
}

// The kernel's and the bias's gradients (dense_gradient.wgsl), one invocation each: the head
// bound alone. A training step leaves them to Adam's dispatch (adam.wgsl), which takes them
// as it updates.
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= dense_len()) {
        return;
    }
    let p = dense.kernel_offset + i;
    grads[p] = dense_gradient(i, params[p]);
}
