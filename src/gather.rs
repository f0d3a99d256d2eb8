//! Batch assembly on the GPU: the dataset is uploaded once as u8 (4× smaller than f32), and each
//! step gathers its rows through the epoch's order, scaling pixels to [0, 1] as Keras' `x / 255`.
//!
//! # Shapes
//! images `[rows, sample_len]` u8, labels `[rows]`, order `[positions]` of row indices,
//! x `[N, sample_len]` f32, batch labels `[N]` u32.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{self, uniform_buffer, GpuContext};
use crate::kernel::{arg, floats, read, read_write, uniform, Dispatch, EntryPoint, Grid, Kernels, Shader};
use crate::layers::StepParams;
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

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
                hint: String::from(" in two bindings: use fewer images"),
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

/// The binding table of `shaders/gather.wgsl`.
pub static SHADER: Shader = Shader {
    name: "gather",
    file: "gather.wgsl",
    source: shader_source!("common.wgsl", "gather.wgsl"),
    own: shader_own!("gather.wgsl"),
    entry_points: &[EntryPoint {
        name: "gather",
        bindings: &[
            uniform(0, "step"),
            uniform(1, "shape"),
            read(2, "images_low"),
            read(3, "images_high"),
            read(4, "labels"),
            read(5, "order"),
            read_write(6, "x"),
            read_write(7, "batch_labels"),
        ],
    }],
};

/// The buffers the gather works on (see the binding table in the shader).
pub struct GatherBuffers<'a> {
    pub step: &'a wgpu::Buffer,
    pub data: &'a GpuDataset,
    /// u32 dataset row of each position of the epoch.
    pub order: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub batch_labels: &'a wgpu::Buffer,
}

/// Binds `b.data` for batches of up to `batch` rows into `b.x` and `b.batch_labels`: the dispatch,
/// and the uniform it made.
pub fn bind(kernels: &Kernels, batch: usize, b: &GatherBuffers<'_>) -> Result<(Dispatch, wgpu::Buffer)> {
    let device = kernels.device();
    let shape = GatherShape {
        batch: batch as u32,
        sample_len: b.data.sample_len as u32,
        split_row: b.data.split_row as u32,
        _pad: 0,
    };
    let shape_buffer = uniform_buffer(device, "gather shape", &shape);
    // One invocation per u32 word of the batch's images (four u8 pixels).
    let words = u64::from(shape.batch) * u64::from(shape.sample_len / 4);
    let args = [
        arg("step", b.step, 32),
        arg("shape", &shape_buffer, 16),
        // A batch's rows of the dataset, from either half.
        arg("images_low", &b.data.images_low, 4).moving(u64::from(shape.batch) * u64::from(shape.sample_len)),
        arg("images_high", &b.data.images_high, 4).moving(0),
        arg("labels", &b.data.labels, 4 * b.data.rows as u64).moving(floats(batch)),
        arg("order", b.order, 4).moving(floats(batch)),
        arg("x", b.x, floats(batch * b.data.sample_len)),
        arg("batch_labels", b.batch_labels, floats(batch)),
    ];
    let dispatch = Dispatch::new(device, &kernels.get(&SHADER, "gather", &[])?, &args, Grid::Invocations(words))?;
    Ok((dispatch, shape_buffer))
}

/// Batch assembly through the order, across two image bindings.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = crate::rng::Rng::new(15);
    let (rows, sample_len) = (9, 12);
    let images: Vec<u8> = (0..rows * sample_len).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..rows as u8).map(|r| r % 10).collect();
    let order: Vec<u32> = vec![8, 2, 5, 0, 7, 1, 3, 6, 4];
    let (batch, used, start) = (4, 3, 5);
    let mut data = GpuDataset::upload(&ctx.device, "selftest", &images, &labels, sample_len)?;
    // Force the two-binding path: rows 0..4 in one buffer, 4.. in another.
    data.split_row = 4;
    data.images_low = ctx.upload("low", &images[..4 * sample_len], wgpu::BufferUsages::empty())?;
    data.images_high = ctx.upload("high", &images[4 * sample_len..], wgpu::BufferUsages::empty())?;

    let mut x = vec![0.0; batch * sample_len];
    let mut batch_labels = vec![0u32; batch];
    gather(&mut x, &mut batch_labels, &images, &labels, &order[start..start + used], sample_len);

    let step = uniform_buffer(
        &ctx.device,
        "selftest step",
        &StepParams { batch_size: used as u32, batch_start: start as u32, ..Default::default() },
    );
    let order_b = ctx.upload("order", bytemuck::cast_slice(&order), wgpu::BufferUsages::empty())?;
    let (x_b, labels_b) = (selftest::sentinel(ctx, x.len())?, selftest::sentinel(ctx, batch)?);
    let buffers = GatherBuffers { step: &step, data: &data, order: &order_b, x: &x_b, batch_labels: &labels_b };
    let (dispatch, _shape) = bind(&Kernels::new(&ctx.device), batch, &buffers)?;
    selftest::run(ctx, |pass| dispatch.record(pass));
    let gpu_labels: Vec<f32> =
        bytemuck::cast_slice::<u8, u32>(&ctx.read_buffer(&labels_b)?)[..used].iter().map(|&l| l as f32).collect();
    let cpu_labels: Vec<f32> = batch_labels[..used].iter().map(|&l| l as f32).collect();
    Ok(vec![
        Check::compare(
            "gather: images scaled to [0, 1]".into(),
            &selftest::read(ctx, &x_b, used * sample_len)?,
            &x[..used * sample_len],
            0.0,
            1e-6,
        ),
        Check::compare("gather: labels".into(), &gpu_labels, &cpu_labels, 0.0, 0.0),
    ])
}
