// conv2d_tiled.wgsl — Conv2D's forward pass and its three gradients as register tiles: the
// kernels training uses. Compiled after common.wgsl (Step, linear_index) and conv2d_shape.wgsl
// (the shape as override constants, input_coord, the dx mask), then epilogue.wgsl (a layer
// absorbed after it); conv2d_naive.wgsl is the baseline they are
// checked beside and measured against.
//
// Bindings (group 0)                                                      used by
//   0  step      uniform Step                                             all
//   2  x         storage, read        input [N, H, W, C]                  forward, backward,
//                                                                         backward_weight_partial
//   3  params    storage, read        flat parameters: kernel [3, 3, C,   forward, backward
//                                     K] at KERNEL_OFFSET, bias [K] at
//                                     BIAS_OFFSET
//   4  y         storage, read_write  output after ReLU [N, OH, OW, K]    forward writes, relu_backward reads
//                                     (y > 0 ⇔ pre-activation > 0), or
//                                     the pre-activation when !RELU; with
//                                     an epilogue, the absorbed layer's
//                                     output (relu_backward does not run
//                                     then, DY_MASKED)
//   5  dy        storage, read        dL/dy, shaped like y                relu_backward
//   6  dx        storage, read_write  dL/dx, shaped like x, through the   backward
//                                     mask (MASK_POS, MASK_NEG)
//   8  dpre_out  storage, read_write  dL/d(pre-activation) = dy·(y > 0),  relu_backward writes
//                                     shaped like y (only with RELU: dpre
//                                     is dy itself without)
//   9  partials  storage, read_write  [CHUNKS, 9·C·K + K] partial sums    backward, backward_weight_partial
//                                     of dkernel and dbias per chunk of
//                                     CHUNK_LEN output positions, from
//                                     PARTIALS_OFFSET of the step's scratch
//  10  x4        storage, read        x as vec4s (binding 2's buffer)     forward, backward, backward_weight_partial
//  11  params4   storage, read        params as vec4s (binding 3's)       forward, backward
//  12  dpre      storage, read        dL/d(pre-activation): dpre_out's    backward, backward_weight_partial
//                                     buffer, or dy's when the layer
//                                     after wrote it masked (or !RELU)
//  13  dpre4     storage, read        the same as vec4s                   backward, backward_weight_partial
//  15  epilogue  uniform Epilogue     a layer absorbed (epilogue.wgsl)    forward
//
// dL/d(pre-activation) first: written masked by the layer after this one (its dx kernel's
// mask), equal to dy without the activation, or else by relu_backward, so the backward kernels
// read one value instead of two. Then forward / dx as 4×4 register tiles (4 channels × 4 pixels
// per invocation: 8 loads, or 2 to 5 vec4 loads, feed 16 multiply-adds, where the naive kernels
// load 2–3 values per multiply-add), and dkernel/dbias as a split reduction: partial sums per
// chunk of positions (thousands of invocations even for the 432 weights of the first layer),
// then a fixed-order sum over the chunks (deterministic, no atomics), which partial_sums.wgsl
// does for every layer at once. dx and the partial sums
// read the same dpre and neither reads what the other writes: `backward` runs both in one
// dispatch, its first INPUT_WORKGROUPS workgroups the one, the rest the other (a first layer,
// with no dx, runs backward_weight_partial alone).

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpre_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;
@group(0) @binding(10) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> params4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> dpre: array<f32>;
@group(0) @binding(13) var<storage, read> dpre4: array<vec4<f32>>;

// dL/d(pre-activation) at output element o: ReLU passes the gradient where the output is
// positive. Bound only with RELU, when the layer after did not apply it.
fn relu_grad(o: u32) -> f32 {
    return select(0.0, dy[o], y[o] > 0.0);
}

// dpre = dy · (y > 0), once per layer, so the backward kernels read one value instead of two.
@compute @workgroup_size(WORKGROUP_SIZE)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * OUT_H * OUT_W * OUT_C) {
        return;
    }
    dpre_out[i] = relu_grad(i);
}

