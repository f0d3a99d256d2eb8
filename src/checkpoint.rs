//! Checkpoints: a trained model, Adam's state and the run's bookkeeping in one `.safetensors`
//! file — our counterpart of the assignment's `model.save("cifar.model")` / `load_model`.
//!
//! It is **not** a Keras `.keras` or HDF5 file: Keras cannot open it with `load_model`, but the
//! tensors carry Keras' layer names and layouts, so [`PYTHON_LOADING_SNIPPET`] moves them into a
//! Keras (or PyTorch) model in a few lines. Format: <https://github.com/huggingface/safetensors>.
//!
//! # File layout (format version 1)
//! Tensors, all F32 little-endian, each exactly one slice of the model's flat `params` (trainable)
//! or `state` (non-trainable) vector, in the order and with the names and shapes the layers
//! declare ([`crate::layers::LayerInfo::tensors`]):
//! - `<layer>/<tensor>` for every tensor, named as Keras names them: `conv2d/kernel`
//!   `[3, 3, C, K]`, `conv2d/bias` `[K]`, `conv2d_1/...`, ..., `dense/kernel` `[F, K]` (F in
//!   NHWC flatten order), `dense/bias` `[K]`;
//! - with Adam's state: `optimizer/m/<same name>` and `optimizer/v/<same name>` for each
//!   trainable one.
//!
//! Metadata (safetensors' `__metadata__`, string → string): `format` = `wgpu-cnn checkpoint`,
//! `format_version` = `1`, `architecture` (the description, e.g. `c16,c16s2,c32,c32s2,d0.5,f10`),
//! `model_name`, `config` (JSON of [`TrainConfig`]), `epochs_done`, `history` (JSON of
//! [`History`]), `data`, `data_digest` (the training rows' content, [`data_digest`], which
//! `--resume` compares), and `optimizer_steps` when Adam's state is stored.
//!
//! Integrity: `digests` holds the CRC-32 of every tensor's bytes (JSON, name → 8 hex digits) and
//! `metadata_digest` that of every other metadata entry; [`Checkpoint::load`] verifies both and
//! names the tensor (or says the metadata) that does not match: flipped bits or an edited
//! architecture are a "corrupt checkpoint" error, not a model. (A guard against damage, not
//! against someone who rewrites the digests too. Files written before digests existed load
//! unverified.)
//!
//! Tensors and counts round-trip bit-exactly, and so do the floats of `config` and `history`,
//! which go through JSON: serde_json is built with its `float_roundtrip` feature.
//!
//! Every write goes through [`write_atomic`]: a crash leaves the previous checkpoint or the new
//! one, never half of one.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use serde::Deserialize;

use crate::error::{Error, Result, ResumeError};
use crate::io::write_atomic;
use crate::model::{Architecture, Model, Weights, CIFAR_INPUT};
use crate::train::{EpochRecord, History, OptimizerState, Snapshot, TrainConfig};

/// The value of the `format` metadata entry, which tells our checkpoints from other safetensors files.
pub const FORMAT: &str = "wgpu-cnn checkpoint";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// The Python lines that load a checkpoint into Keras or PyTorch (for the README and `--help`).
pub const PYTHON_LOADING_SNIPPET: &str = r#"# Keras: build the same layers in a fresh session (so they are named conv2d, conv2d_1, ..., dense),
# e.g. for `base` (safe_open(path, "np").metadata()["architecture"] tells which):
import keras
from safetensors.numpy import load_file
t = load_file("cifar.safetensors")
conv = lambda k, s=1: keras.layers.Conv2D(k, 3, strides=s, padding="same", activation="relu")
model = keras.Sequential([keras.Input((32, 32, 3)), conv(16), conv(16, 2), conv(32), conv(32, 2),
                          keras.layers.Dropout(0.5), keras.layers.Flatten(),
                          keras.layers.Dense(10, activation="softmax")])
for name in {k.split("/")[0] for k in t if not k.startswith("optimizer/")}:
    model.get_layer(name).set_weights([t[name + "/kernel"], t[name + "/bias"]])

