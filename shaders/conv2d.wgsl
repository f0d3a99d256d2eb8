// conv2d.wgsl — Conv2D, 3×3 kernel, stride 1 or 2, Keras 'same' padding, bias and fused ReLU:
// the forward pass and its three gradients. Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)                                                      used by (tiled / naive)
//   0  step      uniform Step                                             all
//   1  shape     uniform Conv2dShape                                      all
//   2  x         storage, read        input [N, H, W, C]                  forward, backward_weight_partial /
//                                                                         naive_forward, naive_backward_weight
//   3  params    storage, read        flat parameters: kernel [3, 3, C,   forward, backward_input / naive_forward,
//                                     K] at kernel_offset, bias [K] at    naive_backward_input
//                                     bias_offset
//   4  y         storage, read_write  output after ReLU [N, OH, OW, K]    forward writes, relu_backward reads /
//                                     (y > 0 ⇔ pre-activation > 0)        naive_forward writes, naive_backward_* read
//   5  dy        storage, read        dL/dy, shaped like y                relu_backward / naive_backward_*
//   6  dx        storage, read_write  dL/dx, shaped like x                backward_input / naive_backward_input
//   7  grads     storage, read_write  flat gradients, laid out like       backward_weight_reduce /
//                                     params                              naive_backward_weight, naive_backward_bias
//   8  dpre      storage, read_write  dL/d(pre-activation) = dy·(y > 0),  relu_backward writes; backward_input,
//                                     shaped like y                       backward_weight_partial read
//   9  partials  storage, read_write  [chunks, 9·C·K + K] partial sums    backward_weight_partial writes,
//                                     of dkernel and dbias per chunk of   backward_weight_reduce reads
//                                     chunk_len output positions
//
// Two implementations of the same math, checked against each other and the CPU reference:
//   tiled (used for training):  relu_backward, then forward / backward_input as 4×4 register tiles
//     (4 channels × 4 pixels per invocation: 8 loads feed 16 multiply-adds, where the naive
//     kernels load 2–3 values per multiply-add), and dkernel/dbias as a split reduction: partial
//     sums per chunk of positions (thousands of invocations even for the 432 weights of the
//     first layer), then a fixed-order sum over the chunks (deterministic, no atomics).
//   naive (the baseline): naive_forward, naive_backward_input, naive_backward_weight,
//     naive_backward_bias — one invocation per element written, the math as written.
//
// Every kernel is a gather: it owns the elements it writes, gradients are overwritten. The grid is
// sized for shape.batch; invocations past step.batch_size (a partial batch) write nothing, except
// the partial sums, which are 0 for chunks past the batch.
//
// Padding (TensorFlow's 'same'): input row iy = oy·stride + ky − pad_top, zero outside.

struct Conv2dShape {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    kernel_offset: u32,
    bias_offset: u32,
    chunk_len: u32,   // output positions (n, oy, ox) per partial-sum chunk
    chunks: u32,      // ceil(batch · out_h · out_w / chunk_len)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Conv2dShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpre_buffer: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;

// dL/d(pre-activation) at output element o: ReLU passes the gradient where the output is positive.
fn dpre(o: u32) -> f32 {
    return select(0.0, dy[o], y[o] > 0.0);
}

// Input coordinate read by output coordinate `o` through tap `k`, or -1 in the padding.
fn input_coord(o: u32, k: u32, pad: u32, size: u32) -> i32 {
    let i = i32(o * shape.stride + k) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

// y[n, oy, ox, k] = relu(bias[k] + Σ_{ky, kx, c} x[n, iy, ix, c] · kernel[ky, kx, c, k])
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.out_h * shape.out_w * shape.out_c) {
        return;
    }
    let k = i % shape.out_c;
    let pixel = i / shape.out_c;
    let ox = pixel % shape.out_w;
    let oy = (pixel / shape.out_w) % shape.out_h;
    let n = pixel / (shape.out_w * shape.out_h);

    var sum = params[shape.bias_offset + k];
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = input_coord(oy, ky, shape.pad_top, shape.in_h);
        if (iy < 0) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let ix = input_coord(ox, kx, shape.pad_left, shape.in_w);
            if (ix < 0) {
                continue;
            }
            let x_base = ((n * shape.in_h + u32(iy)) * shape.in_w + u32(ix)) * shape.in_c;
            let w_base = shape.kernel_offset + (ky * 3u + kx) * shape.in_c * shape.out_c + k;
            for (var c = 0u; c < shape.in_c; c++) {
                sum += x[x_base + c] * params[w_base + c * shape.out_c];
            }
        }
    }
    y[i] = max(sum, 0.0);
}