// Four consecutive channels starting at c0, clamped to the last one so that a partial block
// reads valid memory (its extra lanes are never stored).
fn four_channels(c0: u32, count: u32) -> vec4<u32> {
    let last = count - 1u;
    return vec4<u32>(min(c0, last), min(c0 + 1u, last), min(c0 + 2u, last), min(c0 + 3u, last));
}

// Four consecutive floats of a tensor row, channels k0..k0+3 (a partial block repeats the last
// channel; its extra lanes are never stored). The branch is on a constant: each pipeline keeps one.
fn kernel_quad(row: u32, k0: u32) -> vec4<f32> {
    if (K_VEC4) {
        return params4[(row + k0) / 4u];
    }
    let ks = four_channels(k0, OUT_C);
    return vec4<f32>(params[row + ks.x], params[row + ks.y], params[row + ks.z], params[row + ks.w]);
}

fn dpre_quad(pixel: u32, k0: u32) -> vec4<f32> {
    if (K_VEC4) {
        return dpre4[(pixel + k0) / 4u];
    }
    let ks = four_channels(k0, OUT_C);
    return vec4<f32>(dpre[pixel + ks.x], dpre[pixel + ks.y], dpre[pixel + ks.z], dpre[pixel + ks.w]);
}

fn x_quad(pixel: u32, c0: u32) -> vec4<f32> {
    if (X_VEC4) {
        return x4[(pixel + c0) / 4u];
    }
    let cs = four_channels(c0, IN_C);
    return vec4<f32>(x[pixel + cs.x], x[pixel + cs.y], x[pixel + cs.z], x[pixel + cs.w]);
}

// One invocation: output channels k0..k0+3 of output pixels (oy, ox0..ox0+3).
@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let k_blocks = (OUT_C + 3u) / 4u;
    let x_blocks = (OUT_W + 3u) / 4u;
    if (i >= step.batch_size * OUT_H * x_blocks * k_blocks) {
        return;
    }
    let k0 = (i % k_blocks) * 4u;
    let ox0 = ((i / k_blocks) % x_blocks) * 4u;
    let oy = (i / (k_blocks * x_blocks)) % OUT_H;
    let n = i / (k_blocks * x_blocks * OUT_H);

    let bias = kernel_quad(BIAS_OFFSET, k0);
    var acc = array<vec4<f32>, 4>(bias, bias, bias, bias);   // acc[p] = channels of pixel ox0 + p
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = input_coord(oy, ky, PAD_TOP, IN_H);
        if (iy < 0) {
            continue;
        }
        let row = (n * IN_H + u32(iy)) * IN_W;
        for (var kx = 0u; kx < 3u; kx++) {
            // Where each of the four pixels reads; a pixel in the padding (or past the row) reads
            // element 0 and is multiplied by 0.
            var base: array<u32, 4>;
            var keep: vec4<f32>;
            for (var p = 0u; p < 4u; p++) {
                let ix = input_coord(ox0 + p, kx, PAD_LEFT, IN_W);
                let valid = ix >= 0 && ox0 + p < OUT_W;
                base[p] = select(0u, (row + u32(max(ix, 0))) * IN_C, valid);
                keep[p] = select(0.0, 1.0, valid);
            }
            let w_base = KERNEL_OFFSET + (ky * 3u + kx) * IN_C * OUT_C;
            if (X_VEC4) {
                // Four input channels of each pixel at once.
                for (var c = 0u; c < IN_C; c += 4u) {
                    let x0 = x_quad(base[0], c) * keep[0];
                    let x1 = x_quad(base[1], c) * keep[1];
                    let x2 = x_quad(base[2], c) * keep[2];
                    let x3 = x_quad(base[3], c) * keep[3];
                    for (var j = 0u; j < 4u; j++) {
                        let w = kernel_quad(w_base + (c + j) * OUT_C, k0);
                        acc[0] += x0[j] * w;
                        acc[1] += x1[j] * w;
                        acc[2] += x2[j] * w;
                        acc[3] += x3[j] * w;
                    }
                }
            } else {
                for (var c = 0u; c < IN_C; c++) {
                    let w = kernel_quad(w_base + c * OUT_C, k0);
                    acc[0] += (x[base[0] + c] * keep[0]) * w;
                    acc[1] += (x[base[1] + c] * keep[1]) * w;
                    acc[2] += (x[base[2] + c] * keep[2]) * w;
                    acc[3] += (x[base[3] + c] * keep[3]) * w;
                }
            }
        }
    }
    store_output(n, oy, ox0, k0, acc[0]);
    store_output(n, oy, ox0 + 1u, k0, acc[1]);
    store_output(n, oy, ox0 + 2u, k0, acc[2]);
    store_output(n, oy, ox0 + 3u, k0, acc[3]);
}

