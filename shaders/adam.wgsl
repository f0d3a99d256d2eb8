// adam.wgsl — one Adam step over every parameter of the model at once (they share one flat
// buffer), exactly as Keras 3's `Adam.update_step`:
//   m ← m + (g − m)·(1 − β₁)
//   v ← v + (g² − v)·(1 − β₂)
//   w ← w − α·m / (√v + ε),  α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)  (computed on the host per step)
// `update` takes the gradients as they are; `sum_and_update`, a training step's last dispatch,
// first takes the final sums of the layers' split reductions (segments.wgsl) where a segment holds
// a gradient, and the dense head's weight gradient (dense_gradient.wgsl) where it covers one, and
// writes them into grads: one dispatch where the sums and the head's gradient had their own.
// Prepended with common.wgsl (Step, linear_index), segments.wgsl (Segment, segment_sum) and
// dense_gradient.wgsl (dense_gradient).
//
// Bindings (group 0)                                                     used by
//   0  step      uniform Step              step.adam_alpha = α for this step  all
//   1  shape     uniform AdamShape                                        all
//   2  params    storage, read_write  flat parameters [count]             all
//   3  grads     storage, read_write  flat gradients [count]              update reads,
//                                                                         sum_and_update also writes
//   4  m         storage, read_write  first moments [count]               all
//   5  v         storage, read_write  second moments [count]              all
//  13  segments, 14 scratch           (segments.wgsl)                     sum_and_update
//  16  dense, 17 dense_x, 18 dense_dlogits  (dense_gradient.wgsl)         sum_and_update

struct AdamShape {
    count: u32,
    one_minus_beta1: f32,   // 1 − β₁ and 1 − β₂ rounded once from f64, as Keras does
    one_minus_beta2: f32,
    epsilon: f32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: AdamShape;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

// The update of parameter i by gradient g.
fn adam_step(i: u32, g: f32) {
    let m_new = m[i] + (g - m[i]) * shape.one_minus_beta1;
    let v_new = v[i] + (g * g - v[i]) * shape.one_minus_beta2;
    m[i] = m_new;
    v[i] = v_new;
    params[i] = params[i] - (m_new * step.adam_alpha) / (sqrt(v_new) + shape.epsilon);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= shape.count) {
        return;
    }
    adam_step(i, grads[i]);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn sum_and_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= shape.count) {
        return;
    }
    let summed = segment_sum(i);
    var g = summed.sum;
    if (summed.covered) {
        grads[i] = g;
    } else if (i >= dense.kernel_offset && i - dense.kernel_offset < dense_len()) {
        g = dense_gradient(i - dense.kernel_offset, params[i]);
        grads[i] = g;
    } else {
        g = grads[i];
    }
    adam_step(i, g);
}
