"""The PyTorch peer on a CUDA GPU, for `wgpu-cnn bench train` on the same machine.

A copy of `bench_torch.py` from the team's shared peer scripts (the three CIFAR-10 CNNs written
to match the Keras models: Keras 'same' padding, Glorot-uniform kernels, zero biases, Adam
lr 1e-3, betas (0.9, 0.999), eps 1e-7, CE + 1e-4 * sum|W_dense|, Dropout(0.5), validation = last
10% of rows), with the model and data moved to CUDA, cuDNN autotuning on, and a device
synchronisation before each host clock read. Like the original, it reads the loss back after
every step (eager PyTorch as a user writes it), so small models are launch-bound.

Usage: python benches/peers/bench_torch_cuda.py --models base --epochs 4
Prints a JSON line per model at the end (prefixed RESULT); compare train_img_per_s_excl_val.
"""
import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SameConv(nn.Module):
    """3x3 conv with TF/Keras 'same' padding semantics (input sizes even)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1 if stride == 1 else 0)
        nn.init.xavier_uniform_(self.conv.weight)  # == keras glorot_uniform for conv
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))  # (left, right, top, bottom)
        return F.relu(self.conv(x))


def build(name):
    if name == "base":
        body = [SameConv(3, 16), SameConv(16, 16, 2), SameConv(16, 32), SameConv(32, 32, 2)]
        flat = 32 * 8 * 8
    elif name == "maxpool":
        body = [SameConv(3, 16), SameConv(16, 16), nn.MaxPool2d(2),
                SameConv(16, 32), SameConv(32, 32), nn.MaxPool2d(2)]
        flat = 32 * 8 * 8
    elif name == "deep":
        body = [SameConv(3, 8), SameConv(8, 8, 2), SameConv(8, 16), SameConv(16, 16, 2),
                SameConv(16, 32), SameConv(32, 32, 2)]
        flat = 32 * 4 * 4
    else:
        raise ValueError(name)
    dense = nn.Linear(flat, 10)
    nn.init.xavier_uniform_(dense.weight)
    nn.init.zeros_(dense.bias)
    model = nn.Sequential(*body, nn.Dropout(0.5), nn.Flatten(), dense)
    return model, dense


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-pred", type=int, default=10000)
    ap.add_argument("--models", default="base,maxpool,deep")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)

    print("python", platform.python_version(), "torch", torch.__version__,
          "threads", torch.get_num_threads(), "interop", torch.get_num_interop_threads(),
          "compile", args.compile)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(
        rng.integers(0, 256, (args.n_train, 3, 32, 32), dtype=np.uint8).astype("float32") / 255.0)
    y = torch.from_numpy(rng.integers(0, 10, args.n_train)).long()
    xp = torch.from_numpy(
        rng.integers(0, 256, (args.n_pred, 3, 32, 32), dtype=np.uint8).astype("float32") / 255.0)
    x = x.to(dev); y = y.to(dev); xp = xp.to(dev)
    split = int(np.floor(args.n_train * (1.0 - 0.1)))  # Keras: last rows are validation
    xtr, ytr, xva, yva = x[:split], y[:split], x[split:], y[split:]
    bs = 128

    results = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, dense = build(name)
        model = model.to(dev)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
            x_cl = lambda t: t.contiguous(memory_format=torch.channels_last)
        else:
            x_cl = lambda t: t
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

        def train_step(xb, yb):
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb) + 1e-4 * dense.weight.abs().sum()
            loss.backward()
            opt.step()
            return loss.detach(), (out.argmax(1) == yb).sum()

        fwd = model
        step = train_step
        if args.compile:
            fwd = torch.compile(model)

            def step(xb, yb):
                opt.zero_grad(set_to_none=True)
                out = fwd(xb)
                loss = F.cross_entropy(out, yb) + 1e-4 * dense.weight.abs().sum()
                loss.backward()
                opt.step()
                return loss.detach(), (out.argmax(1) == yb).sum()

        epoch_t, val_t = [], []
        for ep in range(args.epochs):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(split, device=dev)
            tot_loss, tot_corr = 0.0, 0
            for i in range(0, split, bs):
                idx = perm[i:i + bs]
                l, c = step(x_cl(xtr[idx]), ytr[idx])
                tot_loss += float(l) * len(idx)
                tot_corr += int(c)
            torch.cuda.synchronize()
            v0 = time.perf_counter()
            model.eval()
            vl, vc = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(xva), bs):
                    out = fwd(x_cl(xva[i:i + bs]))
                    vl += float(F.cross_entropy(out, yva[i:i + bs], reduction="sum"))
                    vc += int((out.argmax(1) == yva[i:i + bs]).sum())
            t1 = time.perf_counter()
            epoch_t.append(t1 - t0)
            val_t.append(t1 - v0)
            print(f"{name} epoch {ep + 1}: {t1 - t0:.3f}s loss {tot_loss / split:.4f} "
                  f"acc {tot_corr / split:.4f} val_loss {vl / len(xva):.4f} val_acc {vc / len(xva):.4f}")
        steady = epoch_t[1:]
        train_only = [e - v for e, v in zip(steady, val_t[1:])]
        res = {
            "framework": "torch" + ("+compile" if args.compile else "") + ("+cl" if args.channels_last else ""),
            "threads": torch.get_num_threads(), "model": name,
            "params": n_params,
            "epoch_times_s": [round(t, 3) for t in epoch_t],
            "val_times_s": [round(t, 3) for t in val_t],
            "steady_epoch_median_s": round(statistics.median(steady), 3),
            "train_img_per_s_incl_val": round(split / statistics.median(steady), 1),
            "train_img_per_s_excl_val": round(split / statistics.median(train_only), 1),
        }
        model.eval()
        for pbs in (128, 1000):
            times = []
            with torch.no_grad():
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(0, args.n_pred, pbs):
                        torch.softmax(fwd(x_cl(xp[i:i + pbs])), 1)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
            key = f"predict_{args.n_pred}_bs{pbs}"
            res[key + "_first_s"] = round(times[0], 3)
            res[key + "_median_later_s"] = round(statistics.median(times[1:]), 3)
            res[key + "_img_per_s"] = round(args.n_pred / statistics.median(times[1:]), 1)
        results.append(res)
        print("RESULT", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
