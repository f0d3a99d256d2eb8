//! CIFAR-10 (Krizhevsky, 2009): the reader for the official *binary* format, the real subset
//! embedded in the crate, and the Keras-style data handling around training (validation split,
//! per-epoch shuffle, `x / 255.0` scaling, one-hot labels).
//!
//! It is **not** a general dataset library: no Python-pickle version of CIFAR-10, no CIFAR-100,
//! no augmentation.
//!
//! # Layouts
//! - **File** (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`): records of
//!   [`RECORD_BYTES`] = 1 label byte (0..=9) + [`IMAGE_BYTES`] pixel bytes, the pixels *planar*
//!   CHW: 1024 red, then 1024 green, then 1024 blue bytes, each plane 32×32 row-major. The number
//!   of records is taken from the file size (the official files hold 10,000; subsets fewer).
//!   `batches.meta.txt` holds the class names, one a line.
//! - **Memory** ([`Dataset::images`]): interleaved **NHWC** `u8`, converted once at load — channel
//!   `c` of pixel (`y`, `x`) of image `n` is at `n * 3072 + (y * 32 + x) * 3 + c`, the layout of
//!   Keras' `x_train` array of shape `(N, 32, 32, 3)`.
//!
//! # Keras semantics followed
//! - [`Dataset::split_validation`] is `model.fit(..., validation_split=f)`: the validation rows
//!   are the *last* `f` of the rows, taken *before* any shuffling, with
//!   `split_at = floor(len * (1 - f))` (Keras 3, `keras.utils.train_validation_split`).
//! - [`epoch_order`] is `shuffle=True`: the training rows are visited in a fresh seeded order
//!   every epoch; validation rows are never shuffled.
//! - [`Dataset::to_f32_nhwc`] is `x.astype("float32") / 255.0`, and [`Dataset::one_hot`] is
//!   `keras.utils.to_categorical(y, 10)`.

use std::borrow::Cow;
#[cfg(feature = "cifar-archive")]
use std::fs::File;
#[cfg(feature = "cifar-archive")]
use std::io::{self, Read};
use std::ops::Range;
#[cfg(feature = "cifar-archive")]
use std::path::Component;
use std::path::Path;

#[cfg(feature = "cifar-archive")]
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Image height in pixels.
pub const HEIGHT: usize = 32;
/// Image width in pixels.
pub const WIDTH: usize = 32;
/// Colour channels (R, G, B).
pub const CHANNELS: usize = 3;
/// Pixel bytes of one image: 32 × 32 × 3.
pub const IMAGE_BYTES: usize = 3072;
/// Bytes of one record in a batch file: the label byte, then the image.
pub const RECORD_BYTES: usize = 3073;
/// Number of classes; labels are `0..CLASSES`.
pub const CLASSES: usize = 10;
/// The class names in label order, as in the official `batches.meta.txt`.
pub const CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The batch files of the binary release: the five training files in order, then the test file.
const BATCH_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];
/// How many of [`BATCH_FILES`] are training files.
const TRAIN_FILE_COUNT: usize = 5;
/// The optional class-name file of the binary release.
const META_FILE: &str = "batches.meta.txt";
/// The folder the official archive unpacks to.
const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";
/// Size in bytes of the official `cifar-10-binary.tar.gz`.
#[cfg(feature = "cifar-archive")]
const OFFICIAL_ARCHIVE_BYTES: u64 = 170_052_171;
/// MD5 of the official `cifar-10-binary.tar.gz`, as published on the dataset page.
#[cfg(feature = "cifar-archive")]
const OFFICIAL_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Where to get the dataset, for error messages.
const HOW_TO_GET: &str = "get the binary version, cifar-10-binary.tar.gz (170,052,171 bytes), from \
     https://www.cs.toronto.edu/~kriz/cifar.html and pass the .tar.gz itself or the \
     cifar-10-batches-bin/ folder unpacked from it";

/// The most bytes [`load`] reads by default: the files a folder holds, or what an archive expands
/// to (every entry, wanted or not). The official release is 184,380,000 bytes of batches; this is
/// 2.9 times that (174,000 images). Everything read is held twice while it is converted, so the
/// limit bounds memory too; [`load_limited`] takes another.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 512 << 20;

// Compile-time check that the constants agree with each other.
const _: () = assert!(IMAGE_BYTES == HEIGHT * WIDTH * CHANNELS && RECORD_BYTES == 1 + IMAGE_BYTES);

