// maxpool2d.wgsl — MaxPooling2D, 2×2 window, stride 2, 'valid' padding (Keras' default): the
// forward pass and dL/dx. Prepended with common.wgsl (Step, linear_index, mask_gradient) and
// epilogue.wgsl (a layer absorbed after it).
//
// Bindings (group 0)                                                    used by
//   0  step    uniform Step                                             all
//   1  shape   uniform PoolShape                                        all
//   2  x       storage, read        input [N, H, W, C]                  both
//   3  y       storage, read_write  output [N, H/2, W/2, C]             forward
//   4  dy      storage, read        dL/dy, shaped like y                backward_input
//   5  dx      storage, read_write  dL/dx, shaped like x, through the     backward_input
//                                       mask (shape.mask_pos, mask_neg)
//  15  epilogue                         (epilogue.wgsl)                     forward
//
// The gradient goes to the window's maximum; on ties, to the first in row-major order (as
// TensorFlow). The backward pass recomputes the arg-max from x instead of storing indices.
// An odd last row or column belongs to no window and gets zero gradient.

struct PoolShape {
    batch: u32,
    in_h: u32,
    in_w: u32,
    channels: u32,
    out_h: u32,
    out_w: u32,
    mask_pos: f32,  // dx through the layers before (mask_gradient): 1, 1 for none
    mask_neg: f32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: PoolShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// Index into x of the maximum of window (n, oy, ox, c): the first of equal maxima.
fn argmax(n: u32, oy: u32, ox: u32, c: u32) -> u32 {
    var best = ((n * shape.in_h + 2u * oy) * shape.in_w + 2u * ox) * shape.channels + c;
    for (var t = 1u; t < 4u; t++) {
        let i = ((n * shape.in_h + 2u * oy + t / 2u) * shape.in_w + 2u * ox + t % 2u) * shape.channels + c;
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.out_h * shape.out_w * shape.channels) {
        return;
    }
    let c = i % shape.channels;
    let pixel = i / shape.channels;
    let ox = pixel % shape.out_w;
    let oy = (pixel / shape.out_w) % shape.out_h;
    let n = pixel / (shape.out_w * shape.out_h);
    y[i] = apply_epilogue(x[argmax(n, oy, ox, c)], i);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.in_h * shape.in_w * shape.channels) {
        return;
    }
    let c = i % shape.channels;
    let pixel = i / shape.channels;
    let ix = pixel % shape.in_w;
    let iy = (pixel / shape.in_w) % shape.in_h;
    let n = pixel / (shape.in_w * shape.in_h);
    let oy = iy / 2u;
    let ox = ix / 2u;
    var gradient = 0.0;
    if (oy < shape.out_h && ox < shape.out_w && argmax(n, oy, ox, c) == i) {
        // At the arg-max x is the window's output: x > 0 ⇔ the ReLU before passed it.
        gradient = mask_gradient(dy[((n * shape.out_h + oy) * shape.out_w + ox) * shape.channels + c], x[i], shape.mask_pos, shape.mask_neg);
    }
    dx[i] = gradient;
}
