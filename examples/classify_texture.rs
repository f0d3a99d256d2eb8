//! Classifying pictures that live in a texture with a trained CNN, on your own device.
//!
//! Who owns what: this program owns the device, the queue, the texture of pictures, the output
//! buffer, every encoder and the readback. From wgpu-cnn it takes a [`Classifier`] (the model's
//! weights and activations, built on *our* device) that records a forward pass over regions of
//! *our* texture into *our* encoder and copies the class probabilities into *our* buffer.
//!
//! `cargo run --release --example classify_texture -- model.safetensors` classifies with a
//! checkpoint `wgpu-cnn train` wrote. Without one, the example first trains a small net for three
//! epochs on this device ([`GpuEngine`] on our device and queue) and hands its parameter buffer
//! to the classifier with a copy in our encoder. Either way it checks its probabilities against
//! `evaluate`'s engine, bit for bit. `cargo test` runs it.

use std::path::Path;

use wgpu::util::DeviceExt;
use wgpu_cnn::checkpoint::Checkpoint;
use wgpu_cnn::classify::{Classifier, Region};
use wgpu_cnn::data::{self, Dataset, CLASS_NAMES};
use wgpu_cnn::gpu::{self, GpuContext};
use wgpu_cnn::model::{Architecture, Model, Weights, CIFAR_INPUT};
use wgpu_cnn::train::gpu::{GpuEngine, GpuInference};
use wgpu_cnn::train::{wait, Inference, TrainConfig, Trainer};

/// Pictures per row of the texture.
const COLUMNS: usize = 8;

fn run(checkpoint: Option<&Path>) -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's own device.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| format!("no adapter ({e}); on Linux: apt-get install mesa-vulkan-drivers"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    println!("adapter: {}", adapter.get_info().name);

    // 2. The pictures: 64 CIFAR-10 test images as an sRGB texture atlas, as a loaded picture
    //    would be; the Rgba8Unorm view format lets a shader read its bytes (see gpu::byte_view).
    let cifar = data::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/cifar10"))?;
    let pictures = cifar.test.take_first(64);
    let (atlas, width, height, regions) = atlas(&pictures);
    let texture = device.create_texture_with_data(
        &queue,
        &wgpu::TextureDescriptor {
            label: Some("my pictures"),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8UnormSrgb,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[wgpu::TextureFormat::Rgba8Unorm],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        &atlas,
    );

    // 3. The model: from a checkpoint, or trained here on our device.
    let (model, classifier) = match checkpoint {
        Some(path) => {
            let checkpoint = Checkpoint::load(path)?;
            let classifier = Classifier::from_checkpoint(&device, &queue, &checkpoint, pictures.len())?;
            (checkpoint.model()?, classifier)
        }
        None => train_here(&device, &queue, &cifar.train, pictures.len())?,
    };

    // 4. Classify: bind our texture once, record into our encoder, copy into our buffer.
    let source = classifier.bind_texture(&gpu::byte_view(&device, &texture)?)?;
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("my probabilities"),
        size: classifier.output_size(regions.len()),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("classify") });
    classifier.record_regions(&mut encoder, &source, &regions, &output, 0)?;
    queue.submit([encoder.finish()]);
    let probabilities = read_f32(&device, &output)?;

    // 5. Report, and check against what `evaluate` computes on the same images and device.
    let classes = classifier.classes();
    let predicted: Vec<usize> = probabilities.chunks(classes).map(argmax).collect();
    let correct = predicted.iter().zip(&pictures.labels).filter(|(p, l)| **p == usize::from(**l)).count();
    for (n, p) in predicted.iter().take(4).enumerate() {
        let name = |c: usize| CLASS_NAMES.get(c).copied().unwrap_or("?");
        println!(
            "picture {n}: {} ({:.2}), labelled {}",
            name(*p),
            probabilities[n * classes + p],
            name(pictures.labels[n].into())
        );
    }
    println!("{correct} of {} pictures classified correctly", pictures.len());
    let weights = Weights {
        params: bytemuck::cast_slice(&gpu::read_buffer(&device, &queue, classifier.params_buffer())?)
            [..model.param_count]
            .to_vec(),
        state: vec![0.0; model.state_count],
    };
    let ctx = GpuContext::from_device(&device, &queue);
    let mut evaluate = GpuInference::new(&ctx, &model, &weights, &TrainConfig::default())?;
    let prepared = evaluate.prepare(&pictures)?;
    let expected = wait(evaluate.probabilities(prepared))?;
    if probabilities != expected {
        return Err("the classifier's probabilities differ from evaluate's".into());
    }
    println!("the classifier's probabilities equal evaluate's bit for bit");
    Ok(())
}

