//! The real CIFAR-10 subset the tool carries inside its binary, so that its demo needs no files
//! and no download: `assets/cifar10/` (the first 932 records of each training file, the first 846
//! of the test file: 4,660 + 846 images; provenance and licence in `assets/cifar10/README.md`).
//! The demo photo is `picture::DEMO_IMAGE`, the plots' font `plot.rs`'s.

use wgpu_cnn::data::{self, Cifar10};

/// The embedded CIFAR-10 subset.
pub fn cifar10() -> Cifar10 {
    let batches: [&'static [u8]; 6] = [
        include_bytes!("../../assets/cifar10/data_batch_1.bin"),
        include_bytes!("../../assets/cifar10/data_batch_2.bin"),
        include_bytes!("../../assets/cifar10/data_batch_3.bin"),
        include_bytes!("../../assets/cifar10/data_batch_4.bin"),
        include_bytes!("../../assets/cifar10/data_batch_5.bin"),
        include_bytes!("../../assets/cifar10/test_batch.bin"),
    ];
    let meta: &'static [u8] = include_bytes!("../../assets/cifar10/batches.meta.txt");
    data::from_bytes(batches, Some(meta), "embedded subset of CIFAR-10 (assets/cifar10)")
        .expect("the embedded CIFAR-10 files are valid (checked by the tool's tests)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_subset_is_the_one_in_assets() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cifar10");
        let (embedded, files) = (cifar10(), data::load_dir(&folder).unwrap());
        assert_eq!((embedded.train.len(), embedded.test.len()), (4660, 846));
        assert_eq!(embedded.train, files.train);
        assert_eq!(embedded.test, files.test);
        assert_eq!(embedded.class_names, files.class_names);
        assert!(embedded.source.starts_with("embedded subset of CIFAR-10"), "{}", embedded.source);
    }
}
