// probe.wgsl — what a device can do, measured for the roofline of `wgpu-cnn bench train`
// (src/bench.rs, `device_rates`): `fma_chains` its arithmetic rate, `copy` its memory bandwidth, `touch`
// the cost of one more dispatch that depends on the one before (as every dispatch of a training
// step does). Prepended with common.wgsl (linear_index).
//
// Bindings (group 0)                                                      used by
//   0  src  storage, read        [n] vec4                                 copy
//   1  dst  storage, read_write  [n] vec4                                 all
//
// fma_chains runs 4 independent vec4 chains of FMA_ITERATIONS steps per invocation (2 FLOP per
// lane and step), so that latency hides behind the other chains; its result is stored, so that
// the compiler keeps the work. src/bench.rs counts its FLOP and checks it with the same numbers
// (PROBE_FLOP_PER_INVOCATION, fma_chains_reference): change them together.

const FMA_ITERATIONS: u32 = 256u;
const SCALE: f32 = 0.999;
const OFFSET: f32 = 0.001;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

// 4 chains × 4 lanes × 2 FLOP = 32 FLOP per step; they converge towards 1, never overflow.
@compute @workgroup_size(WORKGROUP_SIZE)
fn fma_chains(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    let seed = f32(i % 1024u) * (1.0 / 1024.0);
    var a = vec4<f32>(seed, seed + 0.25, seed + 0.5, seed + 0.75);
    var b = a * 0.5;
    var c = a * 0.25;
    var d = a * 0.125;
    for (var k = 0u; k < FMA_ITERATIONS; k++) {
        a = fma(a, vec4<f32>(SCALE), vec4<f32>(OFFSET));
        b = fma(b, vec4<f32>(SCALE), vec4<f32>(OFFSET));
        c = fma(c, vec4<f32>(SCALE), vec4<f32>(OFFSET));
        d = fma(d, vec4<f32>(SCALE), vec4<f32>(OFFSET));
    }
    dst[i % arrayLength(&dst)] = (a + b) + (c + d);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = linear_index(gid, groups);
    if (i < arrayLength(&dst)) {
        dst[i] = src[i];
    }
}

// One invocation adds 1 to dst[0]: each dispatch reads what the one before wrote.
@compute @workgroup_size(1)
fn touch() {
    dst[0] += vec4<f32>(1.0);
}
