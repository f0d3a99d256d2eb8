"""3x3 'conv' (assignment Part I) baselines: zero-pad 1, same-size output,
cross-correlation (no flip), clip 0..255, uint8 out. Kernel = Laplacian-like
[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]. All timings are end-to-end uint8 -> uint8
(including any dtype conversions) unless noted; median of N runs.

Usage: python conv_bench.py [--sizes 300x451,4096x4096,8192x8192]
Prints one RESULT json line per (method, size).

The team's ../shared/peers/conv_bench.py, copied here for the lent GPU machine (which gets only
this tree: benches/device/run.sh runs it on that machine's CPUs beside `bench conv`), with one
change: a method whose library is missing there (OpenCV, SciPy) is reported and skipped.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

K = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=np.int32)


def conv_naive(arr, k):
    """What a student typically writes: pad, then a python double loop."""
    h, w = arr.shape
    p = np.zeros((h + 2, w + 2), dtype=np.int32)
    p[1:-1, 1:-1] = arr
    out = np.zeros((h, w), dtype=np.uint8)
    for i in range(h):
        for j in range(w):
            s = np.sum(p[i:i + 3, j:j + 3] * k)
            out[i, j] = min(max(s, 0), 255)
    return out


def conv_numpy(arr, k):
    h, w = arr.shape
    p = np.zeros((h + 2, w + 2), dtype=np.int32)
    p[1:-1, 1:-1] = arr
    acc = np.zeros((h, w), dtype=np.int32)
    for di in range(3):
        for dj in range(3):
            c = int(k[di, dj])
            if c:
                acc += c * p[di:di + h, dj:dj + w]
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def conv_ndimage(arr, k):
    import scipy.ndimage as ndi
    r = ndi.correlate(arr.astype(np.int32), k, mode="constant", cval=0)
    return np.clip(r, 0, 255).astype(np.uint8)


def conv_ndimage_i16(arr, k):
    import scipy.ndimage as ndi
    r = ndi.correlate(arr.astype(np.int16), k.astype(np.int16), mode="constant", cval=0)
    return np.clip(r, 0, 255).astype(np.uint8)


def conv_signal(arr, k):
    import scipy.signal as sig
    r = sig.correlate2d(arr.astype(np.int32), k, mode="same", boundary="fill", fillvalue=0)
    return np.clip(r, 0, 255).astype(np.uint8)


def conv_cv2_16s(arr, k):
    import cv2
    r = cv2.filter2D(arr, cv2.CV_16S, k.astype(np.float32), borderType=cv2.BORDER_CONSTANT)
    return np.clip(r, 0, 255).astype(np.uint8)


def conv_cv2_8u(arr, k):
    # ddepth=CV_8U saturates to 0..255 itself (integer kernel -> exact)
    import cv2
    return cv2.filter2D(arr, cv2.CV_8U, k.astype(np.float32), borderType=cv2.BORDER_CONSTANT)


_TK = {}


def conv_torch(arr, k):
    import torch
    import torch.nn.functional as F
    if "k" not in _TK:
        _TK["k"] = torch.from_numpy(k.astype(np.float32)).view(1, 1, 3, 3)
    x = torch.from_numpy(arr).float().view(1, 1, *arr.shape)
    y = F.conv2d(x, _TK["k"], padding=1)  # conv2d is cross-correlation
    return y.clamp_(0, 255).to(torch.uint8).view(arr.shape).numpy()


def torch_core(arr, k):
    """conv2d only, input already float32 tensor (returned as closure)."""
    import torch
    import torch.nn.functional as F
    kt = torch.from_numpy(k.astype(np.float32)).view(1, 1, 3, 3)
    x = torch.from_numpy(arr).float().view(1, 1, *arr.shape)

    def f(_a, _k):
        return F.conv2d(x, kt, padding=1)
    return f


def timeit(fn, arr, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(arr, K)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="300x451,4096x4096,8192x8192")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--methods", default="naive,numpy,ndimage,ndimage_i16,signal,cv2_16s,cv2_8u,torch,torch_core")
    ap.add_argument("--torch-threads", type=int, default=0)
    ap.add_argument("--cv2-threads", type=int, default=-1)
    args = ap.parse_args()
    import importlib
    have = {}
    for name in ("cv2", "scipy", "torch"):
        try:
            have[name] = importlib.import_module(name)
        except ImportError:
            print("SKIP", name, "is not installed: its methods are skipped", flush=True)
    cv2, scipy, torch = have.get("cv2"), have.get("scipy"), have.get("torch")
    if torch and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if cv2 and args.cv2_threads >= 0:
        cv2.setNumThreads(args.cv2_threads)
    version = lambda m: m.__version__ if m else "missing"
    print("numpy", np.__version__, "scipy", version(scipy), "cv2", version(cv2),
          "cv2 threads", cv2.getNumThreads() if cv2 else 0, "torch", version(torch),
          "torch threads", torch.get_num_threads() if torch else 0, "cpu_count", os.cpu_count())
    needs = {"ndimage": scipy, "ndimage_i16": scipy, "signal": scipy, "cv2_16s": cv2, "cv2_8u": cv2,
             "torch": torch, "torch_core": torch}
    fns = {"naive": conv_naive, "numpy": conv_numpy, "ndimage": conv_ndimage,
           "ndimage_i16": conv_ndimage_i16, "signal": conv_signal,
           "cv2_16s": conv_cv2_16s, "cv2_8u": conv_cv2_8u, "torch": conv_torch}
    rng = np.random.default_rng(0)
    for sz in args.sizes.split(","):
        h, w = map(int, sz.split("x"))
        arr = rng.integers(0, 256, (h, w), dtype=np.uint8)
        ref = conv_numpy(arr, K)
        if h * w <= 300 * 451:
            assert np.array_equal(ref, conv_naive(arr, K)), "numpy != naive"
        for m in args.methods.split(","):
            if m == "naive" and h * w > 300 * 451:
                continue
            if m in needs and needs[m] is None:
                continue
            if m == "torch_core":
                fn = torch_core(arr, K)
            else:
                fn = fns[m]
                out = fn(arr, K)
                ok = bool(np.array_equal(out, ref))
            fn(arr, K)  # warm-up
            med, ts = timeit(fn, arr, args.n)
            res = {"method": m, "size": sz, "median_s": round(med, 6),
                   "min_s": round(min(ts), 6), "mpix_per_s": round(h * w / med / 1e6, 2),
                   "matches_ref": None if m == "torch_core" else ok}
            print("RESULT", json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