# PyTorch (NCHW): conv kernel [3,3,C,K] -> [K,C,3,3]. torch's flatten runs (c,h,w), ours (h,w,c),
# so the dense rows are reordered too: [H*W*C, K] -> [K, C*H*W]. Keras 'same' padding with
# stride 2 on an even size pads 0 before and 1 after: use F.pad(x, (0, 1, 0, 1)) and padding=0
# there (padding=1 is right for stride 1). The dense layer gives logits; softmax is separate.
import torch
from safetensors.torch import load_file
t = load_file("cifar.safetensors")
conv_weight = lambda name: t[name + "/kernel"].permute(3, 2, 0, 1).contiguous()
H, W, C = 8, 8, 32  # the dense layer's input (base: 8x8x32)
K = t["dense/kernel"].shape[1]
dense_weight = t["dense/kernel"].reshape(H, W, C, K).permute(3, 2, 0, 1).reshape(K, C * H * W)
# (or keep our order: dense_weight = t["dense/kernel"].T with x.permute(0, 2, 3, 1).flatten(1))
"#;

/// Everything needed to evaluate a trained model or to resume its training.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Name and layers.
    pub architecture: Architecture,
    /// The model's flat vectors (see [`Model`]).
    pub weights: Weights,
    pub optimizer: Option<OptimizerState>,
    /// The training settings of the run.
    pub config: TrainConfig,
    pub epochs_done: usize,
    pub history: History,
    /// Free text: where the training data came from.
    pub data: String,
    /// [`data_digest`] of the training rows, which `--resume` compares (None in files written
    /// before it was stored: the description is compared then).
    pub data_digest: Option<String>,
}

/// A digest of a training set's content (CRC-32 of its labels and pixels, and its size): the
/// same images give the same digest whatever path they are read from.
pub fn data_digest(data: &crate::data::Dataset) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(data.len() as u64).to_le_bytes());
    hasher.update(&data.labels);
    hasher.update(&data.images);
    format!("{} images, crc32 {:08x}", data.len(), hasher.finalize())
}

/// One tensor of the file: its name and shape, which flat vector it is a slice of, and where.
struct Slot {
    name: String,
    shape: Vec<usize>,
    trainable: bool,
    offset: usize,
    len: usize,
}

/// The tensors of `model` in layer order, as the layers declare them.
fn tensor_slots(model: &Model) -> Vec<Slot> {
    model
        .layers()
        .flat_map(|(_, at)| {
            at.tensors.iter().map(|t| Slot {
                name: format!("{}/{}", at.name, t.spec.name),
                shape: t.spec.shape.clone(),
                trainable: t.spec.trainable,
                offset: t.offset,
                len: t.len(),
            })
        })
        .collect()
}

/// A flat vector a checkpoint holds: the prefix of its tensor names, whether its slots are the
/// trainable ones (params, Adam's moments) or not (state), and the values.
type Stored<'a> = (&'static str, bool, &'a [f32]);

/// The flat vectors a checkpoint holds.
fn stored_vectors<'a>(weights: &'a Weights, optimizer: Option<&'a OptimizerState>) -> Vec<Stored<'a>> {
    let mut vectors = vec![("", true, &weights.params[..]), ("", false, &weights.state[..])];
    if let Some(optimizer) = optimizer {
        vectors.push(("optimizer/m/", true, &optimizer.m[..]));
        vectors.push(("optimizer/v/", true, &optimizer.v[..]));
    }
    vectors
}

