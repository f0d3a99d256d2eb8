// activation.wgsl — ReLU and LeakyReLU as layers (Keras `Activation('relu')`, `LeakyReLU`):
// y = x where x > 0, else slope · x (ReLU: max(x, 0)); dx = dy where x > 0, else slope · dy.
// Prepended with common.wgsl (Step, linear_index).
//
// Bindings (group 0)                                                    used by
//   0  step    uniform Step                                             all
//   1  shape   uniform ActivationShape                                  all
//   2  x       storage, read        input [N, ...]                      forward, backward_input
//   3  y       storage, read_write  output, shaped like x               forward
//   4  dy      storage, read        dL/dy                               backward_input
//   5  dx      storage, read_write  dL/dx                               backward_input

struct ActivationShape {
    sample_len: u32,   // elements per sample
    slope: f32,        // 0 for ReLU
    leaky: u32,        // 1 for LeakyReLU
    _pad: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: ActivationShape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.sample_len) {
        return;
    }
    y[i] = activate(x[i], shape.slope, shape.leaky == 1u);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i >= step.batch_size * shape.sample_len) {
        return;
    }
    dx[i] = select(shape.slope * dy[i], dy[i], x[i] > 0.0);
}