// dx[n, iy, ix, c] = Σ over the (oy, ky), (ox, kx) with oy·stride + ky − pad_top = iy (and
// likewise for x) of Σ_k dpre[n, oy, ox, k] · kernel[ky, kx, c, k]
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.in_h * shape.in_w * shape.in_c) {
        return;
    }
    let c = i % shape.in_c;
    let pixel = i / shape.in_c;
    let ix = pixel % shape.in_w;
    let iy = (pixel / shape.in_w) % shape.in_h;
    let n = pixel / (shape.in_w * shape.in_h);
    let stride = i32(shape.stride);

    var sum = 0.0;
    for (var ky = 0u; ky < 3u; ky++) {
        // oy·stride = iy + pad_top − ky must be a non-negative multiple of the stride.
        let ty = i32(iy + shape.pad_top) - i32(ky);
        if (ty < 0 || ty % stride != 0 || ty / stride >= i32(shape.out_h)) {
            continue;
        }
        let oy = u32(ty / stride);
        for (var kx = 0u; kx < 3u; kx++) {
            let tx = i32(ix + shape.pad_left) - i32(kx);
            if (tx < 0 || tx % stride != 0 || tx / stride >= i32(shape.out_w)) {
                continue;
            }
            let ox = u32(tx / stride);
            let o_base = ((n * shape.out_h + oy) * shape.out_w + ox) * shape.out_c;
            let w_base = shape.kernel_offset + ((ky * 3u + kx) * shape.in_c + c) * shape.out_c;
            for (var k = 0u; k < shape.out_c; k++) {
                sum += dpre(o_base + k) * params[w_base + k];
            }
        }
    }
    dx[i] = sum;
}

// dkernel[ky, kx, c, k] = Σ_{n, oy, ox} dpre[n, oy, ox, k] · x[n, iy, ix, c]
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= 9u * shape.in_c * shape.out_c) {
        return;
    }
    let k = i % shape.out_c;
    let c = (i / shape.out_c) % shape.in_c;
    let tap = i / (shape.out_c * shape.in_c);
    let ky = tap / 3u;
    let kx = tap % 3u;

    var sum = 0.0;
    for (var n = 0u; n < step.batch_size; n++) {
        for (var oy = 0u; oy < shape.out_h; oy++) {
            let iy = input_coord(oy, ky, shape.pad_top, shape.in_h);
            if (iy < 0) {
                continue;
            }
            for (var ox = 0u; ox < shape.out_w; ox++) {
                let ix = input_coord(ox, kx, shape.pad_left, shape.in_w);
                if (ix < 0) {
                    continue;
                }
                let o = ((n * shape.out_h + oy) * shape.out_w + ox) * shape.out_c + k;
                sum += dpre(o) * x[((n * shape.in_h + u32(iy)) * shape.in_w + u32(ix)) * shape.in_c + c];
            }
        }
    }
    grads[shape.kernel_offset + i] = sum;
}

// dbias[k] = Σ_{n, oy, ox} dpre[n, oy, ox, k]: one workgroup per filter, a fixed-order tree
// reduction in workgroup memory (deterministic).
const REDUCE_SIZE: u32 = 256u;
var<workgroup> partial: array<f32, REDUCE_SIZE>;

@compute @workgroup_size(REDUCE_SIZE)
fn naive_backward_bias(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let k = workgroup.x;
    let pixels = step.batch_size * shape.out_h * shape.out_w;
    var sum = 0.0;
    for (var p = t; p < pixels; p += REDUCE_SIZE) {
        sum += dpre(p * shape.out_c + k);
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
        grads[shape.bias_offset + k] = partial[0];
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled kernels.

// dpre = dy · (y > 0), once per layer, so the backward kernels read one value instead of two.
@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.out_h * shape.out_w * shape.out_c) {
        return;
    }
    dpre_buffer[i] = dpre(i);
}

// Four consecutive channels starting at c0, clamped to the last one so that a partial block
// reads valid memory (its extra lanes are never stored).
fn four_channels(c0: u32, count: u32) -> vec4<u32> {
    let last = count - 1u;
    return vec4<u32>(min(c0, last), min(c0 + 1u, last), min(c0 + 2u, last), min(c0 + 3u, last));
}

fn load4(base: u32, stride: u32, lanes: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(params[base + lanes.x * stride], params[base + lanes.y * stride],
                     params[base + lanes.z * stride], params[base + lanes.w * stride]);
}

