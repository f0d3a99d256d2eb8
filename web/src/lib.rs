//! The web page's Rust side: a thin `wasm-bindgen` layer over the library, which the page's
//! JavaScript (`web/static/app.js`) drives. Everything that computes is the library's — the same
//! WGSL kernels on WebGPU, the same fast CPU kernels (one thread, SIMD128) for the CPU side, the
//! same training loop, stepped from the browser's event loop — and this file only turns the
//! browser's bytes into the library's types and its results into JSON.
//!
//! Every call that reads the GPU back returns a `Promise`. The page awaits each call before it
//! makes the next on the same object; a call made while another is in flight fails with
//! "busy" rather than waiting.
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]
// A run's state is borrowed across its readbacks' awaits: the page never calls into a run while
// one of its promises is pending, and a call that would is refused by `try_borrow_mut`.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use js_sys::{Promise, Uint8Array};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use wgpu_cnn::bench::Instant;
use wgpu_cnn::checkpoint::{data_digest, Checkpoint};
use wgpu_cnn::data::{self, Cifar10, Dataset};
use wgpu_cnn::filter::{cpu, Conv3x3, Kernel3x3, Plane};
use wgpu_cnn::gpu::{GpuContext, GpuOptions, NO_WEBGPU_HINT};
use wgpu_cnn::isa::Isa;
use wgpu_cnn::metrics::{baseline_accuracy, ClassificationReport, ConfusionMatrix};
use wgpu_cnn::model::{Architecture, Model, CIFAR_INPUT, NAMED_ARCHITECTURES};
use wgpu_cnn::train::{Event, Inference, Target, TrainConfig, Trainer};

