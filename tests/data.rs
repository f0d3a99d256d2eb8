//! The CIFAR-10 reader: planar-to-NHWC conversion on hand-built records, known answers read from
//! the embedded real files with Python (see each test), Keras split/shuffle semantics, every error
//! path, and the .tar.gz reader on archives built here.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

mod common;

use wgpu_cnn::data::{self, Dataset, CLASSES, CLASS_NAMES, IMAGE_BYTES, RECORD_BYTES};

/// One record whose label is `label` and whose pixel byte `i` (0..3072, planar CHW) is
/// `(i * 7 + salt) % 251`, so every position has a distinct, predictable value.
fn record(label: u8, salt: usize) -> Vec<u8> {
    let mut bytes = vec![label];
    bytes.extend((0..IMAGE_BYTES).map(|i| ((i * 7 + salt) % 251) as u8));
    bytes
}

/// A batch of `labels.len()` records, record `r` built with salt `r`.
fn batch(labels: &[u8]) -> Vec<u8> {
    labels.iter().enumerate().flat_map(|(r, &label)| record(label, r)).collect()
}

/// Writes a complete binary folder: training file `f` holds `f + 1` records, the test file 2.
fn write_folder(dir: &Path) {
    for f in 1..=5u8 {
        let labels: Vec<u8> = (0..f).map(|r| (f + r) % 10).collect();
        fs::write(dir.join(format!("data_batch_{f}.bin")), batch(&labels)).unwrap();
    }
    fs::write(dir.join("test_batch.bin"), batch(&[7, 3])).unwrap();
}

fn error_message<T>(result: wgpu_cnn::Result<T>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_batch_converts_planar_chw_to_nhwc() {
    let bytes = batch(&[3, 9]);
    let set = data::parse_batch(&bytes, "two.bin").unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.labels, [3, 9]);
    assert_eq!(set.images.len(), 2 * IMAGE_BYTES);

    // Pixel (y=0, x=1) of image 0: R is file byte 1 + 1, G is 1 + 1024 + 1, B is 1 + 2048 + 1.
    let image = set.image(0);
    assert_eq!(image[3], bytes[2]);
    assert_eq!(image[4], bytes[1 + 1024 + 1]);
    assert_eq!(image[5], bytes[1 + 2048 + 1]);
    // Pixel (y=5, x=17) of image 1, channel by channel: NHWC offset (5*32+17)*3 + c.
    let p = 5 * 32 + 17;
    for c in 0..3 {
        assert_eq!(set.image(1)[p * 3 + c], bytes[RECORD_BYTES + 1 + c * 1024 + p], "channel {c}");
    }
    // And exhaustively, against the formula that built the bytes.
    for n in 0..2 {
        for p in 0..1024 {
            for c in 0..3 {
                let expected = (((c * 1024 + p) * 7 + n) % 251) as u8;
                assert_eq!(set.images[n * IMAGE_BYTES + p * 3 + c], expected, "n={n} p={p} c={c}");
            }
        }
    }
}

#[test]
fn parse_batch_rejects_a_size_that_is_not_a_multiple_of_the_record() {
    let mut bytes = batch(&[1, 2]);
    bytes.extend([0; 5]);
    let message = error_message(data::parse_batch(&bytes, "odd.bin"));
    assert!(message.contains("odd.bin"), "{message}");
    assert!(message.contains("6151 bytes"), "{message}");
    assert!(message.contains("5 bytes left over"), "{message}");
}

#[test]
fn parse_batch_names_the_record_and_offset_of_a_bad_label() {
    let bytes = batch(&[4, 10, 2]);
    let message = error_message(data::parse_batch(&bytes, "bad.bin"));
    assert!(message.contains("bad.bin"), "{message}");
    assert!(message.contains("record 1"), "{message}");
    assert!(message.contains("byte offset 3073"), "{message}");
    assert!(message.contains("label 10"), "{message}");
}

#[test]
fn parse_batch_rejects_an_empty_file() {
    let message = error_message(data::parse_batch(&[], "empty.bin"));
    assert!(message.contains("empty.bin") && message.contains("empty"), "{message}");
}

