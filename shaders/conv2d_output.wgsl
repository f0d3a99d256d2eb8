// conv2d_output.wgsl — what conv2d_tiled.wgsl's forward pass stores besides y: nothing. Compiled
// before conv2d_tiled.wgsl in every variant but conv2d_tiled_pooled, which compiles
// conv2d_output_pooled.wgsl in its place. No bindings, no entry points.

const POOL: bool = false;

fn store_pooled(n: u32, py: u32, px: u32, k0: u32, p0: vec4<f32>, p1: vec4<f32>, p2: vec4<f32>, p3: vec4<f32>) {}
