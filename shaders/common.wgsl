// common.wgsl — prepended to every training shader: the per-step uniform, the 2-D grid index, and
// the counter-based hash shared with src/rng.rs. No entry points.

override WORKGROUP_SIZE: u32 = 256u;

// What changes from one submission to the next, and only that; written by the host before each
// submit, bound only by the kernels that read it. Mirrored by `StepParams` in src/layers/mod.rs.
struct Step {
    batch_size: u32,    // samples in this batch (the last batch of an epoch may be partial)
    batch_start: u32,   // position of the batch's first sample in the epoch's order
    step: u32,          // global training step, 0-based (keys the dropout masks)
    training: u32,      // 1: training (dropout active), 0: inference
    adam_alpha: f32,    // Adam's bias-corrected learning rate for this step (computed in f64)
    penalty_slot: u32,  // where this step's L1 penalty is written (the batch index in the epoch)
    _pad0: u32,
    _pad1: u32,
}

// Invocation index on the 2-D grid that keeps dispatches under 65,535 workgroups per dimension.
fn linear_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP_SIZE;
}

// PCG hash (Jarzynski & Olano 2020); identical to `rng::hash_u32`.
fn hash_u32(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) with 24 bits; identical to `rng::uniform_at`.
fn uniform_at(key: u32, index: u32) -> f32 {
    return f32(hash_u32(index ^ hash_u32(key)) >> 8u) * (1.0 / 16777216.0);
}

// Identical to `rng::dropout_key`.
fn dropout_key(seed: u32, step: u32, layer: u32) -> u32 {
    return hash_u32(seed ^ hash_u32(step ^ hash_u32(layer * 0x9E3779B9u)));
}

// What inverted dropout multiplies element i by: 0 or scale in training (kept iff its uniform
// is at least rate, as `DropoutShape::factor`), 1 at inference. Dropout's layer and the
// epilogue that absorbs it (epilogue.wgsl) share it.
fn dropout_factor(training: bool, key: u32, rate: f32, scale: f32, i: u32) -> f32 {
    // Selects, no branch: it sits in the store loops of the kernels that absorb a dropout.
    return select(1.0, select(0.0, scale, uniform_at(key, i) >= rate), training);
}

// ReLU as max(v, 0), so that a negative input gives +0 as the CPU's does; LeakyReLU as a select.
// The activation layer and the epilogue that absorbs it share it.
fn activate(v: f32, slope: f32, leaky: bool) -> f32 {
    return select(max(v, 0.0), select(slope * v, v, v > 0.0), leaky);
}

// A gradient g written for the layers before, through what lies between (`Mask` in
// src/layers/fusion.rs): g·pos where this layer's input x > 0, else g·neg, exactly 0 when neg is
// 0 (a ReLU: pos 1, neg 0; a dropout after a ReLU: scale, 0; a LeakyReLU: 1, slope; nothing: 1, 1).
fn mask_gradient(g: f32, x: f32, pos: f32, neg: f32) -> f32 {
    return select(select(g * neg, 0.0, neg == 0.0), g * pos, x > 0.0);
}
