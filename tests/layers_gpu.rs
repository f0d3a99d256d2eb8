//! Every training kernel on the GPU against its CPU reference (f32) on random tensors: odd
//! shapes, stride 1 and 2, and partial batches (the grid is sized for `shape.batch` samples but
//! the step holds fewer: the rest must stay untouched). Outputs are pre-filled with NaN so that
//! an element the kernel forgot to write fails.

mod common;

use common::{gpu, Rng};
use wgpu_cnn::gpu::GpuContext;
use wgpu_cnn::kernel::begin_pass;
use wgpu_cnn::layers::adam::{self, Adam, AdamBuffers, AdamConfig};
use wgpu_cnn::layers::conv2d::{self, Conv2d, Conv2dBuffers, Conv2dShape, Conv2dVariant};
use wgpu_cnn::layers::dense_softmax::{self, DenseBuffers, DenseShape, DenseSoftmax};
use wgpu_cnn::layers::dropout::{self, Dropout, DropoutBuffers, DropoutShape};
use wgpu_cnn::layers::gather::{self, Gather, GatherBuffers, GpuDataset};
use wgpu_cnn::layers::maxpool2d::{self, MaxPool2d, PoolBuffers, PoolShape};
use wgpu_cnn::layers::{uniform_buffer, StepParams};

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.range(-1_000_000, 1_000_000) as f32 / 1_000_000.0) * scale).collect()
}

fn upload(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    ctx.upload("test", bytemuck::cast_slice(data), wgpu::BufferUsages::empty()).unwrap()
}

/// A buffer of `len` NaNs: "not written" differs from "wrote 0".
fn sentinel(ctx: &GpuContext, len: usize) -> wgpu::Buffer {
    upload(ctx, &vec![f32::NAN; len])
}

fn read(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Vec<f32> {
    bytemuck::cast_slice(&ctx.read_buffer(buffer).unwrap())[..len].to_vec()
}

fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    record(&mut begin_pass(&mut encoder, "test"));
    ctx.queue.submit([encoder.finish()]);
}

fn step(ctx: &GpuContext, batch_size: usize) -> wgpu::Buffer {
    let params = StepParams { batch_size: batch_size as u32, seed: 42, step: 9, training: 1, ..Default::default() };
    uniform_buffer(&ctx.device, "step", &params)
}

/// |got − expected| ≤ atol + rtol·|expected| everywhere; prints the first mismatches.
fn assert_close(what: &str, got: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let bad: Vec<String> = (0..got.len())
        .filter(|&i| {
            // Written so that NaN (an element never written) counts as a mismatch.
            let within = (got[i] - expected[i]).abs() <= atol + rtol * expected[i].abs();
            !within
        })
        .take(5)
        .map(|i| format!("[{i}] got {} expected {}", got[i], expected[i]))
        .collect();
    let max = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(bad.is_empty(), "{what}: max difference {max}; first mismatches: {}", bad.join(", "));
}

