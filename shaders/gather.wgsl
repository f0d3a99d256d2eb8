// gather.wgsl — assembles one batch on the GPU from the dataset uploaded once as u8: picks the
// batch's rows through the epoch's order, scales pixels to [0, 1] (Keras' x / 255) and copies
// the labels. Prepended with common.wgsl (Step, linear_index) and dataset.wgsl (the dataset's
// bindings and how a pixel is read). A net whose first layer is a convolution does without it:
// that layer reads the dataset itself (conv2d_input_gathered.wgsl).
//
// Bindings (group 0)                                                         used by
//   0  step          uniform Step                                            gather
//   1  x             storage, read_write  f32 batch [N, sample bytes]        gather
//  16–21                                  the dataset (dataset.wgsl)         gather

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

// One invocation per word of the batch's images: four pixels of one sample.
@compute @workgroup_size(WORKGROUP_SIZE)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let words = dataset.sample_words;
    if (i >= step.batch_size * words) {
        return;
    }
    let n = i / words;
    let word = i % words;
    let packed = row_word(sample_row(n), word);
    for (var b = 0u; b < 4u; b++) {
        x[(n * words + word) * 4u + b] = pixel_value(packed, b);
    }
    if (word == 0u) {
        copy_label(n);
    }
}
