//! Filtering a rendered frame with wgpu-cnn's 3×3 convolution, every frame, inside your own
//! frame loop.
//!
//! Who owns what: this program owns the device, the queue, the scene's render pipeline, both
//! textures and every encoder. From wgpu-cnn it takes [`Conv3x3Texture`]: built once on *our*
//! device, bound once to *our* two textures, recorded into *our* frame encoder after the render
//! pass. Nothing is submitted or waited on by the library; one frame is read back here and
//! checked against the CPU reference, bit for bit.
//!
//! Run it with `cargo run --release --example frame_loop`; `cargo test` runs it too.

use wgpu_cnn::filter::texture::{self, Conv3x3Texture, TextureChannels};
use wgpu_cnn::filter::Kernel3x3;

const SIZE: (u32, u32) = (160, 120);
const FRAMES: u32 = 12;
const CHECKED_FRAME: u32 = 7;

/// A spinning colour triangle on a dark background: the scene a real app would draw.
const SCENE: &str = r#"
struct Frame { angle: f32, _pad0: f32, _pad1: f32, _pad2: f32 }
@group(0) @binding(0) var<uniform> frame: Frame;

struct Vertex { @builtin(position) position: vec4<f32>, @location(0) colour: vec3<f32> }

@vertex
fn vs(@builtin(vertex_index) i: u32) -> Vertex {
    let corner = array(vec2(0.0, 0.8), vec2(-0.7, -0.6), vec2(0.7, -0.6))[i];
    let c = cos(frame.angle);
    let s = sin(frame.angle);
    let p = vec2(c * corner.x - s * corner.y, s * corner.x + c * corner.y);
    let colour = array(vec3(1.0, 0.2, 0.1), vec3(0.1, 0.9, 0.2), vec3(0.2, 0.3, 1.0))[i];
    return Vertex(vec4(p, 0.0, 1.0), colour);
}

@fragment
fn fs(v: Vertex) -> @location(0) vec4<f32> {
    return vec4(v.colour, 1.0);
}
"#;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's own device.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| format!("no adapter ({e}); on Linux: apt-get install mesa-vulkan-drivers"))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;
    println!("adapter: {}", adapter.get_info().name);

    // 2. The application's scene: a render target it draws into and a texture for the filtered
    //    frame. The scene needs TEXTURE_BINDING to be read by the filter, the output
    //    STORAGE_BINDING to be written by it; COPY_SRC only for the check below.
    let texture = |label, usage| {
        device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width: SIZE.0, height: SIZE.1, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: usage | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        })
    };
    let scene = texture("scene", wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING);
    let filtered = texture("filtered", wgpu::TextureUsages::STORAGE_BINDING);
    let scene_view = scene.create_view(&Default::default());
    let filtered_view = filtered.create_view(&Default::default());

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("scene"),
        source: wgpu::ShaderSource::Wgsl(SCENE.into()),
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("scene"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::TextureFormat::Rgba8Unorm.into())],
        }),
        multiview_mask: None,
        cache: None,
    });
    let frame_uniform = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("frame"),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let frame_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("frame"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: frame_uniform.as_entire_binding() }],
    });

    // 3. wgpu-cnn: pipelines built once, bound once to our two textures (the assignment's k1 on
    //    each of R, G and B).
    let conv = Conv3x3Texture::new(&device)?;
    let filter = conv.prepare(&device, &scene_view, &filtered_view, &Kernel3x3::K1, TextureChannels::All)?;

    // 4. The frame loop: update, draw, filter, submit.
    for frame in 0..FRAMES {
        let angle = frame as f32 * 0.3;
        queue.write_buffer(&frame_uniform, 0, bytemuck::cast_slice(&[angle, 0.0, 0.0, 0.0]));
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frame") });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("scene"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &scene_view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color { r: 0.05, g: 0.05, b: 0.1, a: 1.0 }),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &frame_bind_group, &[]);
            pass.draw(0..3, 0..1);
        }
        filter.encode(&mut encoder); // the library's one line per frame
        queue.submit([encoder.finish()]);

        // 5. Check one frame: both textures back, the CPU reference on the scene.
        if frame == CHECKED_FRAME {
            let drawn = read_rgba(&device, &queue, &scene)?;
            let expected = texture::reference(&drawn, SIZE.0, SIZE.1, &Kernel3x3::K1, TextureChannels::All)?;
            let got = read_rgba(&device, &queue, &filtered)?;
            if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
                return Err(
                    format!("frame {frame}: byte {i} is {} on the GPU, {} on the CPU", got[i], expected[i]).into()
                );
            }
            let lit = drawn.chunks(4).filter(|p| p[0] > 128 || p[1] > 128 || p[2] > 128).count();
            println!("frame {frame}: {lit} pixels of triangle; the filtered frame equals the CPU reference");
        }
    }
    println!("{FRAMES} frames rendered and filtered");
    Ok(())
}

/// Our own texture readback: rows padded to 256 bytes in the staging buffer, unpadded here.
fn read_rgba(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let row = 4 * texture.width();
    let padded = row.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(padded * texture.height()),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &staging,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(padded), rows_per_image: None },
        },
        texture.size(),
    );
    queue.submit([encoder.finish()]);
    let (sender, receiver) = std::sync::mpsc::channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely())?;
    receiver.recv()??;
    let bytes: Vec<u8> = staging
        .slice(..)
        .get_mapped_range()?
        .chunks(padded as usize)
        .flat_map(|r| &r[..row as usize])
        .copied()
        .collect();
    staging.unmap();
    Ok(bytes)
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
    fn a_rendered_frame_filtered_in_the_frame_loop_matches_the_cpu() {
        if std::env::var(wgpu_cnn::selftest::SKIP_GPU_TESTS).is_ok_and(|v| v == "1") {
            eprintln!("WGPU_CNN_SKIP_GPU_TESTS=1: skipping");
            return;
        }
        super::run().unwrap();
    }
}
