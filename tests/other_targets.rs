//! The CPU kernels on the other CPUs users have, from the one test command: the fast-CPU tests,
//! the gradient checks and Part I's tests (the library's unit tests, `fast_cpu`, `gradcheck`,
//! `conv3x3`), cross-compiled and run
//! - for `aarch64-unknown-linux-gnu` (NEON) under qemu-user, and
//! - for `wasm32-wasip1` with SIMD128 under Node's WASI (V8, the engine Chromium runs
//!   WebAssembly with), single-threaded, as in a browser tab.
//!
//! Each runs every instruction set its CPU has (NEON and portable; SIMD128 and portable), as
//! the x86 tests run AVX-512, AVX2 and portable. GPU tests are opted out there
//! (`WGPU_CNN_SKIP_GPU_TESTS=1`): the GPU code is the same on every CPU.
//!
//! The tools come from `.ci/run`. Where one is missing the test fails and says how to install it;
//! `WGPU_CNN_SKIP_OTHER_TARGETS=1` opts out explicitly. Each target builds in its own folder,
//! `target/other-targets/`, a few minutes the first time.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "install the tools with .ci/run's steps: apt-get install qemu-user-static \
     gcc-aarch64-linux-gnu libc6-dev-arm64-cross nodejs; rustup target add aarch64-unknown-linux-gnu \
     wasm32-wasip1 (or set WGPU_CNN_SKIP_OTHER_TARGETS=1 to skip these tests)";

fn skipped() -> bool {
    if std::env::var_os("WGPU_CNN_SKIP_OTHER_TARGETS").is_some() {
        eprintln!("WGPU_CNN_SKIP_OTHER_TARGETS is set: not testing the other CPU targets");
        return true;
    }
    false
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn has_program(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success())
}

fn require(ok: bool, what: &str) {
    assert!(ok, "{what} is missing: {INSTALL}");
}

fn require_target(triple: &str) {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let listed = installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == triple));
    require(listed, &format!("the Rust target {triple}"));
}

/// `cargo test --release --target TRIPLE` of the CPU tests, with `env`; panics with the output's
/// tail when a test fails, and prints the test binaries' summary lines.
fn cargo_test(triple: &str, env: &[(String, String)]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir: PathBuf = root().join("target/other-targets");
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .args(["test", "--release", "--target", triple, "-p", "wgpu-cnn", "--lib"])
        .args(["--test", "fast_cpu", "--test", "gradcheck", "--test", "conv3x3"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("WGPU_CNN_SKIP_GPU_TESTS", "1")
        .env_remove("FAST_ISA");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("cargo runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    assert!(output.status.success(), "the CPU tests failed on {triple}:\n{tail}");
    let summaries: Vec<String> = text.lines().filter(|l| l.starts_with("test result:")).map(String::from).collect();
    assert_eq!(
        summaries.len(),
        4,
        "expected the lib, fast_cpu, gradcheck and conv3x3 test binaries to run on {triple}:\n{tail}"
    );
    let passed: usize = summaries
        .iter()
        .filter_map(|l| l.split_once(" passed").and_then(|(head, _)| head.rsplit(' ').next()?.parse::<usize>().ok()))
        .sum();
    assert!(passed >= 60, "only {passed} tests passed on {triple}:\n{tail}");
    for line in &summaries {
        eprintln!("{triple}: {line}");
    }
}

#[test]
fn the_cpu_tests_pass_on_aarch64_with_neon_under_qemu() {
    if skipped() {
        return;
    }
    let triple = "aarch64-unknown-linux-gnu";
    require_target(triple);
    require(has_program("aarch64-linux-gnu-gcc", "--version"), "the linker aarch64-linux-gnu-gcc");
    require(has_program("qemu-aarch64-static", "--version"), "qemu-aarch64-static (Debian's qemu-user-static)");
    require(Path::new("/usr/aarch64-linux-gnu/lib").is_dir(), "the aarch64 C library (libc6-dev-arm64-cross)");
    cargo_test(
        triple,
        &[
            ("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER".into(), "aarch64-linux-gnu-gcc".into()),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER".into(),
                "qemu-aarch64-static -L /usr/aarch64-linux-gnu".into(),
            ),
        ],
    );
}

#[test]
fn the_cpu_tests_pass_in_webassembly_with_simd128_under_node() {
    if skipped() {
        return;
    }
    let triple = "wasm32-wasip1";
    require_target(triple);
    let node = Command::new("node").arg("--version").output();
    let version = node.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let major: u32 = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    require(major >= 18, &format!("Node.js 18 or later (found '{version}')"));
    let runner = root().join("tests/support/wasi-run.mjs");
    cargo_test(
        triple,
        &[
            ("CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS".into(), "-C target-feature=+simd128".into()),
            (
                "CARGO_TARGET_WASM32_WASIP1_RUNNER".into(),
                format!("node --experimental-wasi-unstable-preview1 {}", runner.display()),
            ),
        ],
    );
}