// One invocation: output channels k0..k0+3 of output pixels (oy, ox0..ox0+3).
@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let k_blocks = (shape.out_c + 3u) / 4u;
    let x_blocks = (shape.out_w + 3u) / 4u;
    if (i >= step.batch_size * shape.out_h * x_blocks * k_blocks) {
        return;
    }
    let k0 = (i % k_blocks) * 4u;
    let ox0 = ((i / k_blocks) % x_blocks) * 4u;
    let oy = (i / (k_blocks * x_blocks)) % shape.out_h;
    let n = i / (k_blocks * x_blocks * shape.out_h);
    let ks = four_channels(k0, shape.out_c);

    let bias = load4(shape.bias_offset, 1u, ks);
    var acc = array<vec4<f32>, 4>(bias, bias, bias, bias);   // acc[p] = channels of pixel ox0 + p
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = input_coord(oy, ky, shape.pad_top, shape.in_h);
        if (iy < 0) {
            continue;
        }
        let row = (n * shape.in_h + u32(iy)) * shape.in_w;
        for (var kx = 0u; kx < 3u; kx++) {
            // Where each of the four pixels reads; a pixel in the padding (or past the row) reads
            // element 0 and is multiplied by 0.
            var base: array<u32, 4>;
            var keep: vec4<f32>;
            for (var p = 0u; p < 4u; p++) {
                let ix = input_coord(ox0 + p, kx, shape.pad_left, shape.in_w);
                let valid = ix >= 0 && ox0 + p < shape.out_w;
                base[p] = select(0u, (row + u32(max(ix, 0))) * shape.in_c, valid);
                keep[p] = select(0.0, 1.0, valid);
            }
            let w_base = shape.kernel_offset + (ky * 3u + kx) * shape.in_c * shape.out_c;
            for (var c = 0u; c < shape.in_c; c++) {
                let w = load4(w_base + c * shape.out_c, 1u, ks);
                acc[0] += (x[base[0] + c] * keep[0]) * w;
                acc[1] += (x[base[1] + c] * keep[1]) * w;
                acc[2] += (x[base[2] + c] * keep[2]) * w;
                acc[3] += (x[base[3] + c] * keep[3]) * w;
            }
        }
    }
    for (var p = 0u; p < 4u; p++) {
        if (ox0 + p >= shape.out_w) {
            break;
        }
        let out = ((n * shape.out_h + oy) * shape.out_w + ox0 + p) * shape.out_c;
        for (var j = 0u; j < 4u; j++) {
            if (k0 + j < shape.out_c) {
                y[out + k0 + j] = max(acc[p][j], 0.0);
            }
        }
    }
}

// One invocation: input channels c0..c0+3 of four input pixels of row iy that share their
// column's phase modulo the stride, ix = phase + (group·4 + p)·stride: with stride 2 the
// taps that reach an even column never reach an odd one, so a block of same-phase columns keeps
// all four lanes busy on every tap. Reads dpre.
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let c_blocks = (shape.in_c + 3u) / 4u;
    let x_slots = shape.stride * ((shape.in_w + 4u * shape.stride - 1u) / (4u * shape.stride));
    if (i >= step.batch_size * shape.in_h * x_slots * c_blocks) {
        return;
    }
    let c0 = (i % c_blocks) * 4u;
    let slot = (i / c_blocks) % x_slots;
    let iy = (i / (c_blocks * x_slots)) % shape.in_h;
    let n = i / (c_blocks * x_slots * shape.in_h);
    let cs = four_channels(c0, shape.in_c);
    let stride = i32(shape.stride);
    let phase = slot % shape.stride;
    let first_column = (slot / shape.stride) * 4u * shape.stride + phase;

    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var ky = 0u; ky < 3u; ky++) {
        // oy·stride = iy + pad_top − ky must be a non-negative multiple of the stride.
        let ty = i32(iy + shape.pad_top) - i32(ky);
        if (ty < 0 || ty % stride != 0 || ty / stride >= i32(shape.out_h)) {
            continue;
        }
        let row = (n * shape.out_h + u32(ty / stride)) * shape.out_w;
        for (var kx = 0u; kx < 3u; kx++) {
            // The same for every pixel of the block: they share the phase.
            let t0 = i32(first_column + shape.pad_left) - i32(kx);
            if (((t0 % stride) + stride) % stride != 0) {
                continue;
            }
            var base: array<u32, 4>;
            var keep: vec4<f32>;
            for (var p = 0u; p < 4u; p++) {
                let tx = t0 + i32(p * shape.stride);
                let valid = tx >= 0 && tx / stride < i32(shape.out_w) && first_column + p * shape.stride < shape.in_w;
                base[p] = select(0u, (row + u32(max(tx, 0) / stride)) * shape.out_c, valid);
                keep[p] = select(0.0, 1.0, valid);
            }
            // kernel[ky, kx, c, k] for the four channels: stride out_c between them.
            let w_base = shape.kernel_offset + (ky * 3u + kx) * shape.in_c * shape.out_c;
            for (var k = 0u; k < shape.out_c; k++) {
                let w = load4(w_base + k, shape.out_c, cs);
                acc[0] += (dpre_buffer[base[0] + k] * keep[0]) * w;
                acc[1] += (dpre_buffer[base[1] + k] * keep[1]) * w;
                acc[2] += (dpre_buffer[base[2] + k] * keep[2]) * w;
                acc[3] += (dpre_buffer[base[3] + k] * keep[3]) * w;
            }
        }
    }
    for (var p = 0u; p < 4u; p++) {
        let ix = first_column + p * shape.stride;
        if (ix >= shape.in_w) {
            break;
        }
        let at = ((n * shape.in_h + iy) * shape.in_w + ix) * shape.in_c;
        for (var j = 0u; j < 4u; j++) {
            if (c0 + j < shape.in_c) {
                dx[at + c0 + j] = acc[p][j];
            }
        }
    }
}

