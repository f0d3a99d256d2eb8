//! The web page in a real browser, from the one test command: `web/build.sh` builds it (in its
//! own target folder, `target/web-build/`), `python3 -m http.server` serves it (the README's two
//! commands), and headless Chromium, driven through chromedriver (WebDriver), uses it as a
//! person would — clicks, typed kernels, a picture given to the file input:
//! - Part I's input plane and convolved planes, on WebGPU and on the page's CPU path, equal the
//!   native decode and the native CPU reference byte for byte;
//! - one epoch of the base net on 384 images, on WebGPU and on the page's CPU path, matches the
//!   native CPU reference's history and weights within the GPU tests' tolerances, and so does
//!   one epoch of every other named network on 256 images on WebGPU;
//! - the downloaded `model.safetensors` loads here, `wgpu-cnn evaluate` reads it and
//!   `wgpu-cnn train --resume` continues it;
//! - a picture classified on the page gets the native reference's probabilities, with the
//!   model just trained (WebGPU) and with a checkpoint the tool wrote (the page's CPU path);
//! - without WebGPU (no flag) the page says so and convolves on the CPU, and a file that is no
//!   picture gets an error naming it;
//! - a screenshot of the finished page is written to `target/web-test/screenshot.png`.
//!
//! Chromium offers WebGPU here only with `--enable-unsafe-webgpu` (its CPU adapter, SwiftShader,
//! is blocklisted otherwise), and as root needs `--no-sandbox`. The tools come from `.ci/run`;
//! where one is missing the test fails and says how to install it, and
//! `WGPU_CNN_SKIP_BROWSER_TESTS=1` opts out explicitly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use wgpu_cnn::checkpoint::Checkpoint;
use wgpu_cnn::filter::{cpu, Kernel3x3};
use wgpu_cnn::model::{Architecture, Model, Weights, CIFAR_INPUT, NAMED_ARCHITECTURES};
use wgpu_cnn::train::reference::ReferenceEngine;
use wgpu_cnn::train::{wait, Engine, Inference, TrainConfig, Trainer};
use wgpu_cnn_cli::{assets, picture};

mod common;

const INSTALL: &str = "install the tools with .ci/run's steps: apt-get install chromium chromium-driver python3; \
     rustup target add wasm32-unknown-unknown; cargo install wasm-bindgen-cli --version <Cargo.lock's wasm-bindgen> \
     (or set WGPU_CNN_SKIP_BROWSER_TESTS=1 to skip the browser test)";

/// The short run the page trains, and the native reference repeats.
const TRAIN_SIZE: usize = 384;
const SEED: u64 = 42;

fn workspace() -> PathBuf {
    // Absolute: Chromium's download folder must be.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the workspace folder")
}

fn require(ok: bool, what: &str) {
    assert!(ok, "{what} is missing: {INSTALL}");
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// A child process killed when the test ends, passing or failing.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port").port()
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 exchange with a local server (chromedriver, the page's server): status and body.
/// The body is read by its length (chromedriver keeps connections open) or its chunks.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let mut payload = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            payload.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        payload.resize(length, 0);
        reader.read_exact(&mut payload)?;
    } else {
        reader.read_to_end(&mut payload)?;
    }
    Ok((status, payload))
}

/// A WebDriver session of headless Chromium.
struct Browser {
    port: u16,
    session: String,
    _driver: Killed,
}

