//! Images in and out: decoding a file into R, G, B planes, and writing a grid of tiles (the
//! assignment's 2×3 figure) as PNG or JPEG.

use std::io::Cursor;
use std::path::Path;

use wgpu_cnn::error::{Error, Result};
use wgpu_cnn::filter::Plane;
use wgpu_cnn::io::write_atomic;

/// The default demo image (`assets/chelsea.png`, CC0), embedded so the demo needs no files.
pub const DEMO_IMAGE: &[u8] = include_bytes!("../../assets/chelsea.png");

/// The most pixels an input image may have by default (64 Mpx, 8192 × 8192): `convolve` holds
/// about 6 bytes a pixel at its peak (the decoded image, the planes, the results), so this bounds
/// its memory (400 MB at the limit).
pub const DEFAULT_MAX_MEGAPIXELS: u64 = 64;

/// Decodes an image file into its R, G and B planes (greyscale images give three equal planes;
/// alpha is dropped), refusing images of more than `max_megapixels` before decoding them.
pub fn load_rgb(path: &Path, max_megapixels: u64) -> Result<[Plane; 3]> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    decode_rgb(&bytes, max_megapixels).map_err(|message| Error::Image { path: path.to_path_buf(), message })
}

/// Decodes an in-memory image (any format compiled in: PNG, JPEG) into R, G, B planes.
pub fn decode_rgb(bytes: &[u8], max_megapixels: u64) -> std::result::Result<[Plane; 3], String> {
    let rgb = decode(bytes, max_megapixels)?.into_rgb8();
    let (width, height) = rgb.dimensions();
    let mut planes: [Vec<u8>; 3] = Default::default();
    for plane in &mut planes {
        plane.reserve_exact(width as usize * height as usize);
    }
    for pixel in rgb.pixels() {
        for (plane, &value) in planes.iter_mut().zip(&pixel.0) {
            plane.push(value);
        }
    }
    let [r, g, b] = planes;
    let plane = |p| Plane::new(width, height, p).map_err(|e| e.to_string());
    Ok([plane(r)?, plane(g)?, plane(b)?])
}

/// Decodes a PNG or JPEG whose header says at most `max_megapixels` million pixels, with the
/// decoder's own allocations bounded to match (a header that lies cannot make it allocate more),
/// and refuses a truncated JPEG (which decoders otherwise fill with grey).
fn decode(bytes: &[u8], max_megapixels: u64) -> std::result::Result<image::DynamicImage, String> {
    use image::ImageDecoder;
    let mut reader =
        image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read: {e}"))?;
    let format = reader.format().ok_or("not a PNG or JPEG image (unrecognised file contents)")?;
    // The decoder reads the header only; its allocations are limited below, from what it says.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| format!("not a valid image: {e}"))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(format!("the image is empty ({width}×{height} pixels)"));
    }
    let max_pixels = max_megapixels.saturating_mul(1_000_000);
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(format!(
            "the image is {width}×{height} pixels ({} megapixels), more than the limit of {max_megapixels}; \
             shrink it, or raise the limit (--max-megapixels)",
            u64::from(width) * u64::from(height) / 1_000_000
        ));
    }
    // Neither format packs more than about 1,000 decoded bytes into one (deflate's limit is
    // 1,032; PNG's 1-bit pixels decode to 8 bits): a header claiming more than that lies, and
    // is refused before the decoder allocates what it claims.
    let decoded_bytes = decoder.total_bytes();
    let plausible = (bytes.len() as u64).saturating_mul(16_384).saturating_add(1 << 20);
    if decoded_bytes > plausible {
        return Err(format!(
            "the header says {width}×{height} pixels ({decoded_bytes} bytes decoded), more than {} bytes of \
             image data can hold: the file is truncated or damaged",
            bytes.len()
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // 16-bit RGBA is the widest pixel the formats decode to, plus the decoder's working rows.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder.set_limits(limits).map_err(|e| format!("not a valid image: {e}"))?;
    let decoded = image::DynamicImage::from_decoder(decoder).map_err(|e| format!("not a valid image: {e}"))?;
    if format == image::ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    Ok(decoded)
}

/// A JPEG cut short decodes "successfully" with the missing rows grey. zune-jpeg's strict mode
/// finds that, but also refuses quirky files that viewers show: a file is truncated when the
/// strict decoder fails *and* the file does not end with the end-of-image marker.
fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut strict = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    match strict.decode() {
        Err(e) if !bytes.ends_with(&[0xFF, 0xD9]) => Err(format!(
            "a truncated JPEG ({e}, and no end-of-image marker after {} bytes): the file was cut short; \
             copy or download it again",
            bytes.len()
        )),
        _ => Ok(()),
    }
}

/// Decodes an image file and resizes it to `width × height` (bilinear), as NHWC RGB bytes: the
/// input of `wgpu-cnn predict`.
pub fn load_resized(path: &Path, width: u32, height: u32, max_megapixels: u64) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    let decoded =
        decode(&bytes, max_megapixels).map_err(|message| Error::Image { path: path.to_path_buf(), message })?;
    let resized = image::imageops::resize(&decoded.into_rgb8(), width, height, image::imageops::FilterType::Triangle);
    Ok(resized.into_raw())
}