/// Labelled images in memory.
///
/// # Shapes
/// `images`: `[N, H, W, C]` = `[len, 32, 32, 3]` `u8`, **NHWC** — channel `c` of pixel (`y`, `x`)
/// of image `n` is at `n * 3072 + (y * 32 + x) * 3 + c`, converted from the file's planar CHW at
/// load. `labels`: `[N]`, each in `0..10`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Pixels, `len * 3072` bytes, NHWC.
    pub images: Vec<u8>,
    /// One class index (`0..10`) per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 3072 NHWC bytes of image `i`. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The rows `rows` as a new dataset. Panics if the range is out of bounds.
    fn rows(&self, rows: Range<usize>) -> Dataset {
        Dataset {
            images: self.images[rows.start * IMAGE_BYTES..rows.end * IMAGE_BYTES].to_vec(),
            labels: self.labels[rows].to_vec(),
        }
    }

    /// The first `min(n, len)` rows, in order: the assignment's `x_train[:N]`, `y_train[:N]`.
    pub fn take_first(&self, n: usize) -> Dataset {
        self.rows(0..n.min(self.len()))
    }

    /// Keras `validation_split`: returns `(train, validation)` where validation is the **last**
    /// `fraction` of the rows, taken **before** any shuffling, and train the rows before it:
    /// `split_at = floor(len * (1 - fraction))`.
    ///
    /// `fraction == 0` gives an empty validation set. Errors unless `0 <= fraction < 1`, and, as
    /// Keras does, when a positive fraction would leave either side empty (for example 0.5 of a
    /// single row).
    pub fn split_validation(&self, fraction: f64) -> Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::invalid(format!(
                "validation split {fraction} is out of range: it must be at least 0 and less than 1 \
                 (0.1 keeps the last 10% of the training rows for validation)"
            )));
        }
        let len = self.len();
        let split_at = ((len as f64) * (1.0 - fraction)).floor() as usize;
        if fraction > 0.0 && (split_at == 0 || split_at == len) {
            return Err(Error::invalid(format!(
                "validation split {fraction} of {len} rows leaves {split_at} training and {} \
                 validation rows; use more rows or a different split (0 for none)",
                len - split_at
            )));
        }
        Ok((self.rows(0..split_at), self.rows(split_at..len)))
    }

    /// All rows of `parts`, in order.
    pub fn concat(parts: &[Dataset]) -> Dataset {
        Dataset {
            images: parts.iter().flat_map(|part| part.images.iter().copied()).collect(),
            labels: parts.iter().flat_map(|part| part.labels.iter().copied()).collect(),
        }
    }

    /// How many images each class has. Panics on a label ≥ 10 (which [`parse_batch`] never
    /// produces; only a hand-built `Dataset` can hold one).
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &label in &self.labels {
            counts[usize::from(label)] += 1;
        }
        counts
    }

    /// The most common label and its frequency, i.e. the accuracy of always predicting it — the
    /// score a model must beat to have learnt anything. Ties go to the smallest label; an empty
    /// dataset gives `(0, 0.0)`.
    pub fn majority_baseline(&self) -> (u8, f64) {
        if self.is_empty() {
            return (0, 0.0);
        }
        let counts = self.class_counts();
        // `max_by_key` keeps the last maximum, so scan in reverse to keep the smallest label.
        let (label, &count) = counts.iter().enumerate().rev().max_by_key(|&(_, count)| *count).expect("CLASSES > 0");
        (label as u8, count as f64 / self.len() as f64)
    }

    /// The images of `rows` as `f32` in `[0, 1]`, NHWC (`rows.len() * 3072` values): each byte
    /// `b` becomes `f32::from(b) / 255.0`, Keras' `x / 255.0`. Panics if the range is out of
    /// bounds.
    pub fn to_f32_nhwc(&self, rows: Range<usize>) -> Vec<f32> {
        self.images[rows.start * IMAGE_BYTES..rows.end * IMAGE_BYTES].iter().map(|&b| f32::from(b) / 255.0).collect()
    }

    /// The labels of `rows` one-hot encoded, `[rows.len(), 10]` row-major: Keras'
    /// `to_categorical(y, 10)`. Panics if the range is out of bounds or a label is ≥ 10.
    pub fn one_hot(&self, rows: Range<usize>) -> Vec<f32> {
        let labels = &self.labels[rows];
        let mut out = vec![0.0; labels.len() * CLASSES];
        for (row, &label) in labels.iter().enumerate() {
            assert!(usize::from(label) < CLASSES, "label {label} of row {row} is not a CIFAR-10 class");
            out[row * CLASSES + usize::from(label)] = 1.0;
        }
        out
    }
}