#[test]
fn the_cifar10_subset_has_the_known_sizes_and_values() {
    let start = Instant::now();
    let cifar = common::cifar_sample();
    let elapsed = start.elapsed();
    assert!(elapsed.as_secs_f64() < 1.0, "loading the subset took {elapsed:?}");

    assert_eq!(cifar.train.len(), 4660);
    assert_eq!(cifar.test.len(), 846);
    assert_eq!(cifar.train.images.len(), 4660 * IMAGE_BYTES);
    assert_eq!(cifar.test.images.len(), 846 * IMAGE_BYTES);
    assert!(cifar.train.labels.iter().chain(&cifar.test.labels).all(|&l| usize::from(l) < CLASSES));
    assert_eq!(cifar.class_names, CLASS_NAMES);
    assert!(cifar.source.contains("4660 + 846"), "{}", cifar.source);

    // Known answers, read from assets/cifar10/*.bin with Python (record r at r * 3073: label byte,
    // then R, G, B planes), independently of this crate:
    //   d = open('data_batch_1.bin','rb').read(); d[0], d[1], d[1+1024], d[1+2048]
    // First training image: a frog (6); pixel (0,0) = RGB (59, 62, 63), (31,31) = (123, 92, 72).
    assert_eq!(&cifar.train.labels[..10], &[6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(&cifar.train.image(0)[..3], &[59, 62, 63]);
    let last_pixel = (31 * 32 + 31) * 3;
    assert_eq!(&cifar.train.image(0)[last_pixel..last_pixel + 3], &[123, 92, 72]);
    // Row 932 is the first record of data_batch_2.bin: label 1, pixel (16,16) = (107, 112, 115).
    assert_eq!(cifar.train.labels[932], 1);
    let centre = (16 * 32 + 16) * 3;
    assert_eq!(&cifar.train.image(932)[centre..centre + 3], &[107, 112, 115]);
    // Last training row (data_batch_5.bin record 931): label 9, pixel (10,20) = (232, 234, 228).
    assert_eq!(cifar.train.labels[4659], 9);
    let p = (10 * 32 + 20) * 3;
    assert_eq!(&cifar.train.image(4659)[p..p + 3], &[232, 234, 228]);
    // First test image: a cat (3), pixel (0,0) = (158, 112, 49); last test row: label 3.
    assert_eq!(&cifar.test.labels[..10], &[3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    assert_eq!(&cifar.test.image(0)[..3], &[158, 112, 49]);
    assert_eq!(cifar.test.labels[845], 3);
    let q = (10 * 32 + 20) * 3;
    assert_eq!(&cifar.test.image(845)[q..q + 3], &[71, 67, 56]);

    // Class counts (Python: collections.Counter of the label bytes) and every pixel byte summed.
    let train_counts = cifar.train.class_counts();
    assert_eq!(train_counts, [479, 479, 444, 448, 489, 435, 464, 477, 481, 464]);
    assert_eq!(train_counts.iter().sum::<usize>(), 4660);
    let test_counts = cifar.test.class_counts();
    assert_eq!(test_counts, [83, 70, 88, 84, 76, 79, 97, 87, 88, 94]);
    assert_eq!(test_counts.iter().sum::<usize>(), 846);
    assert_eq!(cifar.train.images.iter().map(|&b| u64::from(b)).sum::<u64>(), 1_733_586_764);
    assert_eq!(cifar.test.images.iter().map(|&b| u64::from(b)).sum::<u64>(), 318_297_438);

    // The majority class: deer (4) in training, 489 / 4660; frog (6) in test, 97 / 846.
    assert_eq!(cifar.train.majority_baseline(), (4, 489.0 / 4660.0));
    assert_eq!(cifar.test.majority_baseline(), (6, 97.0 / 846.0));
}

#[test]
fn split_validation_keeps_the_last_rows_for_validation_like_keras() {
    let train = common::cifar_sample().train.clone();
    let (fit, validation) = train.split_validation(0.1).unwrap();
    assert_eq!((fit.len(), validation.len()), (4194, 466));
    assert_eq!(fit, train.take_first(4194));
    assert_eq!(validation.labels, &train.labels[4194..]);
    assert_eq!(validation.image(0), train.image(4194));
    assert_eq!(validation.image(465), train.image(4659));
    assert_eq!(Dataset::concat(&[fit, validation]), train);

    let (all, none) = train.split_validation(0.0).unwrap();
    assert_eq!(all, train);
    assert!(none.is_empty() && none.images.is_empty());

    // floor(7 * 0.75) = 5.
    let small = train.take_first(7);
    let (fit, validation) = small.split_validation(0.25).unwrap();
    assert_eq!((fit.len(), validation.len()), (5, 2));

    for bad in [1.0, -0.1, f64::NAN, 1.5] {
        let message = error_message(train.split_validation(bad));
        assert!(message.contains("validation split"), "{bad}: {message}");
    }
    // As in Keras, a positive split that leaves one side empty is an error.
    let message = error_message(train.take_first(1).split_validation(0.5));
    assert!(message.contains("0 training and 1 validation"), "{message}");
}

#[test]
fn take_first_and_concat_keep_rows_in_order() {
    let set = data::parse_batch(&batch(&[0, 1, 2, 3]), "four.bin").unwrap();
    let first = set.take_first(3);
    assert_eq!(first.labels, [0, 1, 2]);
    assert_eq!(first.images, &set.images[..3 * IMAGE_BYTES]);
    assert_eq!(set.take_first(100), set);
    assert!(set.take_first(0).is_empty());
    let rest = Dataset { images: set.image(3).to_vec(), labels: vec![3] };
    assert_eq!(Dataset::concat(&[first, rest]), set);
    assert_eq!(Dataset::concat(&[]), Dataset { images: vec![], labels: vec![] });
}

#[test]
fn majority_baseline_picks_the_most_common_label_and_its_frequency() {
    let labels = vec![2, 7, 7, 1, 7, 2, 0, 7];
    let set = Dataset { images: vec![0; labels.len() * IMAGE_BYTES], labels };
    assert_eq!(set.class_counts(), [1, 1, 2, 0, 0, 0, 0, 4, 0, 0]);
    assert_eq!(set.majority_baseline(), (7, 0.5));
    // A tie goes to the smallest label.
    let tie = Dataset { images: vec![0; 4 * IMAGE_BYTES], labels: vec![5, 3, 5, 3] };
    assert_eq!(tie.majority_baseline(), (3, 0.5));
    let empty = Dataset { images: vec![], labels: vec![] };
    assert_eq!(empty.majority_baseline(), (0, 0.0));
}

#[test]
fn to_f32_scales_by_one_over_255_and_one_hot_marks_the_label() {
    let set = data::parse_batch(&batch(&[3, 9, 0]), "three.bin").unwrap();
    let x = set.to_f32_nhwc(1..3);
    assert_eq!(x.len(), 2 * IMAGE_BYTES);
    for (value, &byte) in x.iter().zip(&set.images[IMAGE_BYTES..]) {
        assert_eq!(*value, f32::from(byte) / 255.0);
    }
    let mut pixels = vec![0u8; IMAGE_BYTES];
    pixels[..3].copy_from_slice(&[255, 0, 51]);
    let full = Dataset { images: pixels, labels: vec![1] };
    assert_eq!(full.to_f32_nhwc(0..1)[..3], [1.0, 0.0, 0.2]);

    let y = set.one_hot(0..3);
    let mut expected = vec![0.0; 30];
    expected[3] = 1.0;
    expected[10 + 9] = 1.0;
    expected[20] = 1.0;
    assert_eq!(y, expected);
    assert_eq!(set.one_hot(1..2), [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn epoch_order_is_a_seeded_permutation_that_changes_every_epoch() {
    let n = 1000;
    let first = data::epoch_order(n, 42, 0);
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
    assert_ne!(first, sorted, "the order is shuffled");
    assert_eq!(first, data::epoch_order(n, 42, 0));
    let second = data::epoch_order(n, 42, 1);
    assert_ne!(first, second);
    assert_ne!(first, data::epoch_order(n, 43, 0));
    // Independent orders agree on few positions (about 1 in n by chance).
    let same = first.iter().zip(&second).filter(|(a, b)| a == b).count();
    assert!(same < 10, "{same} positions unchanged between epochs");
    assert!(data::epoch_order(0, 1, 0).is_empty());
    assert_eq!(data::epoch_order(1, 1, 0), [0]);
}

#[test]
fn load_dir_reads_a_folder_and_the_folder_above_it() {
    let temp = tempfile::tempdir().unwrap();
    write_folder(temp.path());
    let cifar = data::load_dir(temp.path()).unwrap();
    assert_eq!(cifar.train.len(), 1 + 2 + 3 + 4 + 5);
    assert_eq!(cifar.test.labels, [7, 3]);
    // Training rows in file order: data_batch_1 (label 1), data_batch_2 (2, 3), ...
    assert_eq!(&cifar.train.labels[..4], &[1, 2, 3, 3]);
    assert_eq!(cifar.class_names, CLASS_NAMES);
    assert!(cifar.source.contains("15 + 2 images"), "{}", cifar.source);

    // The folder that contains cifar-10-batches-bin/, with custom class names.
    let above = tempfile::tempdir().unwrap();
    let inner = above.path().join("cifar-10-batches-bin");
    fs::create_dir(&inner).unwrap();
    write_folder(&inner);
    let names: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    fs::write(inner.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    let nested = data::load(above.path()).unwrap();
    assert_eq!(nested.train, cifar.train);
    assert_eq!(nested.test, cifar.test);
    assert_eq!(nested.class_names, names);
}

#[test]
fn load_dir_errors_name_the_problem() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("no-such-folder");
    let message = error_message(data::load_dir(&missing));
    assert!(message.contains("no-such-folder"), "{message}");
    let message = error_message(data::load(&missing));
    assert!(message.contains("no-such-folder"), "{message}");

    let message = error_message(data::load_dir(temp.path()));
    assert!(message.contains("not a CIFAR-10 binary folder"), "{message}");
    assert!(message.contains("cifar-10-binary.tar.gz"), "{message}");

    write_folder(temp.path());
    fs::remove_file(temp.path().join("test_batch.bin")).unwrap();
    fs::remove_file(temp.path().join("data_batch_3.bin")).unwrap();
    let message = error_message(data::load_dir(temp.path()));
    assert!(message.contains("data_batch_3.bin, test_batch.bin"), "{message}");
    assert!(message.contains(&temp.path().display().to_string()), "{message}");

    // A bad file inside is reported with its path.
    write_folder(temp.path());
    fs::write(temp.path().join("data_batch_4.bin"), [1u8; 10]).unwrap();
    let message = error_message(data::load_dir(temp.path()));
    assert!(message.contains("data_batch_4.bin") && message.contains("size 10 bytes"), "{message}");

    // A class-name file with the wrong number of names.
    write_folder(temp.path());
    fs::write(temp.path().join("batches.meta.txt"), "cat\ndog\n").unwrap();
    let message = error_message(data::load_dir(temp.path()));
    assert!(message.contains("batches.meta.txt") && message.contains("2 lines"), "{message}");

    // Neither a folder nor an archive.
    let text = temp.path().join("notes.txt");
    fs::write(&text, "hello").unwrap();
    let message = error_message(data::load(&text));
    assert!(message.contains("notes.txt") && message.contains(".tar.gz"), "{message}");
}

/// Builds a gzipped tar with `entries` (name, bytes) at `path`.
fn write_tar_gz(path: &Path, entries: &[(String, Vec<u8>)]) {
    let file = fs::File::create(path).unwrap();
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gzip);
    let mut folder = tar::Header::new_gnu();
    folder.set_entry_type(tar::EntryType::Directory);
    folder.set_mode(0o755);
    folder.set_size(0);
    builder.append_data(&mut folder, "cifar-10-batches-bin/", &[][..]).unwrap();
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// The entries of a small official-layout archive: training file `f` holds `f` records.
fn archive_entries() -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = (1..=5u8)
        .map(|f| {
            let labels: Vec<u8> = (0..f).map(|r| (f * 2 + r) % 10).collect();
            (format!("cifar-10-batches-bin/data_batch_{f}.bin"), batch(&labels))
        })
        .collect();
    entries.push(("cifar-10-batches-bin/test_batch.bin".into(), batch(&[5, 6, 7])));
    entries.push(("cifar-10-batches-bin/readme.html".into(), b"<html></html>".to_vec()));
    entries
}

#[test]
fn load_tar_gz_reads_the_official_layout_without_unpacking() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("cifar-10-binary.tar.gz");
    write_tar_gz(&path, &archive_entries());

    let cifar = data::load(&path).unwrap();
    assert_eq!(cifar.train.len(), 1 + 2 + 3 + 4 + 5);
    assert_eq!(&cifar.train.labels[..3], &[2, 4, 5]);
    assert_eq!(cifar.test.labels, [5, 6, 7]);
    // Pixels went through the same CHW → NHWC conversion: test record 2, pixel 0, green.
    assert_eq!(cifar.test.image(2)[1], ((1024 * 7 + 2) % 251) as u8);
    assert_eq!(cifar.class_names, CLASS_NAMES);
    assert!(cifar.source.contains("15 + 3 images"), "{}", cifar.source);
    // Nothing was unpacked next to the archive.
    assert_eq!(fs::read_dir(temp.path()).unwrap().count(), 1);

    // The same archive named .tgz goes through the dispatcher too.
    let tgz = temp.path().join("subset.tgz");
    fs::copy(&path, &tgz).unwrap();
    assert_eq!(data::load(&tgz).unwrap().test, cifar.test);
}

#[test]
fn load_tar_gz_rejects_truncated_corrupt_and_incomplete_archives() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("cifar-10-binary.tar.gz");
    write_tar_gz(&path, &archive_entries());
    let whole = fs::read(&path).unwrap();

    let truncated = temp.path().join("truncated.tar.gz");
    fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let message = error_message(data::load_tar_gz(&truncated));
    assert!(message.contains("truncated.tar.gz") && message.contains("not a readable .tar.gz"), "{message}");

    let garbage = temp.path().join("garbage.tar.gz");
    fs::write(&garbage, b"this is not gzip at all").unwrap();
    let message = error_message(data::load_tar_gz(&garbage));
    assert!(message.contains("garbage.tar.gz") && message.contains("not a readable .tar.gz"), "{message}");

    let mut entries = archive_entries();
    entries.retain(|(name, _)| !name.ends_with("test_batch.bin"));
    let incomplete = temp.path().join("incomplete.tar.gz");
    write_tar_gz(&incomplete, &entries);
    let message = error_message(data::load_tar_gz(&incomplete));
    assert!(message.contains("incomplete.tar.gz"), "{message}");
    assert!(message.contains("cifar-10-batches-bin/test_batch.bin"), "{message}");

    let message = error_message(data::load_tar_gz(&temp.path().join("absent.tar.gz")));
    assert!(message.contains("absent.tar.gz"), "{message}");
}

#[test]
fn load_tar_gz_checks_the_md5_of_a_file_of_the_official_size() {
    // A sparse file of exactly 170,052,171 bytes: the official size, but not the official bytes.
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("cifar-10-binary.tar.gz");
    fs::File::create(&path).unwrap().set_len(170_052_171).unwrap();
    let message = error_message(data::load_tar_gz(&path));
    assert!(message.contains("MD5"), "{message}");
    assert!(message.contains("c32a1d4ab5d03f1284b67883e8d87530"), "{message}");
    // The MD5 of 170,052,171 zero bytes (Python: hashlib.md5(bytes(170052171)).hexdigest()).
    assert!(message.contains("ad7f7965c67e4514fb4ec73b04400de0"), "{message}");
}

#[test]
fn loads_are_bounded_by_their_size_limit_before_anything_that_size_is_read() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("cifar-10-binary.tar.gz");
    write_tar_gz(&path, &archive_entries());
    let batches: u64 = archive_entries().iter().filter(|(n, _)| n.ends_with(".bin")).map(|(_, b)| b.len() as u64).sum();

    // In memory as from a file, and at exactly its size.
    let bytes = fs::read(&path).unwrap();
    let cifar = data::from_tar_gz(&bytes[..], "download", 1 << 20).unwrap();
    assert_eq!(cifar.train.len(), 15);
    assert!(data::load_limited(&path, 1 << 20).is_ok());

    // The wanted entries hold `batches` bytes: one byte less is refused, naming the entry that
    // crossed the limit, the limit and the option that raises it.
    let message = error_message(data::from_tar_gz(&bytes[..], "download", batches - 1));
    assert!(message.starts_with("download: entry cifar-10-batches-bin/test_batch.bin brings"), "{message}");
    assert!(message.contains("--max-data-mib"), "{message}");

    // A folder is judged by its files' sizes.
    let dir = temp.path().join("folder");
    fs::create_dir(&dir).unwrap();
    for (name, bytes) in archive_entries() {
        fs::write(dir.join(name.rsplit('/').next().unwrap()), bytes).unwrap();
    }
    assert!(data::load_limited(&dir, 1 << 20).is_ok());
    let message = error_message(data::load_limited(&dir, 100));
    assert!(message.contains("files hold") && message.contains("more than the limit"), "{message}");
}