// Channels k0..k0+3 of output pixel (oy, ox) from their sums v, if the pixel is in the row. The
// accumulators are passed one by one, never indexed by a variable: an array indexed so may be
// moved to memory, and lavapipe did that (a forward pass 2.5× slower) once the epilogue made
// the store loop too long to unroll.
fn store_output(n: u32, oy: u32, ox: u32, k0: u32, v: vec4<f32>) {
    if (ox >= OUT_W) {
        return;
    }
    let out = ((n * OUT_H + oy) * OUT_W + ox) * OUT_C;
    for (var j = 0u; j < 4u; j++) {
        if (k0 + j < OUT_C) {
            y[out + k0 + j] = apply_epilogue(select(v[j], max(v[j], 0.0), RELU), out + k0 + j);
        }
    }
}

// One invocation: input channels c0..c0+3 of four input pixels of row iy that share their
// column's phase modulo the stride, ix = phase + (group·4 + p)·stride: with stride 2 the
// taps that reach an even column never reach an odd one, so a block of same-phase columns keeps
// all four lanes busy on every tap. The phase varies slower than the column group, so that
// neighbouring invocations (run together in SIMD lanes) take the same taps: interleaved phases
// made every tap run masked on half the lanes (conv2d_1's dx: 44 → 31 ms per step on lavapipe).
fn input_gradient(i: u32) {
    let c_blocks = (IN_C + 3u) / 4u;
    let x_slots = STRIDE * ((IN_W + 4u * STRIDE - 1u) / (4u * STRIDE));
    if (i >= step.batch_size * IN_H * x_slots * c_blocks) {
        return;
    }
    let c0 = (i % c_blocks) * 4u;
    let slot = (i / c_blocks) % x_slots;
    let iy = (i / (c_blocks * x_slots)) % IN_H;
    let n = i / (c_blocks * x_slots * IN_H);
    let cs = four_channels(c0, IN_C);
    let stride = i32(STRIDE);
    let per_phase = x_slots / STRIDE;
    let phase = slot / per_phase;
    let first_column = (slot % per_phase) * 4u * STRIDE + phase;

    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var ky = 0u; ky < 3u; ky++) {
        // oy·STRIDE = iy + PAD_TOP − ky must be a non-negative multiple of the stride.
        let ty = i32(iy + PAD_TOP) - i32(ky);
        if (ty < 0 || ty % stride != 0 || ty / stride >= i32(OUT_H)) {
            continue;
        }
        let row = (n * OUT_H + u32(ty / stride)) * OUT_W;
        for (var kx = 0u; kx < 3u; kx++) {
            // The same for every pixel of the block: they share the phase.
            let t0 = i32(first_column + PAD_LEFT) - i32(kx);
            if (((t0 % stride) + stride) % stride != 0) {
                continue;
            }
            var base: array<u32, 4>;
            var keep: vec4<f32>;
            for (var p = 0u; p < 4u; p++) {
                let tx = t0 + i32(p * STRIDE);
                let valid = tx >= 0 && tx / stride < i32(OUT_W) && first_column + p * STRIDE < IN_W;
                base[p] = select(0u, (row + u32(max(tx, 0) / stride)) * OUT_C, valid);
                keep[p] = select(0.0, 1.0, valid);
            }
            // kernel[ky, kx, c, k] for the four channels: rows OUT_C apart.
            let rows = KERNEL_OFFSET + (ky * 3u + kx) * IN_C * OUT_C + cs * OUT_C;
            if (K_VEC4) {
                // Four output channels at once: dot products of dpre's and the kernel rows' quads.
                for (var k = 0u; k < OUT_C; k += 4u) {
                    let w0 = kernel_quad(rows.x, k);
                    let w1 = kernel_quad(rows.y, k);
                    let w2 = kernel_quad(rows.z, k);
                    let w3 = kernel_quad(rows.w, k);
                    let g0 = dpre_quad(base[0], k) * keep[0];
                    let g1 = dpre_quad(base[1], k) * keep[1];
                    let g2 = dpre_quad(base[2], k) * keep[2];
                    let g3 = dpre_quad(base[3], k) * keep[3];
                    acc[0] += vec4<f32>(dot(g0, w0), dot(g0, w1), dot(g0, w2), dot(g0, w3));
                    acc[1] += vec4<f32>(dot(g1, w0), dot(g1, w1), dot(g1, w2), dot(g1, w3));
                    acc[2] += vec4<f32>(dot(g2, w0), dot(g2, w1), dot(g2, w2), dot(g2, w3));
                    acc[3] += vec4<f32>(dot(g3, w0), dot(g3, w1), dot(g3, w2), dot(g3, w3));
                }
            } else {
                for (var k = 0u; k < OUT_C; k++) {
                    let w = vec4<f32>(params[rows.x + k], params[rows.y + k], params[rows.z + k], params[rows.w + k]);
                    acc[0] += (dpre[base[0] + k] * keep[0]) * w;
                    acc[1] += (dpre[base[1] + k] * keep[1]) * w;
                    acc[2] += (dpre[base[2] + k] * keep[2]) * w;
                    acc[3] += (dpre[base[3] + k] * keep[3]) * w;
                }
            }
        }
    }
    store_dx(n, iy, first_column, c0, acc[0]);
    store_dx(n, iy, first_column + STRIDE, c0, acc[1]);
    store_dx(n, iy, first_column + 2u * STRIDE, c0, acc[2]);
    store_dx(n, iy, first_column + 3u * STRIDE, c0, acc[3]);
}

