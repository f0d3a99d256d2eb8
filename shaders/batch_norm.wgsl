// batch_norm.wgsl — BatchNormalization over the channel axis (Keras 3: momentum 0.99, epsilon
// 1e-3). Training normalises with the batch's statistics and moves the moving ones towards them;
// inference normalises with the moving ones. Prepended with common.wgsl (Step, linear_index) and
// epilogue.wgsl (a layer absorbed after it).
//
// Bindings (group 0)                                                          used by
//   0  step    uniform Step                                                   all
//   1  shape   uniform NormShape                                              all
//   2  x       storage, read        input [N, H, W, C]                        all
//   3  params  storage, read        gamma [C], beta [C] at their offsets      forward, backward
//   4  state   storage, read_write  moving_mean [C], moving_variance [C]      forward
//   5  stats   storage, read_write  this pass's [mean [C], variance [C]]      forward writes, the rest read
//   6  y       storage, read_write  output, shaped like x                     forward
//   7  dy      storage, read        dL/dy                                     backward*
//   8  grads   storage, read_write  flat gradients: dgamma, dbeta             backward* write
//   9  dx      storage, read_write  dL/dx                                     backward
//  15  epilogue                         (epilogue.wgsl)                           forward
//
// Per channel c, over its M = N·H·W values:  mean = Σx / M,  variance = Σ(x − mean)² / M (biased,
// as Keras), inv = gamma / √(variance + ε),  y = x·inv + (beta − mean·inv)  (TensorFlow's order).
// Backward, with x̂ = (x − mean) / √(variance + ε):  dbeta = Σdy,  dgamma = Σdy·x̂,
// dx = inv · (dy − (dbeta + x̂·dgamma) / M).
// Each pass is one dispatch: the per-element step needs the whole channel's sums, so the
// workgroups that write a channel's elements each compute those sums themselves rather than
// wait for a dispatch that has. shape.slices workgroups share a channel: each sums all of it
// (each lane every STAT_LANES-th value, then a fixed-order tree: no atomics, the same bits in
// every workgroup and every run) and then writes its slice of the outputs. One slice on a
// software adapter; a few on a GPU, so that more workgroups write (src/layers/batch_norm).

struct NormShape {
    channels: u32,
    pixels: u32,            // H·W of one sample
    gamma_offset: u32,      // in params; beta follows gamma
    mean_offset: u32,       // in state; the moving variance follows the moving mean
    epsilon: f32,
    momentum: f32,
    one_minus_momentum: f32,
    slices: u32,            // workgroups per channel
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

// Workgroup w's channel and slice (the same for the whole workgroup, so the branches on them keep
// the barriers in uniform control flow).
fn channel_slice(workgroup: vec3<u32>, groups: vec3<u32>) -> vec2<u32> {
    let w = workgroup.x + workgroup.y * groups.x;
    return vec2<u32>(w / shape.slices, w % shape.slices);
}

// 1 / √(variance + ε).
fn inv_std(variance: f32) -> f32 {
    return 1.0 / sqrt(variance + shape.epsilon);
}

// The batch's mean and variance of channel c, two passes over its values. Every lane gets them.
fn batch_moments(c: u32, t: u32) -> vec2<f32> {
    let channels = shape.channels;
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
    return vec2<f32>(mean, workgroup_sum(t, squares) / f32(m));
}

// Training: normalises with the batch's mean and variance, which the channel's first slice also
// writes into stats, moving the moving statistics towards them (once per step: the forward pass
// of a training step). Inference: with the moving statistics, copied into stats.
@compute @workgroup_size(STAT_LANES)
fn forward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let at = channel_slice(workgroup, groups);
    let c = at.x;
    let channels = shape.channels;
    if (c >= channels) {
        return;
    }
    let moving_mean = shape.mean_offset + c;
    let moving_variance = shape.mean_offset + channels + c;
    var moments = vec2<f32>(state[moving_mean], state[moving_variance]);
    if (step.training != 0u) {
        moments = batch_moments(c, t);
    }
    if (at.y == 0u && t == 0u) {
        stats[c] = moments.x;
        stats[channels + c] = moments.y;
        if (step.training != 0u) {
            state[moving_mean] = state[moving_mean] * shape.momentum + moments.x * shape.one_minus_momentum;
            state[moving_variance] = state[moving_variance] * shape.momentum + moments.y * shape.one_minus_momentum;
        }
    }
    let inv = inv_std(moments.y) * params[shape.gamma_offset + c];
    let shift = params[shape.gamma_offset + channels + c] - moments.x * inv;
    let m = step.batch_size * shape.pixels;
    for (var p = at.y * STAT_LANES + t; p < m; p += shape.slices * STAT_LANES) {
        let i = p * channels + c;
        y[i] = apply_epilogue(x[i] * inv + shift, i);
    }
}

// dbeta = Σdy and dgamma = Σdy·x̂ of channel c; every lane gets them.
fn gradient_sums(c: u32, t: u32) -> vec2<f32> {
    let channels = shape.channels;
    let m = step.batch_size * shape.pixels;
    let mean = stats[c];
    let inv = inv_std(stats[channels + c]);
    var sum_dy = 0.0;
    var sum_dy_xhat = 0.0;
    for (var p = t; p < m; p += STAT_LANES) {
        let g = dy[p * channels + c];
        sum_dy += g;
        sum_dy_xhat += g * ((x[p * channels + c] - mean) * inv);
    }
    let dbeta = workgroup_sum(t, sum_dy);
    return vec2<f32>(dbeta, workgroup_sum(t, sum_dy_xhat));
}

fn write_gradients(c: u32, sums: vec2<f32>) {
    grads[shape.gamma_offset + c] = sums.y;
    grads[shape.gamma_offset + shape.channels + c] = sums.x;
}

// dgamma and dbeta (overwritten, by the channel's first slice), then dx of the slice.
@compute @workgroup_size(STAT_LANES)
fn backward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let at = channel_slice(workgroup, groups);
    let c = at.x;
    let channels = shape.channels;
    if (c >= channels) {
        return;
    }
    let sums = gradient_sums(c, t);
    if (at.y == 0u && t == 0u) {
        write_gradients(c, sums);
    }
    let m = step.batch_size * shape.pixels;
    let mean = stats[c];
    let inv = inv_std(stats[channels + c]);
    let scale = inv * params[shape.gamma_offset + c];
    for (var p = at.y * STAT_LANES + t; p < m; p += shape.slices * STAT_LANES) {
        let i = p * channels + c;
        let xhat = (x[i] - mean) * inv;
        dx[i] = scale * (dy[i] - (sums.x + xhat * sums.y) / f32(m));
    }
}

// The first layer's: dgamma and dbeta alone (no dx), one workgroup per channel.
@compute @workgroup_size(STAT_LANES)
fn backward_reduce(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    let c = workgroup.x + workgroup.y * groups.x;
    if (c >= shape.channels) {
        return;
    }
    let sums = gradient_sums(c, t);
    if (t == 0u) {
        write_gradients(c, sums);
    }
}
