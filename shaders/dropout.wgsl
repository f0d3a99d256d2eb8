// dropout.wgsl — inverted dropout (Keras `Dropout(rate)`): in training, each element is kept
// with probability 1 − rate and scaled by 1 / (1 − rate); at inference it passes unchanged.
// Prepended with common.wgsl (Step, linear_index, dropout_key, dropout_factor, mask_gradient).
//
// Bindings (group 0)                                                    used by
//   0  step    uniform Step                                             all
//   1  shape   uniform DropoutShape                                     all
//   2  x       storage, read        input [N, ...]                      forward, backward_input (a mask's)
//   3  y       storage, read_write  output, shaped like x               forward
//   4  dy      storage, read        dL/dy                               backward_input
//   5  dx      storage, read_write  dL/dx, through the mask            backward_input
//
// The mask is never stored: element i of step s keeps iff uniform_at(dropout_key(seed, s,
// layer), i) >= rate, a counter-based hash that the backward pass (and the CPU reference,
// src/rng.rs) recompute bit for bit.

struct DropoutShape {
    batch: u32,
    sample_len: u32,   // elements per sample
    layer: u32,        // index of the layer in the model, so each dropout layer has its own mask
    seed: u32,         // the run's seed
    rate: f32,
    scale: f32,        // 1 / (1 − rate), computed once on the host
    mask_pos: f32,     // dx through the layers before (mask_gradient): 1, 1 for none
    mask_neg: f32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: DropoutShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// The factor element i is multiplied by in this step: 0, 1 / (1 − rate), or 1 at inference.
fn factor(i: u32) -> f32 {
    let key = dropout_key(shape.seed, step.step, shape.layer);
    return dropout_factor(step.training != 0u, key, shape.rate, shape.scale, i);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.sample_len) {
        return;
    }
    y[i] = x[i] * factor(i);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.sample_len) {
        return;
    }
    var g = dy[i] * factor(i);
    // Without a mask, x is not read (a uniform branch: its load skipped, not selected away).
    if (shape.mask_pos != 1.0 || shape.mask_neg != 1.0) {
        g = mask_gradient(g, x[i], shape.mask_pos, shape.mask_neg);
    }
    dx[i] = g;
}
