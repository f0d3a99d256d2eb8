//! Checkpoints: exact round trips, the file read back by safetensors alone (Keras' names and
//! shapes), atomic replacement, and an error that names the file and the problem for every way a
//! file can be wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_cnn::checkpoint::{Checkpoint, PYTHON_LOADING_SNIPPET};
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT};
use wgpu_cnn::train::{EpochRecord, History, OptimizerState, TrainConfig};

/// A tensor as a file holds it: name, shape, F32 values.
type RawTensor = (String, Vec<usize>, Vec<f32>);

fn base_model() -> Model {
    Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap()
}

/// A `base` checkpoint in which every number differs from its neighbours and from the defaults.
fn base_checkpoint() -> Checkpoint {
    let model = base_model();
    let n = model.param_count;
    let weights = model.init(1);
    let optimizer = OptimizerState {
        m: (0..n).map(|i| (i as f32 * 0.37).sin() * 1e-3).collect(),
        v: (0..n).map(|i| 1e-8 + (i as f32) * 1e-9).collect(),
        steps: 704,
    };
    let history = History {
        epochs: vec![
            EpochRecord {
                epoch: 1,
                loss: 1.8342071175575256,
                accuracy: 0.3317777812480927,
                val_loss: Some(1.5621),
                val_accuracy: Some(0.4406),
                // serde_json without its float_roundtrip feature would read this one back a unit
                // in the last place off, as about one 17-digit f64 in nine; the crate enables it.
                seconds: 492.16159209839907,
            },
            EpochRecord {
                epoch: 2,
                loss: 1.4875,
                accuracy: 0.4662222222222222,
                val_loss: None,
                val_accuracy: None,
                seconds: 11.5,
            },
        ],
    };
    let config =
        TrainConfig { epochs: 7, batch_size: 64, l1: 2.5e-4, validation_split: 0.2, seed: 1234, learning_rate: 5e-4 };
    assert_ne!(config, TrainConfig::default());
    Checkpoint {
        architecture: model.architecture.clone(),
        weights,
        optimizer: Some(optimizer),
        config,
        epochs_done: 2,
        history,
        data: "CIFAR-10 binary (data_batch_1..5), 45,000 train / 5,000 validation".to_string(),
        data_digest: Some("4 images, crc32 0123abcd".to_string()),
    }
}

/// Saves `checkpoint` into a fresh folder and returns both.
fn saved(checkpoint: &Checkpoint) -> (tempfile::TempDir, PathBuf) {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cifar.safetensors");
    checkpoint.save(&path).unwrap();
    (folder, path)
}

/// Writes a safetensors file with the given F32 tensors and metadata, the way another program would.
fn write_safetensors(path: &Path, tensors: &[RawTensor], metadata: Option<HashMap<String, String>>) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, values)| values.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| (name.as_str(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()));
    std::fs::write(path, safetensors::tensor::serialize(views, metadata).unwrap()).unwrap();
}

/// All tensors and the metadata of the file at `path`, read by safetensors alone.
fn read_raw(path: &Path) -> (Vec<RawTensor>, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (tensors, header.metadata().clone().unwrap())
}

