// batch_norm.wgsl — BatchNormalization over the channel axis (Keras 3: momentum 0.99, epsilon
// 1e-3). Training normalises with the batch's statistics and moves the moving ones towards them;
// inference normalises with the moving ones. Prepended with common.wgsl (Step, linear_index) and
// epilogue.wgsl (a layer absorbed after it).
//
// Bindings (group 0)                                                          used by
//   0  step      uniform Step                                                 all
//   1  shape     uniform NormShape                                            all
//   2  x         storage, read        input [N, H, W, C]                      all
//   3  params    storage, read        gamma [C], beta [C] at their offsets    forward, backward
//   4  state     storage, read_write  moving_mean [C], moving_variance [C]    forward
//   5  stats     storage, read_write  this pass's [mean [C], variance [C]]    forward writes, the rest read
//   6  y         storage, read_write  output, shaped like x                   forward
//   7  dy        storage, read        dL/dy                                   backward_partials, backward
//   9  dx        storage, read_write  dL/dx                                   backward
//  10  partials  storage, read_write  forward: per block of pixels and         moments writes, forward reads;
//                                     channel, [blocks, C, 2] (its own        backward_partials writes,
//                                     buffer); backward: per block, Σdy       backward reads
//                                     then Σdy·x̂ of every channel, [blocks,
//                                     2, C] from shape.gradient_offset of
//                                     the step's scratch, the final sums of
//                                     which (dbeta, dgamma) Adam's dispatch
//                                     takes (src/partial_sums.rs)
//  15  epilogue                           (epilogue.wgsl)                         forward
//
// Per channel c, over its M = N·H·W values:  mean = Σx / M,  variance = Σ(x − mean)² / M (biased,
// as Keras), inv = gamma / √(variance + ε),  y = x·inv + (beta − mean·inv)  (TensorFlow's order).
// Backward, with x̂ = (x − mean) / √(variance + ε):  dbeta = Σdy,  dgamma = Σdy·x̂,
// dx = inv · (dy − (dbeta + x̂·dgamma) / M).
//
// Two dispatches a pass, both over every channel at once with loads that follow memory: the
// first sums blocks of shape.block_rows pixels (`moments`: each block's mean and Σ(x − its
// mean)², two passes over it; `backward_partials`: Σdy and Σdy·x̂), the second combines the
// blocks in their order (Chan's pairwise update for the moments; SHARED_VALUES below) and writes
// each element. A first layer has no dx: its backward pass is `backward_partials` alone, dgamma
// and dbeta being the sums Adam's dispatch takes.
// No atomics: the same bits every run. Lanes are (channel, row): lane t takes channel
// c0 + t % CH of each chunk of CH = min(C, STAT_LANES) channels starting at c0, and every
// L-th pixel row from t / CH, L = STAT_LANES / CH; a warp's loads are then consecutive floats.

