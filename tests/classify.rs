//! The embedders' classifier: a trained model recorded into the caller's encoder on the caller's
//! buffers and textures agrees with the evaluation engine on every test image of the embedded
//! set — bit for bit from a buffer and from 32×32 texture regions, within rounding from 2×
//! regions (area-averaged) — and refuses what it cannot do with a clear error.

mod common;

use common::cifar_sample;
use wgpu::util::DeviceExt;
use wgpu_cnn::classify::{Classifier, Region};
use wgpu_cnn::data::Dataset;
use wgpu_cnn::gpu::{self, GpuContext};
use wgpu_cnn::model::{Architecture, Model, Weights, CIFAR_INPUT};
use wgpu_cnn::train::fast::FastCpuEngine;
use wgpu_cnn::train::gpu::GpuInference;
use wgpu_cnn::train::{wait, Inference, TrainConfig, Trainer};

/// The base net after one epoch on 1,000 training images (fast CPU): weights whose predictions
/// are not all one class.
fn trained() -> (Model, Weights) {
    let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
    let config = TrainConfig { epochs: 1, ..TrainConfig::default() };
    let (train, validation) = cifar_sample().train.take_first(1000).split_validation(0.1).unwrap();
    let mut engine = FastCpuEngine::new(&model, &train, model.init(7), &config).unwrap();
    Trainer::new(&mut engine, &train, &validation, &config).unwrap().fit(&mut |_| {}, &mut |_| Ok(())).unwrap();
    let weights = wait(wgpu_cnn::train::Engine::weights(&mut engine)).unwrap();
    (model, weights)
}

/// What `evaluate` computes: the inference engine's probabilities of every image of `set`.
fn evaluated(ctx: &GpuContext, model: &Model, weights: &Weights, set: &Dataset) -> Vec<f32> {
    let mut inference = GpuInference::new(ctx, model, weights, &TrainConfig::default()).unwrap();
    let id = inference.prepare(set).unwrap();
    wait(inference.probabilities(id)).unwrap()
}

fn output_buffer(ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("my probabilities"),
        size: bytes,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer) -> Vec<f32> {
    bytemuck::cast_slice(&gpu::read_buffer(&ctx.device, &ctx.queue, buffer).unwrap()).to_vec()
}

fn argmax(probs: &[f32], classes: usize) -> Vec<usize> {
    probs
        .chunks(classes)
        .map(|p| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap())
        .collect()
}

/// `images` laid out as a texture atlas, `columns` images a row, each scaled up `scale`× by
/// repeating pixels: (RGBA bytes, width, height, the region of each image).
fn atlas(set: &Dataset, columns: usize, scale: usize) -> (Vec<u8>, u32, u32, Vec<Region>) {
    let side = 32 * scale;
    let rows = set.len().div_ceil(columns);
    let (width, height) = (columns * side, rows * side);
    let mut rgba = vec![255u8; 4 * width * height];
    let mut regions = Vec::new();
    for n in 0..set.len() {
        let (x0, y0) = ((n % columns) * side, (n / columns) * side);
        for y in 0..side {
            for x in 0..side {
                let pixel = &set.image(n)[((y / scale) * 32 + x / scale) * 3..][..3];
                rgba[4 * ((y0 + y) * width + x0 + x)..][..3].copy_from_slice(pixel);
            }
        }
        regions.push(Region::new(x0 as u32, y0 as u32, side as u32, side as u32));
    }
    (rgba, width as u32, height as u32, regions)
}

