//! Embedding wgpu-cnn's 3×3 convolution in your own wgpu program.
//!
//! This program owns everything — the instance, adapter, device, queue, buffers, encoder and
//! readback — exactly as a graphics application would. From wgpu-cnn it takes only
//! [`Conv3x3`], which builds its pipeline on *our* device and records its dispatch into *our*
//! encoder on *our* buffers, and the CPU reference to check the result.
//!
//! Run it with `cargo run --release --example embed_conv`; `cargo test` runs it too.

use wgpu::util::DeviceExt;
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3, Plane};

/// Convolves a synthetic gradient image with the assignment's k1 and checks it against the CPU.
fn run() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's own device. Any adapter will do; a real app would pick its own.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| format!("no adapter ({e}); on Linux: apt-get install mesa-vulkan-drivers"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    println!("adapter: {}", adapter.get_info().name);

    // 2. The application's own image: 37×23 pixels (a width that is not a multiple of 4), one
    //    byte per pixel, rows packed, padded to whole u32 words.
    let (width, height) = (37u32, 23u32);
    let pixels: Vec<u8> = (0..width * height).map(|i| ((i * 7 + i / width * 13) % 256) as u8).collect();
    let mut padded = pixels.clone();
    padded.resize(Conv3x3::buffer_size(width, height) as usize, 0);
    let input = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("my image"),
        contents: &padded,
        usage: wgpu::BufferUsages::STORAGE,
    });
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("my filtered image"),
        size: Conv3x3::buffer_size(width, height),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("my readback"),
        size: output.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    // 3. wgpu-cnn: build the pipelines once, bind our buffers, record into our encoder.
    let conv = Conv3x3::new(&device)?;
    let dispatch = conv.prepare(&device, &input, &output, width, height, &Kernel3x3::K1)?;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("my frame") });
    dispatch.encode(&mut encoder);
    encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, output.size());
    queue.submit([encoder.finish()]);

    // 4. Our own readback.
    let (sender, receiver) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely())?;
    receiver.recv()??;
    let result = staging.slice(..).get_mapped_range()?[..pixels.len()].to_vec();
    staging.unmap();

    // 5. Check against the CPU reference.
    let expected = cpu::conv3x3_reference(&Plane::new(width, height, pixels)?, &Kernel3x3::K1);
    if result != expected.pixels {
        let first = result.iter().zip(&expected.pixels).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("GPU result differs from the CPU reference at pixel {first}").into());
    }
    println!("{width}×{height} convolved on the GPU: identical to the CPU reference");
    Ok(())
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedding_example_convolves_on_its_own_device_and_matches_the_cpu() {
        if std::env::var(wgpu_cnn::selftest::SKIP_GPU_TESTS).is_ok_and(|v| v == "1") {
            eprintln!("WGPU_CNN_SKIP_GPU_TESTS=1: skipping");
            return;
        }
        super::run().unwrap();
    }
}
