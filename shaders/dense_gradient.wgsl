// dense_gradient.wgsl — the dense head's weight gradient as a function, for the kernel that
// takes it: the head's own `backward_weight` (dense_softmax.wgsl) or, in a training step, Adam's
// `sum_and_update`, which takes it as it updates parameter by parameter (one dispatch where it
// had its own; the head's forward pass has written dlogits by then). Compiled after common.wgsl
// (Step) and before the shader that calls `dense_gradient`. No entry points.
//
// Bindings (group 0)
//  16  dense          uniform DenseGradientShape
//  17  dense_x        storage, read  the head's input [N, F]
//  18  dense_dlogits  storage, read  dL/dlogits [N, K], from the head's forward pass
//
// dkernel[f, j] = Σ_n x[n, f] · dlogits[n, j] + λ·sign(kernel[f, j]) and dbias[j] = Σ_n dlogits[n, j],
// over the step's samples in order: the same bits in either kernel.

struct DenseGradientShape {
    kernel_offset: u32,   // in params and grads; the bias follows the kernel
    features: u32,        // F
    classes: u32,         // K; 0 where no dense gradient is bound
    l1: f32,              // λ
}

@group(0) @binding(16) var<uniform> dense: DenseGradientShape;
@group(0) @binding(17) var<storage, read> dense_x: array<f32>;
@group(0) @binding(18) var<storage, read> dense_dlogits: array<f32>;

// Parameters the gradient covers from dense.kernel_offset: the kernel's F·K, then the bias's K.
fn dense_len() -> u32 {
    return (dense.features + 1u) * dense.classes;
}

// The gradient of parameter dense.kernel_offset + i (i < dense_len()), whose value is w.
fn dense_gradient(i: u32, w: f32) -> f32 {
    let kernel_len = dense.features * dense.classes;
    var sum = 0.0;
    if (i < kernel_len) {
        let j = i % dense.classes;
        let f = i / dense.classes;
        for (var n = 0u; n < step.batch_size; n++) {
            sum += dense_x[n * dense.features + f] * dense_dlogits[n * dense.classes + j];
        }
        // TensorFlow's sign(0) is 0.
        return sum + dense.l1 * sign(w);
    }
    let j = i - kernel_len;
    for (var n = 0u; n < step.batch_size; n++) {
        sum += dense_dlogits[n * dense.classes + j];
    }
    return sum;
}
