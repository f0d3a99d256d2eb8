// conv2d.wgsl — Conv2D, 3×3 kernel, stride 1 or 2, Keras 'same' padding, bias and fused ReLU:
// the forward pass and its three gradients. Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)                                                          used by
//   0  step    uniform Step                                                   all
//   1  shape   uniform Conv2dShape                                            all
//   2  x       storage, read        input [N, H, W, C]                        forward, backward_weight
//   3  params  storage, read        flat parameters: kernel [3, 3, C, K] at   forward, backward_input
//                                   shape.kernel_offset, bias [K] at shape.bias_offset
//   4  y       storage, read_write  output after ReLU [N, OH, OW, K]          forward writes; backward_* read it
//                                                                             as the ReLU mask (y > 0 ⇔ pre > 0)
//   5  dy      storage, read        dL/dy, shaped like y                      backward_*
//   6  dx      storage, read_write  dL/dx, shaped like x                      backward_input
//   7  grads   storage, read_write  flat gradients, laid out like params      backward_weight, backward_bias
//
// Every kernel is a gather: one invocation per element it writes, gradients overwritten. The
// grid is sized for shape.batch; invocations past step.batch_size (a partial batch) return.
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
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Conv2dShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> params: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> grads: array<f32>;

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
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
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
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
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
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
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
fn backward_bias(@builtin(workgroup_id) workgroup: vec3<u32>, @builtin(local_invocation_index) t: u32) {
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
