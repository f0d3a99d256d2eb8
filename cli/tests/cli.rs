//! The command-line tool as a user meets it: the no-argument demo, `info`, `bench conv`, and bad
//! input, which must end with a clear message and a non-zero exit code, never a panic.

mod common;

use std::path::Path;

use common::wgpu_cnn;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = wgpu_cnn(dir, args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail; stdout: {}", text(&out.stdout));
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(stderr.contains("error"), "{args:?} should print an error: {stderr}");
    stderr
}

#[test]
fn the_demo_with_no_arguments_writes_the_figure_and_trains_the_assignments_cnn() {
    // The main job, exactly as the README runs it: Part I's figure, then 20 epochs of `base` on
    // the embedded subset (seconds on the fast CPU backend that `auto` picks without a hardware GPU).
    let dir = tempfile::tempdir().unwrap();
    let out = wgpu_cnn(dir.path(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}{}", text(&out.stderr));
    assert!(stdout.contains("451×300, channel B"), "{stdout}");
    assert_eq!(stdout.matches("result vs CPU reference: identical").count(), 2, "{stdout}");
    assert!(stdout.contains("Model: base (c16,c16s2,c32,c32s2,d0.5,f10) — 37,146 parameters"), "{stdout}");
    assert!(stdout.contains("4,194 training, 466 validation, 846 test images"), "{stdout}");
    assert!(stdout.contains("Epoch 20/20") && stdout.contains("Running time: "), "{stdout}");
    // The last line of results: "Test: loss L, accuracy A (...)"; Keras reaches 0.46–0.49 here.
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Test: loss ").and_then(|r| r.split("accuracy ").nth(1)))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in: {stdout}"));
    assert!(accuracy > 0.3, "test accuracy {accuracy} after the demo's 20 epochs");
    // 2×3 tiles of 451×300 with 8-pixel gaps.
    let figure = image::open(dir.path().join("R_conv.jpg")).expect("R_conv.jpg is a valid JPEG");
    assert_eq!((figure.width(), figure.height()), (8 + 3 * (451 + 8), 8 + 2 * (300 + 8)));
    for file in ["out/model.safetensors", "out/history.json", "out/history.png"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
}

#[test]
fn train_prints_keras_style_epochs_and_writes_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let out = wgpu_cnn(
        dir.path(),
        &[
            "train",
            "--model",
            "c8s2,d0.5,f10",
            "--epochs",
            "2",
            "--train-size",
            "300",
            "--batch-size",
            "64",
            "--out",
            "run",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(stdout.matches(" - loss: ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("Epoch 2/2") && stdout.contains("val_accuracy: ") && stdout.contains("Running time: "),
        "{stdout}"
    );
    assert!(stdout.contains("Test: loss "), "{stdout}");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/history.json")).unwrap()).unwrap();
    for key in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(history[key].as_array().map(Vec::len), Some(2), "history.json lacks two values of {key}: {history}");
    }
}

#[test]
fn bad_training_settings_are_rejected_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (&["train", "--epochs", "0"][..], "--epochs must be at least 1"),
        (&["train", "--batch-size", "0"][..], "--batch-size must be between 1 and 65536, got 0"),
        (&["train", "--validation-split", "1"][..], "--validation-split must be in [0, 1), got 1"),
        (&["train", "--model", "c16,q,f10"][..], "unknown layer type"),
        (&["train", "--l1", "-1"][..], "--l1 must be a finite number ≥ 0, got -1"),
        (&["train", "--lr", "-0.5"][..], "--lr must be a finite number > 0, got -0.5"),
        (
            &["train", "--resume", "run/model.safetensors", "--lr", "0.1"][..],
            "'--resume <RESUME>' cannot be used with '--lr <LR>'",
        ),
        (
            &["train", "--resume", "run/model.safetensors", "--model", "deep"][..],
            "cannot be used with '--model <MODEL>'",
        ),
        (
            &["train", "--model", "h16,c8,f10"][..],
            "layer 2 (c8): a convolution needs an image (H, W, C) input, but it follows a dense layer",
        ),
        (&["train", "--model", "lrelu2,f10"][..], "the LeakyReLU slope must be a number in [0, 1)"),
        (
            &["train", "--model", "c4,f5", "--device", "cpu"][..],
            "the model's final layer f5 has 5 units, but the data has 10 classes (airplane, automobile, bird, cat, deer, \
             dog, frog, horse, ship, truck): end the architecture with f10",
        ),
        (
            &["train", "--model", "bn,f5", "--device", "cpu-reference"][..],
            "the model's final layer f5 has 5 units, but the data has 10 classes",
        ),
        (&["train", "--train-size", "0"][..], "--train-size must be at least 1"),
        (&["train", "--data", "no-such-folder"][..], "no-such-folder"),
    ] {
        let stderr = fails(dir.path(), args);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let stderr = fails(dir.path(), &["train", "--data", "empty"]);
    assert!(stderr.contains("not a CIFAR-10 binary folder"), "{stderr}");
}

