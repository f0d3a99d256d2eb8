#!/usr/bin/env bash
# Builds here what a lent GPU machine runs (it has no Rust toolchain): the tool, stripped, into
# target/device/ (about 30 MB; the device tool's carry limit is 64 MiB). Then, with the device
# tool: run(command="bash benches/device/run.sh", carry=["target/device"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p wgpu-cnn-cli
mkdir -p target/device
strip -o target/device/wgpu-cnn target/release/wgpu-cnn
ls -la target/device
