//! The bad-input suite: every kind of bad input a user may hand the tool, each run as a child
//! process in a folder of its own, with
//! - the exact `error: …` line expected (`cli/tests/bad_input.expected`, one block a case; run
//!   with `BLESS=1` to rewrite it after changing a message, then read the diff);
//! - a non-zero exit, and no panic or abort (a signal fails the case);
//! - the child run under an address-space limit (`RLIMIT_AS`, the case's bound), so that an
//!   allocation sized by the input aborts it and fails the suite even when the machine has the
//!   memory; its peak resident memory (`ru_maxrss`, from `wait4`) is printed;
//! - for inputs that must not cost data, the files that must survive.
//!
//! The README's list of handled bad input is generated from [`CASES`] (`BLESS=1` rewrites it too),
//! and a test fails when the two differ.

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One bad input.
struct Case {
    /// The README bullet this case belongs to (cases with the same bullet are listed together).
    group: &'static str,
    /// What the input is, for the README and failure messages.
    what: &'static str,
    /// Writes the case's files into its folder.
    setup: fn(&Path),
    args: &'static [&'static str],
    /// Whether the command must succeed (valid input at a limit, or a value that must be
    /// accepted) or fail with the expected message.
    succeeds: bool,
    /// Runs after the command, with its folder and stdout: files that must exist, or survive.
    check: fn(&Path, &str),
    /// The address space the command may reserve, in MiB (its `RLIMIT_AS`). CPU commands of this
    /// tool reserve under 200 MiB before they allocate anything sized by input.
    max_mib: u64,
}

fn nothing(_: &Path) {}

fn no_check(_: &Path, _: &str) {}

/// Runs `wgpu-cnn` in `dir` with at most `max_mib` of address space; returns (success, stdout,
/// stderr, peak RSS in KiB).
fn run(dir: &Path, args: &[&str], max_mib: u64) -> (bool, String, String, u64) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_wgpu-cnn"));
    let limit = libc::rlimit { rlim_cur: max_mib << 20, rlim_max: max_mib << 20 };
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_AS, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let mut child = command
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("WGPU_BACKEND", "vulkan")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the wgpu-cnn binary runs");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    // The child is forked (pre_exec), not spawned with vfork: its ru_maxrss starts from this
    // process's current size, not from its peak (Linux keeps the high-water mark across exec).
    let (status, max_rss_kib) = wait_with_rusage(child.id());
    // The child was reaped by wait4: std must not wait on it again.
    std::mem::forget(child);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    assert!(signal.is_none(), "{args:?} was killed by signal {signal:?} (an abort?): {stderr}");
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, stdout, stderr, max_rss_kib)
}

/// `wait4`: the exit status and the peak resident set of that one child (KiB on Linux).
fn wait_with_rusage(pid: u32) -> (i32, u64) {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as libc::pid_t, "wait4 failed: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss as u64)
}

// ---- Inputs -------------------------------------------------------------------------------

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The embedded subset's files in the repository.
fn cifar_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cifar10")
}

const BATCHES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// The subset's first training file.
fn first_batch() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(cifar_folder().join("data_batch_1.bin")).unwrap())
}

/// `n` real records (the subset's first ones, repeated as needed), for small files.
fn records(n: usize) -> Vec<u8> {
    first_batch().iter().copied().cycle().take(n * 3073).collect()
}

/// A CIFAR-10 folder of `per_file` records a file, written a block at a time.
fn small_cifar(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for name in BATCHES {
        let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap());
        let mut left = per_file * 3073;
        while left > 0 {
            let block = &first_batch()[..left.min(first_batch().len())];
            file.write_all(block).unwrap();
            left -= block.len();
        }
    }
}

/// A `.tar.gz` of one entry: its name, the size its header declares, and what writes its data.
fn tar_gz(name: &str, size: u64, data: &dyn Fn(&mut dyn Write)) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    data(&mut gz);
    gz.write_all(&[0; 1024]).unwrap();
    gz.finish().unwrap()
}