#[test]
fn a_backend_for_another_program_never_stops_a_cpu_command_and_wgpu_s_lists_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let run = |backend: &str, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wgpu-cnn"))
            .args(args)
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .env("WGPU_BACKEND", backend)
            .output()
            .unwrap()
    };
    let cpu = run("bogus", &["convolve", "--device", "cpu", "--out", "f.png"]);
    assert!(cpu.status.success(), "{}", text(&cpu.stderr));
    let gpu = run("bogus", &["selftest"]);
    assert!(!gpu.status.success() && text(&gpu.stderr).contains("unknown backend 'bogus'"), "{}", text(&gpu.stderr));
    if common::gpu().is_some() {
        let listed = run("vulkan,gl", &["selftest"]);
        assert!(listed.status.success(), "{}", text(&listed.stderr));
    }
}

#[test]
fn convolve_on_the_cpu_with_a_custom_kernel_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = wgpu_cnn(
        dir.path(),
        &["convolve", "--device", "cpu", "--channel", "all", "-k", "0,0,0;0,1,0;0,0,0", "--out", "id.png"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let figure = image::open(dir.path().join("id.png")).unwrap().into_rgb8();
    // The identity kernel reproduces the colour photo: bottom-left and bottom-middle tiles match.
    let (x0, x1, y) = (8 + 100, 8 + 459 + 100, 8 + 308 + 150);
    assert_eq!(figure.get_pixel(x0, y), figure.get_pixel(x1, y));
}

#[test]
fn info_lists_adapters_with_their_limits() {
    let Some(_) = common::gpu() else { return };
    let out = wgpu_cnn(Path::new("."), &["info"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for field in ["max storage binding", "workgroups per dimension", "timestamp queries", "Selected:"] {
        assert!(stdout.contains(field), "info lacks '{field}': {stdout}");
    }
}

#[test]
fn bench_conv_prints_a_table_with_ratios() {
    let Some(_) = common::gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "conv", "--size", "64x48", "--budget-ms", "20", "--chart", "conv.png", "--json", "conv.json"];
    let out = wgpu_cnn(dir.path(), &args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for method in
        ["CPU reference", "CPU fast", "GPU kernel", "GPU end to end", "3 in flight", "bound:", "Mpx/s", "GPU:"]
    {
        assert!(stdout.contains(method), "bench lacks '{method}': {stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("conv.json")).unwrap()).unwrap();
    assert_eq!(json["unit"], "Mpx/s");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{json}");
    for row in results {
        assert!(row["megapixels_per_second"].as_f64().unwrap() > 0.0, "{row}");
    }
    let fast = results.iter().find(|r| r["method"] == "CPU fast").unwrap();
    assert_eq!(fast["vs_cpu_fast"].as_f64(), Some(1.0));
    let chart = image::open(dir.path().join("conv.png")).unwrap();
    assert!(chart.width() >= 800 && chart.height() >= 300, "{}x{}", chart.width(), chart.height());
}

#[test]
fn bench_train_prints_images_per_second_for_each_device() {
    let Some(_) = common::gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = wgpu_cnn(
        dir.path(),
        &[
            "bench",
            "train",
            "--model",
            "c8s2,f10",
            "--images",
            "64",
            "--batch-size",
            "32",
            "--budget-ms",
            "50",
            "--profile",
            "--chart",
            "train.png",
            "--json",
            "train.json",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "images/s",
        "GFLOP/s",
        "GPU ",
        "CPU fast",
        "CPU reference",
        "dispatches; 8 steps a submission",
        "1 step a submission",
        "stage by stage",
        "conv2d forward",
        "adam",
    ] {
        assert!(stdout.contains(needle), "bench train lacks '{needle}': {stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("train.json")).unwrap()).unwrap();
    assert_eq!((json["unit"].as_str(), json["batch"].as_u64()), (Some("images/s"), Some(32)));
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "one row per engine (the GPU's with 1 and 8 steps a submission): {json}");
    for row in results {
        assert!(row["images_per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["model"], results[0]["model"]);
    }
    assert!(image::open(dir.path().join("train.png")).unwrap().width() >= 800);
}

#[test]
fn a_missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(dir.path(), &["convolve", "no-such-photo.png"]);
    assert!(stderr.contains("no-such-photo.png") && stderr.contains("No such file"), "{stderr}");
}

#[test]
fn a_file_that_is_not_an_image_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.png"), "these are not pixels").unwrap();
    let stderr = fails(dir.path(), &["convolve", "notes.png"]);
    assert!(stderr.contains("notes.png") && stderr.contains("not a PNG or JPEG"), "{stderr}");
}

#[test]
fn an_empty_or_truncated_image_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();
    let stderr = fails(dir.path(), &["convolve", "empty.png"]);
    assert!(stderr.contains("empty.png"), "{stderr}");
    std::fs::write(dir.path().join("cut.png"), &wgpu_cnn_cli::picture::DEMO_IMAGE[..200]).unwrap();
    let stderr = fails(dir.path(), &["convolve", "cut.png"]);
    assert!(stderr.contains("cut.png") && stderr.contains("not a valid image"), "{stderr}");
}

#[test]
fn a_kernel_that_is_not_three_by_three_numbers_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(dir.path(), &["convolve", "--device", "cpu", "--kernel", "1,2;3,4"]);
    assert!(stderr.contains("invalid kernel '1,2;3,4'") && stderr.contains("found 2 row(s)"), "{stderr}");
}

#[test]
fn an_unsupported_output_format_is_rejected_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(dir.path(), &["convolve", "--device", "cpu", "--out", "figure.bmp"]);
    assert!(stderr.contains("figure.bmp") && stderr.contains(".png"), "{stderr}");
    assert!(!dir.path().join("figure.bmp").exists());
}

#[test]
fn an_image_larger_than_the_device_allows_is_rejected() {
    let Some(ctx) = common::gpu() else { return };
    let limit = ctx.device.limits().max_storage_buffer_binding_size;
    if limit > 256 << 20 {
        eprintln!("device allows {limit}-byte bindings: a large enough test image would be too slow to build");
        return;
    }
    let side = (limit as f64).sqrt() as u32 + 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    image::GrayImage::new(side, side).save(&path).unwrap();
    let stderr = fails(dir.path(), &["convolve", "--device", "gpu", "--max-megapixels", "1000", "huge.png"]);
    assert!(stderr.contains(&format!("{side}×{side}")) && stderr.contains("storage binding"), "{stderr}");
}

#[test]
fn an_unknown_backend_is_rejected() {
    let stderr = fails(Path::new("."), &["info", "--backend", "glide"]);
    assert!(stderr.contains("unknown backend 'glide'"), "{stderr}");
}

#[test]
fn shaders_lists_every_shader_and_writes_sources_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = wgpu_cnn(dir.path(), &["shaders", "--out", "exported"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("conv3x3_texture @workgroup_size(WORKGROUP_SIZE, 1, 1)"), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("exported/shaders.json")).unwrap()).unwrap();
    let shaders = manifest.as_array().unwrap();
    assert_eq!(shaders.len(), wgpu_cnn::shaders::all().len());
    for shader in shaders {
        let name = shader["name"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.path().join(format!("exported/{name}.wgsl"))).unwrap();
        assert_eq!(source, shader["source"].as_str().unwrap(), "{name}");
        // What an engine without our Rust types needs: each source validates on its own.
        naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn bench_classify_prints_and_writes_images_per_second_per_batch() {
    let Some(_) = common::gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "classify", "--model", "c4s2,f10", "--batch", "1", "--batch", "16", "--budget-ms", "20"];
    let out = wgpu_cnn(dir.path(), &[&args[..], &["--json", "classify.json", "--chart", "classify.png"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in ["GPU classifier, buffer", "GPU classifier, texture", "CPU fast (evaluate)", "images/s"] {
        assert!(stdout.contains(needle), "bench classify lacks '{needle}': {stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("classify.json")).unwrap()).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{json}");
    assert!(results.iter().all(|r| r["images_per_second"].as_f64().unwrap() > 0.0), "{json}");
    assert!(dir.path().join("classify.png").is_file());
}
