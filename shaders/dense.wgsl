// dense.wgsl — a hidden Dense layer (Keras `Dense(U, activation='relu')`, or no activation):
// y = act(x·kernel + bias) on the flattened input. Prepended with common.wgsl (Step,
// linear_index) and dense_dot.wgsl (the forward product).
//
// Bindings (group 0)                                                          used by
//   0  step    uniform Step                                                   all
//   1  shape   uniform HiddenDenseShape                                       all
//   2  x       storage, read        input [N, F] (NHWC flattened for free)    forward, backward_weight
//   3  params  storage, read        kernel [F, U] at kernel_offset,           forward, backward_input
//                                   bias [U] at bias_offset
//   4  y       storage, read_write  output [N, U]                             forward writes, backward_* read
//   5  dy      storage, read        dL/dy [N, U]                              backward_*
//   6  grads   storage, read_write  flat gradients                            backward_weight
//   7  dx      storage, read_write  dL/dx [N, F]                              backward_input
//
// dpre = dy · (y > 0) (dy without the activation) is recomputed where it is read. Every
// backward kernel is a gather: gradients overwritten, no atomics.

struct HiddenDenseShape {
    batch: u32,
    features: u32,
    units: u32,
    kernel_offset: u32,
    bias_offset: u32,
    relu: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: HiddenDenseShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

fn dpre(o: u32) -> f32 {
    if (shape.relu == 1u) {
        return select(0.0, dy[o], y[o] > 0.0);
    }
    return dy[o];
}

// y[n, j] = act(bias[j] + Σ_f x[n, f] · kernel[f, j]): one workgroup per output (dense_dot.wgsl).
@compute @workgroup_size(DOT_LANES)
fn forward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let i = workgroup.x + workgroup.y * groups.x;   // the same for the whole workgroup
    if (i >= step.batch_size * shape.units) {
        return;
    }
    let j = i % shape.units;
    let n = i / shape.units;
    let pre = dense_dot(t, n, j, shape.features, shape.units, shape.kernel_offset, shape.bias_offset);
    if (t == 0u) {
        y[i] = select(pre, max(pre, 0.0), shape.relu == 1u);
    }
}

// dkernel[f, j] = Σ_n x[n, f] · dpre[n, j] (invocations 0 .. F·U), then dbias[j] = Σ_n dpre[n, j].
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let kernel_len = shape.features * shape.units;
    if (i >= kernel_len + shape.units) {
        return;
    }
    var sum = 0.0;
    if (i < kernel_len) {
        let f = i / shape.units;
        let j = i % shape.units;
        for (var n = 0u; n < step.batch_size; n++) {
            sum += x[n * shape.features + f] * dpre(n * shape.units + j);
        }
        grads[shape.kernel_offset + i] = sum;
    } else {
        let j = i - kernel_len;
        for (var n = 0u; n < step.batch_size; n++) {
            sum += dpre(n * shape.units + j);
        }
        grads[shape.bias_offset + j] = sum;
    }
}

// dx[n, f] = Σ_j dpre[n, j] · kernel[f, j].
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.features) {
        return;
    }
    let n = i / shape.features;
    let f = i % shape.features;
    var sum = 0.0;
    for (var j = 0u; j < shape.units; j++) {
        sum += dpre(n * shape.units + j) * params[shape.kernel_offset + f * shape.units + j];
    }
    dx[i] = sum;
}