/// The whole dataset: the five training files concatenated in order, and the test file.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    /// `data_batch_1.bin` … `data_batch_5.bin`, concatenated in that order (unshuffled).
    pub train: Dataset,
    /// `test_batch.bin`.
    pub test: Dataset,
    /// The 10 class names in label order: from `batches.meta.txt` when present, else
    /// [`CLASS_NAMES`].
    pub class_names: Vec<String>,
    /// Where the data came from, for people: e.g. `"/data/cifar (5 training files, 4660 + 846
    /// images)"`.
    pub source: String,
}

/// Parses one batch file's bytes into a [`Dataset`], converting the pixels from planar CHW to
/// NHWC. `name` (a path or archive entry) is used in error messages.
///
/// Errors: an empty file; a size that is not a multiple of 3073 bytes (the message gives the size
/// and the remainder); a label above 9 (the message gives the record index and its byte offset).
pub fn parse_batch(bytes: &[u8], name: &str) -> Result<Dataset> {
    if bytes.is_empty() {
        return Err(Error::invalid(format!(
            "{name}: the file is empty (0 bytes); a CIFAR-10 batch holds records of {RECORD_BYTES} \
             bytes (1 label + {IMAGE_BYTES} pixels)"
        )));
    }
    let size = bytes.len();
    let (count, remainder) = (size / RECORD_BYTES, size % RECORD_BYTES);
    if remainder != 0 {
        return Err(Error::invalid(format!(
            "{name}: size {size} bytes is not a multiple of the {RECORD_BYTES}-byte CIFAR-10 record \
             ({count} records and {remainder} bytes left over); the file is truncated or not a \
             CIFAR-10 binary batch"
        )));
    }

    let labels: Vec<u8> = bytes.iter().step_by(RECORD_BYTES).copied().collect();
    if let Some(index) = labels.iter().position(|&label| usize::from(label) >= CLASSES) {
        return Err(Error::invalid(format!(
            "{name}: record {index} (byte offset {}) has label {}, but CIFAR-10 labels are 0..=9; \
             is this CIFAR-100 or not a CIFAR-10 binary batch?",
            index * RECORD_BYTES,
            labels[index]
        )));
    }

    // Planar CHW → interleaved HWC, record by record: pixel p = y * 32 + x of channel c is
    // byte 1 + c * 1024 + p of the record and byte p * 3 + c of the image.
    const PLANE: usize = HEIGHT * WIDTH;
    let mut images = vec![0u8; count * IMAGE_BYTES];
    images.chunks_exact_mut(IMAGE_BYTES).zip(bytes.chunks_exact(RECORD_BYTES)).for_each(|(image, record)| {
        let (red, rest) = record[1..].split_at(PLANE);
        let (green, blue) = rest.split_at(PLANE);
        for (p, pixel) in image.chunks_exact_mut(CHANNELS).enumerate() {
            pixel[0] = red[p];
            pixel[1] = green[p];
            pixel[2] = blue[p];
        }
    });
    Ok(Dataset { images, labels })
}

/// Parses `batches.meta.txt`: exactly 10 non-empty names, one a line (surrounding whitespace and
/// trailing blank lines, as in the official file, are ignored).
fn parse_class_names(bytes: &[u8], name: &str) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!("{name}: not UTF-8 text ({e}); it should hold the 10 class names, one a line"))
    })?;
    let mut names: Vec<&str> = text.lines().map(str::trim).collect();
    while names.last() == Some(&"") {
        names.pop();
    }
    if names.len() != CLASSES {
        return Err(Error::invalid(format!(
            "{name}: has {} lines, but it should hold the {CLASSES} class names, one a line",
            names.len()
        )));
    }
    if let Some(line) = names.iter().position(|name| name.is_empty()) {
        return Err(Error::invalid(format!(
            "{name}: line {} is empty, but it should hold the {CLASSES} class names, one a line",
            line + 1
        )));
    }
    Ok(names.into_iter().map(String::from).collect())
}

