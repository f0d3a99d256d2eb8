//! Part II's tools as a user meets them: a checkpoint from `train`, then `evaluate`, `predict`,
//! `--resume`, and `experiment --quick`; bad checkpoints fail with a clear message.

mod common;

use std::path::Path;

use common::wgpu_cnn;

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = wgpu_cnn(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = wgpu_cnn(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && !stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

/// A small trained checkpoint in `dir/run`.
fn trained(dir: &Path) {
    ok(
        dir,
        &[
            "train",
            "--model",
            "c8s2,c16s2,d0.3,f10",
            "--epochs",
            "2",
            "--train-size",
            "400",
            "--batch-size",
            "64",
            "--out",
            "run",
            "--device",
            "cpu",
        ],
    );
}

#[test]
fn train_writes_a_checkpoint_history_and_plot_that_evaluate_reads() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    for file in ["model.safetensors", "history.json", "history.png"] {
        assert!(dir.path().join("run").join(file).exists(), "{file} missing");
    }
    let text = ok(dir.path(), &["evaluate", "run/model.safetensors", "--device", "cpu", "--out", "eval"]);
    assert!(text.contains("== train set: 4,660 images") && text.contains("== test set: 846 images"), "{text}");
    assert!(text.contains("precision    recall  f1-score   support") && text.contains("weighted avg"), "{text}");
    assert!(text.contains("most-common-label baseline (always 'deer'"), "{text}");
    assert!(image::open(dir.path().join("eval/confusion_test.png")).is_ok());

    let json = ok(dir.path(), &["evaluate", "run/model.safetensors", "--device", "cpu", "--json", "--out", "eval"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let test = &value["sets"]["test"];
    assert_eq!(test["images"], 846);
    let matrix_total: u64 =
        test["confusion_matrix"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(matrix_total, 846);
    let accuracy = test["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
}

#[test]
fn a_batch_norm_net_trains_evaluates_and_resumes_from_the_command_line() {
    // Conv without activation, batch norm, LeakyReLU, a hidden dense layer with dropout after it.
    let dir = tempfile::tempdir().unwrap();
    let arch = "c8n,bn,lrelu,c8s2n,bn,relu,h32,d0.3,f10";
    let train = ["train", "--model", arch, "--epochs", "1", "--train-size", "300", "--device", "cpu", "--out", "bn"];
    let text = ok(dir.path(), &train);
    let test_line =
        |text: &str| text.lines().find(|l| l.starts_with("Test: ")).map(str::to_string).expect("a Test: line");
    let trained = test_line(&text);
    // evaluate reads the moving statistics back: the same test loss and accuracy as train printed.
    let json = ok(dir.path(), &["evaluate", "bn/model.safetensors", "--device", "cpu", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let accuracy = value["sets"]["test"]["accuracy"].as_f64().unwrap();
    assert!(trained.contains(&format!("accuracy {accuracy:.4}")), "{trained} vs evaluate's {accuracy}");
    let resumed = ok(
        dir.path(),
        &[
            "train",
            "--resume",
            "bn/model.safetensors",
            "--epochs",
            "2",
            "--train-size",
            "300",
            "--device",
            "cpu",
            "--out",
            "bn",
        ],
    );
    assert!(resumed.contains("Epoch 2/2"), "{resumed}");
    let summary = ok(dir.path(), &["summary", "--model", arch]);
    assert!(
        summary.contains("Non-trainable params: 32 (128.00 B)") && summary.contains("leaky_re_lu (LeakyReLU)"),
        "{summary}"
    );
}

#[test]
fn a_new_run_never_silently_replaces_another_run_s_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let before = std::fs::read(dir.path().join("run/model.safetensors")).unwrap();
    let again = ["train", "--epochs", "1", "--train-size", "100", "--device", "cpu", "--out", "run"];
    let stderr = fails(dir.path(), &again);
    assert!(
        stderr.contains("run/model.safetensors holds a run of c8s2,c16s2,d0.3,f10 trained for 2 epochs")
            && stderr.contains("--resume run/model.safetensors")
            && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.path().join("run/model.safetensors")).unwrap(), before, "the checkpoint is untouched");
    let text = ok(dir.path(), &[&again[..], &["--overwrite"]].concat());
    assert!(text.contains("Wrote run/model.safetensors"), "{text}");
    assert_ne!(std::fs::read(dir.path().join("run/model.safetensors")).unwrap(), before);
}

#[test]
fn predict_prints_the_top_classes_of_each_image() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    std::fs::write(dir.path().join("cat.png"), wgpu_cnn_cli::picture::DEMO_IMAGE).unwrap();
    let text =
        ok(dir.path(), &["predict", "run/model.safetensors", "cat.png", "cat.png", "--top", "2", "--device", "cpu"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("cat.png: ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], lines[1], "the same image gives the same prediction");
    assert_eq!(lines[0].matches('%').count(), 2, "{text}");
}

#[test]
fn resume_continues_the_run_and_refuses_other_data() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let text = ok(
        dir.path(),
        &[
            "train",
            "--epochs",
            "3",
            "--train-size",
            "400",
            "--out",
            "run",
            "--resume",
            "run/model.safetensors",
            "--device",
            "cpu",
        ],
    );
    assert!(
        text.contains("Resuming after epoch 2") && text.contains("Epoch 3/3") && !text.contains("Epoch 1/3"),
        "{text}"
    );
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/history.json")).unwrap()).unwrap();
    assert_eq!(history["loss"].as_array().unwrap().len(), 3);
    let stderr = fails(
        dir.path(),
        &["train", "--epochs", "4", "--train-size", "500", "--out", "run", "--resume", "run/model.safetensors"],
    );
    assert!(stderr.contains("same --data and --train-size"), "{stderr}");
    let stderr = fails(
        dir.path(),
        &["train", "--epochs", "3", "--train-size", "400", "--out", "run", "--resume", "run/model.safetensors"],
    );
    assert!(stderr.contains("already trained for 3 epochs"), "{stderr}");
    // The same images read from a folder instead of the embedded copy: the same data (by content).
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/cifar10");
    let args = ["train", "--epochs", "4", "--train-size", "400", "--out", "run", "--resume", "run/model.safetensors"];
    let text = ok(dir.path(), &[&args[..], &["--device", "cpu", "--data", folder]].concat());
    assert!(text.contains("Resuming after epoch 3") && text.contains("Epoch 4/4"), "{text}");
}

#[test]
fn bad_checkpoints_are_rejected_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.safetensors"), "not a checkpoint").unwrap();
    let stderr = fails(dir.path(), &["evaluate", "notes.safetensors"]);
    assert!(stderr.contains("notes.safetensors"), "{stderr}");
    let stderr = fails(dir.path(), &["predict", "missing.safetensors", "x.png"]);
    assert!(stderr.contains("missing.safetensors"), "{stderr}");
}

#[test]
fn experiment_all_quick_writes_every_table_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    let text = ok(dir.path(), &["experiment", "all", "--quick", "--epochs", "1", "--out", "report"]);
    assert!(text.contains("14 runs"), "{text}");
    let report = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    for needle in [
        "Table 1: training-set size",
        "Table 2: L1 weight",
        "Table 3: architecture",
        "| 75 images |",
        "| 600 images |",
        "| L1 = 10 |",
        "| deep |",
        "Figure 1: the B channel",
        "Figure 2: accuracy and loss",
        "Figure 3: accuracy and loss of different training and validation data",
        "Figure 4: accuracy and loss of different L1 weights",
        "Figure 5: accuracy and loss of the new model",
        "Figure 6: accuracy and loss of the deeper ConvNet",
        "Figure 7: accuracy and loss of batch normalisation and LeakyReLU",
        "| cifar_bn |",
        "The base model on the training set",
        "The base model on the test set",
        "precision    recall  f1-score   support",
        "true \\ predicted",
        "Most-common-label baseline",
        "Device: ",
        "The whole report: 14 runs in ",
    ] {
        assert!(report.contains(needle), "report.md lacks '{needle}':\n{report}");
    }
    let figures = [
        "figure-1.png",
        "figure-2.png",
        "figure-3.png",
        "figure-4.png",
        "figure-5.png",
        "figure-6.png",
        "figure-7.png",
    ];
    for figure in figures.iter().chain(&["confusion-train.png", "confusion-test.png"]) {
        let image = image::open(dir.path().join("report").join(figure)).unwrap();
        assert!(image.width() > 500, "{figure}");
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report/results.json")).unwrap()).unwrap();
    assert_eq!(results["results"].as_array().unwrap().len(), 14);
    let with_evaluation = results["results"].as_array().unwrap().iter().filter(|r| !r["evaluation"].is_null()).count();
    assert_eq!(with_evaluation, 1, "one base run carries the classification reports");

    // report.html: well-formed, self-contained, every figure embedded and decodable.
    let html = std::fs::read_to_string(dir.path().join("report/report.html")).unwrap();
    let page = parse_page(&html);
    assert_eq!(page.title, "wgpu-cnn: the assignment's experiments");
    assert!(page.images.len() >= 9, "{} images", page.images.len());
    for (alt, src) in &page.images {
        use base64::Engine as _;
        let data = src.strip_prefix("data:image/png;base64,").unwrap_or_else(|| panic!("'{alt}' is not embedded"));
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        assert!(image::load_from_memory(&bytes).unwrap().width() > 500, "{alt}");
    }
    assert_eq!(page.tables, 3, "Tables 1–3");
    assert!(page.text.contains("Figure 6: accuracy and loss of the deeper ConvNet"));
    assert!(!html.contains("src=\"figure-"), "report.html refers to a file beside it");
}

#[test]
fn experiment_with_compare_cpu_on_the_gpu_charts_both_running_times() {
    let Some(_) = common::gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &["experiment", "architecture", "--quick", "--epochs", "1", "--device", "gpu", "--compare-cpu", "--out", "r"],
    );
    let report = std::fs::read_to_string(dir.path().join("r/report.md")).unwrap();
    assert!(report.contains("running time (CPU)") && report.contains("Running time: GPU vs CPU"), "{report}");
    let chart = image::open(dir.path().join("r/running-time.png")).unwrap().into_rgb8();
    let colour = |c: [u8; 3]| chart.pixels().filter(|p| p.0 == c).count();
    assert!(colour([31, 119, 180]) > 2_000 && colour([255, 127, 14]) > 2_000, "GPU and CPU bars");
}

/// What the tests read of report.html, parsed as XML.
struct Page {
    title: String,
    /// (alt, src) of every image.
    images: Vec<(String, String)>,
    tables: usize,
    text: String,
}

fn parse_page(html: &str) -> Page {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(html);
    let mut page = Page { title: String::new(), images: Vec::new(), tables: 0, text: String::new() };
    let (mut open, mut in_title) = (Vec::new(), false);
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("report.html is not well-formed: {e}")) {
            Event::Start(tag) => {
                let name = String::from_utf8(tag.name().as_ref().to_vec()).unwrap();
                in_title = name == "title";
                page.tables += usize::from(name == "table");
                open.push(name);
            }
            Event::End(tag) => {
                let name = String::from_utf8(tag.name().as_ref().to_vec()).unwrap();
                assert_eq!(open.pop().as_deref(), Some(name.as_str()), "report.html closes <{name}> out of order");
                in_title = false;
            }
            Event::Empty(tag) if tag.name().as_ref() == b"img" => {
                let attribute = |key: &[u8]| {
                    let a = tag.try_get_attribute(key).unwrap().unwrap_or_else(|| panic!("an <img> without {key:?}"));
                    a.unescape_value().unwrap().into_owned()
                };
                page.images.push((attribute(b"alt"), attribute(b"src")));
            }
            Event::Text(text) => {
                let text = text.decode().unwrap().into_owned();
                if in_title {
                    page.title += &quick_xml::escape::unescape(&text).unwrap();
                }
                page.text += &text;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(open.is_empty(), "report.html leaves {open:?} open");
    page
}