/// The error message of loading `path`, checked to name the file and to contain `problem`.
fn load_error(path: &Path, problem: &str) -> String {
    let message = Checkpoint::load(path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "the message does not name the file: {message}");
    assert!(message.contains(problem), "expected '{problem}' in: {message}");
    message
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_saved_checkpoint_loads_back_identical() {
    let checkpoint = base_checkpoint();
    let (_folder, path) = saved(&checkpoint);
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(bits(&loaded.weights.params), bits(&checkpoint.weights.params));
    let (m, v) = (&loaded.optimizer.as_ref().unwrap().m, &loaded.optimizer.as_ref().unwrap().v);
    assert_eq!(bits(m), bits(&checkpoint.optimizer.as_ref().unwrap().m));
    assert_eq!(bits(v), bits(&checkpoint.optimizer.as_ref().unwrap().v));
    assert_eq!(loaded.architecture.name, "base");
    // The history's floats go through JSON: within one unit in the last place, and exact once
    // serde_json's float_roundtrip feature is on. Everything else is exact.
    assert_eq!(loaded.history.epochs.len(), 2);
    for (a, b) in loaded.history.epochs.iter().zip(&checkpoint.history.epochs) {
        let close = |x: f64, y: f64| x.to_bits().abs_diff(y.to_bits()) <= 1;
        assert!(close(a.loss, b.loss) && close(a.accuracy, b.accuracy) && close(a.seconds, b.seconds), "{a:?} {b:?}");
        assert_eq!((a.epoch, a.val_loss, a.val_accuracy), (b.epoch, b.val_loss, b.val_accuracy));
    }
    assert_eq!(Checkpoint { history: checkpoint.history.clone(), ..loaded.clone() }, checkpoint);
    assert_eq!(loaded.model().unwrap(), base_model());
}

#[test]
fn the_file_holds_keras_named_tensors_that_are_slices_of_the_flat_vector() {
    let checkpoint = base_checkpoint();
    let (_folder, path) = saved(&checkpoint);
    let (tensors, metadata) = read_raw(&path);

    let shapes: Vec<(&str, &[usize])> =
        tensors.iter().filter(|t| !t.0.starts_with("optimizer/")).map(|t| (t.0.as_str(), &t.1[..])).collect();
    let expected: [(&str, &[usize]); 10] = [
        ("conv2d/bias", &[16]),
        ("conv2d/kernel", &[3, 3, 3, 16]),
        ("conv2d_1/bias", &[16]),
        ("conv2d_1/kernel", &[3, 3, 16, 16]),
        ("conv2d_2/bias", &[32]),
        ("conv2d_2/kernel", &[3, 3, 16, 32]),
        ("conv2d_3/bias", &[32]),
        ("conv2d_3/kernel", &[3, 3, 32, 32]),
        ("dense/bias", &[10]),
        ("dense/kernel", &[2048, 10]),
    ];
    assert_eq!(shapes, expected);
    // And the same ten again for each of Adam's moments.
    assert_eq!(tensors.len(), 30);
    for prefix in ["optimizer/m/", "optimizer/v/"] {
        for (name, shape) in expected {
            assert!(tensors.iter().any(|t| t.0 == format!("{prefix}{name}") && t.1 == shape), "{prefix}{name}");
        }
    }

    // Raw values at the flat vector's offsets: conv2d's kernel starts the vector, conv2d_1's
    // kernel starts after conv2d's 432 + 16, and [ky, kx, c, k] is row-major (HWIO).
    let model = base_model();
    let tensor = |name: &str| &tensors.iter().find(|t| t.0 == name).unwrap().2;
    let params = &checkpoint.weights.params;
    assert_eq!(tensor("conv2d/kernel")[0].to_bits(), params[0].to_bits());
    assert_eq!(model.hidden[1].at.tensor("kernel").offset, 448);
    let (ky, kx, c, k) = (2, 1, 7, 5);
    let index = ((ky * 3 + kx) * 16 + c) * 16 + k;
    assert_eq!(tensor("conv2d_1/kernel")[index].to_bits(), params[448 + index].to_bits());
    let dense_kernel = model.head.at.tensor("kernel").offset;
    let kernel = tensor("dense/kernel");
    assert_eq!(kernel[2047 * 10 + 9].to_bits(), params[dense_kernel + 2047 * 10 + 9].to_bits());
    assert_eq!(kernel.len(), 20_480);
    let m = &checkpoint.optimizer.as_ref().unwrap().m;
    assert_eq!(tensor("optimizer/m/dense/kernel")[123].to_bits(), m[dense_kernel + 123].to_bits());
    assert_ne!(m[dense_kernel + 123], 0.0);

    let keys = |m: &HashMap<String, String>| {
        let mut keys: Vec<String> = m.keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&metadata),
        [
            "architecture",
            "config",
            "data",
            "data_digest",
            "digests",
            "epochs_done",
            "format",
            "format_version",
            "history",
            "metadata_digest",
            "model_name",
            "optimizer_steps"
        ]
    );
    assert_eq!(metadata["format"], "wgpu-cnn checkpoint");
    assert_eq!(metadata["format_version"], "1");
    assert_eq!(metadata["architecture"], "c16,c16s2,c32,c32s2,d0.5,f10");
    assert_eq!(metadata["model_name"], "base");
    assert_eq!(metadata["epochs_done"], "2");
    assert_eq!(metadata["optimizer_steps"], "704");
    let config: serde_json::Value = serde_json::from_str(&metadata["config"]).unwrap();
    assert_eq!(config["batch_size"], 64);
    let history: serde_json::Value = serde_json::from_str(&metadata["history"]).unwrap();
    assert_eq!(history["epochs"][1]["loss"], 1.4875);
}

