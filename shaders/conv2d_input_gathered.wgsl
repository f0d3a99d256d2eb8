// conv2d_input_gathered.wgsl — a first convolution's input read straight from the dataset through
// the epoch's order (dataset.wgsl), in place of conv2d_input.wgsl: the gather's dispatch is saved,
// and with it the f32 batch it wrote, which the forward pass and the weight gradient read again.
// The same values bit for bit (dataset.wgsl's pixel_value). A sample's handle is its dataset
// row, looked up once; a pixel's bytes are one or two words of it. Compiled after dataset.wgsl
// and before conv2d_tiled.wgsl. No entry points.
//
// Bindings (group 0)
//  16–21  the dataset (dataset.wgsl)

// The last sample looked up, and its row: the weight partials walk positions in order, so their
// sample changes once in OUT_H·OUT_W positions.
var<private> looked_up: u32 = 0xffffffffu;
var<private> looked_up_row: u32;

// Sample n's handle: its dataset row.
fn x_sample(n: u32) -> u32 {
    if (n != looked_up) {
        looked_up = n;
        looked_up_row = sample_row(n);
    }
    return looked_up_row;
}

// Channels c0..c0+3 of the pixel whose channels start at byte `pixel` of sample s (a partial
// block repeats the last channel, as conv2d_input.wgsl's): at most four consecutive bytes, in
// the word of the first or the next.
fn x_quad(s: u32, pixel: u32, c0: u32) -> vec4<f32> {
    let bytes = four_channels(c0, IN_C) + pixel;
    let first = bytes.x / 4u;
    let low = row_word(s, first);
    let high = row_word(s, bytes.w / 4u);
    let words = select(vec4<u32>(low), vec4<u32>(high), bytes / 4u != vec4<u32>(first));
    return vec4<f32>(
        pixel_value(words.x, bytes.x % 4u),
        pixel_value(words.y, bytes.y % 4u),
        pixel_value(words.z, bytes.z % 4u),
        pixel_value(words.w, bytes.w % 4u),
    );
}

// The forward pass copies sample n's label for the head, as the gather did.
fn take_label(n: u32) {
    copy_label(n);
}