/// The six batch files and the optional class names, as found in a folder, an archive or the
/// crate itself; `names[i]` is how file `i` is called in error messages.
struct RawFiles<'a> {
    /// `BATCH_FILES`, in order.
    batches: [Cow<'a, [u8]>; 6],
    /// How to call each batch in error messages (a path or `archive:entry`).
    names: [String; 6],
    /// `batches.meta.txt` and its name, if present.
    meta: Option<(Cow<'a, [u8]>, String)>,
}

/// Parses the files and describes the result as `"{origin} (5 training files, N + M images)"`.
fn assemble(files: RawFiles<'_>, origin: &str, note: &str) -> Result<Cifar10> {
    let mut parsed = Vec::with_capacity(6);
    for (bytes, name) in files.batches.iter().zip(&files.names) {
        parsed.push(parse_batch(bytes, name)?);
    }
    let test = parsed.pop().expect("six batches were parsed");
    let train = Dataset::concat(&parsed);
    let class_names = match &files.meta {
        Some((bytes, name)) => parse_class_names(bytes, name)?,
        None => CLASS_NAMES.iter().map(|&name| name.to_string()).collect(),
    };
    let source = format!("{origin} ({TRAIN_FILE_COUNT} training files, {} + {} images{note})", train.len(), test.len());
    Ok(Cifar10 { train, test, class_names, source })
}

/// Loads a folder holding `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` (all six
/// are required), or the folder that directly contains such a `cifar-10-batches-bin/`.
/// `batches.meta.txt` is optional (else [`CLASS_NAMES`]); if present it must hold 10 non-empty
/// names.
///
/// Errors: the folder does not exist or cannot be read ([`Error::Io`]); it has none of the six
/// files (the message says how to get the dataset); it lacks some of them (the message names
/// them); any file fails [`parse_batch`].
pub fn load_dir(path: &Path) -> Result<Cifar10> {
    load_dir_limited(path, DEFAULT_MAX_DATA_BYTES)
}

/// `"{what}, more than the limit …"`: the error of a data load over its size limit.
fn over_limit(what: String, max_bytes: u64) -> Error {
    Error::invalid(format!(
        "{what}, more than the limit of {} MiB for a data set; if that is really your data, raise \
         the limit (--max-data-mib)",
        max_bytes >> 20
    ))
}

fn load_dir_limited(path: &Path, max_bytes: u64) -> Result<Cifar10> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !metadata.is_dir() {
        return Err(Error::invalid(format!(
            "{}: not a folder; expected a folder holding the CIFAR-10 binary batches",
            path.display()
        )));
    }
    let has_none = |dir: &Path| BATCH_FILES.iter().all(|file| !dir.join(file).exists());
    let nested = path.join(ARCHIVE_FOLDER);
    let dir = if has_none(path) && nested.is_dir() { nested } else { path.to_path_buf() };

    if has_none(&dir) {
        return Err(Error::invalid(format!(
            "{} is not a CIFAR-10 binary folder: it holds none of data_batch_1.bin … \
             data_batch_5.bin, test_batch.bin (nor a {ARCHIVE_FOLDER}/ folder with them); {HOW_TO_GET}",
            path.display()
        )));
    }
    let missing: Vec<&str> = BATCH_FILES.iter().copied().filter(|file| !dir.join(file).is_file()).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "{}: missing {}; a CIFAR-10 binary folder needs all of data_batch_1.bin … \
             data_batch_5.bin and test_batch.bin",
            dir.display(),
            missing.join(", ")
        )));
    }

    let files_present = BATCH_FILES.iter().chain(&[META_FILE]).map(|file| dir.join(file)).filter(|p| p.is_file());
    let mut total = 0u64;
    for file_path in files_present {
        total += std::fs::metadata(&file_path).map_err(|e| Error::io(&file_path, e))?.len();
    }
    if total > max_bytes {
        return Err(over_limit(format!("{}: its CIFAR-10 files hold {total} bytes", dir.display()), max_bytes));
    }
    let read = |file: &str| -> Result<(Cow<'static, [u8]>, String)> {
        let file_path = dir.join(file);
        let bytes = std::fs::read(&file_path).map_err(|e| Error::io(&file_path, e))?;
        Ok((Cow::Owned(bytes), file_path.display().to_string()))
    };
    let mut batches = Vec::with_capacity(6);
    let mut names = Vec::with_capacity(6);
    for file in BATCH_FILES {
        let (bytes, name) = read(file)?;
        batches.push(bytes);
        names.push(name);
    }
    let meta = if dir.join(META_FILE).is_file() { Some(read(META_FILE)?) } else { None };
    let files = RawFiles {
        batches: batches.try_into().expect("six batch files were read"),
        names: names.try_into().expect("six batch names were recorded"),
        meta,
    };
    assemble(files, &dir.display().to_string(), "")
}

