// conv3x3.wgsl — Part I of the assignment: 3×3 cross-correlation (no kernel flip) of one u8
// plane with one pixel of zero padding, same-size output, clipped to 0..=255.
//
// Bindings (group 0):
//   0  params  uniform             Conv3x3Params: the plane's size and the 3×3 weights
//   1  input   storage, read       the plane, `width * height` u8 pixels, row-major, rows packed
//                                  with no padding, four pixels per u32: pixel i is byte i % 4
//                                  (least significant first) of word i / 4; length rounded up to
//                                  whole words
//   2  output  storage, read_write same layout as `input`; bytes past the last pixel are written 0
//
// Why packed: a u32 per pixel would take 4× the memory and bandwidth of the u8 image. WGSL cannot
// store single bytes, so each invocation owns one output word (four consecutive pixels): no two
// invocations write the same word, and no atomics are needed.
//
// Grid: word index = gid.x + gid.y * num_workgroups.x * WORKGROUP_SIZE (2-D, so a 8192×8192 plane
// fits under 65,535 workgroups per dimension).
//
// Two entry points with the same semantics except for arithmetic:
//   conv3x3_int    integer weights, i32 sums: exact, bit-identical to the CPU reference. The host
//                  picks it only when sum(|k|) * 255 fits in i32.
//   conv3x3_float  any weights, f32 sums in the reference's order (ky, then kx), clipped, then
//                  truncated toward zero like NumPy's astype(uint8) after np.clip. A driver may
//                  fuse multiply-adds, so this one can differ from the CPU by one grey level where
//                  a sum lands within rounding of an integer.

override WORKGROUP_SIZE: u32 = 256u;

struct Conv3x3Params {
    width: u32,
    height: u32,
    _pad0: u32,
    _pad1: u32,
    // Row ky of the kernel is (k[ky][0], k[ky][1], k[ky][2], unused): uniform arrays need a
    // 16-byte stride.
    weights: array<vec4<f32>, 3>,
    weights_int: array<vec4<i32>, 3>,
}

@group(0) @binding(0) var<uniform> params: Conv3x3Params;
@group(0) @binding(1) var<storage, read> input: array<u32>;
@group(0) @binding(2) var<storage, read_write> output: array<u32>;

// The padded image: zero outside the plane.
fn pixel(y: i32, x: i32) -> u32 {
    if (x < 0 || y < 0 || x >= i32(params.width) || y >= i32(params.height)) {
        return 0u;
    }
    let i = u32(y) * params.width + u32(x);
    return (input[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn word_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

// Six pixels of row y, x0-1 ..= x0+4: the taps of four outputs x0..x0+3 in that row.
fn row6(y: i32, x0: i32) -> array<u32, 6> {
    return array<u32, 6>(pixel(y, x0 - 1), pixel(y, x0), pixel(y, x0 + 1),
                         pixel(y, x0 + 2), pixel(y, x0 + 3), pixel(y, x0 + 4));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv3x3_int(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let word = word_index(gid, groups);
    let pixels = params.width * params.height;
    // The grid is rounded up to whole workgroups; these invocations have no word to write.
    if (word * 4u >= pixels) {
        return;
    }
    let first = word * 4u;
    let y0 = i32(first / params.width);
    let x0 = i32(first % params.width);
    var sums = vec4<i32>(0);
    if (u32(x0) + 3u < params.width) {
        // Common case: the four pixels share a row, so each input row is loaded once.
        for (var ky = 0; ky < 3; ky++) {
            var r = row6(y0 + ky - 1, x0);
            let w = params.weights_int[ky];
            for (var lane = 0; lane < 4; lane++) {
                sums[lane] += w.x * i32(r[lane]) + w.y * i32(r[lane + 1]) + w.z * i32(r[lane + 2]);
            }
        }
    } else {
        // The word straddles a row end (width not a multiple of 4) or the end of the plane.
        for (var lane = 0u; lane < 4u; lane++) {
            let i = first + lane;
            if (i >= pixels) {
                break;
            }
            let y = i32(i / params.width);
            let x = i32(i % params.width);
            for (var ky = 0; ky < 3; ky++) {
                let w = params.weights_int[ky];
                sums[lane] += w.x * i32(pixel(y + ky - 1, x - 1)) + w.y * i32(pixel(y + ky - 1, x))
                            + w.z * i32(pixel(y + ky - 1, x + 1));
            }
        }
    }
    let clipped = vec4<u32>(clamp(sums, vec4<i32>(0), vec4<i32>(255)));
    output[word] = pack(clipped, first, pixels);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv3x3_float(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let word = word_index(gid, groups);
    let pixels = params.width * params.height;
    // The grid is rounded up to whole workgroups; these invocations have no word to write.
    if (word * 4u >= pixels) {
        return;
    }
    let first = word * 4u;
    var sums = vec4<f32>(0.0);
    for (var lane = 0u; lane < 4u; lane++) {
        let i = first + lane;
        if (i >= pixels) {
            break;
        }
        let y = i32(i / params.width);
        let x = i32(i % params.width);
        // One sum per pixel, in the reference's order, so that only fused multiply-adds (if the
        // driver makes any) can make it differ from the CPU.
        var sum = 0.0;
        for (var ky = 0; ky < 3; ky++) {
            for (var kx = 0; kx < 3; kx++) {
                sum += params.weights[ky][kx] * f32(pixel(y + ky - 1, x + kx - 1));
            }
        }
        sums[lane] = sum;
    }
    // Clip first, then truncate toward zero (u32() of an f32 in range truncates).
    let clipped = vec4<u32>(clamp(sums, vec4<f32>(0.0), vec4<f32>(255.0)));
    output[word] = pack(clipped, first, pixels);
}

// Four 0..=255 values into one word; lanes past the last pixel are 0.
fn pack(values: vec4<u32>, first: u32, pixels: u32) -> u32 {
    var word = 0u;
    for (var lane = 0u; lane < 4u; lane++) {
        if (first + lane < pixels) {
            word |= values[lane] << (lane * 8u);
        }
    }
    return word;
}
