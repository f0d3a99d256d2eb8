// classify_input.wgsl — the classifier's input: images the caller holds, turned into the model's
// f32 input x [N, H, W, C] in [0, 1] (Keras' x / 255), from a buffer of u8 records (as the CIFAR
// files hold them) or from regions of a texture. Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)                                                              used by
//   0  step     uniform Step: batch_size = the images of this call                 both
//   1  shape    uniform InputShape                                                 both
//   2  bytes    storage, read  u8 images [images, H·W·C] NHWC, 4 per u32           from_bytes
//                              (pixel byte i of an image is byte i % 4 of its word i / 4; each
//                              image a whole number of words)
//   3  picture  texture_2d<f32>  8-bit normalised RGBA/BGRA (RGBA order in the shader); each value
//                                read back as its byte, round(v · 255)               from_texture
//   4  regions  storage, read  vec4<u32> (x, y, width, height) in texels per sample  from_texture
//   5  x        storage, read_write  f32 [N, H, W, C]                               both
//
// A region is reduced to H × W by area averaging: output pixel (y, x) is the mean of the texels in
// rows r.y + ⌊y·h/H⌋ .. r.y + ⌈(y+1)·h/H⌉ (end excluded) and the columns likewise, which for a
// region a whole multiple of the input's size counts every texel exactly once (a 2× region
// averages 2×2 blocks), and for a region of exactly H × W is the texel itself. A single texel is
// scaled exactly as from_bytes scales a byte, so a 32 × 32 region gives bit for bit the input the
// same image gets from a buffer.

struct InputShape {
    first: u32,       // from_bytes: the buffer's image read as sample 0
    height: u32,      // H, W, C of the model's input
    width: u32,
    channels: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: InputShape;
@group(0) @binding(2) var<storage, read> bytes: array<u32>;
@group(0) @binding(3) var picture: texture_2d<f32>;
@group(0) @binding(4) var<storage, read> regions: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;

// One invocation per word of output: four values of one sample.
@compute @workgroup_size(WORKGROUP_SIZE)
fn from_bytes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let words_per_sample = shape.height * shape.width * shape.channels / 4u;
    if (i >= step.batch_size * words_per_sample) {
        return;
    }
    let packed = bytes[shape.first * words_per_sample + i];
    for (var b = 0u; b < 4u; b++) {
        // The expression of gather.wgsl, so that both give the same bits.
        x[i * 4u + b] = f32((packed >> (8u * b)) & 0xffu) / 255.0;
    }
}

// One invocation per output pixel (n, y, x): its R, G and B.
@compute @workgroup_size(WORKGROUP_SIZE)
fn from_texture(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let pixels = shape.height * shape.width;
    if (i >= step.batch_size * pixels) {
        return;
    }
    let n = i / pixels;
    let y = (i % pixels) / shape.width;
    let x_out = (i % pixels) % shape.width;
    let r = regions[n];
    let region_w = r.z;
    let region_h = r.w;
    let y0 = r.y + (y * region_h) / shape.height;
    let y1 = r.y + ((y + 1u) * region_h + shape.height - 1u) / shape.height;
    let x0 = r.x + (x_out * region_w) / shape.width;
    let x1 = r.x + ((x_out + 1u) * region_w + shape.width - 1u) / shape.width;
    var sum = vec3<u32>(0u);
    for (var ty = y0; ty < y1; ty++) {
        for (var tx = x0; tx < x1; tx++) {
            sum += vec3<u32>(round(textureLoad(picture, vec2<u32>(tx, ty), 0).rgb * 255.0));
        }
    }
    let count = (y1 - y0) * (x1 - x0);
    for (var c = 0u; c < 3u; c++) {
        if (count == 1u) {
            x[i * 3u + c] = f32(sum[c]) / 255.0;
        } else {
            x[i * 3u + c] = f32(sum[c]) / (f32(count) * 255.0);
        }
    }
}