fn png_gray(path: &Path, width: u32, height: u32) {
    // Written row by row through zlib: a real PNG of any size in little memory.
    let mut idat = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let row = vec![128u8; width as usize + 1];
    let row = [&[0u8][..], &row[1..]].concat();
    for _ in 0..height {
        idat.write_all(&row).unwrap();
    }
    write(path, &png_chunks(width, height, 8, 0, &idat.finish().unwrap()));
}

fn png_chunks(width: u32, height: u32, depth: u8, colour: u8, idat: &[u8]) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend(kind);
        c.extend(data);
        c.extend(crc32fast::hash(&[kind, data].concat()).to_be_bytes());
        c
    };
    let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[depth, colour, 0, 0, 0]].concat();
    [&b"\x89PNG\r\n\x1a\n"[..], &chunk(b"IHDR", &ihdr), &chunk(b"IDAT", idat), &chunk(b"IEND", &[])].concat()
}

fn photo_jpeg() -> Vec<u8> {
    let img = image::load_from_memory(include_bytes!("../../assets/chelsea.png")).unwrap().into_rgb8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).unwrap();
    bytes
}

/// A checkpoint of a small net trained for 1 epoch on 300 of the embedded images, made once.
fn trained() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let args = ["train", "--model", "c4s2,p2,f10", "--epochs", "1", "--train-size", "300", "--device", "cpu"];
        let (ok, _, stderr, _) = run(dir.path(), &[&args[..], &["--out", "run"]].concat(), 1024);
        assert!(ok, "{stderr}");
        std::fs::read(dir.path().join("run/model.safetensors")).unwrap()
    })
}

fn checkpoint(dir: &Path) {
    write(&dir.join("model.safetensors"), trained());
}

/// The safetensors header of `bytes` as JSON, and the tensor data after it.
fn split_checkpoint(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), &bytes[8 + n..])
}

/// The trained checkpoint with metadata entries replaced and its metadata digest recomputed the
/// way the library computes it: a hostile file that passes the integrity check.
fn resigned(edits: &[(&str, &str)]) -> Vec<u8> {
    let (mut header, data) = split_checkpoint(trained());
    let meta = header["__metadata__"].as_object_mut().unwrap();
    for (key, value) in edits {
        meta.insert(key.to_string(), serde_json::Value::String(value.to_string()));
    }
    let mut entries: Vec<(String, String)> = meta
        .iter()
        .filter(|(k, _)| *k != "metadata_digest")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    entries.sort();
    let mut hasher = crc32fast::Hasher::new();
    for (key, value) in &entries {
        for part in [key, value] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    meta.insert("metadata_digest".into(), format!("{:08x}", hasher.finalize()).into());
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().div_ceil(8) * 8, b' ');
    [&(json.len() as u64).to_le_bytes()[..], &json, data].concat()
}

fn unchanged_checkpoint(dir: &Path, _: &str) {
    assert_eq!(std::fs::read(dir.join("out/model.safetensors")).unwrap(), trained(), "the checkpoint was lost");
}

// ---- The cases -----------------------------------------------------------------------------

const IMAGES: &str = "images: missing, empty, not an image, truncated PNG or JPEG (a JPEG cut short is an error, \
                      not grey), a header that lies about its size, more pixels than `--max-megapixels` (64 by \
                      default; the figure shrinks panels over 2048 pixels), benchmark sizes over 16384×16384, \
                      and output formats other than PNG/JPEG";
const KERNELS: &str = "kernels that are not 3×3 numbers";
const MODELS: &str = "architecture strings: unknown tokens, a convolution after a dense layer, a final layer \
                      whose units are not the data's classes (the library's engines also refuse labels \
                      outside the model's classes, naming the image), more \
                      than 256 layers, 1,024 filters or 65,536 units, a tensor over 2^28 values or a model \
                      over 2^26 parameters";