/// A reader that feeds everything read through it into an MD5 hasher, if it has one.
#[cfg(feature = "cifar-archive")]
struct Md5Reader<R> {
    /// The underlying reader.
    inner: R,
    /// `Some` when the stream must be verified.
    hasher: Option<Md5>,
}

#[cfg(feature = "cifar-archive")]
impl<R: Read> Read for Md5Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Which file of the binary release an archive entry is, if any: `cifar-10-batches-bin/NAME`
/// (the official layout) or a bare `NAME`, with or without a leading `./`. Returns the index into
/// `BATCH_FILES ++ [META_FILE]`.
#[cfg(feature = "cifar-archive")]
fn archive_entry_index(entry: &Path) -> Option<usize> {
    let parts: Vec<_> = entry.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    let file = match parts.as_slice() {
        [Component::Normal(folder), Component::Normal(file)] if *folder == ARCHIVE_FOLDER => file,
        [Component::Normal(file)] => file,
        _ => return None,
    };
    BATCH_FILES.iter().chain(&[META_FILE]).position(|name| file == name)
}

/// A reader that counts the bytes read through it and fails once they pass a limit: it bounds
/// what a gzip stream may expand to, whatever its tar headers claim.
#[cfg(feature = "cifar-archive")]
struct Limited<'a, R> {
    inner: R,
    /// Bytes read so far, shared with the caller, which reads it after an error.
    read: &'a std::cell::Cell<u64>,
    max_bytes: u64,
}

#[cfg(feature = "cifar-archive")]
impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        if self.read.get() > self.max_bytes {
            return Err(io::Error::other("the archive expands past the data size limit"));
        }
        Ok(n)
    }
}

/// Why [`read_archive`] stopped.
#[cfg(feature = "cifar-archive")]
enum ArchiveError {
    /// The gzip or tar stream is corrupt or truncated.
    Unreadable(String),
    /// An entry claims, or the stream expands to, more than the limit: says which.
    TooLarge(String),
}

/// Reads the wanted entries of a gzipped tar stream, reading at most `max_bytes` out of the gzip
/// stream and refusing, before allocating, an entry whose header claims more than what is left.
#[cfg(feature = "cifar-archive")]
fn read_archive<R: Read>(reader: R, max_bytes: u64) -> std::result::Result<[Option<Vec<u8>>; 7], ArchiveError> {
    let read = std::cell::Cell::new(0);
    let unreadable = |e: io::Error| match read.get() > max_bytes {
        true => ArchiveError::TooLarge(format!("expands to more than {max_bytes} bytes")),
        false => ArchiveError::Unreadable(e.to_string()),
    };
    let mut found: [Option<Vec<u8>>; 7] = Default::default();
    let mut wanted_bytes = 0u64;
    let mut archive =
        tar::Archive::new(Limited { inner: flate2::read::GzDecoder::new(reader), read: &read, max_bytes });
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let index = match entry.path() {
            Ok(entry_path) => archive_entry_index(&entry_path),
            Err(_) => None,
        };
        if let Some(index) = index {
            let size = entry.size();
            wanted_bytes = wanted_bytes.saturating_add(size);
            if wanted_bytes > max_bytes {
                let name = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
                return Err(ArchiveError::TooLarge(match wanted_bytes == size {
                    true => format!("entry {name} claims {size} bytes"),
                    false => format!("entry {name} brings the CIFAR-10 entries to {wanted_bytes} bytes"),
                }));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            (&mut entry).take(size).read_to_end(&mut bytes).map_err(unreadable)?;
            found[index] = Some(bytes);
        }
    }
    Ok(found)
}

