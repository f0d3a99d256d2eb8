// batch_norm.wgsl — BatchNormalization over the channel axis (Keras 3: momentum 0.99, epsilon
// 1e-3). Training normalises with the batch's statistics and moves the moving ones towards them;
// inference normalises with the moving ones. Prepended with common.wgsl (Step, linear_index) and
// epilogue.wgsl (a layer absorbed after it).
//
// Bindings (group 0)                                                          used by
//   0  step    uniform Step                                                   all
//   1  shape   uniform NormShape                                              all
//   2  x       storage, read        input [N, H, W, C]                        all
//   3  params  storage, read        gamma [C], beta [C] at their offsets      forward, backward_input
//   4  state   storage, read_write  moving_mean [C], moving_variance [C]      statistics
//   5  stats   storage, read_write  this pass's [mean [C], variance [C]]      statistics writes, the rest read
//   6  y       storage, read_write  output, shaped like x                     forward
//   7  dy      storage, read        dL/dy                                     backward_*
//   8  grads   storage, read_write  flat gradients: dgamma, dbeta             backward_reduce writes,
//                                                                             backward_input reads
//   9  dx      storage, read_write  dL/dx                                     backward_input
//  15  epilogue                         (epilogue.wgsl)                           forward
//
// Per channel c, over its M = N·H·W values:  mean = Σx / M,  variance = Σ(x − mean)² / M (biased,
// as Keras), inv = gamma / √(variance + ε),  y = x·inv + (beta − mean·inv)  (TensorFlow's order).
// Backward, with x̂ = (x − mean) / √(variance + ε):  dbeta = Σdy,  dgamma = Σdy·x̂,
// dx = inv · (dy − (dbeta + x̂·dgamma) / M).
// The reductions are one workgroup per channel, each lane summing every STAT_LANES-th value and
// then a fixed-order tree: no atomics, the same bits every run.

struct NormShape {
    channels: u32,
    pixels: u32,            // H·W of one sample
    gamma_offset: u32,      // in params; beta follows gamma
    mean_offset: u32,       // in state; the moving variance follows the moving mean
    epsilon: f32,
    momentum: f32,
    one_minus_momentum: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: NormShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;

const STAT_LANES: u32 = 256u;
var<workgroup> part: array<f32, STAT_LANES>;

// The sum of every lane's `value`, in a fixed order; every lane gets it.
fn workgroup_sum(t: u32, value: f32) -> f32 {
    part[t] = value;
    workgroupBarrier();
    for (var half = STAT_LANES / 2u; half > 0u; half >>= 1u) {
        if (t < half) {
            part[t] += part[t + half];
        }
        workgroupBarrier();
    }
    let total = part[0];
    workgroupBarrier();
    return total;
}

fn inv_std(c: u32) -> f32 {
    return 1.0 / sqrt(stats[shape.channels + c] + shape.epsilon);
}

// One workgroup per channel. Training: the batch's mean and variance into stats, and the moving
// statistics moved towards them (once per step: the forward pass of a training step). Inference:
// the moving statistics copied into stats.
@compute @workgroup_size(STAT_LANES)
fn statistics(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_index) t: u32) {
    let c = workgroup.x + workgroup.y * groups.x;   // the same for the whole workgroup
    let channels = shape.channels;
    if (c >= channels) {
        return;
    }
    let moving_mean = shape.mean_offset + c;
    let moving_variance = shape.mean_offset + channels + c;
    if (step.training == 0u) {
        if (t == 0u) {
            stats[c] = state[moving_mean];
            stats[channels + c] = state[moving_variance];
        }
        return;
    }
    let m = step.batch_size * shape.pixels;
    var sum = 0.0;
    for (var p = t; p < m; p += STAT_LANES) {
        sum += x[p * channels + c];
    }
    let mean = workgroup_sum(t, sum) / f32(m);
    var squares = 0.0;
    for (var p = t; p < m; p += STAT_LANES) {
        let d = x[p * channels + c] - mean;
        squares += d * d;
    }
    let variance = workgroup_sum(t, squares) / f32(m);
    if (t == 0u) {
        stats[c] = mean;
        stats[channels + c] = variance;
        state[moving_mean] = state[moving_mean] * shape.momentum + mean * shape.one_minus_momentum;
        state[moving_variance] = state[moving_variance] * shape.momentum + variance * shape.one_minus_momentum;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.pixels * shape.channels) {
        return;
    }
    let c = i % shape.channels;
    let inv = inv_std(c) * params[shape.gamma_offset + c];
    y[i] = apply_epilogue(x[i] * inv + (params[shape.gamma_offset + shape.channels + c] - stats[c] * inv), i);
}

// One workgroup per channel: dgamma and dbeta (overwritten).
@compute @workgroup_size(STAT_LANES)
fn backward_reduce(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    let c = workgroup.x + workgroup.y * groups.x;
    let channels = shape.channels;
    if (c >= channels) {
        return;
    }
    let m = step.batch_size * shape.pixels;
    let mean = stats[c];
    let inv = inv_std(c);
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    for (var p = t; p < m; p += STAT_LANES) {
        let g = dy[p * channels + c];
        sum_dy += g;
        sum_dy_xhat += g * ((x[p * channels + c] - mean) * inv);
    }
    let dbeta = workgroup_sum(t, sum_dy);
    let dgamma = workgroup_sum(t, sum_dy_xhat);
    if (t == 0u) {
        grads[shape.gamma_offset + c] = dgamma;
        grads[shape.gamma_offset + channels + c] = dbeta;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let m = step.batch_size * shape.pixels;
    if (i >= m * shape.channels) {
        return;
    }
    let c = i % shape.channels;
    let inv = inv_std(c);
    let xhat = (x[i] - stats[c]) * inv;
    let dgamma = grads[shape.gamma_offset + c];
    let dbeta = grads[shape.gamma_offset + shape.channels + c];
    dx[i] = inv * params[shape.gamma_offset + c] * (dy[i] - (dbeta + xhat * dgamma) / f32(m));
}
