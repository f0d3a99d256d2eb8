// epilogue.wgsl — an elementwise layer (dropout, ReLU, LeakyReLU), or an activation and a dropout
// after it, applied by the kernel that writes its input, as it stores each output: the engine
// absorbs such layers into the layer before them (src/layers/fusion.rs), which saves their
// dispatches and passes through memory. Compiled after common.wgsl (Step, dropout_factor,
// activate) and before the shader of a layer that takes epilogues, whose forward kernels bind it
// and read that shader's `step`. No entry points.
//
// Bindings (group 0)
//  15  epilogue  uniform Epilogue     forward kernels of the including shader
//
// Bit for bit what the absorbed layer's own kernel computes (dropout.wgsl, activation.wgsl):
// the same functions of the same values, at the same element index.

struct Epilogue {
    kind: u32,     // an activation (0 none, 1 ReLU, 2 LeakyReLU), + 4 for a dropout after it
    rate: f32,     // dropout's rate, scale (1 / (1 − rate)), the run's seed and the layer's index
    scale: f32,
    seed: u32,
    layer: u32,
    slope: f32,    // LeakyReLU's
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(15) var<uniform> epilogue: Epilogue;

// The kind again, as a pipeline constant: the kernels without an epilogue compile to what they
// were without one, and the others to one case with no branch around it.
override EPILOGUE: u32 = 0u;

// Output v at element i of the batch, after the absorbed layers: the activation, then the
// dropout, as their own kernels would in turn.
fn apply_epilogue(v: f32, i: u32) -> f32 {
    var out = v;
    switch (EPILOGUE & 3u) {
        case 1u: {
            out = activate(v, 0.0, false);
        }
        case 2u: {
            out = activate(v, epilogue.slope, true);
        }
        default: {}
    }
    if ((EPILOGUE & 4u) != 0u) {
        let key = dropout_key(epilogue.seed, step.step, epilogue.layer);
        out = out * dropout_factor(step.training != 0u, key, epilogue.rate, epilogue.scale, i);
    }
    return out;
}