/// One cell of a figure: a grey plane, or three planes shown in colour.
#[derive(Clone, Copy, Debug)]
pub enum Tile<'a> {
    Gray(&'a Plane),
    Rgb([&'a Plane; 3]),
}

impl Tile<'_> {
    fn size(&self) -> (u32, u32) {
        let p = match self {
            Tile::Gray(p) => p,
            Tile::Rgb([p, _, _]) => p,
        };
        (p.width, p.height)
    }

    fn rgb_at(&self, y: usize, x: usize) -> [u8; 3] {
        match self {
            Tile::Gray(p) => [p.get(y, x); 3],
            Tile::Rgb([r, g, b]) => [r.get(y, x), g.get(y, x), b.get(y, x)],
        }
    }

    /// The mean colour of the `step × step` block at (`y`, `x`), clipped at the edges: one
    /// pixel of the tile shrunk by `step`.
    fn block_mean(&self, y: usize, x: usize, step: usize) -> [u8; 3] {
        let (w, h) = self.size();
        let (y1, x1) = ((y + step).min(h as usize), (x + step).min(w as usize));
        let mut sum = [0u64; 3];
        for yy in y..y1 {
            for xx in x..x1 {
                sum.iter_mut().zip(self.rgb_at(yy, xx)).for_each(|(s, v)| *s += u64::from(v));
            }
        }
        let n = ((y1 - y) * (x1 - x)) as u64;
        sum.map(|s| ((s + n / 2) / n) as u8)
    }
}

/// The format a figure at `path` is written in, from its extension; fails for anything but PNG
/// and JPEG (call it before long work, so a typo does not cost the run).
pub fn output_format(path: &Path) -> Result<image::ImageFormat> {
    image::ImageFormat::from_path(path)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: unsupported output format; use a .png, .jpg or .jpeg file name",
                path.display()
            ))
        })
}

/// Pixels of white between tiles and around the figure.
const GAP: u32 = 8;

/// The longest side a figure's cell may have: larger tiles are shown shrunk by a whole factor
/// (block means), so the canvas stays under 80 Mpx whatever the image (matplotlib's figure does
/// the same at a fixed size).
pub const MAX_CELL_SIDE: u32 = 2048;

/// Lays `rows` of tiles out on a white canvas and writes it to `path`; the format follows the
/// extension (`.png`, `.jpg`/`.jpeg`). Tiles longer than [`MAX_CELL_SIDE`] are shrunk by the
/// returned whole factor (1: full size). The file is written atomically.
pub fn save_grid(path: &Path, rows: &[Vec<Tile>]) -> Result<u32> {
    let format = output_format(path)?;
    let longest = rows.iter().flatten().map(|t| t.size().0.max(t.size().1)).max().unwrap_or(1);
    let step = longest.div_ceil(MAX_CELL_SIDE).max(1);
    let shrunk = |(w, h): (u32, u32)| (w.div_ceil(step), h.div_ceil(step));
    let cell_w = rows.iter().flatten().map(|t| shrunk(t.size()).0).max().unwrap_or(1);
    let cell_h = rows.iter().flatten().map(|t| shrunk(t.size()).1).max().unwrap_or(1);
    let columns = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let width = GAP + columns * (cell_w + GAP);
    let height = GAP + rows.len() as u32 * (cell_h + GAP);
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (row, tiles) in rows.iter().enumerate() {
        for (column, tile) in tiles.iter().enumerate() {
            let (w, h) = shrunk(tile.size());
            let (x0, y0) = (GAP + column as u32 * (cell_w + GAP), GAP + row as u32 * (cell_h + GAP));
            for y in 0..h {
                for x in 0..w {
                    let (ys, xs) = ((y * step) as usize, (x * step) as usize);
                    let pixel = match step {
                        1 => tile.rgb_at(ys, xs),
                        _ => tile.block_mean(ys, xs, step as usize),
                    };
                    canvas.put_pixel(x0 + x, y0 + y, image::Rgb(pixel));
                }
            }
        }
    }
    let mut bytes = Vec::new();
    let encoded = match format {
        image::ImageFormat::Jpeg => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92).encode_image(&canvas)
        }
        _ => canvas.write_to(&mut Cursor::new(&mut bytes), format),
    };
    encoded.map_err(|e| Error::Image { path: path.to_path_buf(), message: format!("cannot encode: {e}") })?;
    write_atomic(path, &bytes)?;
    Ok(step)
}
