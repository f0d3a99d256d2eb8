//! Keras 3 itself as the spec of batch normalisation, the activation layers, convolutions without
//! activation and hidden dense layers: `tests/fixtures/keras_layers.safetensors` holds Keras'
//! numbers for the net `c4n,bn,lrelu,c8s2n,bn,relu,p,h16,f10` on 16 images, written by
//! `benches/peers/keras_layers.py fixture` (Keras 3.15.1 on TensorFlow 2.21, CPU; that script
//! re-makes it and runs this test against the new file through `KERAS_LAYERS_FIXTURE`). Keras stays
//! out of CI; its numbers are checked here as the metrics tests check scikit-learn's.
//!
//! Each engine (the reference, the fast CPU engine, the GPU) starts from Keras' initial weights
//! and must give, to `|ours − Keras| ≤ tolerance · max |Keras|` per tensor:
//! - the first step's gradient (Adam's first moment / (1 − β₁)), 1e-4;
//! - the moving statistics after that step, 1e-5;
//! - the weights after the fixture's five steps, 1e-4;
//! - from Keras' weights after those steps (moving statistics no longer at their start), the
//!   forward pass in inference mode (probabilities and per-sample losses) and in training mode
//!   (per-sample losses of a training step), 1e-5.
//!
//! The biases of the convolutions right before a batch normalisation are left out of the
//! gradient and weight comparisons: their gradient is zero in exact arithmetic (the normalisation
//! subtracts the channel mean, bias included), so both sides hold rounding noise, which Adam
//! scales to steps of the learning rate's size (see `common::param_difference`). The test checks
//! instead that their gradients are noise-sized on both sides.

mod common;

use std::collections::HashMap;

use common::{gpu, param_difference, pre_norm_biases};
use safetensors::SafeTensors;
use wgpu_cnn::data::Dataset;
use wgpu_cnn::model::{Architecture, Model, Weights, CIFAR_INPUT};
use wgpu_cnn::train::fast::FastCpuEngine;
use wgpu_cnn::train::gpu::GpuEngine;
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{wait, Engine, Step, TrainConfig};

struct Fixture {
    tensors: HashMap<String, Vec<f32>>,
    data: Dataset,
    model: Model,
    steps: u64,
    config: TrainConfig,
}

fn fixture() -> Fixture {
    let path = std::env::var("KERAS_LAYERS_FIXTURE")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_layers.safetensors").into());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = metadata.metadata().clone().expect("the fixture has metadata");
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = HashMap::new();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (name, view) in file.tensors() {
        match name.as_str() {
            "images" => images = view.data().to_vec(),
            "labels" => labels = view.data().to_vec(),
            _ => {
                tensors.insert(name.clone(), bytemuck::pod_collect_to_vec::<u8, f32>(view.data()));
            }
        }
    }
    let model = Model::new(&Architecture::parse(&meta["architecture"]).unwrap(), CIFAR_INPUT).unwrap();
    let batch: usize = meta["batch"].parse().unwrap();
    let config = TrainConfig { batch_size: batch, l1: meta["l1"].parse().unwrap(), ..Default::default() };
    assert_eq!(labels.len(), batch);
    Fixture { tensors, data: Dataset { images, labels }, model, steps: meta["steps"].parse().unwrap(), config }
}

impl Fixture {
    /// Keras' tensors `<what>/<layer>/<weight>` in our layout: every tensor of ours must be
    /// there under our name for it (Keras' layer and weight names), or the names disagree.
    fn weights(&self, what: &str) -> Weights {
        self.tensors_of(what, |_| true)
    }

    /// The non-trainable tensors alone (`state1/...`).
    fn state(&self, what: &str) -> Vec<f32> {
        self.tensors_of(what, |trainable| !trainable).state
    }

    fn tensors_of(&self, what: &str, wanted: impl Fn(bool) -> bool) -> Weights {
        let mut weights =
            Weights { params: vec![f32::NAN; self.model.param_count], state: vec![f32::NAN; self.model.state_count] };
        for (_, at) in self.model.layers() {
            for tensor in at.tensors.iter().filter(|t| wanted(t.spec.trainable)) {
                let name = format!("{what}/{}/{}", at.name, tensor.spec.name);
                let values = self.tensors.get(&name).unwrap_or_else(|| panic!("Keras has no tensor {name}"));
                let into = if tensor.spec.trainable { &mut weights.params } else { &mut weights.state };
                into[tensor.range()].copy_from_slice(values);
            }
        }
        weights
    }

    /// Keras' gradient of the first step, in our `params` layout.
    fn gradient(&self) -> Vec<f32> {
        let mut grads = vec![f32::NAN; self.model.param_count];
        for (_, at) in self.model.layers() {
            for tensor in at.tensors.iter().filter(|t| t.spec.trainable) {
                grads[tensor.range()]
                    .copy_from_slice(&self.tensors[&format!("gradient/{}/{}", at.name, tensor.spec.name)]);
            }
        }
        grads
    }
}

/// `max |a − b| / max |b|`.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

/// [`relative`] per trainable tensor, the worst of them, leaving out the biases before a batch
/// norm (`common::pre_norm_biases`; their largest |value| on each side is returned instead).
fn relative_params(model: &Model, a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let noise = pre_norm_biases(model);
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let (mut worst, mut noise_a, mut noise_b) = (0f32, 0f32, 0f32);
    for (_, at) in model.layers() {
        for t in at.tensors.iter().filter(|t| t.spec.trainable) {
            if noise.contains(&t.range()) {
                (noise_a, noise_b) = (noise_a.max(largest(&a[t.range()])), noise_b.max(largest(&b[t.range()])));
            } else {
                worst = worst.max(relative(&a[t.range()], &b[t.range()]));
            }
        }
    }
    (worst, noise_a, noise_b)
}

