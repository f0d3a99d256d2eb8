// conv3x3_texture.wgsl — Part I on textures: conv3x3.wgsl's 3×3 cross-correlation (one pixel of
// zero padding, no kernel flip, clipped to 0..=255) reading a texture and writing a storage
// texture of the same size, on one of R, G, B or on each of them.
//
// Bindings (group 0):
//   0  params  uniform           TextureConvParams: the weights as f32 and as i32 rows, the mode
//   1  input   texture_2d<f32>   8-bit normalised RGBA or BGRA, level 0 of the view; textureLoad
//                                gives the channels in RGBA order whatever the memory order, and
//                                each value is read back as its byte, round(v · 255), so that the
//                                maths is conv3x3.wgsl's on bytes (exact for integer weights)
//   2  output  texture_storage_2d<rgba8unorm or bgra8unorm, write>, the input's size: declared by
//              the file this one is compiled after (conv3x3_texture_rgba8.wgsl or _bgra8.wgsl),
//              since WGSL fixes a storage texture's format in the declaration
//
// Modes (params.channel):
//   0, 1, 2  that channel (R, G, B) convolved, written to R, G and B (a grey image), alpha 1
//   3        R, G and B each convolved on their own; alpha copied from the input
// Arithmetic (params.exact): 1, integer weights and i32 sums, exact (the host picks it when
// sum(|k|) · 255 fits in i32); 0, f32 sums in the reference's order (ky, then kx), clipped, then
// truncated toward zero, within one grey level of the CPU where a driver fuses multiply-adds.
//
// Grid: one invocation per pixel, i = linear_index (2-D grid): x = i % width, y = i / width.

override WORKGROUP_SIZE: u32 = 256u;

struct TextureConvParams {
    // Row ky of the kernel is (k[ky][0], k[ky][1], k[ky][2], unused): uniform arrays need a
    // 16-byte stride.
    weights: array<vec4<f32>, 3>,
    weights_int: array<vec4<i32>, 3>,
    channel: u32,
    exact: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: TextureConvParams;
@group(0) @binding(1) var input: texture_2d<f32>;

// The bytes of pixel (y, x) of the zero-padded image.
fn bytes(y: i32, x: i32, size: vec2<i32>) -> vec4<u32> {
    if (x < 0 || y < 0 || x >= size.x || y >= size.y) {
        return vec4<u32>(0u);
    }
    return vec4<u32>(round(textureLoad(input, vec2<i32>(x, y), 0) * 255.0));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv3x3_texture(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let size = vec2<i32>(textureDimensions(input, 0));
    let i = gid.x + gid.y * groups.x * WORKGROUP_SIZE;
    // The grid is rounded up to whole workgroups; these invocations have no pixel.
    if (i >= u32(size.x) * u32(size.y)) {
        return;
    }
    let x = i32(i % u32(size.x));
    let y = i32(i / u32(size.x));
    var clipped: vec4<u32>;
    if (params.exact == 1u) {
        var sums = vec4<i32>(0);
        for (var ky = 0; ky < 3; ky++) {
            for (var kx = 0; kx < 3; kx++) {
                sums += params.weights_int[ky][kx] * vec4<i32>(bytes(y + ky - 1, x + kx - 1, size));
            }
        }
        clipped = vec4<u32>(clamp(sums, vec4<i32>(0), vec4<i32>(255)));
    } else {
        // One sum per channel, in the reference's order.
        var sums = vec4<f32>(0.0);
        for (var ky = 0; ky < 3; ky++) {
            for (var kx = 0; kx < 3; kx++) {
                sums += params.weights[ky][kx] * vec4<f32>(bytes(y + ky - 1, x + kx - 1, size));
            }
        }
        // Clip first, then truncate toward zero (u32() of an f32 in range truncates).
        clipped = vec4<u32>(clamp(sums, vec4<f32>(0.0), vec4<f32>(255.0)));
    }
    var out: vec4<u32>;
    if (params.channel < 3u) {
        let v = clipped[params.channel];
        out = vec4<u32>(v, v, v, 255u);
    } else {
        out = vec4<u32>(clipped.rgb, bytes(y, x, size).a);
    }
    // v / 255 is within rounding of the byte, which the store's conversion rounds back to.
    textureStore(output, vec2<i32>(x, y), vec4<f32>(out) / 255.0);
}
