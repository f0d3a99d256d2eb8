#!/usr/bin/env bash
# One lease of a real GPU, in one go (benches/device/prepare.sh builds what it runs): the card,
# every kernel against its CPU reference (selftest), `bench train` of every named net with the
# stage profile, 1 vs 8 steps a submission and each net's roofline (the card's FMA, copy and
# dispatch rates measured in the same run), `bench conv` (Part I end to end) beside the same
# convolution in NumPy, OpenCV and PyTorch on that machine's CPUs, and on the same
# card PyTorch eager, CUDA graphs, torch.compile and max-autotune (benches/peers/torch_modes.py)
# plus the eager loop as users write it (bench_torch_cuda.py). Results go to $OUT.
set -u
cd "$(dirname "$0")/../.."
out="${OUT:-target/device-out}"
mkdir -p "$out"
tool=target/device/wgpu-cnn
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
step() { echo "== $1 ($(date +%T))"; }

step card; nvidia-smi -L 2>&1 | tee "$out/card.txt"
step info; $tool info > "$out/info.txt" 2>&1; head -5 "$out/info.txt"
step selftest; $tool selftest > "$out/selftest.txt" 2>&1; tail -3 "$out/selftest.txt"
step "bench train"
$tool bench train --model base --model maxpool --model deep --model cifar_bn --images 4608 --device gpu \
  --budget-ms 3000 --profile --json "$out/train.json" > "$out/train.txt" 2>&1
grep -E "images/s|submission|dispatches|GPU rates|bound" "$out/train.txt"
step "bench conv"
$tool bench conv --size 451x300 --size 4096x4096 --budget-ms 1000 --json "$out/conv.json" > "$out/conv.txt" 2>&1
tail -12 "$out/conv.txt"
step "Part I peers on this machine's CPUs (NumPy, OpenCV where installed, PyTorch)"
timeout 120 python3 benches/peers/conv_bench.py --sizes 300x451,4096x4096 --n 5 \
  --methods numpy,cv2_16s,cv2_8u,torch > "$out/conv_peers.txt" 2>&1
grep -E "RESULT|SKIP" "$out/conv_peers.txt"
step "PyTorch modes"
timeout 300 python3 benches/peers/torch_modes.py --models base,maxpool,deep --modes eager,graphs,compile \
  --steps 400 > "$out/torch_modes.txt" 2>&1
timeout 200 python3 benches/peers/torch_modes.py --models base --modes max-autotune --compile-budget 150 \
  --steps 400 >> "$out/torch_modes.txt" 2>&1 || echo "max-autotune: over its 200 s bound" >> "$out/torch_modes.txt"
grep RESULT "$out/torch_modes.txt"
step "PyTorch eager, as users write it"
timeout 120 python3 benches/peers/bench_torch_cuda.py --models base,maxpool,deep --epochs 3 --n-train 4660 \
  > "$out/torch_eager_loop.txt" 2>&1
grep RESULT "$out/torch_eager_loop.txt"
step done
