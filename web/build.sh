#!/usr/bin/env bash
# Builds the web page into a folder of static files (default target/web/site):
#   web/build.sh [SITE_DIR]
# then serve that folder over HTTP (a page's modules and wasm cannot load from file://):
#   python3 -m http.server 8000 --directory target/web/site
# Needs the wasm32-unknown-unknown target (`rustup target add wasm32-unknown-unknown`) and the
# wasm-bindgen CLI of the exact version of the wasm-bindgen crate in Cargo.lock
# (`cargo install wasm-bindgen-cli --version X.Y.Z`; the error below names X.Y.Z).
# CARGO_TARGET_DIR is honoured (default target/web-build, apart from the native builds).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
site="$(realpath -m "${1:-$root/target/web/site}")"
target_dir="${CARGO_TARGET_DIR:-$root/target/web-build}"

locked="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
installed="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
if [ "$installed" != "$locked" ]; then
  echo "web/build.sh: needs the wasm-bindgen CLI $locked (Cargo.lock's wasm-bindgen), found ${installed:-none}:" >&2
  echo "  cargo install wasm-bindgen-cli --version $locked" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "web/build.sh: needs the wasm32-unknown-unknown target: rustup target add wasm32-unknown-unknown" >&2
  exit 1
fi

# SIMD128 for the page's CPU side comes from .cargo/config.toml (read from the working folder).
cd "$root"
cargo build --release --target wasm32-unknown-unknown -p wgpu-cnn-web --target-dir "$target_dir" \
  --manifest-path "$root/Cargo.toml"

rm -rf "$site"
mkdir -p "$site/pkg" "$site/assets/cifar10"
wasm-bindgen --target web --no-typescript --out-dir "$site/pkg" \
  "$target_dir/wasm32-unknown-unknown/release/wgpu_cnn_web.wasm"
cp "$root"/web/static/* "$site/"
cp "$root/assets/chelsea.png" "$site/assets/"
cp "$root"/assets/cifar10/*.bin "$root/assets/cifar10/batches.meta.txt" "$site/assets/cifar10/"
echo "web/build.sh: wrote $site ($(du -sh "$site" | cut -f1); wasm $(du -h "$site/pkg/wgpu_cnn_web_bg.wasm" | cut -f1))"
echo "serve it with: python3 -m http.server 8000 --directory $site"