/// The first NaN or infinity among the stored tensors, as "'name' holds NaN at index i".
fn first_non_finite(slots: &[Slot], vectors: &[Stored<'_>]) -> Option<String> {
    for (prefix, trainable, values) in vectors {
        for slot in slots.iter().filter(|s| s.trainable == *trainable) {
            let tensor = &values[slot.offset..][..slot.len];
            if let Some(i) = tensor.iter().position(|x| !x.is_finite()) {
                return Some(format!("'{prefix}{}' holds {} at index {i}", slot.name, tensor[i]));
            }
        }
    }
    None
}

impl Checkpoint {
    /// Writes the checkpoint to `path` as a `.safetensors` file, atomically (see the module docs
    /// for the layout). Refuses parameter vectors of the wrong length and non-finite values, which
    /// [`Checkpoint::load`] would reject.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes(&path.display().to_string())?)
    }

    /// The `.safetensors` file [`Checkpoint::save`] writes, as bytes (a web page's download);
    /// `name` is how error messages call it.
    pub fn to_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let model = self.model()?;
        let slots = tensor_slots(&model);
        let cannot = |why: String| Error::invalid(format!("{name}: cannot save the checkpoint: {why}"));
        let count = model.param_count;
        if self.weights.params.len() != count || self.weights.state.len() != model.state_count {
            return Err(cannot(format!(
                "there are {} parameters and {} non-trainable values, but the architecture {} has {count} and {}",
                self.weights.params.len(),
                self.weights.state.len(),
                self.architecture,
                model.state_count
            )));
        }
        if let Some(optimizer) = &self.optimizer {
            if optimizer.m.len() != count || optimizer.v.len() != count {
                return Err(cannot(format!(
                    "Adam's moments have {} and {} values, but the architecture {} has {count} parameters",
                    optimizer.m.len(),
                    optimizer.v.len(),
                    self.architecture
                )));
            }
        }
        let vectors = stored_vectors(&self.weights, self.optimizer.as_ref());
        if let Some(what) = first_non_finite(&slots, &vectors) {
            return Err(cannot(format!("{what}; training diverged, try a lower learning rate")));
        }

        // safetensors takes views of byte buffers: encode every tensor first, then borrow them.
        let mut encoded: Vec<(String, &[usize], Vec<u8>)> = Vec::new();
        for (prefix, trainable, values) in &vectors {
            for slot in slots.iter().filter(|s| s.trainable == *trainable) {
                let bytes = values[slot.offset..][..slot.len].iter().flat_map(|x| x.to_le_bytes()).collect();
                encoded.push((format!("{prefix}{}", slot.name), &slot.shape, bytes));
            }
        }
        let views = encoded.iter().map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.to_vec(), bytes)
                .expect("a slot's shape covers exactly its slice of the flat vector");
            (name.as_str(), view)
        });

        let json = |what: &str, result: serde_json::Result<String>| {
            result.map_err(|e| cannot(format!("the {what} cannot be written as JSON: {e}")))
        };
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("architecture".to_string(), self.architecture.description()),
            ("model_name".to_string(), self.architecture.name.clone()),
            ("config".to_string(), json("training configuration", serde_json::to_string(&self.config))?),
            ("epochs_done".to_string(), self.epochs_done.to_string()),
            ("history".to_string(), json("history", serde_json::to_string(&self.history))?),
            ("data".to_string(), self.data.clone()),
        ]);
        if let Some(optimizer) = &self.optimizer {
            metadata.insert("optimizer_steps".to_string(), optimizer.steps.to_string());
        }
        if let Some(digest) = &self.data_digest {
            metadata.insert("data_digest".to_string(), digest.clone());
        }
        let digests: std::collections::BTreeMap<&str, String> =
            encoded.iter().map(|(name, _, bytes)| (name.as_str(), digest(bytes))).collect();
        metadata.insert("digests".to_string(), json("digests", serde_json::to_string(&digests))?);
        metadata.insert("metadata_digest".to_string(), metadata_digest(&metadata));
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| cannot(e.to_string()))
    }

    /// Reads and validates a checkpoint written by [`Checkpoint::save`]: every error names the
    /// file and says what is wrong with it (not a safetensors file, truncated, not ours, unreadable
    /// metadata, a tensor missing or of the wrong shape or dtype, non-finite values).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if size > MAX_CHECKPOINT_BYTES {
            return Err(Error::invalid(format!(
                "{}: {size} bytes, more than a checkpoint of the largest model allowed ({MAX_CHECKPOINT_BYTES} \
                 bytes): not a wgpu-cnn checkpoint",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// [`Checkpoint::load`] of a file's bytes held in memory (a download, a file a page was
    /// given); `name` is how error messages call it.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Checkpoint> {
        let bad = |why: String| Error::invalid(format!("{name}: {why}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(unreadable(bytes, e)))?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| bad(unreadable(bytes, e)))?;
        let empty = HashMap::new();
        let metadata = header.metadata().as_ref().unwrap_or(&empty);

        match metadata.get("format") {
            Some(format) if format == FORMAT => {}
            Some(format) => {
                return Err(bad(format!("not a wgpu-cnn checkpoint: its format is '{format}', expected '{FORMAT}'")))
            }
            None => {
                return Err(bad(format!(
                    "a safetensors file, but not a wgpu-cnn checkpoint: it has no \"format\" metadata \
                     (expected '{FORMAT}'), so another program wrote it"
                )))
            }
        }
        let entry = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                bad(format!("the checkpoint's metadata has no '{key}' entry; the file is damaged, save it again"))
            })
        };
        // Integrity first: nothing read from damaged or edited metadata sizes anything.
        let digests: Option<HashMap<String, String>> = match metadata.get("metadata_digest") {
            None => None,
            Some(stored) => {
                if *stored != metadata_digest(metadata) {
                    return Err(bad(
                        "corrupt checkpoint: its metadata (architecture, settings, history) does not match its \
                         digest, so the file was damaged or edited after it was written; use another checkpoint"
                            .into(),
                    ));
                }
                let digests = entry("digests")?;
                Some(
                    serde_json::from_str(digests)
                        .map_err(|e| bad(format!("the 'digests' metadata cannot be read: {e}")))?,
                )
            }
        };
        let version = entry("format_version")?;
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "checkpoint format version {version}, but this build of wgpu-cnn reads version {FORMAT_VERSION}; \
                 use the wgpu-cnn that wrote it"
            )));
        }

        let description = entry("architecture")?;
        let mut architecture = Architecture::parse(description)
            .map_err(|e| bad(format!("the architecture in the metadata cannot be read: {e}")))?;
        architecture.name = entry("model_name")?.clone();
        let config: TrainConfig = serde_json::from_str(entry("config")?)
            .map_err(|e| bad(format!("the 'config' metadata is not a training configuration: {e}")))?;
        let epochs_done = entry("epochs_done")?;
        let epochs_done: usize =
            epochs_done.parse().map_err(|_| bad(format!("'epochs_done' is '{epochs_done}', not a whole number")))?;
        let history = serde_json::from_str::<StoredHistory>(entry("history")?)
            .map_err(|e| bad(format!("the 'history' metadata is not a training history: {e}")))?
            .into();
        let data = entry("data")?.clone();

        let model = Model::new(&architecture, CIFAR_INPUT).map_err(|e| bad(e.to_string()))?;
        let slots = tensor_slots(&model);
        // Adam's state is there when its step count or any of its tensors is; then all of it must be.
        let has_optimizer =
            metadata.contains_key("optimizer_steps") || file.names().iter().any(|n| n.starts_with("optimizer/"));
        // (prefix, trainable slots?, length) of each flat vector in the file.
        let mut layout = vec![("", true, model.param_count), ("", false, model.state_count)];
        if has_optimizer {
            layout.push(("optimizer/m/", true, model.param_count));
            layout.push(("optimizer/v/", true, model.param_count));
        }

        let expected: Vec<String> = layout
            .iter()
            .flat_map(|&(p, trainable, _)| {
                slots.iter().filter(move |s| s.trainable == trainable).map(move |s| format!("{p}{}", s.name))
            })
            .collect();
        let mut unexpected: Vec<&str> = file.names().into_iter().filter(|n| !expected.iter().any(|e| e == n)).collect();
        if !unexpected.is_empty() {
            unexpected.sort_unstable();
            return Err(bad(format!(
                "tensors {unexpected:?} do not belong to the architecture {architecture}, which has {expected:?}"
            )));
        }

        // Every tensor is checked (present, shape, dtype, digest) before anything is allocated: the
        // vectors' sizes come from the metadata, so only tensors the file really holds may size them.
        let mut tensors = Vec::new();
        for &(prefix, trainable, _) in &layout {
            for slot in slots.iter().filter(|s| s.trainable == trainable) {
                let name = format!("{prefix}{}", slot.name);
                let tensor = file.tensor(&name).map_err(|_| {
                    bad(format!(
                        "tensor '{name}' is missing; the architecture {architecture} needs it with shape {:?}",
                        slot.shape
                    ))
                })?;
                if tensor.dtype() != Dtype::F32 || tensor.shape() != slot.shape {
                    return Err(bad(format!(
                        "tensor '{name}' is {} {:?}, but the architecture {architecture} needs F32 {:?}",
                        tensor.dtype(),
                        tensor.shape(),
                        slot.shape
                    )));
                }
                if let Some(digests) = &digests {
                    if digests.get(&name) != Some(&digest(tensor.data())) {
                        return Err(bad(format!(
                            "corrupt checkpoint: tensor '{name}' does not match its digest, so the file was damaged \
                             or edited after it was written; use another checkpoint"
                        )));
                    }
                }
                tensors.push((slot, tensor));
            }
        }
        let mut tensors = tensors.into_iter();
        let mut vectors = Vec::new();
        for &(_, trainable, len) in &layout {
            let mut values = vec![0f32; len];
            for (slot, tensor) in tensors.by_ref().take(slots.iter().filter(|s| s.trainable == trainable).count()) {
                let slice = &mut values[slot.offset..][..slot.len];
                for (x, le) in slice.iter_mut().zip(tensor.data().chunks_exact(4)) {
                    *x = f32::from_le_bytes(le.try_into().expect("chunks_exact(4) yields 4 bytes"));
                }
            }
            vectors.push(values);
        }
        let stored: Vec<Stored<'_>> = layout.iter().zip(&vectors).map(|(&(p, t, _), v)| (p, t, &v[..])).collect();
        if let Some(what) = first_non_finite(&slots, &stored) {
            return Err(bad(format!("tensor {what}; the checkpoint cannot be used")));
        }

        let mut vectors = vectors.into_iter();
        let mut next = || vectors.next().expect("every vector of the layout is read");
        let weights = Weights { params: next(), state: next() };
        let optimizer = match has_optimizer {
            true => {
                let (m, v) = (next(), next());
                let steps = entry("optimizer_steps")?;
                let steps =
                    steps.parse().map_err(|_| bad(format!("'optimizer_steps' is '{steps}', not a whole number")))?;
                Some(OptimizerState { m, v, steps })
            }
            false => None,
        };
        let data_digest = metadata.get("data_digest").cloned();
        Ok(Checkpoint { architecture, weights, optimizer, config, epochs_done, history, data, data_digest })
    }

    /// A checkpoint of a run of `architecture` on the data described as `data`.
    pub fn from_snapshot(architecture: &Architecture, snapshot: Snapshot, data: &str) -> Self {
        Checkpoint {
            architecture: architecture.clone(),
            weights: snapshot.weights,
            optimizer: Some(snapshot.optimizer),
            config: snapshot.config,
            epochs_done: snapshot.history.epochs.len(),
            history: snapshot.history,
            data: data.to_string(),
            data_digest: None,
        }
    }

    /// The same, identifying the training rows by `digest` ([`data_digest`]).
    pub fn with_data_digest(self, digest: Option<&str>) -> Self {
        Checkpoint { data_digest: digest.map(str::to_string), ..self }
    }

    /// The training loop's `after_epoch` that saves the run to `path` after every epoch
    /// (atomically: a crash leaves the last epoch's checkpoint), so that a crash loses at most
    /// one epoch.
    pub fn saver<'a>(
        path: &'a Path,
        architecture: &'a Architecture,
        data: &'a str,
        digest: Option<&'a str>,
    ) -> impl FnMut(&mut crate::train::Trainer<'_>) -> Result<()> + 'a {
        move |trainer| {
            Checkpoint::from_snapshot(architecture, trainer.snapshot()?, data).with_data_digest(digest).save(path)
        }
    }

    /// The settings to continue this run up to `epochs` on the data described as `data`: the
    /// run's own, but for the number of epochs. Fails, saying why and what to do, when the data
    /// differs from the run's, when it is trained that far already, or when the checkpoint holds
    /// no optimiser state to continue from.
    /// The data is the same when its [`data_digest`] is (`digest`, where both the checkpoint and
    /// the caller have one; the description may then differ, e.g. by path), else when its
    /// description is.
    pub fn resume_config(&self, epochs: usize, data: &str, digest: Option<&str>) -> Result<TrainConfig> {
        let same_data = match (&self.data_digest, digest) {
            (Some(stored), Some(given)) => stored == given,
            _ => self.data == data,
        };
        if !same_data {
            let with = |description: &str, digest: Option<&str>| match digest {
                Some(d) => format!("{description}; {d}"),
                None => description.to_string(),
            };
            let (trained_on, given) = (with(&self.data, self.data_digest.as_deref()), with(data, digest));
            return Err(Error::Resume(ResumeError::OtherData { trained_on, given }));
        }
        if self.epochs_done >= epochs {
            return Err(Error::Resume(ResumeError::Done { epochs_done: self.epochs_done }));
        }
        if self.optimizer.is_none() {
            return Err(Error::Resume(ResumeError::NoOptimizer));
        }
        let config = TrainConfig { epochs, ..self.config.clone() };
        config.validate()?;
        Ok(config)
    }

    /// The model of this checkpoint, laid out on CIFAR-10's 32×32×3 input.
    pub fn model(&self) -> Result<Model> {
        Model::new(&self.architecture, CIFAR_INPUT)
    }

    /// Fails, saying both, when this checkpoint's layers differ from `expected`'s (the name alone
    /// may differ: `base` and `c16,c16s2,c32,c32s2,d0.5,f10` are the same net).
    pub fn check_architecture(&self, expected: &Architecture) -> Result<()> {
        if self.architecture.description() == expected.description() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "the checkpoint was trained with architecture {}, but {expected} was asked for; resume with the \
             checkpoint's architecture ({}) or start a new run",
            self.architecture,
            self.architecture.description()
        )))
    }
}