#[test]
fn a_checkpoint_without_optimizer_state_loads_with_none() {
    let checkpoint = Checkpoint { optimizer: None, ..base_checkpoint() };
    let (_folder, path) = saved(&checkpoint);
    let (tensors, metadata) = read_raw(&path);
    assert_eq!(tensors.len(), 10);
    assert!(!metadata.contains_key("optimizer_steps"));
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.optimizer, None);
    assert_eq!(bits(&loaded.weights.params), bits(&checkpoint.weights.params));
}

#[test]
fn saving_over_a_checkpoint_replaces_it_and_leaves_no_temporary_files() {
    let first = base_checkpoint();
    let (folder, path) = saved(&first);
    assert_eq!(Checkpoint::load(&path).unwrap().epochs_done, 2);
    let mut second = Checkpoint { epochs_done: 3, ..base_checkpoint() };
    second.weights.params[0] = 0.125;
    second.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!((loaded.epochs_done, loaded.weights.params[0]), (3, 0.125));
    let files: Vec<_> = std::fs::read_dir(folder.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["cifar.safetensors"]);
}

#[test]
fn saving_into_a_missing_folder_fails_and_creates_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("missing").join("cifar.safetensors");
    let message = base_checkpoint().save(&path).unwrap_err().to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!folder.path().join("missing").exists());
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
}

#[test]
fn saving_a_diverged_model_fails_and_says_where_the_nan_is() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("cifar.safetensors");
    let mut checkpoint = base_checkpoint();
    let bias = base_model().head.at.tensor("bias").offset;
    checkpoint.weights.params[bias + 3] = f32::NAN;
    let message = checkpoint.save(&path).unwrap_err().to_string();
    assert!(message.contains("'dense/bias' holds NaN at index 3"), "{message}");
    assert!(!path.exists());
}

#[test]
fn a_text_file_is_not_a_checkpoint() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("notes.txt");
    std::fs::write(&path, "epoch 1: loss 1.83, accuracy 0.33\nepoch 2: loss 1.49\n").unwrap();
    load_error(&path, "not a safetensors checkpoint");
}

#[test]
fn an_empty_file_is_not_a_checkpoint() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("empty.safetensors");
    std::fs::write(&path, b"").unwrap();
    load_error(&path, "0 bytes is too short");
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let folder = tempfile::tempdir().unwrap();
    load_error(&folder.path().join("nowhere.safetensors"), "No such file");
}

#[test]
fn the_first_half_of_a_checkpoint_is_reported_truncated() {
    let (_folder, path) = saved(&base_checkpoint());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    load_error(&path, "truncated");
}

#[test]
fn a_safetensors_file_from_another_program_is_not_a_checkpoint() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("other.safetensors");
    write_safetensors(&path, &[("weight".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])], None);
    load_error(&path, "no \"format\" metadata");
}

/// Rewrites the checkpoint at `path` through safetensors with `edit` applied to its tensors.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<RawTensor>)) {
    let (mut tensors, metadata) = read_raw(path);
    edit(&mut tensors);
    write_safetensors(path, &tensors, Some(without_digests(metadata)));
}

/// The metadata of a file written before checkpoints carried digests (which loads unverified,
/// so that the checks after the digests' can be reached).
fn without_digests(mut metadata: HashMap<String, String>) -> HashMap<String, String> {
    metadata.remove("digests");
    metadata.remove("metadata_digest");
    metadata
}

