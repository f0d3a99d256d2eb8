// conv2d_naive.wgsl — Conv2D's forward pass and its three gradients, the math as written: one
// invocation per element written. The baseline the tiled kernels (conv2d_tiled.wgsl) are measured
// against and checked beside. Compiled after common.wgsl (Step, linear_index) and conv2d_shape.wgsl
// (the shape as override constants, input_coord, the dx mask), then epilogue.wgsl (a layer
// absorbed after it).
//
// Bindings (group 0)                                                      used by
//   0  step      uniform Step                                             all
//   2  x         storage, read        input [N, H, W, C]                  naive_forward, naive_backward_weight,
//                                                                         naive_backward_input (the mask)
//   3  params    storage, read        flat parameters: kernel [3, 3, C,   naive_forward, naive_backward_input
//                                     K] at KERNEL_OFFSET, bias [K] at
//                                     BIAS_OFFSET
//   4  y         storage, read_write  output after ReLU [N, OH, OW, K]    naive_forward writes, the rest read
//                                     (y > 0 ⇔ pre-activation > 0; not read
//                                     when DY_MASKED: it may then hold an
//                                     absorbed layer's output)
//   5  dy        storage, read        dL/dy, shaped like y (dL/d(pre-     naive_backward_*
//                                     activation) when DY_MASKED)
//   6  dx        storage, read_write  dL/dx, shaped like x, through the   naive_backward_input
//                                     mask (MASK_POS, MASK_NEG)
//   7  grads     storage, read_write  flat gradients, laid out like       naive_backward_weight, naive_backward_bias
//                                     params
//  15  epilogue  uniform Epilogue     a layer absorbed (epilogue.wgsl)    naive_forward

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;

// dL/d(pre-activation) at output element o: ReLU passes the gradient where the output is positive
// (without the activation, or when the layer after applied it, all of it).
fn relu_grad(o: u32) -> f32 {
    if (RELU && !DY_MASKED) {
        return select(0.0, dy[o], y[o] > 0.0);
    }
    return dy[o];
}

// y[n, oy, ox, k] = relu(bias[k]  (no relu when !RELU) + Σ_{ky, kx, c} x[n, iy, ix, c] · kernel[ky, kx, c, k])
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * OUT_H * OUT_W * OUT_C) {
        return;
    }
    let k = i % OUT_C;
    let pixel = i / OUT_C;
    let ox = pixel % OUT_W;
    let oy = (pixel / OUT_W) % OUT_H;
    let n = pixel / (OUT_W * OUT_H);

    var sum = params[BIAS_OFFSET + k];
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = input_coord(oy, ky, PAD_TOP, IN_H);
        if (iy < 0) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let ix = input_coord(ox, kx, PAD_LEFT, IN_W);
            if (ix < 0) {
                continue;
            }
            let x_base = ((n * IN_H + u32(iy)) * IN_W + u32(ix)) * IN_C;
            let w_base = KERNEL_OFFSET + (ky * 3u + kx) * IN_C * OUT_C + k;
            for (var c = 0u; c < IN_C; c++) {
                sum += x[x_base + c] * params[w_base + c * OUT_C];
            }
        }
    }
    y[i] = apply_epilogue(select(sum, max(sum, 0.0), RELU), i);
}

// dx[n, iy, ix, c] = Σ over the (oy, ky), (ox, kx) with oy·stride + ky − pad_top = iy (and
// likewise for x) of Σ_k dpre[n, oy, ox, k] · kernel[ky, kx, c, k]
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * IN_H * IN_W * IN_C) {
        return;
    }
    let c = i % IN_C;
    let pixel = i / IN_C;
    let ix = pixel % IN_W;
    let iy = (pixel / IN_W) % IN_H;
    let n = pixel / (IN_W * IN_H);
    let stride = i32(STRIDE);

    var sum = 0.0;
    for (var ky = 0u; ky < 3u; ky++) {
        // oy·stride = iy + pad_top − ky must be a non-negative multiple of the stride.
        let ty = i32(iy + PAD_TOP) - i32(ky);
        if (ty < 0 || ty % stride != 0 || ty / stride >= i32(OUT_H)) {
            continue;
        }
        let oy = u32(ty / stride);
        for (var kx = 0u; kx < 3u; kx++) {
            let tx = i32(ix + PAD_LEFT) - i32(kx);
            if (tx < 0 || tx % stride != 0 || tx / stride >= i32(OUT_W)) {
                continue;
            }
            let ox = u32(tx / stride);
            let o_base = ((n * OUT_H + oy) * OUT_W + ox) * OUT_C;
            let w_base = KERNEL_OFFSET + ((ky * 3u + kx) * IN_C + c) * OUT_C;
            for (var k = 0u; k < OUT_C; k++) {
                sum += relu_grad(o_base + k) * params[w_base + k];
            }
        }
    }
    dx[i] = masked_dx(sum, x[i]);
}

// dkernel[ky, kx, c, k] = Σ_{n, oy, ox} dpre[n, oy, ox, k] · x[n, iy, ix, c]
@compute @workgroup_size(WORKGROUP_SIZE)
fn naive_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= 9u * IN_C * OUT_C) {
        return;
    }
    let k = i % OUT_C;
    let c = (i / OUT_C) % IN_C;
    let tap = i / (OUT_C * IN_C);
    let ky = tap / 3u;
    let kx = tap % 3u;

    var sum = 0.0;
    for (var n = 0u; n < step.batch_size; n++) {
        for (var oy = 0u; oy < OUT_H; oy++) {
            let iy = input_coord(oy, ky, PAD_TOP, IN_H);
            if (iy < 0) {
                continue;
            }
            for (var ox = 0u; ox < OUT_W; ox++) {
                let ix = input_coord(ox, kx, PAD_LEFT, IN_W);
                if (ix < 0) {
                    continue;
                }
                let o = ((n * OUT_H + oy) * OUT_W + ox) * OUT_C + k;
                sum += relu_grad(o) * x[((n * IN_H + u32(iy)) * IN_W + u32(ix)) * IN_C + c];
            }
        }
    }
    grads[KERNEL_OFFSET + i] = sum;
}

// dbias[k] = Σ_{n, oy, ox} dpre[n, oy, ox, k]: one workgroup per filter, a fixed-order tree
// reduction in workgroup memory (deterministic).
const REDUCE_SIZE: u32 = 256u;
var<workgroup> partial: array<f32, REDUCE_SIZE>;

@compute @workgroup_size(REDUCE_SIZE)
fn naive_backward_bias(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let k = workgroup.x;
    let pixels = step.batch_size * OUT_H * OUT_W;
    var sum = 0.0;
    for (var p = t; p < pixels; p += REDUCE_SIZE) {
        sum += relu_grad(p * OUT_C + k);
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
        grads[BIAS_OFFSET + k] = partial[0];
    }
}