// Channels c0..c0+3 of input pixel (iy, ix) of dx from their sums v, through the mask, if the
// pixel is in the row (the accumulators one by one, as store_output).
fn store_dx(n: u32, iy: u32, ix: u32, c0: u32, v: vec4<f32>) {
    if (ix >= IN_W) {
        return;
    }
    let at = ((n * IN_H + iy) * IN_W + ix) * IN_C;
    var x_here = vec4<f32>(0.0);
    if (masks_dx()) {
        x_here = x_quad(at, c0);
    }
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < IN_C) {
            dx[at + c0 + j] = masked_dx(v[j], x_here[j]);
        }
    }
}

// The 4×4 block (c0..c0+3, k0..k0+3) of tap (ky, kx) of dkernel, summed over the output positions
// of one chunk by a team of CHUNK_LANES invocations (lane l takes positions first + l, first + l +
// CHUNK_LANES, ...; their sums then meet in a fixed-order tree); the teams of tap 0 and channel
// block 0 also sum dbias. Teams of one on a CPU driver, where a barrier is a switch between
// coroutines; teams of 64 on a hardware GPU, whose thousands of lanes each need a short sum.
var<workgroup> team_share: array<vec4<f32>, WORKGROUP_SIZE>;

// Σ of `v` over the lanes of this invocation's team, valid in lane 0. Called by every invocation
// of the workgroup (uniform control flow): it holds barriers.
fn team_sum(t: u32, lane: u32, v: vec4<f32>) -> vec4<f32> {
    if (CHUNK_LANES == 1u) {
        return v;
    }
    team_share[t] = v;
    workgroupBarrier();
    for (var half = CHUNK_LANES / 2u; half > 0u; half >>= 1u) {
        if (lane < half) {
            team_share[t] += team_share[t + half];
        }
        workgroupBarrier();
    }
    let sum = team_share[t];
    workgroupBarrier();   // before the next call overwrites team_share
    return sum;
}