struct NormShape {
    channels: u32,
    pixels: u32,            // H·W of one sample
    gamma_offset: u32,      // in params; beta follows gamma
    mean_offset: u32,       // in state; the moving variance follows the moving mean
    epsilon: f32,
    momentum: f32,
    one_minus_momentum: f32,
    block_rows: u32,        // pixel rows (n, h, w) per block of the partial sums
    blocks: u32,            // blocks of the bound batch: ceil(batch · pixels / block_rows)
    workgroup_rows: u32,    // pixel rows per workgroup of forward and backward
    gradient_offset: u32,   // where backward_partials writes in the scratch bound as partials
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: NormShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;
@group(0) @binding(10) var<storage, read_write> partials: array<f32>;

const STAT_LANES: u32 = 256u;
var<workgroup> part: array<f32, STAT_LANES>;
var<workgroup> channel_totals: array<f32, STAT_LANES>;   // [channel in the chunk]
// What the per-element kernels apply to a channel, combined from the blocks: forward (inv,
// shift), backward (dbeta, dgamma, mean, inv). With SHARED_VALUES (a hardware GPU) the
// channel's first lane combines them once per workgroup and the others read them here, after a
// barrier; without (a software adapter, where a barrier is a switch between coroutines and the
// blocks' sums are in cache) every lane combines them itself. The same bits either way.
override SHARED_VALUES: bool = true;
var<workgroup> channel_values: array<vec4<f32>, STAT_LANES>;

// Lane l's values: combined by itself (`combine`, when it is the lane that does) or read after
// the channel's first lane has combined them. Called by every lane (it may hold a barrier).
fn channel_share(t: u32, l: Lane, combined: vec4<f32>) -> vec4<f32> {
    if (!SHARED_VALUES) {
        return combined;
    }
    if (l.working && l.row == 0u) {
        channel_values[t] = combined;
    }
    workgroupBarrier();
    let values = channel_values[t % chunk_width()];
    workgroupBarrier();   // read before the next chunk writes
    return values;
}

// Whether lane l combines its channel's values itself.
fn combines(l: Lane) -> bool {
    return l.working && (l.row == 0u || !SHARED_VALUES);
}

// Lane t's place: its channel in the chunk, its first row and the row step; whether it has a
// channel (lanes past CH·L, or past the last channel of a short last chunk, have none).
struct Lane {
    channel: u32,
    row: u32,
    rows_step: u32,
    working: bool,
}

fn chunk_width() -> u32 {
    return min(shape.channels, STAT_LANES);
}

fn lane(t: u32, c0: u32) -> Lane {
    let width = chunk_width();
    let step_rows = STAT_LANES / width;
    let c = c0 + t % width;
    return Lane(c, t / width, step_rows, t < width * step_rows && c < shape.channels);
}

// Pixel rows of the batch this step, and the rows of block b among them.
fn batch_rows() -> u32 {
    return step.batch_size * shape.pixels;
}

fn block_range(b: u32) -> vec2<u32> {
    let rows = batch_rows();
    return vec2<u32>(min(b * shape.block_rows, rows), min((b + 1u) * shape.block_rows, rows));
}

// The sum of `value` over the lanes of lane t's channel (in lane order), in every lane of it.
// Called by every lane (it holds barriers).
fn channel_sum(t: u32, l: Lane, value: f32) -> f32 {
    part[t] = value;
    workgroupBarrier();
    let width = chunk_width();
    if (l.working && l.row == 0u) {
        var total = 0.0;
        for (var k = 0u; k < l.rows_step; k++) {
            total += part[t + k * width];
        }
        channel_totals[t] = total;
    }
    workgroupBarrier();
    let total = channel_totals[t % width];
    workgroupBarrier();
    return total;
}

// Workgroup w of a 2-D grid.
fn workgroup_index(workgroup: vec3<u32>, groups: vec3<u32>) -> u32 {
    return workgroup.x + workgroup.y * groups.x;
}

// Training, one workgroup per block: the block's mean and Σ(x − its mean)² per channel
// (nothing at inference, which normalises with the moving statistics).
@compute @workgroup_size(STAT_LANES)
fn moments(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let b = workgroup_index(workgroup, groups);
    if (b >= shape.blocks || step.training == 0u) {
        return;
    }
    let range = block_range(b);
    let count = f32(range.y - range.x);
    let channels = shape.channels;
    for (var c0 = 0u; c0 < channels; c0 += chunk_width()) {
        let l = lane(t, c0);
        var sum = 0.0;
        if (l.working) {
            for (var r = range.x + l.row; r < range.y; r += l.rows_step) {
                sum += x[r * channels + l.channel];
            }
        }
        let mean = channel_sum(t, l, sum) / max(count, 1.0);
        var squares = 0.0;
        if (l.working) {
            for (var r = range.x + l.row; r < range.y; r += l.rows_step) {
                let d = x[r * channels + l.channel] - mean;
                squares += d * d;
            }
        }
        let m2 = channel_sum(t, l, squares);
        if (l.working && l.row == 0u) {
            partials[(b * channels + l.channel) * 2u] = mean;
            partials[(b * channels + l.channel) * 2u + 1u] = m2;
        }
    }
}

// The batch's mean and variance of channel c from the blocks' moments, combined in block order
// (Chan et al.'s pairwise update; empty blocks of a partial batch skipped).
fn batch_moments(c: u32) -> vec2<f32> {
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var b = 0u; b < shape.blocks; b++) {
        let range = block_range(b);
        let n = f32(range.y - range.x);
        if (n == 0.0) {
            break;
        }
        let block = (b * shape.channels + c) * 2u;
        let delta = partials[block] - mean;
        let total = count + n;
        mean += delta * (n / total);
        m2 += partials[block + 1u] + delta * delta * (count * n / total);
        count = total;
    }
    return vec2<f32>(mean, m2 / count);
}

// 1 / √(variance + ε).
fn inv_std(variance: f32) -> f32 {
    return 1.0 / sqrt(variance + shape.epsilon);
}