fn texture(ctx: &GpuContext, rgba: &[u8], width: u32, height: u32) -> wgpu::Texture {
    ctx.device.create_texture_with_data(
        &ctx.queue,
        &wgpu::TextureDescriptor {
            label: Some("my pictures"),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        rgba,
    )
}

#[test]
fn the_classifier_agrees_with_evaluate_on_every_test_image_from_a_buffer_and_from_a_texture() {
    let Some(ctx) = common::gpu() else { return };
    let (model, weights) = trained();
    let test = &cifar_sample().test;
    let expected = evaluated(ctx, &model, &weights, test);
    let classes = model.classes();
    let predicted = argmax(&expected, classes);
    assert!(predicted.iter().any(|&p| p != predicted[0]), "the trained model predicts one class only");

    let classifier = Classifier::new(&ctx.device, &ctx.queue, &model, &weights, 256).unwrap();
    // From the application's buffer of u8 records: four calls of up to 256, one encoder.
    let images = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("my images"),
        contents: &test.images,
        usage: wgpu::BufferUsages::STORAGE,
    });
    let source = classifier.bind_images(&images).unwrap();
    let output = output_buffer(ctx, classifier.output_size(test.len()));
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for first in (0..test.len()).step_by(256) {
        let count = (test.len() - first).min(256);
        let offset = classifier.output_size(first);
        classifier.record_images(&mut encoder, &source, first, count, &output, offset).unwrap();
    }
    ctx.queue.submit([encoder.finish()]);
    let from_buffer = read_f32(ctx, &output);
    assert_eq!(from_buffer.len(), expected.len());
    let differing = from_buffer.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "probabilities from a buffer differ from evaluate's in {differing} places");

    // From 32×32 regions of a texture atlas: the same bits.
    let (rgba, width, height, regions) = atlas(test, 30, 1);
    let picture = texture(ctx, &rgba, width, height);
    let source = classifier.bind_texture(&picture.create_view(&Default::default())).unwrap();
    let output = output_buffer(ctx, classifier.output_size(test.len()));
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for (call, chunk) in regions.chunks(256).enumerate() {
        classifier.record_regions(&mut encoder, &source, chunk, &output, classifier.output_size(256 * call)).unwrap();
    }
    ctx.queue.submit([encoder.finish()]);
    let from_texture = read_f32(ctx, &output);
    let differing = from_texture.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "probabilities from 32×32 regions differ from evaluate's in {differing} places");
    eprintln!("{} test images: buffer and 32×32 texture regions equal evaluate bit for bit", test.len());
}

#[test]
fn twice_the_size_regions_are_area_averaged_back_to_the_same_prediction() {
    let Some(ctx) = common::gpu() else { return };
    let (model, weights) = trained();
    let test = cifar_sample().test.take_first(100);
    let expected = evaluated(ctx, &model, &weights, &test);
    let classifier = Classifier::new(&ctx.device, &ctx.queue, &model, &weights, 128).unwrap();
    let (rgba, width, height, regions) = atlas(&test, 10, 2);
    let picture = texture(ctx, &rgba, width, height);
    let source = classifier.bind_texture(&picture.create_view(&Default::default())).unwrap();
    let output = output_buffer(ctx, classifier.output_size(test.len()));
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    classifier.record_regions(&mut encoder, &source, &regions, &output, 0).unwrap();
    ctx.queue.submit([encoder.finish()]);
    let got = read_f32(ctx, &output);
    let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "64×64 regions: probabilities within {worst} of the 32×32 images'");
    assert_eq!(argmax(&got, 10), argmax(&expected, 10));
}

#[test]
fn calls_recorded_before_one_submit_each_keep_their_own_images() {
    let Some(ctx) = common::gpu() else { return };
    let (model, weights) = trained();
    let test = cifar_sample().test.take_first(300);
    let expected = evaluated(ctx, &model, &weights, &test);
    let classifier = Classifier::new(&ctx.device, &ctx.queue, &model, &weights, 64).unwrap();
    let images = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("my images"),
        contents: &test.images,
        usage: wgpu::BufferUsages::STORAGE,
    });
    let source = classifier.bind_images(&images).unwrap();
    // Two calls with other images and counts, into two outputs, in two encoders before one submit.
    let (a, b) = (output_buffer(ctx, classifier.output_size(10)), output_buffer(ctx, classifier.output_size(64)));
    let mut first = ctx.device.create_command_encoder(&Default::default());
    classifier.record_images(&mut first, &source, 200, 10, &a, 0).unwrap();
    let mut second = ctx.device.create_command_encoder(&Default::default());
    classifier.record_images(&mut second, &source, 7, 64, &b, 0).unwrap();
    ctx.queue.submit([first.finish(), second.finish()]);
    assert_eq!(read_f32(ctx, &a), expected[200 * 10..210 * 10]);
    assert_eq!(read_f32(ctx, &b), expected[7 * 10..71 * 10]);
}