fn conv_case(
    ctx: &GpuContext,
    batch: usize,
    used: usize,
    input: [usize; 3],
    filters: usize,
    stride: usize,
    first: bool,
) {
    for variant in [Conv2dVariant::Tiled, Conv2dVariant::Naive] {
        conv_variant_case(ctx, variant, batch, used, input, filters, stride, first);
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_variant_case(
    ctx: &GpuContext,
    variant: Conv2dVariant,
    batch: usize,
    used: usize,
    input: [usize; 3],
    filters: usize,
    stride: usize,
    first: bool,
) {
    let mut rng = Rng::new((batch * 131 + input[0] * 17 + filters * 3 + stride) as u64);
    let shape = Conv2dShape::new(batch, input, filters, stride);
    let used_shape = shape.with_batch(used);
    let x = random(&mut rng, shape.input_len(), 1.0);
    let mut params = random(&mut rng, shape.kernel_len(), 0.3);
    params.extend(random(&mut rng, filters, 0.1));
    let dy = random(&mut rng, shape.output_len(), 1.0);
    let (kernel, bias) = params.split_at(shape.kernel_len());

    let mut y = vec![f32::NAN; shape.output_len()];
    conv2d::forward(&mut y, &x, kernel, bias, &used_shape);
    let mut dx = vec![f32::NAN; shape.input_len()];
    conv2d::backward_input(&mut dx, &dy, &y, kernel, &used_shape);
    let (mut dkernel, mut dbias) = (vec![0.0; kernel.len()], vec![0.0; filters]);
    conv2d::backward_weight(&mut dkernel, &mut dbias, &dy, &y, &x, &used_shape);

    let step = step(ctx, used);
    let (x_b, params_b, dy_b) = (upload(ctx, &x), upload(ctx, &params), upload(ctx, &dy));
    let (y_b, dx_b, grads_b) = (sentinel(ctx, y.len()), sentinel(ctx, x.len()), sentinel(ctx, params.len()));
    let (dpre_b, partials_b) = (sentinel(ctx, y.len()), sentinel(ctx, shape.partials_len()));
    let conv = Conv2d::new(&ctx.device).unwrap();
    let buffers = Conv2dBuffers {
        step: &step,
        x: &x_b,
        params: &params_b,
        y: &y_b,
        dy: &dy_b,
        dx: (!first).then_some(&dx_b),
        grads: &grads_b,
        dpre: &dpre_b,
        partials: &partials_b,
    };
    let bound = conv.bind(&ctx.device, &shape, &buffers, variant);
    run(ctx, |pass| bound.record_forward(pass));
    // The backward pass reads the GPU's own y; feed it the CPU's dy.
    run(ctx, |pass| bound.record_backward(pass));

    let what = format!("conv2d ({variant:?}) batch {used}/{batch} {input:?}→{filters} stride {stride}");
    let gpu_y = read(ctx, &y_b, y.len());
    let used_y = used_shape.output_len();
    assert_close(&format!("{what} y"), &gpu_y[..used_y], &y[..used_y], 1e-5, 1e-4);
    assert!(gpu_y[used_y..].iter().all(|v| v.is_nan()), "{what}: samples past the batch were written");
    let grads = read(ctx, &grads_b, params.len());
    assert_close(&format!("{what} dkernel"), &grads[..kernel.len()], &dkernel, 1e-4, 1e-4);
    assert_close(&format!("{what} dbias"), &grads[kernel.len()..], &dbias, 1e-4, 1e-4);
    let gpu_dx = read(ctx, &dx_b, x.len());
    if first {
        assert!(gpu_dx.iter().all(|v| v.is_nan()), "{what}: the first layer computes no dx");
    } else {
        let used_x = used_shape.input_len();
        assert_close(&format!("{what} dx"), &gpu_dx[..used_x], &dx[..used_x], 1e-5, 1e-4);
    }
}

#[test]
fn conv2d_kernels_match_the_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    conv_case(ctx, 3, 3, [5, 6, 3], 4, 1, false);
    conv_case(ctx, 4, 3, [8, 8, 5], 6, 2, false); // partial batch, even input at stride 2
    conv_case(ctx, 2, 2, [7, 5, 2], 3, 2, true); // odd input at stride 2, first layer
    conv_case(ctx, 5, 5, [32, 32, 3], 16, 1, true); // the base net's first layer
    conv_case(ctx, 3, 2, [9, 13, 6], 5, 1, false); // channel counts that are not multiples of 4
    conv_case(ctx, 2, 2, [33, 31, 2], 3, 2, false); // more than one partial-sum chunk per image
}

#[test]
fn maxpool_kernels_match_the_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(11);
    let shape = PoolShape::new(3, [7, 6, 5]);
    let used = shape.with_batch(2);
    let mut x = random(&mut rng, shape.input_len(), 1.0);
    x[0] = x[1]; // a tie
    let dy = random(&mut rng, shape.output_len(), 1.0);
    let mut y = vec![f32::NAN; shape.output_len()];
    maxpool2d::forward(&mut y, &x, &used);
    let mut dx = vec![f32::NAN; shape.input_len()];
    maxpool2d::backward_input(&mut dx, &dy, &x, &used);

    let step = step(ctx, 2);
    let (x_b, dy_b, y_b, dx_b) = (upload(ctx, &x), upload(ctx, &dy), sentinel(ctx, y.len()), sentinel(ctx, x.len()));
    let bound = MaxPool2d::new(&ctx.device).unwrap().bind(
        &ctx.device,
        &shape,
        &PoolBuffers { step: &step, x: &x_b, y: &y_b, dy: &dy_b, dx: &dx_b },
    );
    run(ctx, |pass| {
        bound.record_forward(pass);
        bound.record_backward(pass);
    });
    assert_eq!(read(ctx, &y_b, used.output_len()), y[..used.output_len()]);
    assert_eq!(read(ctx, &dx_b, used.input_len()), dx[..used.input_len()]);
}

