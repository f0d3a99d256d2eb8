#!/usr/bin/env bash
# Builds here what a lent GPU machine runs (it has no Rust toolchain), stripped, into
# target/device/: the tool, and the tool as of the baseline the issue asks to re-time on the
# lent card in the same lease (BASELINE, default 06e8205: every kernel its own dispatch, 28 a
# base step, as the H100 timed it). About 30 MB each; the device tool's carry limit is 64 MiB.
# Then, with the device tool: run(command="bash benches/device/run.sh", carry=["target/device"],
# timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/../.."
baseline="${BASELINE:-06e8205}"
cargo build --release -p wgpu-cnn-cli
mkdir -p target/device
strip -o target/device/wgpu-cnn target/release/wgpu-cnn

# The baseline from its own commit's files (git archive: no worktree to clean up), built in a
# target folder of its own so that neither build invalidates the other's.
rev="$(git rev-parse --short "$baseline")"
src="target/device-baseline/$rev"
if [ ! -f "$src/Cargo.toml" ]; then
  mkdir -p "$src"
  git archive "$rev" | tar -x -C "$src"
fi
cargo build --release -p wgpu-cnn-cli --manifest-path "$src/Cargo.toml" --target-dir target/device-baseline/target
rm -f target/device/wgpu-cnn-*
strip -o "target/device/wgpu-cnn-$rev" target/device-baseline/target/release/wgpu-cnn
ls -la target/device
du -cb target/device/* | tail -1 | awk '{ if ($1 > 64 * 1024 * 1024) { print "target/device is over the 64 MiB carry limit: " $1 " bytes"; exit 1 } }'