// Invocation i's share of the partial sums; t is its index in the workgroup. Called by every
// invocation of the workgroup (it holds barriers).
fn weight_partials(i: u32, t: u32) {
    let lane = i % CHUNK_LANES;   // a team never straddles workgroups: WORKGROUP_SIZE % CHUNK_LANES == 0
    let team = i / CHUNK_LANES;
    let k_blocks = (OUT_C + 3u) / 4u;
    let c_blocks = (IN_C + 3u) / 4u;
    // No early return: every invocation must reach team_sum's barriers. A team past the end sums
    // nothing and stores nothing.
    let in_range = team < CHUNKS * 9u * c_blocks * k_blocks;
    let k0 = (team % k_blocks) * 4u;
    let c0 = ((team / k_blocks) % c_blocks) * 4u;
    let tap = (team / (k_blocks * c_blocks)) % 9u;
    let chunk = team / (k_blocks * c_blocks * 9u);
    let ky = tap / 3u;
    let kx = tap % 3u;

    let positions = step.batch_size * OUT_H * OUT_W;
    let first = chunk * CHUNK_LEN;
    let last = select(first, min(first + CHUNK_LEN, positions), in_range);
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));  // acc[c][k]
    var bias = vec4<f32>(0.0);
    for (var p = first + lane; p < last; p += CHUNK_LANES) {
        let ox = p % OUT_W;
        let oy = (p / OUT_W) % OUT_H;
        let n = p / (OUT_W * OUT_H);
        let g = dpre_quad(p * OUT_C, k0);
        bias += g;
        let iy = input_coord(oy, ky, PAD_TOP, IN_H);
        let ix = input_coord(ox, kx, PAD_LEFT, IN_W);
        if (iy >= 0 && ix >= 0) {
            let v = x_quad(((n * IN_H + u32(iy)) * IN_W + u32(ix)) * IN_C, c0);
            acc[0] += v.x * g;
            acc[1] += v.y * g;
            acc[2] += v.z * g;
            acc[3] += v.w * g;
        }
    }
    acc[0] = team_sum(t, lane, acc[0]);
    acc[1] = team_sum(t, lane, acc[1]);
    acc[2] = team_sum(t, lane, acc[2]);
    acc[3] = team_sum(t, lane, acc[3]);
    bias = team_sum(t, lane, bias);
    if (!in_range || lane != 0u) {
        return;
    }
    let slot = PARTIALS_OFFSET + chunk * (9u * IN_C * OUT_C + OUT_C);
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            if (c0 + a < IN_C && k0 + b < OUT_C) {
                partials[slot + (tap * IN_C + c0 + a) * OUT_C + k0 + b] = acc[a][b];
            }
        }
    }
    if (tap == 0u && c0 == 0u) {
        for (var b = 0u; b < 4u; b++) {
            if (k0 + b < OUT_C) {
                partials[slot + 9u * IN_C * OUT_C + k0 + b] = bias[b];
            }
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_weight_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                           @builtin(local_invocation_index) t: u32) {
    weight_partials(linear_index(gid, groups), t);
}

// dx on workgroups 0..INPUT_WORKGROUPS, the partial sums on the rest. The branch is on the
// workgroup, so each workgroup takes one side whole (the partial sums' barriers stay in uniform
// control flow).
@compute @workgroup_size(WORKGROUP_SIZE)
fn backward(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
            @builtin(local_invocation_index) t: u32) {
    let w = workgroup.x + workgroup.y * groups.x;
    if (w < INPUT_WORKGROUPS) {
        input_gradient(w * WORKGROUP_SIZE + t);
    } else {
        weight_partials((w - INPUT_WORKGROUPS) * WORKGROUP_SIZE + t, t);
    }
}
