// dataset.wgsl — a dataset resident on the GPU as u8 (src/gather.rs, GpuDataset), read one batch
// at a time through the epoch's order: what gather.wgsl copies into an f32 batch, and what a first
// convolution reads in its place (conv2d_input_gathered.wgsl). Compiled after common.wgsl (Step);
// the including shader declares `step`. No entry points.
//
// Bindings (group 0)
//  16  images_low    storage, read        u8 images [rows, sample bytes] NHWC, 4 per u32, rows
//                                         0 .. split_row
//  17  images_high   storage, read        rows split_row .., same layout (the same buffer when one
//                                         fits a storage binding: 50,000 CIFAR images are 153.6 MB,
//                                         more than the 128 MiB many devices allow per binding)
//  18  labels        storage, read        u32 label per dataset row
//  19  order         storage, read        u32 dataset row of each position in the epoch
//  20  batch_labels  storage, read_write  u32 label per batch sample
//  21  dataset       uniform DatasetShape
//
// Each row is a whole number of u32 words (a CIFAR image is 3072 bytes), so no word straddles two
// rows. Pixels are scaled as Keras' x / 255, by the one function below wherever they are read.

struct DatasetShape {
    sample_words: u32,   // u32 words per row
    split_row: u32,      // first row stored in images_high
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(16) var<storage, read> images_low: array<u32>;
@group(0) @binding(17) var<storage, read> images_high: array<u32>;
@group(0) @binding(18) var<storage, read> labels: array<u32>;
@group(0) @binding(19) var<storage, read> order: array<u32>;
@group(0) @binding(20) var<storage, read_write> batch_labels: array<u32>;
@group(0) @binding(21) var<uniform> dataset: DatasetShape;

// The dataset row of the batch's sample n.
fn sample_row(n: u32) -> u32 {
    return order[step.batch_start + n];
}

// Whether every row is in images_low (split_row = rows): set per dataset, so that the kernels of
// the usual case choose no binding per load (a branch that cost a first convolution's forward
// pass a fifth on lavapipe).
override ONE_BINDING: bool = false;

// Word `word` of dataset row `row` (four u8 pixels), from whichever binding holds the row.
fn row_word(row: u32, word: u32) -> u32 {
    if (ONE_BINDING || row < dataset.split_row) {
        return images_low[row * dataset.sample_words + word];
    }
    return images_high[(row - dataset.split_row) * dataset.sample_words + word];
}

// Byte b (0..3) of a word, scaled to [0, 1]: v / 255 correctly rounded, without a division (a
// shader's may be 2.5 ulp off, and on lavapipe four a pixel made a first convolution's forward
// pass twice as slow). v·65793 / 2²⁴ is exact and lies below v / 255 by more than half an ulp
// and less than one (v / 255 = v·65793 / (2²⁴ − 1)), so the next float up is the quotient
// rounded; src/gather.rs checks all 256 values against Rust's division.
fn pixel_value(packed: u32, b: u32) -> f32 {
    let v = (packed >> (8u * b)) & 0xffu;
    let below = f32(v * 65793u) * 0x1p-24f;
    return select(bitcast<f32>(bitcast<u32>(below) + 1u), 0.0, v == 0u);
}

// The label of the batch's sample n into batch_labels, for the head.
fn copy_label(n: u32) {
    batch_labels[n] = labels[sample_row(n)];
}
