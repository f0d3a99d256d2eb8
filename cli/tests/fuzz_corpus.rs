//! Replays every fuzz input committed under `fuzz/`, the corpora (`fuzz/corpus/TARGET/`) and every
//! crash ever found (`fuzz/regressions/TARGET/`), through the same functions the fuzz targets
//! call (`wgpu_cnn_cli::fuzzing`), so that plain `cargo test` catches a regression without
//! nightly or cargo-fuzz. `fuzz/run.sh` is what finds new inputs.

use std::path::{Path, PathBuf};

use wgpu_cnn_cli::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_has_a_binary_and_a_corpus_and_no_other_target_exists() {
    let dir = fuzz_dir();
    let binaries: Vec<String> = inputs(&dir.join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut names: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    names.sort();
    let mut sorted = binaries.clone();
    sorted.sort();
    assert_eq!(sorted, names, "fuzz/fuzz_targets/*.rs and wgpu_cnn_cli::fuzzing::TARGETS must list the same targets");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    for name in &names {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
        assert!(inputs(&dir.join("corpus").join(name)).len() >= 4, "fuzz/corpus/{name} holds fewer than 4 inputs");
    }
}

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let dir = fuzz_dir();
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in TARGETS {
        for folder in ["corpus", "regressions"] {
            for path in inputs(&dir.join(folder).join(name)) {
                let bytes = std::fs::read(&path).unwrap();
                count += 1;
                if std::panic::catch_unwind(|| target(&bytes)).is_err() {
                    failures.push(path.display().to_string());
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} fuzz inputs panicked: {failures:#?}", failures.len());
    eprintln!("{count} fuzz inputs replayed");
}