#[test]
fn dropout_masks_are_bit_identical_on_gpu_and_cpu() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(12);
    let shape = DropoutShape::new(4, 333, 5, 0.5);
    let x = random(&mut rng, shape.len(), 1.0);
    let dy = random(&mut rng, shape.len(), 1.0);
    let mut y = vec![0.0; shape.len()];
    dropout::forward(&mut y, &x, Some((42, 9)), &shape);
    let mut dx = vec![0.0; shape.len()];
    dropout::backward_input(&mut dx, &dy, Some((42, 9)), &shape);

    let step = step(ctx, 4);
    let (x_b, dy_b, y_b, dx_b) = (upload(ctx, &x), upload(ctx, &dy), sentinel(ctx, y.len()), sentinel(ctx, x.len()));
    let bound = Dropout::new(&ctx.device).unwrap().bind(
        &ctx.device,
        &shape,
        &DropoutBuffers { step: &step, x: &x_b, y: &y_b, dy: &dy_b, dx: &dx_b },
    );
    run(ctx, |pass| {
        bound.record_forward(pass);
        bound.record_backward(pass);
    });
    assert_eq!(read(ctx, &y_b, y.len()), y);
    assert_eq!(read(ctx, &dx_b, dx.len()), dx);
}

#[test]
fn dense_softmax_kernels_match_the_cpu_reference() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(13);
    let (batch, used, features, classes) = (6, 5, 70, 10);
    let shape = DenseShape::new(batch, features, classes, 1e-2);
    let used_shape = shape.with_batch(used);
    let x = random(&mut rng, batch * features, 1.0);
    let mut params = random(&mut rng, features * classes, 0.3);
    params[3] = 0.0; // sign(0) = 0
    params.extend(random(&mut rng, classes, 0.1));
    let labels: Vec<u32> = (0..batch as u32).map(|n| (n * 7) % classes as u32).collect();
    let (kernel, bias) = params.split_at(features * classes);

    let (mut probs, mut dlogits, mut losses, mut predicted) =
        (vec![0.0; batch * classes], vec![0.0; batch * classes], vec![0.0; batch], vec![0u32; batch]);
    dense_softmax::forward(
        &mut probs,
        &mut dlogits,
        &mut losses,
        &mut predicted,
        &x,
        kernel,
        bias,
        &labels,
        &used_shape,
    );
    let (mut dkernel, mut dbias, mut dx) = (vec![0.0; kernel.len()], vec![0.0; classes], vec![0.0; x.len()]);
    dense_softmax::backward_weight(&mut dkernel, &mut dbias, &dlogits, &x, kernel, &used_shape);
    dense_softmax::backward_input(&mut dx, &dlogits, kernel, &used_shape);
    let penalty = dense_softmax::l1_penalty(kernel, &shape);

    // Write the metrics of this batch at positions 3.. of the epoch and the penalty in slot 2.
    let step_params =
        StepParams { batch_size: used as u32, batch_start: 3, penalty_slot: 2, training: 1, ..Default::default() };
    let step = uniform_buffer(&ctx.device, "step", &step_params);
    let labels_b = ctx.upload("labels", bytemuck::cast_slice(&labels), wgpu::BufferUsages::empty()).unwrap();
    let (x_b, params_b) = (upload(ctx, &x), upload(ctx, &params));
    let (probs_b, dlogits_b, metrics_b) =
        (sentinel(ctx, probs.len()), sentinel(ctx, dlogits.len()), sentinel(ctx, 2 * (batch + 3)));
    let (grads_b, dx_b, penalties_b) = (sentinel(ctx, params.len()), sentinel(ctx, x.len()), sentinel(ctx, 4));
    let bound = DenseSoftmax::new(&ctx.device).unwrap().bind(
        &ctx.device,
        &shape,
        &DenseBuffers {
            step: &step,
            x: &x_b,
            params: &params_b,
            labels: &labels_b,
            probs: &probs_b,
            dlogits: &dlogits_b,
            metrics: &metrics_b,
            grads: &grads_b,
            dx: &dx_b,
            penalties: &penalties_b,
        },
    );
    run(ctx, |pass| {
        bound.record_forward(pass);
        bound.record_penalty(pass);
        bound.record_backward(pass);
    });
    let n = used * classes;
    assert_close("probs", &read(ctx, &probs_b, n), &probs[..n], 1e-6, 1e-4);
    assert_close("dlogits", &read(ctx, &dlogits_b, n), &dlogits[..n], 1e-6, 1e-4);
    let metrics = read(ctx, &metrics_b, 2 * (batch + 3));
    assert!(metrics[..6].iter().all(|v| v.is_nan()), "positions before batch_start untouched");
    let gpu_losses: Vec<f32> = (0..used).map(|i| metrics[6 + 2 * i]).collect();
    let gpu_predicted: Vec<u32> = (0..used).map(|i| metrics[7 + 2 * i] as u32).collect();
    assert_close("losses", &gpu_losses, &losses[..used], 1e-5, 1e-4);
    assert_eq!(gpu_predicted, predicted[..used]);
    let grads = read(ctx, &grads_b, params.len());
    assert_close("dkernel", &grads[..kernel.len()], &dkernel, 1e-5, 1e-4);
    assert_close("dbias", &grads[kernel.len()..], &dbias, 1e-5, 1e-4);
    assert_close("dx", &read(ctx, &dx_b, used * features), &dx[..used * features], 1e-6, 1e-4);
    let penalties = read(ctx, &penalties_b, 4);
    assert_close("penalty", &penalties[2..3], &[penalty], 1e-6, 1e-5);
}

