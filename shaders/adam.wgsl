// adam.wgsl — one Adam step over every parameter of the model at once (they share one flat
// buffer), exactly as Keras 3's `Adam.update_step`:
//   m ← m + (g − m)·(1 − β₁)
//   v ← v + (g² − v)·(1 − β₂)
//   w ← w − α·m / (√v + ε),  α = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)  (computed on the host per step)
// Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)
//   0  step    uniform Step              step.adam_alpha = α for this step
//   1  shape   uniform AdamShape
//   2  params  storage, read_write  flat parameters [count]
//   3  grads   storage, read        flat gradients [count]
//   4  m       storage, read_write  first moments [count]
//   5  v       storage, read_write  second moments [count]

struct AdamShape {
    count: u32,
    one_minus_beta1: f32,   // 1 − β₁ and 1 − β₂ rounded once from f64, as Keras does
    one_minus_beta2: f32,
    epsilon: f32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: AdamShape;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= shape.count) {
        return;
    }
    let g = grads[i];
    let m_new = m[i] + (g - m[i]) * shape.one_minus_beta1;
    let v_new = v[i] + (g * g - v[i]) * shape.one_minus_beta2;
    m[i] = m_new;
    v[i] = v_new;
    params[i] = params[i] - (m_new * step.adam_alpha) / (sqrt(v_new) + shape.epsilon);
}
