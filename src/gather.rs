//! Batch assembly on the GPU: the dataset is uploaded once as u8 (4× smaller than f32), and each
//! step reads its rows through the epoch's order, scaling pixels to [0, 1] as Keras' `x / 255`
//! (`shaders/dataset.wgsl`). The gather copies them into an f32 batch for the first layer; a
//! first convolution reads them itself instead ([`BatchSource`] bound into it), which saves the
//! gather's dispatch and the batch's passes through memory.
//!
//! # Shapes
//! images `[rows, sample_len]` u8, labels `[rows]`, order `[positions]` of row indices,
//! x `[N, sample_len]` f32, batch labels `[N]` u32.

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::{self, uniform_buffer, GpuContext};
use crate::kernel::{
    arg, extended, floats, read, read_write, uniform, Arg, Binding, Dispatch, EntryPoint, Grid, Kernels, Shader,
};
use crate::layers::StepParams;
use crate::selftest::{self, Check};
use crate::{shader_own, shader_source};

/// Mirror of `DatasetShape` in `shaders/dataset.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct DatasetShape {
    /// u32 words per row.
    pub sample_words: u32,
    /// The first row in `images_high`.
    pub split_row: u32,
    pub _pad: [u32; 2],
}

/// A byte scaled to [0, 1] as `shaders/dataset.wgsl` computes it, without a division: the float
/// just above `v·65793 / 2²⁴` (exact), which is `v / 255` correctly rounded (the unit test checks
/// every byte).
pub fn pixel_value(v: u8) -> f32 {
    let below = (u32::from(v) * 65793) as f32 * (1.0 / 16_777_216.0);
    if v == 0 {
        0.0
    } else {
        f32::from_bits(below.to_bits() + 1)
    }
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

/// A dataset resident on the GPU: u8 images in at most two bindings, u32 labels, and the
/// uniform that says where a row is.
#[derive(Debug)]
pub struct GpuDataset {
    pub images_low: wgpu::Buffer,
    /// Rows `split_row..`; the same buffer as `images_low` when everything fits one binding.
    pub images_high: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    /// [`DatasetShape`].
    pub shape: wgpu::Buffer,
    pub rows: usize,
    pub sample_len: usize,
    pub split_row: usize,
}

impl GpuDataset {
    /// Uploads `images` (`rows × sample_len` bytes, `sample_len` a multiple of 4) and `labels`.
    pub fn upload(device: &wgpu::Device, name: &str, images: &[u8], labels: &[u8], sample_len: usize) -> Result<Self> {
        let max_binding = device.limits().max_storage_buffer_binding_size;
        Self::upload_split(device, name, images, labels, sample_len, (max_binding as usize / sample_len.max(1)).max(1))
    }

    /// As [`GpuDataset::upload`], with at most `rows_per_binding` rows in each of the two image
    /// bindings.
    pub(crate) fn upload_split(
        device: &wgpu::Device,
        name: &str,
        images: &[u8],
        labels: &[u8],
        sample_len: usize,
        rows_per_binding: usize,
    ) -> Result<Self> {
        let rows = labels.len();
        if sample_len == 0 || !sample_len.is_multiple_of(4) || images.len() != rows * sample_len {
            return Err(Error::invalid(format!(
                "{name}: {} image bytes for {rows} labels of {sample_len}-byte samples",
                images.len()
            )));
        }
        if rows > 2 * rows_per_binding {
            return Err(Error::TooLarge {
                what: format!("{name} ({rows} images)"),
                needed: images.len() as u64,
                allowed: 2 * device.limits().max_storage_buffer_binding_size,
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
        let shape = DatasetShape { sample_words: (sample_len / 4) as u32, split_row: split_row as u32, _pad: [0; 2] };
        let shape = uniform_buffer(device, &format!("{name} shape"), &shape);
        Ok(GpuDataset { images_low, images_high, labels, shape, rows, sample_len, split_row })
    }
}

/// The override constants of `shaders/dataset.wgsl`, which every kernel that includes it is
/// given ([`BatchSource::constants`]).
pub const OVERRIDES: [&str; 1] = ["ONE_BINDING"];

/// The bindings of `shaders/dataset.wgsl` that read a batch's images.
pub const IMAGE_BINDINGS: [Binding; 4] =
    [read(16, "images_low"), read(17, "images_high"), read(19, "order"), uniform(21, "dataset")];

/// The bindings of `shaders/dataset.wgsl` that copy a batch's labels.
pub const LABEL_BINDINGS: [Binding; 2] = [read(18, "labels"), read_write(20, "batch_labels")];

/// A dataset read one batch at a time through the epoch's order: what `shaders/dataset.wgsl`
/// binds, in the gather or in a first layer that reads the dataset itself.
#[derive(Clone, Copy)]
pub struct BatchSource<'a> {
    pub data: &'a GpuDataset,
    /// u32 dataset row of each position of the epoch.
    pub order: &'a wgpu::Buffer,
    /// Where the batch's labels go, for the head.
    pub batch_labels: &'a wgpu::Buffer,
}

impl<'a> BatchSource<'a> {
    /// The values of [`OVERRIDES`] for this dataset.
    pub fn constants(&self) -> [(&'static str, f64); 1] {
        [(OVERRIDES[0], f64::from(u8::from(self.data.split_row == self.data.rows)))]
    }

    /// [`IMAGE_BINDINGS`] for batches of up to `batch` rows.
    pub fn image_args(&self, batch: usize) -> [Arg<'a>; 4] {
        [
            // A batch's rows of the dataset, from either half.
            arg("images_low", &self.data.images_low, 4).moving((batch * self.data.sample_len) as u64),
            arg("images_high", &self.data.images_high, 4).moving(0),
            arg("order", self.order, 4).moving(floats(batch)),
            arg("dataset", &self.data.shape, 16),
        ]
    }

    /// [`LABEL_BINDINGS`] for batches of up to `batch` rows.
    pub fn label_args(&self, batch: usize) -> [Arg<'a>; 2] {
        [
            arg("labels", &self.data.labels, 4 * self.data.rows as u64).moving(floats(batch)),
            arg("batch_labels", self.batch_labels, floats(batch)),
        ]
    }
}

/// The binding table of `shaders/gather.wgsl`.
pub static SHADER: Shader = Shader {
    name: "gather",
    file: "gather.wgsl",
    source: shader_source!("common.wgsl", "dataset.wgsl", "gather.wgsl"),
    own: shader_own!("gather.wgsl"),
    entry_points: &[EntryPoint {
        name: "gather",
        bindings: &extended::<2, 6, 8>(
            [uniform(0, "step"), read_write(1, "x")],
            extended::<4, 2, 6>(IMAGE_BINDINGS, LABEL_BINDINGS),
        ),
    }],
};

/// Binds `source` for batches of up to `batch` rows into `x` and the source's batch labels.
pub fn bind(
    kernels: &Kernels,
    batch: usize,
    step: &wgpu::Buffer,
    source: &BatchSource<'_>,
    x: &wgpu::Buffer,
) -> Result<Dispatch> {
    let sample_len = source.data.sample_len;
    let mut args = vec![arg("step", step, 32), arg("x", x, floats(batch * sample_len))];
    args.extend(source.image_args(batch));
    args.extend(source.label_args(batch));
    // One invocation per u32 word of the batch's images (four u8 pixels).
    let words = (batch * sample_len / 4) as u64;
    let kernel = kernels.get(&SHADER, "gather", &source.constants())?;
    Dispatch::new(kernels.device(), &kernel, &args, Grid::Invocations(words))
}

/// A dataset on the GPU whose batch positions `start..` hold the samples of `x` (each value a
/// byte / 255) through an order that reverses the rows, split across both image bindings: what
/// a check binds a layer that reads the dataset to. `labels` are those the batch must get.
pub(crate) struct Shuffled {
    pub data: GpuDataset,
    pub order: wgpu::Buffer,
    pub start: u32,
    pub labels: Vec<u32>,
}

/// The [`Shuffled`] dataset of `x`'s `samples`.
pub(crate) fn shuffled(ctx: &GpuContext, x: &[f32], samples: usize) -> Result<Shuffled> {
    let sample_len = x.len() / samples.max(1);
    let (start, rows) = (2, samples + 3);
    let order: Vec<u32> = (0..rows as u32).rev().collect();
    let mut images = vec![0u8; rows * sample_len];
    for (n, sample) in x.chunks_exact(sample_len).enumerate() {
        let row = order[start + n] as usize;
        for (byte, &v) in images[row * sample_len..][..sample_len].iter_mut().zip(sample) {
            *byte = (v * 255.0).round() as u8;
        }
    }
    let labels: Vec<u8> = (0..rows).map(|r| (r * 7 % 10) as u8).collect();
    let data = GpuDataset::upload_split(&ctx.device, "selftest dataset", &images, &labels, sample_len, rows / 2 + 1)?;
    let labels = (0..samples).map(|n| u32::from(labels[order[start + n] as usize])).collect();
    let order = ctx.upload("selftest order", bytemuck::cast_slice(&order), wgpu::BufferUsages::empty())?;
    Ok(Shuffled { data, order, start: start as u32, labels })
}

/// Batch assembly through the order, across two image bindings.
pub fn checks(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = crate::rng::Rng::new(15);
    let (rows, sample_len) = (9, 12);
    let images: Vec<u8> = (0..rows * sample_len).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..rows as u8).map(|r| r % 10).collect();
    let order: Vec<u32> = vec![8, 2, 5, 0, 7, 1, 3, 6, 4];
    let (batch, used, start) = (4, 3, 5);
    // The two-binding path: rows 0..5 in one buffer, 5.. in another.
    let data = GpuDataset::upload_split(&ctx.device, "selftest", &images, &labels, sample_len, 5)?;

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
    let source = BatchSource { data: &data, order: &order_b, batch_labels: &labels_b };
    let dispatch = bind(&Kernels::new(&ctx.device), batch, &step, &source, &x_b)?;
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

#[cfg(test)]
mod tests {
    use super::pixel_value;

    #[test]
    fn the_shaders_pixel_value_is_the_division_by_255_for_every_byte() {
        for v in 0..=255u8 {
            assert_eq!(pixel_value(v).to_bits(), (f32::from(v) / 255.0).to_bits(), "{v}");
        }
    }
}