/// How the page's training data is described in checkpoints: as the tool describes its embedded
/// subset (the same files), so that `wgpu-cnn train --resume` accepts a page's checkpoint.
const DATA_SOURCE: &str = "embedded subset of CIFAR-10 (assets/cifar10)";

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn busy() -> JsValue {
    js_error("busy: the previous call on this object has not finished")
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// WebGPU, when the browser has it: the context, Part I's kernels, and the device's errors.
struct Gpu {
    ctx: GpuContext,
    conv: Conv3x3,
    /// Validation and out-of-memory errors the device raised (a browser reports them through
    /// the uncaptured-error handler; see `gpu::with_error_scope`).
    errors: Arc<Mutex<Vec<String>>>,
}

/// The device's errors since the last look, as one error (none without WebGPU).
fn check_gpu(gpu: Option<&Rc<Gpu>>) -> Result<(), JsValue> {
    gpu.map_or(Ok(()), |gpu| gpu.check())
}

impl Gpu {
    /// The device's errors since the last look, as one error.
    fn check(&self) -> Result<(), JsValue> {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match errors.is_empty() {
            true => Ok(()),
            false => Err(js_error(format!("WebGPU: {}", std::mem::take(&mut *errors).join("; ")))),
        }
    }
}

/// The page's state: WebGPU (or why there is none) and the CIFAR-10 files it fetched.
#[wasm_bindgen]
pub struct Lab {
    gpu: Option<Rc<Gpu>>,
    gpu_error: Option<String>,
    data: Option<Rc<Cifar10>>,
}

#[wasm_bindgen]
impl Lab {
    /// Opens WebGPU's adapter and device, with the adapter's limits. Never fails: without
    /// WebGPU, `gpu_error` says why and the page runs on the CPU alone. `adapter` is what the
    /// page's own `navigator.gpu.requestAdapter()` found: `undefined` when the browser offers
    /// none (then wgpu is not asked), else the adapter's "vendor/architecture", which names it
    /// (browsers leave the description, wgpu's adapter name, empty).
    pub async fn open(adapter: Option<String>) -> Lab {
        let Some(adapter_name) = adapter else {
            return Lab { gpu: None, gpu_error: Some(NO_WEBGPU_HINT.to_string()), data: None };
        };
        let (gpu, gpu_error) = match GpuContext::open(&GpuOptions::default()).await {
            Ok(mut ctx) => match Conv3x3::with_kernels(&ctx.kernels) {
                Ok(conv) => {
                    if ctx.info.name.is_empty() {
                        ctx.info.name = adapter_name;
                    }
                    let errors = Arc::new(Mutex::new(Vec::new()));
                    let sink = errors.clone();
                    ctx.device.on_uncaptured_error(Arc::new(move |e: wgpu_cnn::wgpu::Error| {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
                    }));
                    (Some(Rc::new(Gpu { ctx, conv, errors })), None)
                }
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(e.to_string())),
        };
        Lab { gpu, gpu_error, data: None }
    }

    /// The adapter and the limits the device was opened with, as JSON; `undefined` without one.
    pub fn gpu(&self) -> Option<String> {
        let gpu = self.gpu.as_ref()?;
        let limits = gpu.ctx.device.limits();
        Some(
            json!({
                "name": gpu.ctx.info.name,
                "description": gpu.ctx.describe(),
                "software": gpu.ctx.is_software(),
                "max_storage_buffers_per_shader_stage": limits.max_storage_buffers_per_shader_stage,
                "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
                "max_compute_invocations_per_workgroup": limits.max_compute_invocations_per_workgroup,
                "max_compute_workgroups_per_dimension": limits.max_compute_workgroups_per_dimension,
                "timestamps": gpu.ctx.supports_timestamps(),
            })
            .to_string(),
        )
    }

    /// Why there is no WebGPU, if there is none.
    pub fn gpu_error(&self) -> Option<String> {
        self.gpu_error.clone()
    }

    /// The CPU side: "wasm, SIMD128, 1 thread".
    pub fn cpu(&self) -> String {
        format!("wasm, {}, 1 thread", Isa::best())
    }

    /// The named architectures, as JSON `[[name, tokens, what], ...]`.
    pub fn architectures() -> String {
        serde_json::to_string(NAMED_ARCHITECTURES).expect("names serialise")
    }

    /// A kernel as the page shows it, or why the text is not one (a name such as `k1`, or nine
    /// numbers "a,b,c;d,e,f;g,h,i").
    pub fn kernel(text: &str) -> Result<String, JsValue> {
        Kernel3x3::parse(text).map(|k| k.to_string()).map_err(js_error)
    }

    /// Part I on the CPU (the fast path, bit-identical to the reference): the plane convolved
    /// with `kernel`, zero padding, clipped to 0..=255.
    pub fn convolve_cpu(plane: &[u8], width: u32, height: u32, kernel: &str) -> Result<Vec<u8>, JsValue> {
        let plane = Plane::new(width, height, plane.to_vec()).map_err(js_error)?;
        let kernel = Kernel3x3::parse(kernel).map_err(js_error)?;
        Ok(cpu::conv3x3_fast(&plane, &kernel).pixels)
    }

    /// Part I on WebGPU, end to end (upload, kernel, readback): resolves to the plane's bytes.
    pub fn convolve_gpu(&self, plane: Vec<u8>, width: u32, height: u32, kernel: String) -> Promise {
        let gpu = self.gpu.clone();
        future_to_promise(async move {
            let gpu = gpu.ok_or_else(|| js_error("no WebGPU adapter"))?;
            let plane = Plane::new(width, height, plane).map_err(js_error)?;
            let kernel = Kernel3x3::parse(&kernel).map_err(js_error)?;
            let out = gpu.conv.run_async(&gpu.ctx.device, &gpu.ctx.queue, &plane, &kernel).await.map_err(js_error)?;
            gpu.check()?;
            Ok(Uint8Array::from(&out.pixels[..]).into())
        })
    }

    /// Reads the CIFAR-10 files (`data_batch_1..5.bin`, `test_batch.bin`, `batches.meta.txt`)
    /// the page fetched; returns the counts as JSON.
    #[allow(clippy::too_many_arguments)]
    pub fn load_cifar(
        &mut self,
        batch_1: &[u8],
        batch_2: &[u8],
        batch_3: &[u8],
        batch_4: &[u8],
        batch_5: &[u8],
        test: &[u8],
        meta: &[u8],
    ) -> Result<String, JsValue> {
        let batches = [batch_1, batch_2, batch_3, batch_4, batch_5, test];
        let data = data::from_bytes(batches, Some(meta), DATA_SOURCE).map_err(js_error)?;
        let counts = json!({ "train": data.train.len(), "test": data.test.len(), "classes": data.class_names });
        self.data = Some(Rc::new(data));
        Ok(counts.to_string())
    }

    /// A training run of `architecture` (a name such as `base`, or tokens) on the first
    /// `train_size` training images with Keras' settings (Adam 1e-3, batch 128, L1 1e-4,
    /// validation split 0.1) and `epochs`, `seed`, on `device`: "gpu" (WebGPU) or "cpu".
    pub fn train(
        &self,
        architecture: &str,
        device: &str,
        train_size: usize,
        epochs: usize,
        seed: u32,
    ) -> Result<Run, JsValue> {
        let data = self.data.clone().ok_or_else(|| js_error("the CIFAR-10 files are not loaded yet"))?;
        let target = self.target(device)?;
        let architecture = Architecture::parse(architecture).map_err(js_error)?;
        let model = Model::new(&architecture, CIFAR_INPUT).map_err(js_error)?;
        let config = TrainConfig { epochs, seed: u64::from(seed), ..TrainConfig::default() };
        let rows = data.train.take_first(train_size.min(data.train.len()));
        let description = match train_size < data.train.len() {
            true => format!("{DATA_SOURCE}, first {} training images", rows.len()),
            false => DATA_SOURCE.to_string(),
        };
        let digest = data_digest(&rows);
        let (train, validation) = rows.split_validation(config.validation_split).map_err(js_error)?;
        let start = Instant::now();
        let engine = target.engine(&model, &train, model.init(config.seed), &config).map_err(js_error)?;
        let describe = engine.describe();
        let trainer = Trainer::owning(engine, &train, &validation, &config).map_err(js_error)?;
        check_gpu(self.gpu.as_ref())?;
        let info = json!({
            "engine": describe,
            "summary": model.summary(),
            "parameters": model.param_count,
            "train": train.len(),
            "validation": validation.len(),
            "test": data.test.len(),
            "build_seconds": start.elapsed().as_secs_f64(),
        });
        let state = RunState {
            trainer,
            architecture,
            train_labels: train.labels.clone(),
            data,
            description,
            digest,
            gpu: self.gpu.clone(),
        };
        Ok(Run { state: Rc::new(RefCell::new(state)), info: info.to_string() })
    }

    /// A model from a `.safetensors` checkpoint (the page's download or the tool's), for
    /// classifying pictures on `device`.
    pub fn load_model(&self, bytes: &[u8], name: &str, device: &str) -> Result<LoadedModel, JsValue> {
        let checkpoint = Checkpoint::from_bytes(bytes, name).map_err(js_error)?;
        let model = checkpoint.model().map_err(js_error)?;
        let target = self.target(device)?;
        let config = TrainConfig { batch_size: 1, ..checkpoint.config.clone() };
        let inference = target.inference(&model, checkpoint.weights.clone(), &config).map_err(js_error)?;
        let classes = self
            .data
            .as_ref()
            .map_or_else(|| data::CLASS_NAMES.iter().map(|s| s.to_string()).collect(), |d| d.class_names.clone());
        let info = json!({
            "architecture": checkpoint.architecture.to_string(),
            "epochs": checkpoint.epochs_done,
            "data": checkpoint.data,
            "engine": inference.describe(),
        });
        Ok(LoadedModel {
            state: Rc::new(RefCell::new(inference)),
            classes: classes.into(),
            gpu: self.gpu.clone(),
            info: info.to_string(),
        })
    }
}

impl Lab {
    fn target(&self, device: &str) -> Result<Target, JsValue> {
        match device {
            "gpu" => match &self.gpu {
                Some(gpu) => Ok(Target::Gpu(Box::new(gpu.ctx.clone()))),
                None => Err(js_error(format!(
                    "no WebGPU: {}",
                    self.gpu_error.as_deref().unwrap_or("the browser offers no adapter")
                ))),
            },
            "cpu" => Ok(Target::CpuFast),
            other => Err(js_error(format!("unknown device '{other}': use gpu or cpu"))),
        }
    }
}

struct RunState {
    trainer: Trainer<'static>,
    architecture: Architecture,
    train_labels: Vec<u8>,
    data: Rc<Cifar10>,
    description: String,
    digest: String,
    gpu: Option<Rc<Gpu>>,
}

/// A training run in progress, stepped by the page.
#[wasm_bindgen]
pub struct Run {
    state: Rc<RefCell<RunState>>,
    info: String,
}

#[wasm_bindgen]
impl Run {
    /// The engine, the model's summary and the data's sizes, as JSON.
    pub fn info(&self) -> String {
        self.info.clone()
    }

    /// The loop's next piece of work (start an epoch, one step, or finish an epoch): resolves
    /// to the event as JSON, or `null` once every epoch is done.
    pub fn advance(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            let event = state.trainer.advance().await.map_err(js_error)?;
            check_gpu(state.gpu.as_ref())?;
            let event = match event {
                None => return Ok(JsValue::NULL),
                Some(Event::EpochStart { epoch, epochs, steps }) => {
                    json!({ "kind": "epoch_start", "epoch": epoch + 1, "epochs": epochs, "steps": steps })
                }
                Some(Event::Step { progress, steps }) => json!({
                    "kind": "step", "done": progress.done, "steps": steps,
                    "loss": progress.running.map(|r| r.0), "accuracy": progress.running.map(|r| r.1),
                }),
                Some(Event::EpochEnd(record)) => json!({
                    "kind": "epoch_end", "epoch": record.epoch, "loss": record.loss, "accuracy": record.accuracy,
                    "val_loss": record.val_loss, "val_accuracy": record.val_accuracy, "seconds": record.seconds,
                    "images_per_second": state.train_labels.len() as f64 / record.seconds,
                }),
            };
            Ok(event.to_string().into())
        })
    }

    /// The test set's loss and accuracy, the confusion matrix, the classification report and
    /// the most-common-label baseline, as JSON.
    pub fn test(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            let data = state.data.clone();
            let start = Instant::now();
            let engine = state.trainer.engine();
            let id = engine.prepare(&data.test).map_err(js_error)?;
            let raw = engine.evaluate(id).await.map_err(js_error)?;
            check_gpu(state.gpu.as_ref())?;
            let seconds = start.elapsed().as_secs_f64();
            let (loss, accuracy) = raw.summarise(data.test.labels.iter().copied(), usize::MAX);
            let matrix =
                ConfusionMatrix::new(data.class_names.len(), &data.test.labels, &raw.predictions).map_err(js_error)?;
            let report = ClassificationReport::from_confusion(&matrix, &data.class_names);
            let (label, baseline) = baseline_accuracy(&state.train_labels, &data.test.labels);
            let rows: Vec<Vec<u64>> =
                (0..matrix.classes).map(|t| (0..matrix.classes).map(|p| matrix.get(t, p)).collect()).collect();
            Ok(json!({
                "loss": loss, "accuracy": accuracy, "images": data.test.len(), "seconds": seconds,
                "confusion": rows, "classes": data.class_names, "report": report.render(4),
                "baseline": baseline, "baseline_class": data.class_names.get(usize::from(label)),
            })
            .to_string()
            .into())
        })
    }

    /// The run as a `.safetensors` checkpoint (weights, Adam's state, settings, history), the
    /// file `wgpu-cnn train` writes: `wgpu-cnn evaluate` reads it.
    pub fn checkpoint(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            let snapshot = state.trainer.snapshot_async().await.map_err(js_error)?;
            check_gpu(state.gpu.as_ref())?;
            let checkpoint = Checkpoint::from_snapshot(&state.architecture, snapshot, &state.description)
                .with_data_digest(Some(&state.digest));
            let bytes = checkpoint.to_bytes("model.safetensors").map_err(js_error)?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }

    /// The run's history in Keras' layout (`history.history`), as JSON.
    pub fn history(&self) -> Result<String, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(state.trainer.history().to_keras_json().to_string())
    }
}