impl Browser {
    /// Headless Chromium, with WebGPU (SwiftShader) when `webgpu`.
    fn start(downloads: &Path, webgpu: bool) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver does not start ({e}): {INSTALL}"));
        let driver = Killed(driver);
        wait_for("chromedriver", Duration::from_secs(30), || http(port, "GET", "/status", None).ok());
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chromium");
        let mut args = vec!["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,3400"];
        args.extend(["--hide-scrollbars"].into_iter().chain(webgpu.then_some("--enable-unsafe-webgpu")));
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": binary,
            "args": args,
            "prefs": { "download.default_directory": downloads, "download.prompt_for_download": false },
        }}}});
        let mut browser = Browser { port, session: String::new(), _driver: driver };
        let session = browser.call("POST", "/session", Some(&capabilities));
        browser.session = session["sessionId"].as_str().expect("a WebDriver session id").to_string();
        browser
    }

    /// A WebDriver command; panics with chromedriver's message when it fails.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, bytes) = http(self.port, method, path, body).expect("chromedriver answers");
        let value: Value = serde_json::from_slice(&bytes).expect("chromedriver answers JSON");
        assert_eq!(status, 200, "WebDriver {method} {path} failed: {value}");
        value["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn script(&self, script: &str) -> Value {
        self.session_call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
    }

    /// `window.wgpuCnn`'s errors: the page shows each, and the test fails on the first.
    fn assert_no_errors(&self) {
        let errors = self.script("return window.wgpuCnn ? window.wgpuCnn.errors : []");
        assert_eq!(errors, json!([]), "the page reported errors");
    }

    /// Waits until the script returns something else than null, failing on a page error.
    fn wait_for_value(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_for(what, timeout, || {
            self.assert_no_errors();
            Some(self.script(script)).filter(|v| !v.is_null())
        })
    }

    fn element(&self, id: &str) -> String {
        let found =
            self.session_call("POST", "/element", Some(&json!({ "using": "css selector", "value": format!("#{id}") })));
        found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("an element id").to_string()
    }

    fn click(&self, id: &str) {
        let element = self.element(id);
        self.session_call("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    fn type_into(&self, id: &str, text: &str) {
        let element = self.element(id);
        self.session_call("POST", &format!("/element/{element}/clear"), Some(&json!({})));
        self.session_call("POST", &format!("/element/{element}/value"), Some(&json!({ "text": text })));
    }

    /// Gives file input `id` the file at `path`, as choosing it in the dialog would.
    fn choose_file(&self, id: &str, path: &Path) {
        let element = self.element(id);
        self.session_call("POST", &format!("/element/{element}/value"), Some(&json!({ "text": path })));
    }

    fn screenshot(&self) -> Vec<u8> {
        let png = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("a base64 screenshot")).expect("base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
    }
}

fn decode(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("a base64 string")).expect("base64")
}

