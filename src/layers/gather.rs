//! Batch assembly on the GPU: the dataset is uploaded once as u8 (4× smaller than f32), and each
//! step gathers its rows through the epoch's order, scaling pixels to [0, 1] as Keras' `x / 255`.
//!
//! # Shapes
//! images `[rows, sample_len]` u8, labels `[rows]`, order `[positions]` of row indices,
//! x `[N, sample_len]` f32, batch labels `[N]` u32.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu;
use crate::gpu::uniform_buffer;
use crate::kernel::{shader_module, ComputeKernel, Dispatch};
use crate::shaders;

/// Mirror of `GatherShape` in `shaders/gather.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct GatherShape {
    pub batch: u32,
    pub sample_len: u32,
    pub split_row: u32,
    pub _pad: u32,
}

/// CPU reference: the rows `batch_order` (the batch's slice of the epoch's order).
pub fn gather(
    x: &mut [f32],
    batch_labels: &mut [u32],
    images: &[u8],
    labels: &[u8],
    batch_order: &[u32],
    sample_len: usize,
) {
    for (n, &row) in batch_order.iter().enumerate() {
        let row = row as usize;
        for (out, &byte) in x[n * sample_len..][..sample_len].iter_mut().zip(&images[row * sample_len..][..sample_len])
        {
            *out = f32::from(byte) / 255.0;
        }
        batch_labels[n] = u32::from(labels[row]);
    }
}

/// A dataset resident on the GPU: u8 images in at most two bindings, u32 labels.
#[derive(Debug)]
pub struct GpuDataset {
    pub images_low: wgpu::Buffer,
    /// Rows `split_row..`; the same buffer as `images_low` when everything fits one binding.
    pub images_high: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub rows: usize,
    pub sample_len: usize,
    pub split_row: usize,
}

impl GpuDataset {
    /// Uploads `images` (`rows × sample_len` bytes, `sample_len` a multiple of 4) and `labels`.
    pub fn upload(device: &wgpu::Device, name: &str, images: &[u8], labels: &[u8], sample_len: usize) -> Result<Self> {
        let rows = labels.len();
        if !sample_len.is_multiple_of(4) || images.len() != rows * sample_len {
            return Err(Error::invalid(format!(
                "{name}: {} image bytes for {rows} labels of {sample_len}-byte samples",
                images.len()
            )));
        }
        let max_binding = device.limits().max_storage_buffer_binding_size;
        let rows_per_binding = (max_binding as usize / sample_len).max(1);
        if rows > 2 * rows_per_binding {
            return Err(Error::TooLarge {
                what: format!("{name} ({rows} images)"),
                needed: images.len() as u64,
                allowed: 2 * max_binding,
                hint: String::from(" in two bindings: train on fewer images (--train-size)"),
            });
        }
        let split_row = rows.min(rows_per_binding);
        let images_low = gpu::upload(
            device,
            &format!("{name} images"),
            &images[..split_row * sample_len],
            wgpu::BufferUsages::empty(),
        )?;
        let images_high = if split_row < rows {
            gpu::upload(
                device,
                &format!("{name} images (high)"),
                &images[split_row * sample_len..],
                wgpu::BufferUsages::empty(),
            )?
        } else {
            images_low.clone()
        };
        let labels32: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
        let labels = gpu::upload(
            device,
            &format!("{name} labels"),
            bytemuck::cast_slice(&labels32),
            wgpu::BufferUsages::empty(),
        )?;
        Ok(GpuDataset { images_low, images_high, labels, rows, sample_len, split_row })
    }
}

/// The pipeline of `shaders/gather.wgsl`.
#[derive(Clone, Debug)]
pub struct Gather {
    gather: ComputeKernel,
}

/// The buffers the gather works on (see the binding table in the shader).
pub struct GatherBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub data: &'a GpuDataset,
    /// u32 dataset row of each position of the epoch.
    pub order: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub batch_labels: &'a wgpu::Buffer,
}

/// Gather bound to a dataset, an order buffer and the batch buffers.
#[derive(Debug)]
pub struct GatherPass {
    _shape_buffer: wgpu::Buffer,
    gather: Dispatch,
}

impl Gather {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let module = shader_module(device, "gather.wgsl", shaders::GATHER)?;
        Ok(Gather { gather: ComputeKernel::new(device, &module, "gather")? })
    }

    /// Binds `b.data` for batches of up to `batch` rows into `b.x` and `b.batch_labels`.
    pub fn bind(&self, device: &wgpu::Device, batch: usize, b: &GatherBuffers<'_>) -> GatherPass {
        let shape = GatherShape {
            batch: batch as u32,
            sample_len: b.data.sample_len as u32,
            split_row: b.data.split_row as u32,
            _pad: 0,
        };
        let shape_buffer = uniform_buffer(device, "gather shape", &shape);
        // One invocation per u32 word of the batch's images (four u8 pixels).
        let words = u64::from(shape.batch) * u64::from(shape.sample_len / 4);
        let gather = Dispatch::covering(
            device,
            &self.gather,
            &[
                (0, b.step),
                (1, &shape_buffer),
                (2, &b.data.images_low),
                (3, &b.data.images_high),
                (4, &b.data.labels),
                (5, b.order),
                (6, b.x),
                (7, b.batch_labels),
            ],
            words,
        );
        GatherPass { _shape_buffer: shape_buffer, gather }
    }
}

impl GatherPass {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.gather.record(pass);
    }
}