/// Trains a small net for three epochs on our device and builds the classifier from the engine's
/// parameter buffer, copied in our encoder (no trip through the host).
fn train_here(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    train: &Dataset,
    max_batch: usize,
) -> Result<(Model, Classifier), Box<dyn std::error::Error>> {
    let model = Model::new(&Architecture::parse("c8s2,c16s2,d0.2,f10")?, CIFAR_INPUT)?;
    let config = TrainConfig { epochs: 3, ..TrainConfig::default() };
    let (train, validation) = train.take_first(2000).split_validation(config.validation_split)?;
    let initial = model.init(config.seed);
    let mut engine = GpuEngine::new(&GpuContext::from_device(device, queue), &model, &train, &initial, &config)?;
    let history = Trainer::new(&mut engine, &train, &validation, &config)?.fit(&mut |_| {}, &mut |_| Ok(()))?;
    let accuracy = history.epochs.last().and_then(|e| e.val_accuracy).unwrap_or(f64::NAN);
    println!("trained {} for {} epochs here: validation accuracy {accuracy:.3}", model.architecture, config.epochs);
    let classifier = Classifier::new(device, queue, &model, &initial, max_batch)?;
    let mut encoder = device.create_command_encoder(&Default::default());
    let bytes = (4 * model.param_count) as u64;
    encoder.copy_buffer_to_buffer(engine.params_buffer(), 0, classifier.params_buffer(), 0, bytes);
    // The moving statistics of batch-norm layers (none in this model: the buffers hold 4 bytes).
    encoder.copy_buffer_to_buffer(engine.state_buffer(), 0, classifier.state_buffer(), 0, engine.state_buffer().size());
    queue.submit([encoder.finish()]);
    Ok((model, classifier))
}

/// The pictures side by side, `COLUMNS` a row: (RGBA bytes, width, height, each one's region).
fn atlas(pictures: &Dataset) -> (Vec<u8>, u32, u32, Vec<Region>) {
    let rows = pictures.len().div_ceil(COLUMNS);
    let (width, height) = (32 * COLUMNS, 32 * rows);
    let mut rgba = vec![255u8; 4 * width * height];
    let mut regions = Vec::new();
    for n in 0..pictures.len() {
        let (x0, y0) = (32 * (n % COLUMNS), 32 * (n / COLUMNS));
        for (i, pixel) in pictures.image(n).chunks(3).enumerate() {
            let (y, x) = (y0 + i / 32, x0 + i % 32);
            rgba[4 * (y * width + x)..][..3].copy_from_slice(pixel);
        }
        regions.push(Region::new(x0 as u32, y0 as u32, 32, 32));
    }
    (rgba, width as u32, height as u32, regions)
}

fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Our own readback of a MAP_READ buffer.
fn read_f32(device: &wgpu::Device, buffer: &wgpu::Buffer) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely())?;
    receiver.recv()??;
    let values = bytemuck::cast_slice(&buffer.slice(..).get_mapped_range()?).to_vec();
    buffer.unmap();
    Ok(values)
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    let checkpoint = std::env::args().nth(1);
    if let Err(e) = run(checkpoint.as_deref().map(Path::new)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pictures_in_a_texture_are_classified_on_our_device_as_evaluate_classifies_them() {
        if std::env::var(wgpu_cnn::selftest::SKIP_GPU_TESTS).is_ok_and(|v| v == "1") {
            eprintln!("WGPU_CNN_SKIP_GPU_TESTS=1: skipping");
            return;
        }
        super::run(None).unwrap();
    }
}