// One invocation: the 4×4 block (c0..c0+3, k0..k0+3) of tap (ky, kx) of dkernel, summed over the
// output positions of one chunk; the invocations of tap 0 and channel block 0 also sum dbias.
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let k_blocks = (shape.out_c + 3u) / 4u;
    let c_blocks = (shape.in_c + 3u) / 4u;
    if (i >= shape.chunks * 9u * c_blocks * k_blocks) {
        return;
    }
    let k0 = (i % k_blocks) * 4u;
    let c0 = ((i / k_blocks) % c_blocks) * 4u;
    let tap = (i / (k_blocks * c_blocks)) % 9u;
    let chunk = i / (k_blocks * c_blocks * 9u);
    let ky = tap / 3u;
    let kx = tap % 3u;
    let ks = four_channels(k0, shape.out_c);
    let cs = four_channels(c0, shape.in_c);

    let positions = step.batch_size * shape.out_h * shape.out_w;
    let first = chunk * shape.chunk_len;
    let last = min(first + shape.chunk_len, positions);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));  // acc[c][k]
    var bias = vec4<f32>(0.0);
    // Walk the positions with counters: integer division per position would cost more than the
    // 16 multiply-adds it feeds (drivers like lavapipe scalarise vector division).
    var ox = first % shape.out_w;
    var oy = (first / shape.out_w) % shape.out_h;
    var n = first / (shape.out_w * shape.out_h);
    for (var p = first; p < last; p++) {
        let o = p * shape.out_c;
        let g = vec4<f32>(dpre_buffer[o + ks.x], dpre_buffer[o + ks.y], dpre_buffer[o + ks.z], dpre_buffer[o + ks.w]);
        bias += g;
        let iy = input_coord(oy, ky, shape.pad_top, shape.in_h);
        let ix = input_coord(ox, kx, shape.pad_left, shape.in_w);
        if (iy >= 0 && ix >= 0) {
            let at = ((n * shape.in_h + u32(iy)) * shape.in_w + u32(ix)) * shape.in_c;
            acc[0] += x[at + cs.x] * g;
            acc[1] += x[at + cs.y] * g;
            acc[2] += x[at + cs.z] * g;
            acc[3] += x[at + cs.w] * g;
        }
        ox += 1u;
        if (ox == shape.out_w) {
            ox = 0u;
            oy += 1u;
            if (oy == shape.out_h) {
                oy = 0u;
                n += 1u;
            }
        }
    }
    let slot = chunk * (9u * shape.in_c * shape.out_c + shape.out_c);
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            if (c0 + a < shape.in_c && k0 + b < shape.out_c) {
                partials[slot + (tap * shape.in_c + c0 + a) * shape.out_c + k0 + b] = acc[a][b];
            }
        }
    }
    if (tap == 0u && c0 == 0u) {
        for (var b = 0u; b < 4u; b++) {
            if (k0 + b < shape.out_c) {
                partials[slot + 9u * shape.in_c * shape.out_c + k0 + b] = bias[b];
            }
        }
    }
}

// grads[kernel, then bias] = Σ over chunks, in chunk order.
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let kernel_len = 9u * shape.in_c * shape.out_c;
    let per_chunk = kernel_len + shape.out_c;
    if (i >= per_chunk) {
        return;
    }
    var sum = 0.0;
    for (var chunk = 0u; chunk < shape.chunks; chunk++) {
        sum += partials[chunk * per_chunk + i];
    }
    if (i < kernel_len) {
        grads[shape.kernel_offset + i] = sum;
    } else {
        grads[shape.bias_offset + i - kernel_len] = sum;
    }
}
