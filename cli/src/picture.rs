//! Images in and out: decoding a file into R, G, B planes, and writing a grid of tiles (the
//! assignment's 2×3 figure) as PNG or JPEG.

use std::io::Cursor;
use std::path::Path;

use wgpu_cnn::error::{Error, Result};
use wgpu_cnn::filter::Plane;
use wgpu_cnn::io::write_atomic;

/// The default demo image (`assets/chelsea.png`, CC0), embedded so the demo needs no files.
pub const DEMO_IMAGE: &[u8] = include_bytes!("../../assets/chelsea.png");

/// Decodes an image file into its R, G and B planes (greyscale images give three equal planes;
/// alpha is dropped).
pub fn load_rgb(path: &Path) -> Result<[Plane; 3]> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    decode_rgb(&bytes).map_err(|message| Error::Image { path: path.to_path_buf(), message })
}

/// Decodes an in-memory image (any format compiled in: PNG, JPEG) into R, G, B planes.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<[Plane; 3], String> {
    let reader =
        image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not a PNG or JPEG image (unrecognised file contents)".to_string());
    }
    let decoded = reader.decode().map_err(|e| format!("not a valid image: {e}"))?;
    let (width, height) = (decoded.width(), decoded.height());
    if width == 0 || height == 0 {
        return Err(format!("the image is empty ({width}×{height} pixels)"));
    }
    let rgb = decoded.into_rgb8();
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

/// Decodes an image file and resizes it to `width × height` (bilinear), as NHWC RGB bytes: the
/// input of `wgpu-cnn predict`.
pub fn load_resized(path: &Path, width: u32, height: u32) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::io(path, source))?;
    let decoded = image::load_from_memory(&bytes)
        .map_err(|e| Error::Image { path: path.to_path_buf(), message: format!("not a valid image: {e}") })?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(Error::Image { path: path.to_path_buf(), message: "the image is empty".to_string() });
    }
    let resized = image::imageops::resize(&decoded.into_rgb8(), width, height, image::imageops::FilterType::Triangle);
    Ok(resized.into_raw())
}

/// One cell of a figure: a grey plane, or three planes shown in colour.
#[derive(Clone, Debug)]
pub enum Tile {
    Gray(Plane),
    Rgb([Plane; 3]),
}

impl Tile {
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

/// Lays `rows` of tiles out on a white canvas and writes it to `path`; the format follows the
/// extension (`.png`, `.jpg`/`.jpeg`). The file is written atomically.
pub fn save_grid(path: &Path, rows: &[Vec<Tile>]) -> Result<()> {
    let format = output_format(path)?;
    let cell_w = rows.iter().flatten().map(|t| t.size().0).max().unwrap_or(1);
    let cell_h = rows.iter().flatten().map(|t| t.size().1).max().unwrap_or(1);
    let columns = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let width = GAP + columns * (cell_w + GAP);
    let height = GAP + rows.len() as u32 * (cell_h + GAP);
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (row, tiles) in rows.iter().enumerate() {
        for (column, tile) in tiles.iter().enumerate() {
            let (w, h) = tile.size();
            let (x0, y0) = (GAP + column as u32 * (cell_w + GAP), GAP + row as u32 * (cell_h + GAP));
            for y in 0..h {
                for x in 0..w {
                    canvas.put_pixel(x0 + x, y0 + y, image::Rgb(tile.rgb_at(y as usize, x as usize)));
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
    write_atomic(path, &bytes)
}