/// Why safetensors could not read `bytes`, in words a user can act on.
/// The largest file [`Checkpoint::load`] reads: the weights, state and Adam's two moments of a
/// model of [`crate::model::MAX_PARAMS`] parameters, and a header of safetensors' largest size.
pub const MAX_CHECKPOINT_BYTES: u64 = 3 * 4 * crate::model::MAX_PARAMS as u64 + 100_000_000;

fn unreadable(bytes: &[u8], error: SafeTensorError) -> String {
    let size = bytes.len();
    let announced = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    match (error, announced) {
        (SafeTensorError::HeaderTooSmall, _) => {
            format!("not a checkpoint: {size} bytes is too short for a safetensors file (an empty or truncated file?)")
        }
        (SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength, Some(header)) => format!(
            "not a safetensors checkpoint: its first 8 bytes should give the header's length, but they say \
             {header} bytes and the file has {size} (a text file, a Keras .keras/.h5 file, or a truncated checkpoint?)"
        ),
        (SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_), _) => {
            "not a safetensors checkpoint: its header is not JSON".to_string()
        }
        (SafeTensorError::MetadataIncompleteBuffer, Some(header)) => {
            let data = size.saturating_sub(8 + header as usize);
            match described_data_len(bytes, header as usize) {
                Some(described) if described > data => format!(
                    "truncated: the header describes {described} bytes of tensor data but the file holds {data} \
                     (was the write interrupted? save the checkpoint again)"
                ),
                _ => format!("damaged: the tensor data does not match the header ({data} bytes after it)"),
            }
        }
        (error, _) => format!("not a valid safetensors file: {error}"),
    }
}

