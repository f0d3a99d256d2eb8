// conv2d_output_pooled.wgsl — the variant conv2d_tiled_pooled of conv2d_tiled.wgsl, whose forward
// pass also takes the MaxPooling2D after it (2×2, stride 2, OUT_H and OUT_W even): each
// invocation's four pixels are one window (POOL), and it stores the window's maximum as well as
// y, with the epilogue (the layers the pool absorbed) applied to the maximum and not to y. The
// pool's own backward pass still runs, and recomputes the arg-max from y. Compiled in place of
// conv2d_output.wgsl. No entry points.
//
// Bindings (group 0)
//   7  pooled  storage, read_write  the pool's output [N, OUT_H / 2, OUT_W / 2, OUT_C]   forward
//
// Bit for bit maxpool2d.wgsl's forward pass: the first of equal maxima in row-major order, found
// with the same comparisons, at the pool's element index.

@group(0) @binding(7) var<storage, read_write> pooled: array<f32>;

const POOL: bool = true;

// Channels k0..k0+3 of pooled pixel (py, px) from the window's four pixels of y, row-major.
fn store_pooled(n: u32, py: u32, px: u32, k0: u32, p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32>) {
    let out = ((n * (OUT_H / 2u) + py) * (OUT_W / 2u) + px) * OUT_C;
    for (var j = 0u; j < 4u; j++) {
        if (k0 + j < OUT_C) {
            var best = p0[j];
            if (p1[j] > best) {
                best = p1[j];
            }
            if (p2[j] > best) {
                best = p2[j];
            }
            if (p3[j] > best) {
                best = p3[j];
            }
            pooled[out + k0 + j] = apply_epilogue(best, out + k0 + j);
        }
    }
}
