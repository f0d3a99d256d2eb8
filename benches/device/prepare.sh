#!/usr/bin/env bash
# Builds here what a lent GPU machine runs (it has no Rust toolchain), stripped, into
# target/device/: the tool, and the tool as of the baseline the issue asks to re-time on the
# lent card in the same lease (BASELINE, default 06e8205: every kernel its own dispatch, 28 a
# base step, as the H100 timed it; BASELINE=none for the tool alone), and the GPU tests' binaries,
# all compressed (about 45 MB in all; the device tool's carry limit is 64 MiB, the working tree
# included).
# Then, with the device tool: run(command="bash benches/device/run.sh", carry=["target/device"],
# timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/../.."
baseline="${BASELINE:-06e8205}"
cargo build --release -p wgpu-cnn-cli
rm -rf target/device
mkdir -p target/device/tests
strip -o target/device/wgpu-cnn target/release/wgpu-cnn
# The baseline from its own commit's files (git archive: no worktree to clean up), built in a
# target folder of its own so that neither build invalidates the other's.
if [ "$baseline" != none ]; then
  rev="$(git rev-parse --short "$baseline")"
  src="target/device-baseline/$rev"
  if [ ! -f "$src/Cargo.toml" ]; then
    mkdir -p "$src"
    git archive "$rev" | tar -x -C "$src"
  fi
  cargo build --release -p wgpu-cnn-cli --manifest-path "$src/Cargo.toml" --target-dir target/device-baseline/target
  strip -o "target/device/wgpu-cnn-$rev" target/device-baseline/target/release/wgpu-cnn
fi
# The test binaries whose tests need a GPU (GPU training against the CPU engines, bit-exact
# resume, dispatch counts; Part I end to end; the classifier on the caller's device), stripped.
cargo test --release --no-run --test train --test conv3x3 --test classify --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name executable; do strip -o "target/device/tests/$name" "$executable"; done
# Compressed to fit the carry limit (about half); run.sh unpacks them with Python's lzma, which
# the lent machine has (its PyTorch), into a folder of its own.
find target/device -type f ! -name '*.xz' -exec xz -T0 -6 -f {} +
ls -laR target/device
# The carry limit counts the working tree that travels with it too.
total=$(( $(find target/device -type f -exec du -cb {} + | tail -1 | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "target/device and the tracked files: $total bytes of the 64 MiB carry limit"
[ "$total" -le $((64 * 1024 * 1024)) ] || { echo "over the carry limit: BASELINE=none builds the tool alone"; exit 1; }
