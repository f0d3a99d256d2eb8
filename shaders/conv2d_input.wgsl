// conv2d_input.wgsl — where conv2d_tiled.wgsl reads its input x: a buffer, the layer before's
// output (or the gathered batch). Compiled before conv2d_tiled.wgsl, which takes its input from
// this file or from conv2d_input_gathered.wgsl: both give a sample's handle, once per sample a
// kernel reads, and its values by their offset within the sample. No entry points.
//
// Bindings (group 0)
//   2  x    storage, read  input [N, H, W, C]
//  10  x4   storage, read  x as vec4s (binding 2's buffer)

@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(10) var<storage, read> x4: array<vec4<f32>>;

// Sample n's handle: where it starts in x.
fn x_sample(n: u32) -> u32 {
    return n * IN_H * IN_W * IN_C;
}

// Channels c0..c0+3 of the pixel whose channels start at offset `pixel` of sample s (a partial
// block repeats the last channel; its extra lanes are never stored). The branch is on a constant.
fn x_quad(s: u32, pixel: u32, c0: u32) -> vec4<f32> {
    if (X_VEC4) {
        return x4[(s + pixel + c0) / 4u];
    }
    let cs = four_channels(c0, IN_C) + s + pixel;
    return vec4<f32>(x[cs.x], x[cs.y], x[cs.z], x[cs.w]);
}

// The labels are the gather's to copy.
fn take_label(n: u32) {}
