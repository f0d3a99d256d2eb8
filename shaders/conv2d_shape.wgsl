// conv2d_shape.wgsl — the shape and padding of a Conv2D (3×3 kernel, stride 1 or 2, Keras 'same'
// padding), shared by conv2d_tiled.wgsl and conv2d_naive.wgsl, which are compiled with
// common.wgsl and this file before them. No entry points.
//
// Specialised per layer: the shape arrives as pipeline-override constants, not a uniform, so each
// layer gets its own pipelines in which every extent is a literal. Index arithmetic then divides
// by constants (a multiply and a shift; lavapipe runs a variable vector division lane by lane),
// and the tiled kernels pick their loads at compile time: where a row of four channels starts on
// a multiple of 4 floats (X_VEC4, K_VEC4) they read it through the vec4 view, one load where
// four scalar ones would be four. On lavapipe every storage load of varying address is a loop
// over the SIMD lanes, so the loads, not the multiply-adds, set the speed (bench train --profile:
// 281 → 470 img/s). The scalar paths serve the rest (e.g. the 3-channel input).
//
// Every kernel is a gather: it owns the elements it writes, gradients are overwritten. The grid is
// sized for BATCH; invocations past step.batch_size (a partial batch) write nothing, except
// the tiled partial sums, which are 0 for chunks past the batch.
//
// Padding (TensorFlow's 'same'): input row iy = oy·STRIDE + ky − PAD_TOP, zero outside.

// The layer's shape, set by `Conv2dShape::constants` (src/layers/conv2d/mod.rs).
override BATCH: u32;
override IN_H: u32;
override IN_W: u32;
override IN_C: u32;
override OUT_H: u32;
override OUT_W: u32;
override OUT_C: u32;
override STRIDE: u32;
override PAD_TOP: u32;
override PAD_LEFT: u32;
override KERNEL_OFFSET: u32;
override BIAS_OFFSET: u32;
override CHUNK_LEN: u32;   // output positions (n, oy, ox) per partial-sum chunk
override CHUNKS: u32;      // ceil(BATCH · OUT_H · OUT_W / CHUNK_LEN)
override CHUNK_LANES: u32; // invocations that share one chunk (a power of two dividing WORKGROUP_SIZE)
override INPUT_WORKGROUPS: u32; // workgroups of the tiled `backward` that write dx (the rest: partial sums)
override RELU: bool;       // y = relu(pre), else y = pre (a convolution without activation)
// How the layer meets its neighbours (src/layers/fusion.rs); the defaults are a layer on its own.
override PARTIALS_OFFSET: u32 = 0u; // where the tiled partial sums start in the step's scratch buffer
override DY_MASKED: bool = false;   // dy arrives as dL/d(pre-activation): the layer after applied the
                                    // ReLU (y may then hold an absorbed layer's output: its sign is
                                    // not read)
override MASK_POS: f32 = 1.0;       // dx through the layers before (mask_gradient in common.wgsl)
override MASK_NEG: f32 = 1.0;
override X_VEC4: bool;     // IN_C % 4 == 0: a pixel's channels of x start on a vec4
override K_VEC4: bool;     // OUT_C, KERNEL_OFFSET and BIAS_OFFSET multiples of 4: so do kernel rows, the
                           // bias and dpre's pixels

// Whether dx goes through a mask (a constant: the loads of x for it fold away when not).
fn masks_dx() -> bool {
    return MASK_POS != 1.0 || MASK_NEG != 1.0;
}

// dx as the layers before want it, from x at the same element.
fn masked_dx(gradient: f32, x_value: f32) -> f32 {
    return mask_gradient(gradient, x_value, MASK_POS, MASK_NEG);
}

// Input coordinate read by output coordinate `o` through tap `k`, or -1 in the padding.
fn input_coord(o: u32, k: u32, pad: u32, size: u32) -> i32 {
    let i = i32(o * STRIDE + k) - i32(pad);
    return select(-1, i, i >= 0 && i < i32(size));
}