type Build<'a> = &'a dyn Fn(&Model, &Dataset, Weights, &TrainConfig) -> Box<dyn Engine>;

/// One full-batch training step on the fixture's rows in their order.
fn step(engine: &mut dyn Engine, f: &Fixture, t: u64) -> Vec<f32> {
    let n = f.data.len();
    engine.begin_epoch(&(0..n as u32).collect::<Vec<_>>()).unwrap();
    engine.train_step(&Step { batch: 0, start: 0, len: n, t, alpha: f.config.adam().alpha(t) }).unwrap();
    wait(engine.epoch_metrics()).unwrap().losses
}

fn matches_keras(name: &str, build: Build<'_>) {
    let f = fixture();
    let beta1 = f.config.adam().beta1 as f32;
    let mut engine = build(&f.model, &f.data, f.weights("initial"), &f.config);
    step(engine.as_mut(), &f, 1);
    let gradient: Vec<f32> = wait(engine.moments()).unwrap().m.iter().map(|m| m / (1.0 - beta1)).collect();
    let keras_gradient = f.gradient();
    let (gradient_error, our_noise, keras_noise) = relative_params(&f.model, &gradient, &keras_gradient);
    let scale = keras_gradient.iter().fold(0f32, |m, v| m.max(v.abs()));
    let state1 = relative(&wait(engine.weights()).unwrap().state, &f.state("state1"));
    for t in 2..=f.steps {
        step(engine.as_mut(), &f, t);
    }
    let trained = wait(engine.weights()).unwrap();
    let keras_trained = f.weights("trained");
    let (weights_error, ..) = relative_params(&f.model, &trained.params, &keras_trained.params);
    let (absolute, _) = param_difference(&f.model, &trained.params, &keras_trained.params);

    // From Keras' trained weights: inference, then a training step's forward pass.
    let mut at_keras = build(&f.model, &f.data, keras_trained, &f.config);
    let id = at_keras.prepare(&f.data).unwrap();
    let inference_losses = wait(at_keras.evaluate(id)).unwrap().losses;
    let inference_probabilities = wait(at_keras.probabilities(id)).unwrap();
    let training_losses = step(at_keras.as_mut(), &f, f.steps + 1);
    let inference = relative(&inference_losses, &f.tensors["inference/losses"])
        .max(relative(&inference_probabilities, &f.tensors["inference/probabilities"]));
    let training = relative(&training_losses, &f.tensors["training/losses"]);

    eprintln!(
        "{name} vs Keras: gradient {gradient_error:.1e}, moving statistics after a step {state1:.1e}, weights after \
         {} steps {weights_error:.1e} (max |Δ| {absolute:.1e}), inference forward {inference:.1e}, training forward \
         {training:.1e}; pre-norm bias gradients (exactly 0 in exact arithmetic): ours {our_noise:.1e}, Keras \
         {keras_noise:.1e}, of a gradient scale {scale:.1e} (relative to max |Keras|)",
        f.steps
    );
    assert!(gradient_error <= 1e-4, "{name}: first-step gradient differs from Keras' by {gradient_error:e}");
    assert!(our_noise.max(keras_noise) <= 1e-5 * scale, "{name}: the pre-norm bias gradients are not noise");
    assert!(state1 <= 1e-5, "{name}: moving statistics differ from Keras' by {state1:e}");
    assert!(weights_error <= 1e-4, "{name}: weights after {} steps differ from Keras' by {weights_error:e}", f.steps);
    assert!(inference <= 1e-5, "{name}: the inference forward pass differs from Keras' by {inference:e}");
    assert!(training <= 1e-5, "{name}: the training forward pass differs from Keras' by {training:e}");
}

#[test]
fn the_reference_engine_matches_keras() {
    matches_keras("reference", &|m, d, w, c| Box::new(ReferenceEngine::new(m, d, w, c).unwrap()));
}

#[test]
fn the_fast_cpu_engine_matches_keras() {
    matches_keras("fast CPU", &|m, d, w, c| Box::new(FastCpuEngine::new(m, d, w, c).unwrap()));
}

#[test]
fn the_gpu_engine_matches_keras() {
    let Some(ctx) = gpu() else { return };
    matches_keras("GPU", &|m, d, w, c| Box::new(GpuEngine::new(ctx, m, d, &w, c).unwrap()));
}

#[test]
fn our_summary_of_the_fixture_net_counts_as_keras_does() {
    // Keras' model.summary() of the fixture's net: Total 8,834, Trainable 8,810, Non-trainable 24.
    let f = fixture();
    assert_eq!((f.model.param_count, f.model.state_count), (8_810, 24));
    let summary = f.model.summary();
    for row in [
        "batch_normalization_1",
        "(BatchNormalization)",
        "leaky_re_lu (LeakyReLU)",
        "activation (Activation)",
        "flatten (Flatten)",
    ] {
        assert!(summary.contains(row), "{row}:\n{summary}");
    }
    assert!(
        summary.contains("Total params: 8,834 (34.51 KB)") && summary.contains("Non-trainable params: 24 (96.00 B)"),
        "{summary}"
    );
}