/// A trained model, for classifying pictures.
#[wasm_bindgen]
pub struct LoadedModel {
    state: Rc<RefCell<Box<dyn Inference>>>,
    classes: Rc<[String]>,
    gpu: Option<Rc<Gpu>>,
    info: String,
}

#[wasm_bindgen]
impl LoadedModel {
    /// The architecture, epochs trained, data and engine, as JSON.
    pub fn info(&self) -> String {
        self.info.clone()
    }

    /// The class probabilities of a 32×32 picture given as RGBA bytes (a canvas' pixels, the
    /// picture already resized): resolves to JSON `[[class, probability], ...]`, best first.
    pub fn classify(&self, rgba: Vec<u8>) -> Promise {
        let (state, classes, gpu) = (self.state.clone(), self.classes.clone(), self.gpu.clone());
        future_to_promise(async move {
            let pixels = data::WIDTH * data::HEIGHT;
            if rgba.len() != 4 * pixels {
                return Err(js_error(format!("a picture of {} bytes; 32×32 RGBA is {}", rgba.len(), 4 * pixels)));
            }
            let image: Vec<u8> = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
            let mut inference = state.try_borrow_mut().map_err(|_| busy())?;
            let id = inference.prepare(&Dataset { labels: vec![0], images: image }).map_err(js_error)?;
            let probabilities = inference.probabilities(id).await.map_err(js_error)?;
            check_gpu(gpu.as_ref())?;
            let mut ranked: Vec<(String, f32)> = probabilities
                .iter()
                .enumerate()
                .map(|(c, &p)| (classes.get(c).cloned().unwrap_or_else(|| format!("class {c}")), p))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            Ok(serde_json::to_string(&ranked).expect("pairs serialise").into())
        })
    }
}