#[test]
fn the_classifier_refuses_what_it_cannot_do_with_a_clear_error() {
    let Some(ctx) = common::gpu() else { return };
    let model = Model::new(&Architecture::parse("c4s2,f10").unwrap(), CIFAR_INPUT).unwrap();
    let weights = model.init(1);
    let classifier = Classifier::new(&ctx.device, &ctx.queue, &model, &weights, 8).unwrap();
    let error = |e: wgpu_cnn::Error| e.to_string();

    let wrong = Weights { params: vec![0.0; 3], state: vec![] };
    let message = error(Classifier::new(&ctx.device, &ctx.queue, &model, &wrong, 8).err().unwrap());
    assert!(message.contains("3 parameters"), "{message}");

    let images = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &vec![0u8; 3 * 3072],
        usage: wgpu::BufferUsages::STORAGE,
    });
    let source = classifier.bind_images(&images).unwrap();
    let output = output_buffer(ctx, classifier.output_size(8));
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let message = error(classifier.record_images(&mut encoder, &source, 2, 2, &output, 0).unwrap_err());
    assert!(message.contains("images 2..4") && message.contains("holds 3 images"), "{message}");
    let many = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &vec![0u8; 9 * 3072],
        usage: wgpu::BufferUsages::STORAGE,
    });
    let message = error(
        classifier.record_images(&mut encoder, &classifier.bind_images(&many).unwrap(), 0, 9, &output, 0).unwrap_err(),
    );
    assert!(message.contains("at most 8"), "{message}");
    let message = error(classifier.record_images(&mut encoder, &source, 0, 3, &output, 204).unwrap_err());
    assert!(message.contains("120 bytes from offset 204"), "{message}");
    let unreadable = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let message = error(classifier.record_images(&mut encoder, &source, 0, 1, &unreadable, 0).unwrap_err());
    assert!(message.contains("COPY_DST"), "{message}");
    let not_storage = output_buffer(ctx, 4 * 3072);
    let message = error(classifier.bind_images(&not_storage).unwrap_err());
    assert!(message.contains("STORAGE"), "{message}");
    let tiny = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let message = error(classifier.bind_images(&tiny).unwrap_err());
    assert!(message.contains("less than one 3072-byte image"), "{message}");

    let picture = texture(ctx, &vec![0u8; 4 * 40 * 40], 40, 40);
    let source = classifier.bind_texture(&picture.create_view(&Default::default())).unwrap();
    let message =
        error(classifier.record_regions(&mut encoder, &source, &[Region::new(20, 0, 32, 32)], &output, 0).unwrap_err());
    assert!(message.contains("region 0") && message.contains("40×40"), "{message}");
    let message =
        error(classifier.record_regions(&mut encoder, &source, &[Region::new(0, 0, 0, 5)], &output, 0).unwrap_err());
    assert!(message.contains("empty"), "{message}");
    let grey = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d { width: 32, height: 32, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::R8Unorm,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let message = error(classifier.bind_texture(&grey.create_view(&Default::default())).unwrap_err());
    assert!(message.contains("R8Unorm"), "{message}");
    // Nothing recorded by the refused calls reaches the queue as a validation error.
    ctx.queue.submit([encoder.finish()]);
    gpu::wait_idle(&ctx.device).unwrap();
}

#[test]
fn a_batch_norm_classifier_takes_a_training_engine_s_parameters_and_moving_statistics() {
    let Some(ctx) = common::gpu() else { return };
    let model = Model::new(&Architecture::parse("c8n,bn,lrelu,c8s2n,bn,relu,h16,f10").unwrap(), CIFAR_INPUT).unwrap();
    let config = TrainConfig { epochs: 1, ..TrainConfig::default() };
    let (train, validation) = cifar_sample().train.take_first(400).split_validation(0.1).unwrap();
    let initial = model.init(3);
    let mut engine = wgpu_cnn::train::gpu::GpuEngine::new(ctx, &model, &train, &initial, &config).unwrap();
    Trainer::new(&mut engine, &train, &validation, &config).unwrap().fit(&mut |_| {}, &mut |_| Ok(())).unwrap();
    let trained = wait(wgpu_cnn::train::Engine::weights(&mut engine)).unwrap();
    assert_ne!(trained.state, initial.state, "training moved the moving statistics");

    // A classifier built with the initial weights, then given the engine's buffers by copies.
    let classifier = Classifier::new(&ctx.device, &ctx.queue, &model, &initial, 64).unwrap();
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    let (params, state) = (engine.params_buffer(), engine.state_buffer());
    encoder.copy_buffer_to_buffer(params, 0, classifier.params_buffer(), 0, params.size());
    encoder.copy_buffer_to_buffer(state, 0, classifier.state_buffer(), 0, state.size());
    let test = cifar_sample().test.take_first(64);
    let images = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("my images"),
        contents: &test.images,
        usage: wgpu::BufferUsages::STORAGE,
    });
    let source = classifier.bind_images(&images).unwrap();
    let output = output_buffer(ctx, classifier.output_size(test.len()));
    classifier.record_images(&mut encoder, &source, 0, test.len(), &output, 0).unwrap();
    ctx.queue.submit([encoder.finish()]);
    let got = read_f32(ctx, &output);
    let expected = evaluated(ctx, &model, &trained, &test);
    let differing = got.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differing, 0, "the classifier differs from evaluate in {differing} places");
}
