// gather.wgsl — assembles one batch on the GPU from the dataset uploaded once as u8: picks the
// batch's rows through the epoch's order, scales pixels to [0, 1] (Keras' x / 255) and copies
// the labels. Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)                                                         used by
//   0  step          uniform Step                                            gather
//   1  shape         uniform GatherShape                                     gather
//   2  images_low    storage, read  u8 images [rows, 32·32·3] NHWC, 4 per u32, rows 0 .. split_row
//   3  images_high   storage, read  rows split_row .., same layout (the same buffer when one fits
//                                   a storage binding: 50,000 CIFAR images are 153.6 MB, more
//                                   than the 128 MiB many devices allow per binding)
//   4  labels        storage, read  u32 label per dataset row
//   5  order         storage, read  u32 dataset row of each position in the epoch
//   6  x             storage, read_write  f32 batch [N, 32, 32, 3]
//   7  batch_labels  storage, read_write  u32 label per batch sample
//
// Each row is a whole number of u32 words (3072 bytes), so no word straddles two rows.

struct GatherShape {
    batch: u32,
    sample_len: u32,   // bytes (= f32 outputs) per image, a multiple of 4
    split_row: u32,    // first row stored in images_high
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: GatherShape;
@group(0) @binding(2) var<storage, read> images_low: array<u32>;
@group(0) @binding(3) var<storage, read> images_high: array<u32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read> order: array<u32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> batch_labels: array<u32>;

// One invocation per output word: four pixels of one sample.
@compute @workgroup_size(WORKGROUP_SIZE)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let words_per_sample = shape.sample_len / 4u;
    if (i >= step.batch_size * words_per_sample) {
        return;
    }
    let n = i / words_per_sample;
    let word = i % words_per_sample;
    let row = order[step.batch_start + n];
    var packed: u32;
    if (row < shape.split_row) {
        packed = images_low[row * words_per_sample + word];
    } else {
        packed = images_high[(row - shape.split_row) * words_per_sample + word];
    }
    for (var b = 0u; b < 4u; b++) {
        x[n * shape.sample_len + word * 4u + b] = f32((packed >> (8u * b)) & 0xffu) / 255.0;
    }
    if (word == 0u) {
        batch_labels[n] = labels[row];
    }
}
