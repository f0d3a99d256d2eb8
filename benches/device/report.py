#!/usr/bin/env python3
"""The README's tables from one run of benches/device/run.sh: `python3 benches/device/report.py DIR`,
DIR being the run's $OUT (the device tool's files_at). Standard library only.

Prints Markdown: training img/s of every net before (the baseline tool, train_<rev>.json) and now
(train.json: 1 and 8 steps a submission), with dispatches a step; ours beside each PyTorch mode on
the same card (torch_modes.txt, torch_eager_loop.txt); each net's roofline; Part I end to end
beside its bound (conv.json) and the CPU peers (conv_peers.txt); the GPU tests' results
(test_*.txt). A file a step did not write (the
run's deadline, a failed step) leaves its table out and says so.
"""
import json
import re
import sys
from pathlib import Path


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"_{path.name}: not read ({type(e).__name__}); its table is left out._\n")
        return None


def results(path):
    """The RESULT lines of a peer script's output, as dicts."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        print(f"_{path.name}: not written; its table is left out._\n")
        return []
    return [json.loads(l[len("RESULT "):]) for l in lines if l.startswith("RESULT ")]


def net(model):
    """`base (c16,...)` -> `base`."""
    return model.split(" (")[0]


def steps(engine):
    m = re.search(r"(\d+) steps? a submission", engine)
    return int(m.group(1)) if m else 1


def training_rows(doc):
    """{net: {steps a submission: img/s}} of a bench train JSON."""
    rows = {}
    for r in doc.get("results", []):
        if r["engine"].startswith("GPU"):
            rows.setdefault(net(r["model"]), {})[steps(r["engine"])] = r["images_per_second"]
    return rows


def dispatches(doc):
    return {net(r["model"]): r["roofline"]["dispatches_per_step"] for r in doc.get("rooflines", [])}


def dispatches_from_text(path):
    """The baseline may predate the roofline: its text's `GPU step: N dispatches`, in model order."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    found = {}
    for m in re.finditer(r"Training throughput of (\S+) .*?GPU step: (\d+) dispatches", text, re.S):
        found[m.group(1)] = int(m.group(2))
    return found


