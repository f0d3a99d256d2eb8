// conv2d_tiled_dx.wgsl — the input gradient dx of conv2d_tiled.wgsl, and `backward`, which runs
// it beside the weight gradient's partial sums in one dispatch. Compiled just before
// conv2d_tiled.wgsl, whose bindings, loads and weight_partials it uses, but not into its variant
// that reads the dataset (a first layer has no dx). No module-scope name is declared twice.
//
// Bindings (group 0)                                                      used by
//   6  dx        storage, read_write  dL/dx, shaped like x, through the   backward
//                                     mask (MASK_POS, MASK_NEG)
//   and conv2d_tiled.wgsl's: step, x and x4 (the mask), params and params4, partials, dpre and dpre4

@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

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
        x_here = x_quad(x_sample(n), (iy * IN_W + ix) * IN_C, c0);
    }
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < IN_C) {
            dx[at + c0 + j] = masked_dx(v[j], x_here[j]);
        }
    }
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
