#!/usr/bin/env bash
# One lease of a real GPU, in one go (benches/device/prepare.sh builds what it runs), in order: the
# card; every kernel against its CPU reference (selftest); the baseline tool's `bench train` (the
# kernels before the fused dispatches); `bench train` of every named net with the stage profile,
# 1 vs 8 steps a submission and each net's roofline (the card's FMA, copy and dispatch rates
# measured in the same run); `bench conv` (Part I end to end, beside its bound); on the same card
# PyTorch eager, CUDA graphs, torch.compile and max-autotune (benches/peers/torch_modes.py); the
# same convolution in NumPy, OpenCV and PyTorch on that machine's CPUs; the test suite's GPU tests
# (their binaries); the eager loop as users write it (bench_torch_cuda.py). Results go to $OUT;
# benches/device/report.py turns them into the README's tables.
set -u
cd "$(dirname "$0")/../.."
out="${OUT:-target/device-out}"
mkdir -p "$out"
# prepare.sh's binaries, unpacked with Python's lzma (the lent machine has Python for its
# PyTorch, not necessarily xz) into a folder of their own, the carried tree being left as it is.
bin="${TMPDIR:-/tmp}/wgpu-cnn-device"
rm -rf "$bin"
python3 - "$bin" <<'EOF'
import lzma, pathlib, shutil, sys
root, dst = pathlib.Path("target/device"), pathlib.Path(sys.argv[1])
for packed in sorted(root.rglob("*.xz")):
    out = dst / packed.relative_to(root).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(packed) as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    out.chmod(0o755)
EOF
tool=$bin/wgpu-cnn
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
step() { echo "== $1 ($(date +%T), ${SECONDS} s in)"; }
# Every step ends by the deadline (DEADLINE seconds after the start, default 520: the device
# tool's call is given 540), each within its own cap, so that a slow compile late in the run
# cannot cost what came before: what a step leaves in $out comes back either way. A step with
# under 10 s left is skipped, and says so.
deadline="${DEADLINE:-520}"
# Images per timed epoch of `bench train` (IMAGES=512 for a quick run on lavapipe).
images="${IMAGES:-4608}"
within() {
  local cap=$1 left=$((deadline - SECONDS))
  shift
  if [ "$left" -lt 10 ]; then
    echo "skipped: ${left} s left before the deadline: $*" | tee -a "$out/skipped.txt"
    return 124
  fi
  timeout "$((cap < left ? cap : left))" "$@"
}

step card; nvidia-smi -L 2>&1 | tee "$out/card.txt"
step info; within 30 $tool info > "$out/info.txt" 2>&1; head -5 "$out/info.txt"
step selftest; within 150 $tool selftest > "$out/selftest.txt" 2>&1; tail -3 "$out/selftest.txt"
# The baseline first, as the issue asks: the tool before the fused dispatches (prepare.sh builds
# it from BASELINE), the same nets and images, so that before/after come from one lease.
for old in "$bin"/wgpu-cnn-*; do
  [ -x "$old" ] || continue
  rev="${old##*-}"
  step "bench train at $rev (the baseline)"
  within 90 $old bench train --model base --model maxpool --model deep --model cifar_bn --images "$images" \
    --device gpu --budget-ms 3000 --json "$out/train_$rev.json" > "$out/train_$rev.txt" 2>&1
  grep -E "images/s|dispatches|GPU " "$out/train_$rev.txt"
done
step "bench train"
within 150 $tool bench train --model base --model maxpool --model deep --model cifar_bn --images "$images" --device gpu \
  --budget-ms 3000 --profile --json "$out/train.json" > "$out/train.txt" 2>&1
grep -E "images/s|submission|dispatches|GPU rates|bound" "$out/train.txt"
step "bench conv"
within 60 $tool bench conv --size 451x300 --size 4096x4096 --budget-ms 1000 --json "$out/conv.json" > "$out/conv.txt" 2>&1
tail -12 "$out/conv.txt"
# The PyTorch modes before the CPU peers: they are what the issue's comparison needs most, and
# each model's modes finish (and print) before the next model's start.
step "PyTorch modes"
within 240 python3 benches/peers/torch_modes.py --models base,maxpool,deep --modes eager,graphs,compile \
  --steps 400 > "$out/torch_modes.txt" 2>&1
within 150 python3 benches/peers/torch_modes.py --models base --modes max-autotune --compile-budget 120 \
  --steps 400 >> "$out/torch_modes.txt" 2>&1 || echo "max-autotune: stopped at its bound" >> "$out/torch_modes.txt"
grep RESULT "$out/torch_modes.txt"
step "Part I peers on this machine's CPUs (NumPy, OpenCV where installed, PyTorch)"
within 60 python3 benches/peers/conv_bench.py --sizes 300x451,4096x4096 --n 5 \
  --methods numpy,cv2_16s,cv2_8u,torch > "$out/conv_peers.txt" 2>&1
grep -E "RESULT|SKIP" "$out/conv_peers.txt"
# The GPU tests of the test suite (prepare.sh built their binaries): GPU training against the
# CPU engines and bit-exact resume, Part I end to end, the classifier on the caller's device.
for test in "$bin"/tests/*; do
  [ -x "$test" ] || continue
  name="${test##*/}"
  step "cargo test --test $name (its binary)"
  within 120 "$test" > "$out/test_$name.txt" 2>&1
  grep -E "^test result|FAILED|panicked" "$out/test_$name.txt" | head -5
done
step "PyTorch eager, as users write it"
within 90 python3 benches/peers/bench_torch_cuda.py --models base,maxpool,deep --epochs 3 --n-train 4660 \
  > "$out/torch_eager_loop.txt" 2>&1
grep RESULT "$out/torch_eager_loop.txt"
step done