def ms(seconds):
    return f"{1e3 * seconds:.3f} ms"


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/device-out")
    card = (folder / "card.txt").read_text().strip() if (folder / "card.txt").exists() else ""
    if not card.startswith("GPU"):
        # No nvidia-smi: the adapter wgpu-cnn picked, from `info`.
        info = (folder / "info.txt").read_text() if (folder / "info.txt").exists() else ""
        found = re.search(r"^\[0\] (.+)$", info, re.M)
        card = found.group(1) if found else "?"
    print(f"Card: {card}\n")

    now = load_json(folder / "train.json")
    baselines = sorted(folder.glob("train_*.json"))
    if now:
        ours = training_rows(now)
        ours_dispatches = dispatches(now)
        header = "| net |"
        rule = "| --- |"
        base_rows = []
        for path in baselines:
            rev = path.stem[len("train_"):]
            doc = load_json(path)
            if doc is None:
                continue
            base_rows.append((rev, training_rows(doc), dispatches(doc) or dispatches_from_text(path.with_suffix(".txt"))))
            header += f" `{rev}` img/s, best of 1 and 8 steps a submission (dispatches) |"
            rule += " ---: |"
        header += " now, 1 step a submission | now, 8 steps a submission | now (dispatches) |"
        rule += " ---: | ---: | ---: |"
        if base_rows:
            header += " now / baseline (best to best) |"
            rule += " ---: |"
        print("**Training, batch 128** (`bench train --device gpu`)\n")
        print(header)
        print(rule)
        for name, rates in ours.items():
            row = f"| {name} |"
            for _, rows, d in base_rows:
                old = max(rows.get(name, {}).values(), default=None)
                row += f" {old:,.0f} ({d.get(name, '?')}) |" if old else " – |"
            best = max(rates.values())
            row += f" {rates.get(1, float('nan')):,.0f} | {rates.get(8, float('nan')):,.0f} | {ours_dispatches.get(name, '?')} |"
            if base_rows:
                old = max(base_rows[0][1].get(name, {}).values(), default=None)
                row += f" {best / old:.2f}× |" if old else " – |"
            print(row)
        print()

        peers = results(folder / "torch_modes.txt")
        eager_loop = {r["model"]: r for r in results(folder / "torch_eager_loop.txt")}
        modes = ["eager", "graphs", "compile", "max-autotune"]
        if peers or eager_loop:
            by = {(r["model"], r["mode"]): r for r in peers}
            print("**Beside PyTorch on the same card** (img/s; ours / theirs in brackets; warm-up seconds after the compiled modes)\n")
            print("| net | wgpu-cnn, best of 1 and 8 steps a submission | " + " | ".join(f"PyTorch {m}" for m in modes)
                  + " | PyTorch eager loop as users write it |")
            print("| --- | ---: |" + " ---: |" * (len(modes) + 1))
            for name, rates in ours.items():
                best = max(rates.values())
                row = f"| {name} | {best:,.0f} |"
                for m in modes:
                    r = by.get((name, m))
                    if r is None:
                        row += " – |"
                    elif "img_per_s" in r:
                        warm = f", {r['warmup_s']:.0f} s" if m in ("compile", "max-autotune") else ""
                        row += f" {r['img_per_s']:,.0f} ({best / r['img_per_s']:.2f}×{warm}) |"
                    else:
                        row += f" {r.get('skipped') or r.get('failed')} |"
                r = eager_loop.get(name)
                row += f" {r['train_img_per_s_excl_val']:,.0f} ({best / r['train_img_per_s_excl_val']:.2f}×) |" if r else " – |"
                print(row)
            print()

        if now.get("rooflines"):
            rates = now["gpu_rates"]
            print(f"**Roofline** ({rates['flop_per_second'] / 1e9:,.0f} GFLOP/s f32 FMA, "
                  f"{rates['bytes_per_second'] / 1e9:.0f} GB/s copy, {1e6 * rates['dispatch_seconds']:.1f} µs a dependent dispatch, this run)\n")
            print("| net | compute | memory (bytes touched) | dispatches | bound | measured step | step / bound |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in now["rooflines"]:
                f = r["roofline"]
                print(f"| {net(r['model'])} | {ms(f['compute_seconds'])} ({f['flop_per_step'] / 1e9:.2f} GFLOP) "
                      f"| {ms(f['memory_seconds'])} ({f['bytes_per_step'] / 1e6:.0f} MB) "
                      f"| {ms(f['dispatch_seconds'])} ({f['dispatches_per_step']}) "
                      f"| {ms(f['bound_seconds'])}, {f['bound_by']} | {ms(f['measured_seconds'])} "
                      f"| {f['measured_seconds'] / f['bound_seconds']:.1f}× |")
            print()

    conv = load_json(folder / "conv.json")
    if conv:
        print("**Part I, 3×3 convolution** (Mpx/s; `vs CPU fast` > 1 is faster than the fast CPU path)\n")
        print("| size | method | Mpx/s | vs CPU fast |")
        print("| --- | --- | ---: | ---: |")
        for r in conv["results"]:
            print(f"| {r['size']} | {r['method']} | {r['megapixels_per_second']:,.1f} | {r['vs_cpu_fast']:.2f}× |")
        for r in results(folder / "conv_peers.txt"):
            h, w = r["size"].split("x")
            print(f"| {w}x{h} | {r['method']} (conv_bench.py{'' if r.get('matches_ref') is not False else ', differs'}) "
                  f"| {r['mpix_per_s']:,.1f} | |")
        print()
    tests = sorted(folder.glob("test_*.txt"))
    if tests:
        print("**The test suite's GPU tests on this card** (their binaries, built by prepare.sh)\n")
        for path in tests:
            lines = [l for l in path.read_text().splitlines() if l.startswith("test result") or "FAILED" in l]
            print(f"- `{path.stem[len('test_'):]}`: {'; '.join(lines) or 'no result (stopped at its cap?)'}")
        print()
    skipped = folder / "skipped.txt"
    if skipped.exists():
        print("Skipped at the deadline:\n\n" + skipped.read_text())


if __name__ == "__main__":
    main()
