"""PyTorch's fastest ways to train the same nets, for `wgpu-cnn bench train` on the same card.

The nets of `bench_torch_cuda.py`, imported from it (Keras 'same' padding, Glorot-uniform kernels, zero biases, Adam
lr 1e-3, betas (0.9, 0.999), eps 1e-7, CE + 1e-4 * sum|W_dense|, Dropout(0.5)), batch 128, the data
resident on the device and each batch gathered there from a shuffled index (as our gather does),
trained in four modes, each timed as PyTorch's documentation recommends for it:

- eager: the plain loop, no host synchronisation inside the timed steps;
- graphs: one training step captured as a CUDA graph (`torch.cuda.graph`, Adam with
  `capturable=True`) and replayed; the batch's indices are copied into the graph's static input;
- compile: `torch.compile(step)` (mode "default");
- max-autotune: `torch.compile(step, mode="max-autotune")`, its compile time reported, and
  skipped with a message when it exceeds `--compile-budget` seconds.

Each mode warms up (compiles, captures, autotunes) outside the timing, then times `--steps` steps
between two CUDA events with no synchronisation in between. The images are random (the work does
not depend on them). On a machine without CUDA it runs eager and compile on the CPU, with the host
clock, so the script can be checked there; graphs need CUDA.

Usage: python benches/peers/torch_modes.py --models base,maxpool,deep --steps 400
Prints one JSON line per (model, mode), prefixed RESULT: img_per_s, ms_per_step, compile_s.
"""
import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

# The same nets as the eager peer (this script's folder is on sys.path when run as a script).
from bench_torch_cuda import build


class Clock:
    """CUDA events around the timed steps on a GPU; the host clock (after the work) on a CPU."""

    def __init__(self, dev):
        self.cuda = dev.type == "cuda"

    def start(self):
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop_s(self):
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1e3
        return time.perf_counter() - self.t0


def run_mode(name, mode, args, dev, x, y):
    torch.manual_seed(0)
    model, dense = build(name)
    model = model.to(dev).train()
    capturable = mode == "graphs"
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7,
                           capturable=capturable)
    bs, n = 128, x.shape[0]
    static_idx = torch.zeros(bs, dtype=torch.long, device=dev)

    def step(idx):
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        opt.zero_grad(set_to_none=not capturable)
        out = model(xb)
        loss = F.cross_entropy(out, yb) + 1e-4 * dense.weight.abs().sum()
        loss.backward()
        opt.step()
        return loss.detach()

    order = torch.randperm(n, device=dev)
    batches = [order[i:i + bs] for i in range(0, n - bs + 1, bs)]
    compile_s = None
    t0 = time.perf_counter()
    if mode == "graphs":
        # Warm up on a side stream (as torch.cuda.graphs' docs say), then capture one step.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in batches[:3]:
                static_idx.copy_(b)
                step(static_idx)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(graph):
            step(static_idx)

        def run(b):
            static_idx.copy_(b)
            graph.replay()
    else:
        fn = step
        if mode in ("compile", "max-autotune"):
            fn = torch.compile(step, mode="default" if mode == "compile" else "max-autotune")

        def run(b):
            fn(b)

        # Compilation happens on the first calls; a second shape never comes (full batches).
        for b in batches[:3]:
            run(b)
            if time.perf_counter() - t0 > args.compile_budget:
                return {"model": name, "mode": mode, "skipped": f"warm-up over {args.compile_budget} s"}
    if dev.type == "cuda":
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    clock = Clock(dev)
    clock.start()
    for i in range(args.steps):
        run(batches[i % len(batches)])
    seconds = clock.stop_s()
    return {
        "model": name, "mode": mode, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "steps": args.steps, "batch": bs,
        "ms_per_step": round(1e3 * seconds / args.steps, 4),
        "img_per_s": round(bs * args.steps / seconds, 1),
        "warmup_s": round(compile_s, 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="base,maxpool,deep")
    ap.add_argument("--modes", default="eager,graphs,compile,max-autotune")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=4608)
    ap.add_argument("--compile-budget", type=float, default=240.0,
                    help="seconds a mode's warm-up (compilation, autotuning) may take")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print("python", platform.python_version(), "torch", torch.__version__, "device", dev, flush=True)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (args.n_train, 3, 32, 32), generator=gen, dtype=torch.uint8).float() / 255).to(dev)
    y = torch.randint(0, 10, (args.n_train,), generator=gen).to(dev)
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            if mode == "graphs" and dev.type != "cuda":
                print(f"RESULT {json.dumps({'model': name, 'mode': mode, 'skipped': 'needs CUDA'})}", flush=True)
                continue
            try:
                result = run_mode(name, mode, args, dev, x, y)
            except Exception as e:  # a mode that fails (no Triton, no compiler) must not stop the others
                result = {"model": name, "mode": mode, "failed": f"{type(e).__name__}: {e}"[:300]}
            print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
