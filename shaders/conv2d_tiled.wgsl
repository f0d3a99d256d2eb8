// conv2d_tiled.wgsl — Conv2D's forward pass and its three gradients as register tiles: the
// kernels training uses. Compiled after common.wgsl (Step, linear_index), conv2d_shape.wgsl (the
// shape as override constants, input_coord, the dx mask) and epilogue.wgsl (a layer absorbed after
// it), then where x comes from: conv2d_input.wgsl (a buffer), or dataset.wgsl and
// conv2d_input_gathered.wgsl (a first layer that reads the dataset itself: the variant
// conv2d_tiled_gathered), then what the forward pass stores besides y: conv2d_output.wgsl
// (nothing) or conv2d_output_pooled.wgsl (the max-pool after the layer: the variant
// conv2d_tiled_pooled), then conv2d_tiled_dx.wgsl (dx), in all but the gathered variant.
// conv2d_naive.wgsl is the baseline they are checked beside and measured against.
//
// Bindings (group 0)                                                      used by
//   0  step      uniform Step                                             all
//   2  x         storage, read        input [N, H, W, C]                  forward, backward,
//                                     (conv2d_input.wgsl)                 backward_weight_partial
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
//   6  dx        (conv2d_tiled_dx.wgsl)                                   backward
//   7  pooled    (conv2d_output_pooled.wgsl)                              forward
//   8  dpre_out  storage, read_write  dL/d(pre-activation) = dy·(y > 0),  relu_backward writes
//                                     shaped like y (only with RELU: dpre
//                                     is dy itself without)
//   9  partials  storage, read_write  [CHUNKS, 9·C·K + K] partial sums    backward, backward_weight_partial
//                                     of dkernel and dbias per chunk of
//                                     CHUNK_LEN output positions, from
//                                     PARTIALS_OFFSET of the step's scratch
//  10  x4        storage, read        x as vec4s (conv2d_input.wgsl)      forward, backward, backward_weight_partial
//  11  params4   storage, read        params as vec4s (binding 3's)       forward, backward
//  12  dpre      storage, read        dL/d(pre-activation): dpre_out's    backward, backward_weight_partial
//                                     buffer, or dy's when the layer
//                                     after wrote it masked (or !RELU)
//  13  dpre4     storage, read        the same as vec4s                   backward, backward_weight_partial
//  15  epilogue  uniform Epilogue     a layer absorbed (epilogue.wgsl)    forward
//  16–21         the dataset, in x's place (dataset.wgsl; the forward     forward, backward_weight_partial
//                pass also copies the batch's labels) in the variant
//                conv2d_tiled_gathered
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
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> dpre_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;
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