// Each workgroup its shape.workgroup_rows pixel rows. Training normalises with the batch's
// moments, which workgroup 0 also writes into stats, moving the moving statistics towards them
// (once per step: the forward pass of a training step); inference with the moving statistics,
// copied into stats.
@compute @workgroup_size(STAT_LANES)
fn forward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
    let w = workgroup_index(workgroup, groups);
    let channels = shape.channels;
    let first = w * shape.workgroup_rows;
    let last = min(first + shape.workgroup_rows, batch_rows());
    for (var c0 = 0u; c0 < channels; c0 += chunk_width()) {
        let l = lane(t, c0);
        let c = l.channel;
        var combined = vec4<f32>();
        if (combines(l)) {
            let moving_mean = shape.mean_offset + c;
            let moving_variance = shape.mean_offset + channels + c;
            var moments = vec2<f32>(state[moving_mean], state[moving_variance]);
            if (step.training != 0u) {
                moments = batch_moments(c);
            }
            if (w == 0u && l.row == 0u) {
                stats[c] = moments.x;
                stats[channels + c] = moments.y;
                if (step.training != 0u) {
                    state[moving_mean] = state[moving_mean] * shape.momentum + moments.x * shape.one_minus_momentum;
                    state[moving_variance] = state[moving_variance] * shape.momentum + moments.y * shape.one_minus_momentum;
                }
            }
            let inv = inv_std(moments.y) * params[shape.gamma_offset + c];
            let shift = params[shape.gamma_offset + channels + c] - moments.x * inv;
            combined = vec4<f32>(inv, shift, 0.0, 0.0);
        }
        let values = channel_share(t, l, combined);
        if (l.working) {
            for (var r = first + l.row; r < last; r += l.rows_step) {
                let i = r * channels + c;
                y[i] = apply_epilogue(x[i] * values.x + values.y, i);
            }
        }
    }
}

// One workgroup per block: Σdy and Σdy·x̂ per channel.
@compute @workgroup_size(STAT_LANES)
fn backward_partials(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                     @builtin(local_invocation_index) t: u32) {
    let b = workgroup_index(workgroup, groups);
    if (b >= shape.blocks) {
        return;
    }
    let range = block_range(b);
    let channels = shape.channels;
    for (var c0 = 0u; c0 < channels; c0 += chunk_width()) {
        let l = lane(t, c0);
        var sum_dy = 0.0;
        var sum_dy_xhat = 0.0;
        if (l.working) {
            let mean = stats[l.channel];
            let inv = inv_std(stats[channels + l.channel]);
            for (var r = range.x + l.row; r < range.y; r += l.rows_step) {
                let i = r * channels + l.channel;
                let g = dy[i];
                sum_dy += g;
                sum_dy_xhat += g * ((x[i] - mean) * inv);
            }
        }
        let dbeta = channel_sum(t, l, sum_dy);
        let dgamma = channel_sum(t, l, sum_dy_xhat);
        if (l.working && l.row == 0u) {
            let block = shape.gradient_offset + b * 2u * channels + l.channel;
            partials[block] = dbeta;
            partials[block + channels] = dgamma;
        }
    }
}

// dbeta and dgamma of channel c: the blocks' sums, in block order (the order in which Adam's
// dispatch sums them into grads: segments.wgsl).
fn gradient_sums(c: u32) -> vec2<f32> {
    var sums = vec2<f32>(0.0, 0.0);
    for (var b = 0u; b < shape.blocks; b++) {
        let block = shape.gradient_offset + b * 2u * shape.channels + c;
        sums += vec2<f32>(partials[block], partials[block + shape.channels]);
    }
    return sums;
}

// Each workgroup its shape.workgroup_rows pixel rows of dx.
@compute @workgroup_size(STAT_LANES)
fn backward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let w = workgroup_index(workgroup, groups);
    let channels = shape.channels;
    let m = batch_rows();
    let first = w * shape.workgroup_rows;
    let last = min(first + shape.workgroup_rows, m);
    for (var c0 = 0u; c0 < channels; c0 += chunk_width()) {
        let l = lane(t, c0);
        let c = l.channel;
        var combined = vec4<f32>();
        if (combines(l)) {
            combined = vec4<f32>(gradient_sums(c), stats[c], inv_std(stats[channels + c]));
        }
        let values = channel_share(t, l, combined);
        if (l.working) {
            let sums = values.xy;
            let mean = values.z;
            let inv = values.w;
            let scale = inv * params[shape.gamma_offset + c];
            for (var r = first + l.row; r < last; r += l.rows_step) {
                let i = r * channels + c;
                let xhat = (x[i] - mean) * inv;
                dx[i] = scale * (dy[i] - (sums.x + xhat * sums.y) / f32(m));
            }
        }
    }
}