/// Loads the official archive `cifar-10-binary.tar.gz` (entries under `cifar-10-batches-bin/`),
/// decompressing it in memory with flate2 + tar — nothing is unpacked to disk.
///
/// If the file has the official size (170,052,171 bytes) its MD5 must be the published
/// `c32a1d4ab5d03f1284b67883e8d87530`; an archive of any other size is taken to be a user's own
/// subset and is not checked. Errors: the file cannot be opened ([`Error::Io`]); an MD5 mismatch;
/// a corrupt or truncated gzip/tar stream; missing batch files (all named); any batch failing
/// [`parse_batch`].
#[cfg(feature = "cifar-archive")]
pub fn load_tar_gz(path: &Path) -> Result<Cifar10> {
    load_tar_gz_limited(path, DEFAULT_MAX_DATA_BYTES)
}

#[cfg(feature = "cifar-archive")]
fn load_tar_gz_limited(path: &Path, max_bytes: u64) -> Result<Cifar10> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let official = size == OFFICIAL_ARCHIVE_BYTES;
    let mut reader = Md5Reader { inner: io::BufReader::with_capacity(1 << 20, file), hasher: official.then(Md5::new) };

    let entries = read_archive(&mut reader, max_bytes);

    // Verify the official archive before trusting anything read from it, and before reporting a
    // decoding error: a corrupt download explains both.
    if official {
        io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::io(path, e))?;
        let digest = reader.hasher.take().expect("the official archive is hashed").finalize();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        if hex != OFFICIAL_ARCHIVE_MD5 {
            return Err(Error::invalid(format!(
                "{}: has the size of the official cifar-10-binary.tar.gz ({OFFICIAL_ARCHIVE_BYTES} \
                 bytes) but its MD5 is {hex}, not {OFFICIAL_ARCHIVE_MD5}: the download is corrupt; \
                 download it again from https://www.cs.toronto.edu/~kriz/cifar.html",
                path.display()
            )));
        }
    }
    let note = if official { ", MD5 verified" } else { "" };
    archive_files(entries, &path.display().to_string(), max_bytes, note)
}

/// CIFAR-10 from a `.tar.gz` stream in memory (a download, a file a page was given), laid out as
/// the official archive or with bare file names; `origin` names it in messages. It may expand to
/// at most `max_bytes`. Errors as [`load_tar_gz`], without the MD5 check of the official file.
#[cfg(feature = "cifar-archive")]
pub fn from_tar_gz<R: Read>(reader: R, origin: &str, max_bytes: u64) -> Result<Cifar10> {
    archive_files(read_archive(reader, max_bytes), origin, max_bytes, "")
}