#[test]
fn a_flipped_bit_in_a_tensor_is_a_corrupt_checkpoint_naming_the_tensor() {
    let (_folder, path) = saved(&base_checkpoint());
    let mut bytes = std::fs::read(&path).unwrap();
    // The data starts after the 8-byte header length and the JSON header.
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header + 1001] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let message = load_error(&path, "corrupt checkpoint: tensor '");
    assert!(message.contains("does not match its digest"), "{message}");
}

#[test]
fn edited_metadata_is_a_corrupt_checkpoint() {
    // base and maxpool have the same tensors: only the digest tells the edit.
    let (_folder, path) = saved(&base_checkpoint());
    let (tensors, mut metadata) = read_raw(&path);
    metadata.insert("architecture".into(), "c16,c16,p,c32,c32,p,d0.5,f10".into());
    metadata.insert("model_name".into(), "maxpool".into());
    write_safetensors(&path, &tensors, Some(metadata));
    load_error(&path, "corrupt checkpoint: its metadata (architecture, settings, history) does not match its digest");
}

#[test]
fn a_dense_kernel_of_the_wrong_shape_is_reported_with_both_shapes() {
    let (_folder, path) = saved(&base_checkpoint());
    rewrite(&path, |tensors| {
        let kernel = tensors.iter_mut().find(|t| t.0 == "dense/kernel").unwrap();
        kernel.1 = vec![10, 2048];
    });
    load_error(&path, "tensor 'dense/kernel' is F32 [10, 2048], but the architecture base");
    load_error(&path, "needs F32 [2048, 10]");
}

#[test]
fn a_missing_tensor_is_named() {
    let (_folder, path) = saved(&base_checkpoint());
    rewrite(&path, |tensors| tensors.retain(|t| t.0 != "conv2d_2/bias"));
    load_error(&path, "tensor 'conv2d_2/bias' is missing");
}

#[test]
fn a_non_finite_weight_is_refused() {
    let (_folder, path) = saved(&base_checkpoint());
    rewrite(&path, |tensors| {
        tensors.iter_mut().find(|t| t.0 == "conv2d_3/kernel").unwrap().2[17] = f32::INFINITY;
    });
    load_error(&path, "'conv2d_3/kernel' holds inf at index 17");
}

#[test]
fn unreadable_architecture_metadata_is_reported() {
    let (_folder, path) = saved(&base_checkpoint());
    let (tensors, mut metadata) = read_raw(&path);
    metadata.insert("architecture".into(), "c16,c16s3,f10".into());
    write_safetensors(&path, &tensors, Some(without_digests(metadata)));
    load_error(&path, "the architecture in the metadata cannot be read");
}

#[test]
fn resuming_with_another_architecture_is_refused_with_both_names() {
    let checkpoint = base_checkpoint();
    let deep = Architecture::parse("deep").unwrap();
    let message = checkpoint.check_architecture(&deep).unwrap_err().to_string();
    assert!(message.contains("base (c16,c16s2,c32,c32s2,d0.5,f10)"), "{message}");
    assert!(message.contains("deep (c8,c8s2,c16,c16s2,c32,c32s2,d0.5,f10)"), "{message}");
    checkpoint.check_architecture(&Architecture::parse("base").unwrap()).unwrap();
    // The same layers under their description instead of their name are the same net.
    checkpoint.check_architecture(&Architecture::parse("c16,c16s2,c32,c32s2,d0.5,f10").unwrap()).unwrap();
}

#[test]
fn the_python_snippet_uses_the_names_and_permutations_of_the_file() {
    for needle in [
        "from safetensors.numpy import load_file",
        "model.get_layer(name).set_weights([t[name + \"/kernel\"], t[name + \"/bias\"]])",
        ".permute(3, 2, 0, 1)",
        "reshape(H, W, C, K).permute(3, 2, 0, 1).reshape(K, C * H * W)",
    ] {
        assert!(PYTHON_LOADING_SNIPPET.contains(needle), "{needle}");
    }
}