// One invocation: output channels k0..k0+3 of four output pixels: (oy0, ox0..ox0+3), or with
// POOL the 2×2 window at (oy0, ox0) that the max-pool after it takes (conv2d_output_pooled.wgsl).
@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let k_blocks = (OUT_C + 3u) / 4u;
    let x_blocks = select((OUT_W + 3u) / 4u, OUT_W / 2u, POOL);
    let rows = select(OUT_H, OUT_H / 2u, POOL);
    if (i >= step.batch_size * rows * x_blocks * k_blocks) {
        return;
    }
    let k0 = (i % k_blocks) * 4u;
    let ox0 = ((i / k_blocks) % x_blocks) * select(4u, 2u, POOL);
    let oy0 = ((i / (k_blocks * x_blocks)) % rows) * select(1u, 2u, POOL);
    let n = i / (k_blocks * x_blocks * rows);
    if (k0 == 0u && ox0 == 0u && oy0 == 0u) {
        take_label(n);
    }
    let sample = x_sample(n);

    let bias = kernel_quad(BIAS_OFFSET, k0);
    var acc = array<vec4<f32>, 4>(bias, bias, bias, bias);   // acc[p] = channels of pixel p
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = input_coord(oy0, ky, PAD_TOP, IN_H);
        if (iy < 0 && !POOL) {
            continue;
        }
        let row = u32(max(iy, 0)) * IN_W;
        if (IN_C <= 4u && STRIDE <= 2u && !POOL) {
            // A pixel's channels are one quad (a first layer's): each column of the row that the
            // four pixels' taps reach (3·STRIDE + 3 of them) is read once, where the loop below
            // reads it once a tap, which doubled the loads and, from the dataset, the unpacking.
            // The same products in the same order; a pixel past the row, which the loop below
            // zeroes, is not stored.
            var columns: array<vec4<f32>, 9>;
            for (var q = 0u; q < 3u * STRIDE + 3u; q++) {
                let ix = i32(ox0 * STRIDE + q) - i32(PAD_LEFT);
                let valid = ix >= 0 && ix < i32(IN_W);
                columns[q] = x_quad(sample, select(0u, (row + u32(max(ix, 0))) * IN_C, valid), 0u)
                    * select(0.0, 1.0, valid);
            }
            for (var kx = 0u; kx < 3u; kx++) {
                let w_base = KERNEL_OFFSET + (ky * 3u + kx) * IN_C * OUT_C;
                for (var j = 0u; j < IN_C; j++) {
                    let w = kernel_quad(w_base + j * OUT_C, k0);
                    acc[0] += columns[kx][j] * w;
                    acc[1] += columns[STRIDE + kx][j] * w;
                    acc[2] += columns[2u * STRIDE + kx][j] * w;
                    acc[3] += columns[3u * STRIDE + kx][j] * w;
                }
            }
            continue;
        }
        // With POOL the window's second row reads its own input row (or the padding).
        let iy_low = input_coord(oy0 + 1u, ky, PAD_TOP, IN_H);
        let row_low = u32(max(iy_low, 0)) * IN_W;
        for (var kx = 0u; kx < 3u; kx++) {
            // Where each of the four pixels reads in the sample; a pixel in the padding (or past
            // the row) reads its element 0 and is multiplied by 0.
            var base: array<u32, 4>;
            var keep: vec4<f32>;
            for (var p = 0u; p < 4u; p++) {
                let low = POOL && p >= 2u;
                let ox = select(ox0 + p, ox0 + p % 2u, POOL);
                let ix = input_coord(ox, kx, PAD_LEFT, IN_W);
                let valid = ix >= 0 && ox < OUT_W && select(iy, iy_low, low) >= 0;
                base[p] = select(0u, (select(row, row_low, low) + u32(max(ix, 0))) * IN_C, valid);
                keep[p] = select(0.0, 1.0, valid);
            }
            let w_base = KERNEL_OFFSET + (ky * 3u + kx) * IN_C * OUT_C;
            // Four input channels of each pixel at once (a vec4 load where they start on one, or
            // one or two words of the dataset's bytes); past the last channel (IN_C % 4 != 0) the
            // lanes repeat it and are skipped. With X_VEC4 the count is the constant 4, so the
            // loop over them unrolls (a bound the compiler cannot fold slowed every layer).
            for (var c = 0u; c < IN_C; c += 4u) {
                let x0 = x_quad(sample, base[0], c) * keep[0];
                let x1 = x_quad(sample, base[1], c) * keep[1];
                let x2 = x_quad(sample, base[2], c) * keep[2];
                let x3 = x_quad(sample, base[3], c) * keep[3];
                let channels = select(min(4u, IN_C - c), 4u, X_VEC4);
                for (var j = 0u; j < channels; j++) {
                    let w = kernel_quad(w_base + (c + j) * OUT_C, k0);
                    acc[0] += x0[j] * w;
                    acc[1] += x1[j] * w;
                    acc[2] += x2[j] * w;
                    acc[3] += x3[j] * w;
                }
            }
        }
    }
    if (POOL) {
        store_output(n, oy0, ox0, k0, acc[0]);
        store_output(n, oy0, ox0 + 1u, k0, acc[1]);
        store_output(n, oy0 + 1u, ox0, k0, acc[2]);
        store_output(n, oy0 + 1u, ox0 + 1u, k0, acc[3]);
        store_pooled(n, oy0 / 2u, ox0 / 2u, k0, activated(acc[0]), activated(acc[1]), activated(acc[2]), activated(acc[3]));
        return;
    }
    store_output(n, oy0, ox0, k0, acc[0]);
    store_output(n, oy0, ox0 + 1u, k0, acc[1]);
    store_output(n, oy0, ox0 + 2u, k0, acc[2]);
    store_output(n, oy0, ox0 + 3u, k0, acc[3]);
}

// y from the sums: after the ReLU, or as they are without one.
fn activated(v: vec4<f32>) -> vec4<f32> {
    return select(v, max(v, vec4<f32>(0.0)), RELU);
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
    let values = activated(v);
    for (var j = 0u; j < 4u; j++) {
        if (k0 + j < OUT_C) {
            // With POOL the epilogue is the pool's absorbed layers': store_pooled applies it.
            if (POOL) {
                y[out + k0 + j] = values[j];
            } else {
                y[out + k0 + j] = apply_epilogue(values[j], out + k0 + j);
            }
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
            let v = x_quad(x_sample(n), (u32(iy) * IN_W + u32(ix)) * IN_C, c0);
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