/// The data set from what [`read_archive`] found, or the error naming what is wrong.
#[cfg(feature = "cifar-archive")]
fn archive_files(
    entries: std::result::Result<[Option<Vec<u8>>; 7], ArchiveError>,
    origin: &str,
    max_bytes: u64,
    note: &str,
) -> Result<Cifar10> {
    let mut found = entries.map_err(|e| match e {
        ArchiveError::Unreadable(e) => Error::invalid(format!(
            "{origin}: not a readable .tar.gz (corrupt or truncated gzip/tar stream: {e}); {HOW_TO_GET}"
        )),
        ArchiveError::TooLarge(what) => over_limit(format!("{origin}: {what}"), max_bytes),
    })?;
    let meta = found[6].take();
    let missing: Vec<String> = found[..6]
        .iter()
        .zip(BATCH_FILES.iter())
        .filter(|(bytes, _)| bytes.is_none())
        .map(|(_, name)| format!("{ARCHIVE_FOLDER}/{name}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!("{origin}: the archive lacks {}; {HOW_TO_GET}", missing.join(", "))));
    }

    let entry_name = |file: &str| format!("{origin}:{ARCHIVE_FOLDER}/{file}");
    let batches =
        found[..6].iter_mut().map(|bytes| Cow::Owned(bytes.take().expect("no batch is missing"))).collect::<Vec<_>>();
    let files = RawFiles {
        batches: batches.try_into().expect("six batches"),
        names: std::array::from_fn(|i| entry_name(BATCH_FILES[i])),
        meta: meta.map(|bytes| (Cow::Owned(bytes), entry_name(META_FILE))),
    };
    assemble(files, origin, note)
}

/// Loads CIFAR-10 from `path`: a folder goes to [`load_dir`], a file ending in `.tar.gz` or
/// `.tgz` to [`load_tar_gz`]. Errors: a missing path ([`Error::Io`] naming it); any other kind of
/// file.
pub fn load(path: &Path) -> Result<Cifar10> {
    load_limited(path, DEFAULT_MAX_DATA_BYTES)
}

/// [`load`] reading at most `max_bytes` (files in a folder, or what an archive expands to);
/// more is an error saying so, before anything of that size is allocated.
pub fn load_limited(path: &Path, max_bytes: u64) -> Result<Cifar10> {
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if metadata.is_dir() {
        return load_dir_limited(path, max_bytes);
    }
    let name = path.file_name().map(|name| name.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        #[cfg(feature = "cifar-archive")]
        return load_tar_gz_limited(path, max_bytes);
        #[cfg(not(feature = "cifar-archive"))]
        return Err(Error::invalid(format!(
            "{}: reading a .tar.gz needs wgpu-cnn's cifar-archive feature; unpack it and pass the \
             cifar-10-batches-bin folder instead",
            path.display()
        )));
    }
    Err(Error::invalid(format!(
        "{}: expected a folder of CIFAR-10 binary batches or a .tar.gz/.tgz archive of them; {HOW_TO_GET}",
        path.display()
    )))
}

/// CIFAR-10 from the bytes of its six batch files (`data_batch_1.bin` … `data_batch_5.bin`,
/// `test_batch.bin`, in that order) and optionally `batches.meta.txt`, held in memory: a subset
/// compiled into a program with `include_bytes!` (the tool's embedded demo data), a download, ...
/// `origin` says where they came from (for [`Cifar10::source`] and error messages).
pub fn from_bytes(batches: [&[u8]; 6], meta: Option<&[u8]>, origin: &str) -> Result<Cifar10> {
    let name = |file: &str| format!("{origin}/{file}");
    let files = RawFiles {
        batches: batches.map(Cow::Borrowed),
        names: std::array::from_fn(|i| name(BATCH_FILES[i])),
        meta: meta.map(|meta| (Cow::Borrowed(meta), name(META_FILE))),
    };
    assemble(files, origin, "")
}

/// The order in which to visit rows `0..n` in epoch `epoch` of a run seeded with `seed`: a
/// Fisher–Yates shuffle, as Keras' `shuffle=True` reshuffles the training rows every epoch.
///
/// The generator for each epoch is `Rng::stream(seed, "shuffle epoch {epoch}")`, so any epoch's
/// order can be recomputed on its own (for example when resuming), the same `(seed, epoch)`
/// always gives the same order, and different epochs get independent orders. Panics if `n`
/// exceeds `u32::MAX`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let n = u32::try_from(n).expect("row indices fit in u32");
    let mut order: Vec<u32> = (0..n).collect();
    Rng::stream(seed, &format!("shuffle epoch {epoch}")).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_class_names_accept_the_official_trailing_blank_line_and_crlf() {
        let text = CLASS_NAMES.join("\r\n") + "\r\n\n";
        assert_eq!(parse_class_names(text.as_bytes(), "meta").unwrap(), CLASS_NAMES);
    }

    #[test]
    fn data_class_names_reject_wrong_count_and_empty_lines() {
        let nine = CLASS_NAMES[..9].join("\n");
        let message = parse_class_names(nine.as_bytes(), "m.txt").unwrap_err().to_string();
        assert!(message.contains("m.txt") && message.contains("9 lines"), "{message}");

        let mut names = CLASS_NAMES.to_vec();
        names[4] = " ";
        let message = parse_class_names(names.join("\n").as_bytes(), "m.txt").unwrap_err().to_string();
        assert!(message.contains("line 5 is empty"), "{message}");

        let message = parse_class_names(&[0xff, 0xfe], "m.txt").unwrap_err().to_string();
        assert!(message.contains("not UTF-8"), "{message}");
    }

    #[test]
    #[cfg(feature = "cifar-archive")]
    fn data_archive_entries_are_matched_under_the_official_folder_or_bare() {
        assert_eq!(archive_entry_index(Path::new("cifar-10-batches-bin/data_batch_1.bin")), Some(0));
        assert_eq!(archive_entry_index(Path::new("./cifar-10-batches-bin/test_batch.bin")), Some(5));
        assert_eq!(archive_entry_index(Path::new("batches.meta.txt")), Some(6));
        assert_eq!(archive_entry_index(Path::new("cifar-10-batches-bin/readme.html")), None);
        assert_eq!(archive_entry_index(Path::new("other/data_batch_1.bin")), None);
        assert_eq!(archive_entry_index(Path::new("a/cifar-10-batches-bin/data_batch_1.bin")), None);
    }
}