const SETTINGS: &str = "settings: zero epochs, a batch size of 0 or over 65,536 (or over the reference engine's \
                        4 GiB of activations), a validation split outside [0, 1), negative numbers (`--l1 -1` \
                        reads as a number and is refused as one), and settings given with `--resume`";
const DIVERGENCE: &str = "a run that diverges stops at that epoch, naming the step and the likely cause (L1 \
                          weight, learning rate or data) and keeping the last good checkpoint; an exploding \
                          loss gets a warning";
const DATA: &str = "CIFAR-10 data: folders without the batch files or missing some, truncated files, labels \
                    over 9 (with file and byte offset), corrupt archives, archive entries claiming more than \
                    `--max-data-mib` (512 by default) and archives expanding past it (gzip bombs), folders \
                    holding more";
const CHECKPOINTS: &str = "checkpoints: not safetensors, truncated, larger than the largest model's, flipped bits \
                           or edited metadata (a CRC-32 of every tensor and of the metadata makes it a \"corrupt \
                           checkpoint\" error naming the tensor), and metadata rewritten with a valid digest \
                           that claims a huge model (the tensors are checked before anything is allocated)";
const RUNS: &str = "runs: a second run into the same `--out` (naming the process), a new run over another \
                    run's checkpoint (refused unless `--overwrite`; the checkpoint is kept), `--resume` with \
                    other training images than the run's (compared by content), and an `--out` that is not \
                    a folder, all before any work; temporary files of dead runs are removed";
const BACKENDS: &str = "an unknown `--backend` / `WGPU_BACKEND` (wgpu's own lists such as `vulkan,gl` are \
                        accepted), only for commands that use a GPU";

macro_rules! train {
    ($($arg:expr),*) => { &["train", "--epochs", "1", "--train-size", "300", "--device", "cpu", $($arg),*] };
}