/// The tensor data length a safetensors header describes: the largest end offset.
fn described_data_len(bytes: &[u8], header: usize) -> Option<usize> {
    let json: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + header)?).ok()?;
    json.as_object()?.values().filter_map(|info| info.get("data_offsets")?.get(1)?.as_u64()).max().map(|e| e as usize)
}

/// [`History`] as stored: serde_json writes NaN and infinities as `null`, which an `f64` field
/// refuses; read those back as NaN so a run whose loss blew up still loads.
#[derive(Deserialize)]
struct StoredHistory {
    epochs: Vec<StoredEpoch>,
}

#[derive(Deserialize)]
struct StoredEpoch {
    epoch: usize,
    loss: Option<f64>,
    accuracy: Option<f64>,
    val_loss: Option<f64>,
    val_accuracy: Option<f64>,
    seconds: Option<f64>,
}

impl From<StoredHistory> for History {
    fn from(stored: StoredHistory) -> Self {
        let epochs = stored
            .epochs
            .into_iter()
            .map(|e| EpochRecord {
                epoch: e.epoch,
                loss: e.loss.unwrap_or(f64::NAN),
                accuracy: e.accuracy.unwrap_or(f64::NAN),
                val_loss: e.val_loss,
                val_accuracy: e.val_accuracy,
                seconds: e.seconds.unwrap_or(f64::NAN),
            })
            .collect();
        History { epochs }
    }
}