#[test]
fn adam_matches_the_cpu_reference_over_several_steps() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(14);
    let count = 1000;
    let config = AdamConfig::default();
    let shape = config.shape(count);
    let mut params = random(&mut rng, count, 1.0);
    let (mut m, mut v) = (vec![0.0; count], vec![0.0; count]);
    let (params_b, m_b, v_b) = (upload(ctx, &params), upload(ctx, &m), upload(ctx, &v));
    let adam = Adam::new(&ctx.device).unwrap();
    for t in 1..=3u64 {
        let grads = random(&mut rng, count, 0.1);
        adam::update(&mut params, &mut m, &mut v, &grads, config.alpha(t), &shape);
        let step =
            uniform_buffer(&ctx.device, "step", &StepParams { adam_alpha: config.alpha(t), ..Default::default() });
        let grads_b = upload(ctx, &grads);
        let bound = adam.bind(
            &ctx.device,
            &shape,
            &AdamBuffers { step: &step, params: &params_b, grads: &grads_b, m: &m_b, v: &v_b },
        );
        run(ctx, |pass| bound.record(pass));
    }
    assert_close("params", &read(ctx, &params_b, count), &params, 1e-7, 1e-6);
    assert_close("m", &read(ctx, &m_b, count), &m, 1e-9, 1e-6);
    assert_close("v", &read(ctx, &v_b, count), &v, 1e-12, 1e-5);
}

#[test]
fn gather_assembles_batches_through_the_order_across_two_bindings() {
    let Some(ctx) = gpu() else { return };
    let mut rng = Rng::new(15);
    let (rows, sample_len) = (9, 12);
    let images = rng.bytes(rows * sample_len);
    let labels: Vec<u8> = (0..rows as u8).map(|r| r % 10).collect();
    let order: Vec<u32> = vec![8, 2, 5, 0, 7, 1, 3, 6, 4];
    let (batch, used, start) = (4, 3, 5);
    let mut data = GpuDataset::upload(&ctx.device, "test", &images, &labels, sample_len).unwrap();
    // Force the two-binding path: rows 0..4 in one buffer, 4.. in another.
    data.split_row = 4;
    data.images_low = ctx.upload("low", &images[..4 * sample_len], wgpu::BufferUsages::empty()).unwrap();
    data.images_high = ctx.upload("high", &images[4 * sample_len..], wgpu::BufferUsages::empty()).unwrap();

    let mut x = vec![0.0; batch * sample_len];
    let mut batch_labels = vec![0u32; batch];
    gather::gather(&mut x, &mut batch_labels, &images, &labels, &order[start..start + used], sample_len);

    let step = uniform_buffer(
        &ctx.device,
        "step",
        &StepParams { batch_size: used as u32, batch_start: start as u32, ..Default::default() },
    );
    let order_b = ctx.upload("order", bytemuck::cast_slice(&order), wgpu::BufferUsages::empty()).unwrap();
    let (x_b, labels_b) = (sentinel(ctx, x.len()), sentinel(ctx, batch));
    let buffers = GatherBuffers { step: &step, data: &data, order: &order_b, x: &x_b, batch_labels: &labels_b };
    let bound = Gather::new(&ctx.device).unwrap().bind(&ctx.device, batch, &buffers);
    run(ctx, |pass| bound.record(pass));
    assert_close("x", &read(ctx, &x_b, used * sample_len), &x[..used * sample_len], 0.0, 1e-6);
    let gpu_labels: Vec<u32> = bytemuck::cast_slice(&ctx.read_buffer(&labels_b).unwrap())[..used].to_vec();
    assert_eq!(gpu_labels, batch_labels[..used]);
}