const CASES: &[Case] = &[
    // Images.
    Case { group: IMAGES, what: "a missing image", setup: nothing, args: &["convolve", "--device", "cpu", "missing.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: IMAGES, what: "an empty image file", setup: |d| write(&d.join("empty.png"), b""), args: &["convolve", "--device", "cpu", "empty.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: IMAGES, what: "a text file named .png", setup: |d| write(&d.join("notes.png"), b"not a picture\n"), args: &["convolve", "--device", "cpu", "notes.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: IMAGES,
        what: "a PNG cut in half",
        setup: |d| {
            let png = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/chelsea.png")).unwrap();
            write(&d.join("half.png"), &png[..png.len() / 2]);
        },
        args: &["convolve", "--device", "cpu", "half.png"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: IMAGES,
        what: "a JPEG cut to a third of its length",
        setup: |d| {
            let jpeg = photo_jpeg();
            write(&d.join("third.jpg"), &jpeg[..jpeg.len() / 3]);
        },
        args: &["convolve", "--device", "cpu", "third.jpg"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case { group: IMAGES, what: "a whole JPEG (accepted)", setup: |d| write(&d.join("photo.jpg"), &photo_jpeg()), args: &["convolve", "--device", "cpu", "photo.jpg", "-o", "fig.png"], succeeds: true, check: |d, _| assert!(d.join("fig.png").exists()), max_mib: 256 },
    Case { group: IMAGES, what: "a 20000×20000 grey PNG (about 400 KB)", setup: |d| png_gray(&d.join("huge.png"), 20000, 20000), args: &["convolve", "--device", "cpu", "huge.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: IMAGES, what: "a 20000×20000 PNG given to predict", setup: |d| { png_gray(&d.join("huge.png"), 20000, 20000); checkpoint(d) }, args: &["predict", "--device", "cpu", "model.safetensors", "huge.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: IMAGES, what: "a PNG whose header claims 8000×8000 16-bit RGBA over 100 bytes of data", setup: |d| write(&d.join("liar.png"), &png_chunks(8000, 8000, 16, 6, &[120, 156, 99, 0, 0, 0, 1, 0, 1])), args: &["convolve", "--device", "cpu", "liar.png"], succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: IMAGES,
        what: "an 8000×8000 PNG, the largest accepted (64 Mpx; panels shrunk 1/4)",
        setup: |d| png_gray(&d.join("big.png"), 8000, 8000),
        args: &["convolve", "--device", "cpu", "big.png", "-o", "fig.png"],
        succeeds: true, check: |d, stdout| {
            assert!(stdout.contains("each panel shrunk 1/4 to fit 2048 pixels"), "{stdout}");
            let (w, h) = image::image_dimensions(d.join("fig.png")).unwrap();
            assert_eq!((w, h), (8 + 3 * (2000 + 8), 8 + 2 * (2000 + 8)));
        },
        max_mib: 1024,
    },
    Case { group: IMAGES, what: "bench conv of 100000×100000 pixels", setup: nothing, args: &["bench", "conv", "--cpu-only", "--size", "100000x100000"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: IMAGES, what: "a figure named .bmp", setup: nothing, args: &["convolve", "--device", "cpu", "-o", "figure.bmp"], succeeds: false, check: no_check, max_mib: 256 },
    // Kernels.
    Case { group: KERNELS, what: "a kernel of 8 numbers", setup: nothing, args: &["convolve", "--device", "cpu", "-k", "1,2,3;4,5,6;7,8"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: KERNELS, what: "a kernel with a word in it", setup: nothing, args: &["convolve", "--device", "cpu", "-k", "1,2,3;4,five,6;7,8,9"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: KERNELS, what: "an unknown kernel name", setup: nothing, args: &["convolve", "--device", "cpu", "-k", "k3"], succeeds: false, check: no_check, max_mib: 256 },
    // Architectures.
    Case { group: MODELS, what: "an unknown layer token", setup: nothing, args: &["summary", "--model", "c16,x5,f10"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "a convolution after a dense layer", setup: nothing, args: &["summary", "--model", "h10,c4,f10"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "f5: fewer units than classes", setup: nothing, args: train!("--model", "f5"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "c4,f20: more units than classes", setup: nothing, args: train!("--model", "c4,f20"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "f100000000", setup: nothing, args: train!("--model", "f100000000"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "nine c1024 layers (85 million parameters)", setup: nothing, args: train!("--model", "c1024,c1024,c1024,c1024,c1024,c1024,c1024,c1024,c1024,f10"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: MODELS, what: "300 layers", setup: nothing, args: &["summary", "--model", "relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,relu,f10"], succeeds: false, check: no_check, max_mib: 256 },
    // Settings.
    Case { group: SETTINGS, what: "--epochs 0", setup: nothing, args: &["train", "--epochs", "0", "--device", "cpu"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--batch-size 0", setup: nothing, args: train!("--batch-size", "0"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--batch-size 100000", setup: nothing, args: train!("--batch-size", "100000"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--batch-size 60000 on the reference engine", setup: nothing, args: &["train", "--epochs", "1", "--device", "cpu-reference", "--batch-size", "60000"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--batch-size 65536 on the fast CPU engine (accepted: its memory does not grow with the batch)", setup: nothing, args: train!("--batch-size", "65536"), succeeds: true, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--validation-split 1.5", setup: nothing, args: train!("--validation-split", "1.5"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--l1 -1", setup: nothing, args: train!("--l1", "-1"), succeeds: false, check: no_check, max_mib: 256 },
    Case { group: SETTINGS, what: "--lr given with --resume", setup: |d| write(&d.join("out/model.safetensors"), trained()), args: train!("--resume", "out/model.safetensors", "--lr", "0.1"), succeeds: false, check: no_check, max_mib: 256 },
    // Divergence.
    Case { group: DIVERGENCE, what: "--l1 1e38", setup: nothing, args: train!("--l1", "1e38"), succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: DIVERGENCE,
        what: "--lr 1e3 for 3 epochs (trains, with a warning)",
        setup: nothing,
        args: &["train", "--epochs", "3", "--train-size", "300", "--device", "cpu", "--lr", "1e3"],
        succeeds: true, check: no_check,
        max_mib: 256,
    },
    // Data.
    Case { group: DATA, what: "a folder without CIFAR-10 files", setup: |d| write(&d.join("photos/cat.png"), b""), args: train!("--data", "photos"), succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: DATA,
        what: "a folder missing test_batch.bin",
        setup: |d| {
            small_cifar(&d.join("cifar"), 2);
            std::fs::remove_file(d.join("cifar/test_batch.bin")).unwrap();
        },
        args: train!("--data", "cifar"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: DATA,
        what: "a batch file cut mid-record",
        setup: |d| {
            small_cifar(&d.join("cifar"), 2);
            write(&d.join("cifar/data_batch_3.bin"), &records(2)[..5000]);
        },
        args: train!("--data", "cifar"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: DATA,
        what: "a label of 10 (CIFAR-100?)",
        setup: |d| {
            small_cifar(&d.join("cifar"), 3);
            let mut bytes = records(3);
            bytes[3073] = 10;
            write(&d.join("cifar/test_batch.bin"), &bytes);
        },
        args: train!("--data", "cifar"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case { group: DATA, what: "a .tar.gz that is not gzip", setup: |d| write(&d.join("cifar.tar.gz"), b"PK\x03\x04 a zip file"), args: train!("--data", "cifar.tar.gz"), succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: DATA,
        what: "a 100-byte .tar.gz whose entry header declares 2^62 bytes",
        setup: |d| write(&d.join("huge.tar.gz"), &tar_gz("cifar-10-batches-bin/data_batch_1.bin", 1 << 62, &|_| {})),
        args: train!("--data", "huge.tar.gz"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: DATA,
        what: "a 1 MB gzip bomb expanding to 1 GiB (an entry the loader skips)",
        setup: |d| {
            let zeros = vec![0u8; 1 << 20];
            let fill = |w: &mut dyn Write| (0..1024).for_each(|_| w.write_all(&zeros).unwrap());
            write(&d.join("bomb.tar.gz"), &tar_gz("padding.bin", 1 << 30, &fill));
        },
        args: train!("--data", "bomb.tar.gz"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: DATA,
        what: "a folder over --max-data-mib 1",
        setup: |d| small_cifar(&d.join("cifar"), 100),
        args: train!("--data", "cifar", "--max-data-mib", "1"),
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: DATA,
        what: "full-size batch files (176 MiB, the largest official data) are accepted",
        setup: |d| small_cifar(&d.join("cifar"), 10_000),
        args: train!("--data", "cifar"),
        succeeds: true, check: |_, stdout| assert!(stdout.contains("50000 + 10000 images"), "{stdout}"),
        max_mib: 1024,
    },
    // Checkpoints.
    Case { group: CHECKPOINTS, what: "a checkpoint that is a text file", setup: |d| write(&d.join("model.safetensors"), b"weights?\n"), args: &["evaluate", "--device", "cpu", "model.safetensors"], succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: CHECKPOINTS,
        what: "a truncated checkpoint",
        setup: |d| write(&d.join("model.safetensors"), &trained()[..trained().len() - 10]),
        args: &["evaluate", "--device", "cpu", "model.safetensors"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: CHECKPOINTS,
        what: "a flipped bit in a tensor",
        setup: |d| {
            let mut bytes = trained().to_vec();
            let last = bytes.len() - 3;
            bytes[last] ^= 0x10;
            write(&d.join("model.safetensors"), &bytes);
        },
        args: &["evaluate", "--device", "cpu", "model.safetensors"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: CHECKPOINTS,
        what: "metadata edited by hand (epochs_done 1 → 9)",
        setup: |d| {
            let (from, to) = (&b"\"epochs_done\":\"1\""[..], &b"\"epochs_done\":\"9\""[..]);
            let mut bytes = trained().to_vec();
            let at = bytes.windows(from.len()).position(|w| w == from).expect("the metadata has epochs_done");
            bytes[at..at + from.len()].copy_from_slice(to);
            write(&d.join("model.safetensors"), &bytes);
        },
        args: &["evaluate", "--device", "cpu", "model.safetensors"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: CHECKPOINTS,
        what: "metadata re-signed to claim f100000000",
        setup: |d| write(&d.join("model.safetensors"), &resigned(&[("architecture", "f100000000"), ("model_name", "f100000000")])),
        args: &["evaluate", "--device", "cpu", "model.safetensors"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: CHECKPOINTS,
        what: "metadata re-signed to claim seven c1024 layers (66 million parameters)",
        setup: |d| {
            let arch = "c1024,c1024,c1024,c1024,c1024,c1024,c1024,f10";
            write(&d.join("model.safetensors"), &resigned(&[("architecture", arch), ("model_name", arch)]));
            png_gray(&d.join("cat.png"), 32, 32);
        },
        args: &["predict", "--device", "cpu", "model.safetensors", "cat.png"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    Case {
        group: CHECKPOINTS,
        what: "a 4 GiB (sparse) file as a checkpoint",
        setup: |d| std::fs::File::create(d.join("model.safetensors")).unwrap().set_len(4 << 30).unwrap(),
        args: &["evaluate", "--device", "cpu", "model.safetensors"],
        succeeds: false, check: no_check,
        max_mib: 256,
    },
    // Runs.
    Case { group: RUNS, what: "a new run over another run's checkpoint", setup: |d| write(&d.join("out/model.safetensors"), trained()), args: train!("--out", "out"), succeeds: false, check: unchanged_checkpoint, max_mib: 256 },
    Case { group: RUNS, what: "--resume with other training images", setup: |d| write(&d.join("out/model.safetensors"), trained()), args: &["train", "--epochs", "2", "--train-size", "301", "--device", "cpu", "--resume", "out/model.safetensors"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: RUNS, what: "an --out that is a file", setup: |d| write(&d.join("out"), b"a file"), args: train!("--out", "out"), succeeds: false, check: no_check, max_mib: 256 },
    Case {
        group: RUNS,
        what: "a temporary file of a dead run is removed",
        setup: |d| write(&d.join("out/.model.safetensors.4000000.tmp"), b"half a checkpoint"),
        args: train!("--out", "out"),
        succeeds: true, check: |d, _| {
            assert!(!d.join("out/.model.safetensors.4000000.tmp").exists());
            assert!(d.join("out/model.safetensors").exists());
        },
        max_mib: 256,
    },
    // Backends.
    Case { group: BACKENDS, what: "--backend glide for a GPU command", setup: nothing, args: &["info", "--backend", "glide"], succeeds: false, check: no_check, max_mib: 256 },
    Case { group: BACKENDS, what: "--backend glide for a CPU command (accepted: unused)", setup: nothing, args: &["summary", "--model", "base", "--backend", "glide"], succeeds: true, check: no_check, max_mib: 256 },
];

/// The cases that need more than their own folder: a second run holding the lock.
fn locked_out_case(dir: &Path) -> (String, u64) {
    let _held = wgpu_cnn::io::OutputLock::acquire(&dir.join("out")).unwrap();
    let (ok, _, stderr, rss) = run(dir, train!("--out", "out"), 256);
    assert!(!ok, "a second run into a locked --out should fail");
    (error_line(&stderr).replace(&std::process::id().to_string(), "{pid}"), rss)
}

/// What the user reads on stderr (every line: the error, its help, warnings), trimmed.
fn error_line(stderr: &str) -> String {
    stderr.trim_end().to_string()
}

const EXPECTED: &str = "tests/bad_input.expected";

fn bless() -> bool {
    std::env::var_os("BLESS").is_some()
}

#[test]
fn every_bad_input_gives_its_exact_message_within_its_memory_bound() {
    let mut actual = String::new();
    let mut failures = Vec::new();
    let mut peaks = Vec::new();
    let root = tempfile::tempdir().unwrap();
    for (i, case) in CASES.iter().enumerate() {
        let dir = root.path().join(format!("{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        (case.setup)(&dir);
        let (ok, stdout, stderr, rss) = run(&dir, case.args, case.max_mib);
        let mib = rss.div_ceil(1024);
        peaks.push((mib, case.what));
        let message = error_line(&stderr);
        assert!(!stderr.contains("panicked"), "{}: panicked: {stderr}", case.what);
        match (case.succeeds, ok) {
            (false, true) => failures.push(format!("{}: should fail, but succeeded: {stdout}", case.what)),
            (true, false) => failures.push(format!("{}: should succeed, but failed: {stderr}", case.what)),
            _ => (case.check)(&dir, &stdout),
        }

        writeln!(actual, "## {}\n$ wgpu-cnn {}\n{}\n", case.what, case.args.join(" "), message).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (message, rss) = locked_out_case(root.path());
    let what = "a second run into an --out another run holds";
    peaks.push((rss.div_ceil(1024), what));
    writeln!(actual, "## {what}\n$ wgpu-cnn train --out out\n{message}\n").unwrap();

    peaks.sort_unstable();
    eprintln!("{} cases; peak resident memory per case, MiB:", CASES.len() + 1);
    for (mib, what) in peaks.iter().rev() {
        eprintln!("  {mib:>5}  {what}");
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXPECTED);
    if bless() {
        std::fs::write(&path, &actual).unwrap();
    } else {
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let first = expected
                .split("\n\n")
                .zip(actual.split("\n\n"))
                .find(|(e, a)| e != a)
                .map(|(e, a)| format!("expected:\n{e}\nactual:\n{a}"))
                .unwrap_or_else(|| "the cases differ in number".into());
            failures.push(format!("messages differ from cli/{EXPECTED} (BLESS=1 rewrites it):\n{first}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's list, from [`CASES`]: one bullet a group, in order.
fn readme_list() -> String {
    let mut groups: Vec<&str> = Vec::new();
    for case in CASES {
        if !groups.contains(&case.group) {
            groups.push(case.group);
        }
    }
    let mut list = String::new();
    for group in groups {
        let count = CASES.iter().filter(|c| c.group == group).count();
        let mut line = String::from("- ");
        let text = format!("{group} ({count} case{})", if count == 1 { "" } else { "s" });
        for word in text.split_whitespace() {
            if line.len() + word.len() > 98 && line.len() > 2 {
                list.push_str(line.trim_end());
                list.push('\n');
                line = String::from("  ");
            }
            line.push_str(word);
            line.push(' ');
        }
        list.push_str(line.trim_end());
        list.push('\n');
    }
    list
}

const BEGIN: &str =
    "<!-- bad-input: generated from cli/tests/bad_input.rs (BLESS=1 cargo test --release --test bad_input) -->\n";
const END: &str = "<!-- end bad-input -->";

#[test]
fn the_readme_lists_the_bad_input_the_suite_covers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (start, end) = match (readme.find(BEGIN), readme.find(END)) {
        (Some(s), Some(e)) if s < e => (s + BEGIN.len(), e),
        _ => panic!("README.md has no {BEGIN:?} … {END:?} section"),
    };
    let list = format!(
        "{}\n{} cases in all (one of them, a second run into a held `--out`, runs beside the table: the test \
         holds the lock); their exact messages are in [cli/tests/bad_input.expected](cli/tests/bad_input.expected).\n",
        readme_list(),
        CASES.len() + 1
    );
    if bless() {
        std::fs::write(&path, format!("{}{list}{}", &readme[..start], &readme[end..])).unwrap();
    } else {
        assert_eq!(&readme[start..end], list, "README.md's bad-input list is not the suite's: BLESS=1 rewrites it");
    }
}