/// CRC-32 of `bytes`, as 8 hex digits.
fn digest(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// [`digest`] of every metadata entry but `metadata_digest`, in key order, each key and value
/// length-prefixed so that no two different entries hash the same bytes.
fn metadata_digest(metadata: &HashMap<String, String>) -> String {
    let mut entries: Vec<(&String, &String)> = metadata.iter().filter(|(k, _)| *k != "metadata_digest").collect();
    entries.sort();
    let mut hasher = crc32fast::Hasher::new();
    for (key, value) in entries {
        for part in [key, value] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    format!("{:08x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_nets_tensors_tile_the_flat_vector_with_keras_shapes() {
        let model = Model::new(&Architecture::parse("base").unwrap(), CIFAR_INPUT).unwrap();
        let slots = tensor_slots(&model);
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv2d/kernel",
                "conv2d/bias",
                "conv2d_1/kernel",
                "conv2d_1/bias",
                "conv2d_2/kernel",
                "conv2d_2/bias",
                "conv2d_3/kernel",
                "conv2d_3/bias",
                "dense/kernel",
                "dense/bias"
            ]
        );
        assert_eq!(slots[0].shape, [3, 3, 3, 16]);
        assert_eq!(slots[2].shape, [3, 3, 16, 16]);
        assert_eq!(slots[8].shape, [2048, 10]);
        // Back to back, covering all 37,146 parameters.
        let mut next = 0;
        for slot in &slots {
            assert_eq!(slot.offset, next, "{}", slot.name);
            assert_eq!(slot.shape.iter().product::<usize>(), slot.len, "{}", slot.name);
            next += slot.len;
        }
        assert_eq!(next, 37_146);
    }

    #[test]
    fn a_history_with_a_nan_loss_reads_back_as_nan() {
        let history = History {
            epochs: vec![EpochRecord {
                epoch: 1,
                loss: f64::NAN,
                accuracy: 0.1,
                val_loss: None,
                val_accuracy: Some(0.1),
                seconds: 2.0,
            }],
        };
        let json = serde_json::to_string(&history).unwrap();
        assert!(
            serde_json::from_str::<History>(&json).is_err(),
            "serde_json now reads null as f64: drop StoredHistory"
        );
        let back: History = serde_json::from_str::<StoredHistory>(&json).unwrap().into();
        assert!(back.epochs[0].loss.is_nan());
        assert_eq!(back.epochs[0].accuracy, 0.1);
        assert_eq!(back.epochs[0].val_accuracy, Some(0.1));
    }
}