/// The native CPU reference's run of what the page trains: its history and weights.
fn reference_run(architecture: &str, rows: usize) -> (Value, Weights, Model) {
    let data = assets::cifar10();
    let model = Model::new(&Architecture::parse(architecture).unwrap(), CIFAR_INPUT).unwrap();
    let config = TrainConfig { epochs: 1, seed: SEED, ..TrainConfig::default() };
    let (train, validation) = data.train.take_first(rows).split_validation(config.validation_split).unwrap();
    let mut engine = ReferenceEngine::new(&model, &train, model.init(config.seed), &config).unwrap();
    let history = {
        let mut trainer = Trainer::new(&mut engine, &train, &validation, &config).unwrap();
        trainer.fit(&mut |_| {}, &mut |_| Ok(())).unwrap()
    };
    let weights = wait(engine.weights()).unwrap();
    (history.to_keras_json(), weights, model)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The page's history against the reference's: losses within 1e-4 (the GPU tests' bound on
/// per-sample losses after an epoch), accuracies within one image.
fn assert_history_matches(what: &str, page: &Value, reference: &Value, images: (usize, usize)) {
    for (key, rows) in [("loss", 0), ("val_loss", 0), ("accuracy", images.0), ("val_accuracy", images.1)] {
        let (p, r) = (page[key][0].as_f64().unwrap(), reference[key][0].as_f64().unwrap());
        let bound = if rows == 0 { 1e-4 } else { 1.0 / rows as f64 + 1e-9 };
        assert!((p - r).abs() <= bound, "{what}: {key} {p} on the page, {r} natively (bound {bound})");
    }
}

#[test]
fn the_web_page_runs_part_one_and_training_in_headless_chromium() {
    if std::env::var_os("WGPU_CNN_SKIP_BROWSER_TESTS").is_some() {
        eprintln!("WGPU_CNN_SKIP_BROWSER_TESTS is set: not testing the web page");
        return;
    }
    require(runs("chromedriver", "--version"), "chromedriver");
    require(runs("python3", "--version"), "python3");
    let root = workspace();
    let out = root.join("target/web-test");
    let site = out.join("site");
    let downloads = out.join("downloads");
    let _ = std::fs::remove_dir_all(&downloads);
    std::fs::create_dir_all(&downloads).unwrap();

    // The README's build command, in its own target folder (build.sh's default).
    let start = Instant::now();
    let build = Command::new(root.join("web/build.sh")).arg(&site).env_remove("CARGO_TARGET_DIR").output().unwrap();
    assert!(
        build.status.success(),
        "web/build.sh failed ({INSTALL}):\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!("web/build.sh: {:.1} s", start.elapsed().as_secs_f64());
    let wasm = std::fs::metadata(site.join("pkg/wgpu_cnn_web_bg.wasm")).unwrap().len();

    // The README's serve command.
    let port = free_port();
    let server = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 starts");
    let _server = Killed(server);
    wait_for("the page's server", Duration::from_secs(30), || http(port, "GET", "/", None).ok().filter(|r| r.0 == 200));

    let url = json!({ "url": format!("http://127.0.0.1:{port}/") });
    let [_, _, b] = picture::decode_rgb(picture::DEMO_IMAGE, picture::DEFAULT_MAX_MEGAPIXELS).unwrap();

    // Without WebGPU (Chromium's software adapter is blocklisted without the flag): the page says
    // so, and runs Part I on the CPU.
    {
        let browser = Browser::start(&downloads, false);
        browser.session_call("POST", "/url", Some(&url));
        browser.wait_for_value("the page to load", Duration::from_secs(120), "return window.wgpuCnn?.ready || null");
        assert_eq!(browser.script("return window.wgpuCnn.gpu"), Value::Null, "no WebGPU without the flag");
        let shown = browser.script("return document.getElementById('gpu').textContent");
        assert!(shown.as_str().unwrap().starts_with("none — "), "the page says there is no WebGPU: {shown}");
        assert_eq!(browser.script("return document.getElementById('train-gpu').disabled"), json!(true));
        browser.click("conv-run");
        let part1 = browser.wait_for_value("Part I on the CPU", Duration::from_secs(60), "return window.wgpuCnn.part1");
        let k1 = &part1["kernels"][0];
        assert_eq!(k1["gpu"], Value::Null);
        assert!(decode(&k1["cpu"]) == cpu::conv3x3_reference(&b, &Kernel3x3::K1).pixels, "k1 on the CPU alone");
        eprintln!("without WebGPU: {shown}");
        // A file that is no picture: the page names it, and nothing else breaks.
        let bad = out.join("not-a-picture.png");
        std::fs::write(&bad, "not a picture").unwrap();
        browser.choose_file("conv-file", &bad);
        let errors = wait_for("the page's error", Duration::from_secs(30), || {
            Some(browser.script("return window.wgpuCnn.errors")).filter(|e| e.as_array().is_some_and(|a| !a.is_empty()))
        });
        assert!(errors[0].as_str().unwrap().starts_with("not-a-picture.png: not a picture"), "{errors}");
    }

    let browser = Browser::start(&downloads, true);
    browser.session_call("POST", "/url", Some(&url));
    browser.wait_for_value("the page to load", Duration::from_secs(120), "return window.wgpuCnn?.ready || null");
    let gpu = browser.script("return window.wgpuCnn.gpu");
    assert!(gpu.is_object(), "Chromium offers no WebGPU adapter with --enable-unsafe-webgpu: {gpu}");
    let load = browser.script("return window.wgpuCnn.load");
    eprintln!("page: WebGPU on {}; wasm {wasm} bytes; {load}", gpu["name"]);

    // Part I: the default photo, channel B, k1 and a typed kernel.
    let typed = "1,2,1;0,0,0;-1,-2,-1";
    browser.type_into("conv-k2", typed);
    browser.click("conv-run");
    let part1 = browser.wait_for_value("Part I", Duration::from_secs(120), "return window.wgpuCnn.part1");
    assert_eq!(
        (part1["width"].as_u64(), part1["height"].as_u64()),
        (Some(u64::from(b.width)), Some(u64::from(b.height)))
    );
    assert!(decode(&part1["input"]) == b.pixels, "the page decodes the photo's B channel as the tool does");
    for (kernel, text) in [(Kernel3x3::K1, "k1"), (Kernel3x3::parse(typed).unwrap(), typed)] {
        let page = part1["kernels"].as_array().unwrap().iter().find(|k| k["text"] == text).expect("the kernel ran");
        let expected = cpu::conv3x3_reference(&b, &kernel).pixels;
        assert!(decode(&page["cpu"]) == expected, "{text}: the page's CPU plane equals the native reference");
        assert!(decode(&page["gpu"]) == expected, "{text}: the WebGPU plane equals the native reference");
        eprintln!(
            "Part I {text} on {}×{}: WebGPU {:.2} ms end to end, page CPU {:.3} ms",
            b.width,
            b.height,
            page["gpu_ms"].as_f64().unwrap(),
            page["cpu_ms"].as_f64().unwrap()
        );
    }

    // Part II: one epoch on WebGPU, then on the page's CPU path, each against the reference.
    let (reference, reference_weights, model) = reference_run("base", TRAIN_SIZE);
    let validation = TRAIN_SIZE - TRAIN_SIZE * 9 / 10;
    browser.type_into("train-size", &TRAIN_SIZE.to_string());
    browser.type_into("train-epochs", "1");
    browser.type_into("train-seed", &SEED.to_string());
    for (n, (button, device)) in [("train-gpu", "WebGPU"), ("train-cpu", "CPU")].into_iter().enumerate() {
        browser.click(button);
        let script = format!("return window.wgpuCnn.runs[{n}] || null");
        let run = browser.wait_for_value(&format!("training on {device}"), Duration::from_secs(600), &script);
        assert_eq!(
            (run["train"].as_u64(), run["validation"].as_u64()),
            (Some((TRAIN_SIZE - validation) as u64), Some(validation as u64))
        );
        assert_history_matches(device, &run["history"], &reference, (TRAIN_SIZE - validation, validation));
        let test = &run["test"];
        let matrix: u64 = test["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(matrix, 846, "{device}: the confusion matrix counts every test image");
        eprintln!(
            "{device}: {} — one epoch of {} images in {:.2} s ({:.0} images/s), test accuracy {:.4}",
            run["engine"],
            run["train"],
            run["history"]["seconds"][0].as_f64().unwrap(),
            run["images_per_second"].as_f64().unwrap(),
            test["accuracy"].as_f64().unwrap()
        );

        // The checkpoint the page downloads: its weights are the run's, and the tool reads it.
        let file = downloads.join("model.safetensors");
        let _ = std::fs::remove_file(&file);
        browser.click("download");
        wait_for("the download", Duration::from_secs(60), || {
            let partial = std::fs::read_dir(&downloads)
                .unwrap()
                .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "crdownload"));
            // Chromium reserves the name with an empty file before it writes the .crdownload.
            let written = std::fs::metadata(&file).is_ok_and(|m| m.len() > 0);
            (written && !partial).then_some(())
        });
        let checkpoint = Checkpoint::load(&file).unwrap();
        assert_eq!(checkpoint.architecture, model.architecture);
        assert_eq!(checkpoint.epochs_done, 1);
        let difference = max_difference(&checkpoint.weights.params, &reference_weights.params);
        assert!(difference < 1e-5, "{device}: the downloaded weights differ from the reference's by {difference}");
        let evaluated =
            common::wgpu_cnn(&out, &["evaluate", file.to_str().unwrap(), "--device", "cpu", "--out", "evaluate"]);
        let stdout = String::from_utf8_lossy(&evaluated.stdout);
        assert!(
            evaluated.status.success(),
            "wgpu-cnn evaluate: {stdout}{}",
            String::from_utf8_lossy(&evaluated.stderr)
        );
        let accuracy = format!("{:.4}", test["accuracy"].as_f64().unwrap());
        assert!(stdout.contains(&accuracy), "{device}: evaluate gives the page's test accuracy {accuracy}:\n{stdout}");
        // The page describes its data as the tool does, so the tool continues the page's run.
        let resumed = common::wgpu_cnn(
            &out,
            &["train", "--resume", file.to_str().unwrap(), "--epochs", "2", "--train-size", &TRAIN_SIZE.to_string()]
                .into_iter()
                .chain(["--device", "cpu", "--out", "resumed", "--overwrite"])
                .collect::<Vec<_>>(),
        );
        let stdout = String::from_utf8_lossy(&resumed.stdout);
        assert!(
            resumed.status.success(),
            "wgpu-cnn train --resume: {stdout}{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(stdout.contains("Resuming after epoch 1"), "{stdout}");
    }

    // Classify a test picture with the model just trained (the CPU run's).
    browser.click("model-trained");
    let data = assets::cifar10();
    let picture = out.join("test-image-0.png");
    image::RgbImage::from_raw(32, 32, data.test.image(0).to_vec()).unwrap().save(&picture).unwrap();
    browser.choose_file("picture-file", &picture);
    let classified =
        browser.wait_for_value("the classification", Duration::from_secs(60), "return window.wgpuCnn.classified");
    let assert_probabilities = |classified: &Value, weights: Weights, image: usize| {
        let mut engine = ReferenceEngine::new(&model, &Default::default(), weights, &TrainConfig::default()).unwrap();
        let id = engine.prepare(&data.test.take_first(image + 1)).unwrap();
        let probabilities = wait(engine.probabilities(id)).unwrap();
        for pair in classified["ranked"].as_array().unwrap() {
            let class = data.class_names.iter().position(|c| pair[0] == c.as_str()).expect("a class name");
            let (page, native) = (pair[1].as_f64().unwrap(), f64::from(probabilities[10 * image + class]));
            assert!((page - native).abs() < 1e-4, "{}: {page} on the page, {native} natively", pair[0]);
        }
    };
    assert_probabilities(&classified, reference_weights, 0);

    // A checkpoint the tool wrote (the resumed run, 2 epochs), loaded through the page's file
    // input, classifying on the page's CPU path.
    let tool_checkpoint = out.join("resumed/model.safetensors");
    browser.script("document.getElementById('model-device').value = 'cpu'; window.wgpuCnn.classified = null");
    browser.choose_file("model-file", &tool_checkpoint);
    let status = browser.wait_for_value(
        "the tool's checkpoint to load",
        Duration::from_secs(60),
        "const s = document.getElementById('model-status').textContent; return s.includes('2 epochs') ? s : null",
    );
    assert!(status.as_str().unwrap().contains("CPU fast"), "{status}");
    let picture = out.join("test-image-1.png");
    image::RgbImage::from_raw(32, 32, data.test.image(1).to_vec()).unwrap().save(&picture).unwrap();
    browser.choose_file("picture-file", &picture);
    let classified = browser.wait_for_value(
        "the second classification",
        Duration::from_secs(60),
        "return window.wgpuCnn.classified",
    );
    assert_probabilities(&classified, Checkpoint::load(&tool_checkpoint).unwrap().weights, 1);

    // Every other named network on WebGPU, on fewer images (max-pooling, the deeper net, batch
    // normalisation with LeakyReLU), typed into the page's network field.
    let others: Vec<&str> = NAMED_ARCHITECTURES.iter().map(|a| a.0).filter(|&n| n != "base").collect();
    browser.type_into("train-size", "256");
    for (n, name) in others.iter().enumerate() {
        let (reference, _, _) = reference_run(name, 256);
        browser.type_into("train-arch", name);
        browser.click("train-gpu");
        let script = format!("return window.wgpuCnn.runs[{}] || null", n + 2);
        let run = browser.wait_for_value(&format!("{name} on WebGPU"), Duration::from_secs(600), &script);
        assert_eq!(run["architecture"], json!(name));
        assert_history_matches(name, &run["history"], &reference, (230, 256 - 230));
        eprintln!("{name} on WebGPU: {:.1} images/s", run["images_per_second"].as_f64().unwrap());
    }

    browser.assert_no_errors();
    let screenshot = out.join("screenshot.png");
    std::fs::write(&screenshot, browser.screenshot()).unwrap();
    eprintln!("wrote {}", screenshot.display());
}
