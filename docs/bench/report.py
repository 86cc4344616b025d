"""Print the README's performance table (markdown) from a `lowering bench --json` file.

python docs/bench/report.py docs/bench/bench.json
"""

from __future__ import annotations

import json
import math
import sys

from lowering.resample import verdict


def geomean(values: list[float]) -> float:
    values = [v for v in values if v and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def with_interval(ratio: float, interval: list[float] | None) -> str:
    """The ratio and, where the run recorded it, its 95% bootstrap interval."""
    return f"{ratio:.2f}x" + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")


def same_graph_ratios(data: dict) -> list[tuple[str, str, float]]:
    """(layer, backend, time of auto / time of the strategy auto picked) wherever auto picked one
    strategy for the layer: the same graph compiled and timed twice in one run, so the spread of these
    ratios around 1.00 is the run's instance-to-instance noise, which no single variant's interval shows."""
    pairs = []
    for layer in data["layers"]:
        ok = {m["label"]: m for m in layer["measurements"] if m["status"] == "ok"}
        for backend, pick in (layer.get("auto_choice") or {}).items():
            auto, twin = ok.get(f"auto/{backend}"), ok.get(f"{pick}/{backend}")
            if "," not in pick and auto and twin:
                pairs.append((layer["name"], backend, auto["median_s"] / twin["median_s"]))
    return pairs


def print_same_graph_agreement(data: dict) -> None:
    pairs = same_graph_ratios(data)
    if not pairs:
        return
    within = {share: sum(abs(r - 1) <= share for _, _, r in pairs) for share in (0.05, 0.10)}
    widest = sorted(pairs, key=lambda p: -abs(p[2] - 1))[:4]
    print(
        f"Same graph timed twice (auto and the strategy it picked): within 5% on {within[0.05]}/{len(pairs)} "
        f"layer x backend cases, within 10% on {within[0.10]}; widest: "
        + ", ".join(f"{name} {backend} {ratio:.2f}x" for name, backend, ratio in widest)
        + "."
    )


def main(path: str) -> None:
    with open(path) as handle:
        data = json.load(handle)
    peak = data["peak_gflops"]["peak"]
    print(f"Measured peak: {peak:.0f} GFLOP/s (best of a 2048² NumPy matmul and a 1x1 conv in channels-last).\n")
    print(
        "| layer | GMAC | torch native ms | ORT native ms | auto/torch vs torch | auto/onnx vs ORT "
        "| best auto vs best native | auto % of peak | numpy best vs torch | static pick cost (torch / onnx) "
        "| torch prepacked native ms | auto/torch vs prepacked |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios: dict[str, list[float]] = {"torch": [], "onnx": [], "best": [], "numpy": [], "prepacked": []}
    wins = {"torch": 0, "onnx": 0, "best": 0, "prepacked": 0}
    verdicts: dict[str, list[str]] = {"torch": [], "onnx": []}
    for layer in data["layers"]:
        ok = {m["label"]: m for m in layer["measurements"] if m["status"] == "ok"}
        nt, no = ok["native/torch"]["median_s"], ok["native/onnx"]["median_s"]
        at, ao = ok.get("auto/torch"), ok.get("auto/onnx")
        autos = [m for k, m in ok.items() if k.startswith("auto/")]
        best_auto = min(autos, key=lambda m: m["median_s"])
        best_native = min(nt, no)
        numpy_best = min(
            (m["median_s"] for k, m in ok.items() if k.endswith("/numpy") and not k.startswith("native")),
            default=float("nan"),
        )
        rt, ro = at["median_s"] / nt, ao["median_s"] / no
        rb = best_auto["median_s"] / best_native
        ratios["torch"].append(rt)
        ratios["onnx"].append(ro)
        ratios["best"].append(rb)
        ratios["numpy"].append(numpy_best / nt)
        wins["torch"] += rt <= 1.0
        wins["onnx"] += ro <= 1.0
        it, io = at.get("vs_torch_native_interval"), ao.get("vs_onnx_native_interval")
        for backend, ratio, interval in (("torch", rt, it), ("onnx", ro, io)):
            if interval is not None:  # runs before the bench recorded intervals have no verdict
                verdicts[backend].append(verdict(ratio, interval))
        wins["best"] += best_auto["median_s"] < nt and best_auto["median_s"] < no
        prepacked = ok.get("native-prepacked/torch")
        rp = at["median_s"] / prepacked["median_s"] if prepacked else None
        prepacked_ms = f"{prepacked['median_s'] * 1e3:.3f}" if prepacked else "-"
        if rp is not None:
            ratios["prepacked"].append(rp)
            wins["prepacked"] += rp <= 1.0
        cost = data.get("summary", {}).get("layers", {}).get(layer["name"], {}).get("static_pick_cost", {})
        fmt = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        print(
            f"| {layer['name']} | {layer['useful_macs'] / 1e9:.3f} | {nt * 1e3:.3f} | {no * 1e3:.3f} | "
            f"{with_interval(rt, it)} | {with_interval(ro, io)} | {rb:.2f}x ({best_auto['backend']}) | "
            f"{100 * best_auto['peak_fraction']:.0f}% | "
            f"{numpy_best / nt:.2f}x | {fmt(cost.get('torch'))} / {fmt(cost.get('onnx'))} | "
            f"{prepacked_ms} | {fmt(rp)} |"
        )
    n = len(data["layers"])
    print(
        f"\nGeometric means: auto/torch vs torch {geomean(ratios['torch']):.2f}x, auto/onnx vs ORT "
        f"{geomean(ratios['onnx']):.2f}x, best auto vs best native {geomean(ratios['best']):.2f}x, "
        f"best NumPy strategy vs torch native {geomean(ratios['numpy']):.2f}x. "
        f"auto/torch <= 1.00x on {wins['torch']}/{n} layers, auto/onnx <= 1.00x on {wins['onnx']}/{n}, "
        f"best auto faster than both natives on {wins['best']}/{n}."
    )
    for backend, label in (("torch", "auto/torch vs torch"), ("onnx", "auto/onnx vs ORT")):
        above = [v for v in verdicts[backend] if v != "met"]
        if above:
            print(
                f"{label} above 1.00x: {above.count('tie')} with 1.00x inside the 95% interval (a tie the run "
                f"cannot split), {above.count('slower')} slower beyond it."
            )
    if ratios["prepacked"]:
        print(
            f"Against PyTorch's prepacked ConvTranspose: auto/torch {geomean(ratios['prepacked']):.2f}x "
            f"(geometric mean), <= 1.00x on {wins['prepacked']}/{len(ratios['prepacked'])} layers."
        )
    print_same_graph_agreement(data)
    share = data.get("summary", {}).get("static_within_10_percent", {})
    if share:
        print(
            "Static cost model within 10% of the measured best strategy: "
            + ", ".join(f"{b} {100 * v:.0f}%" for b, v in share.items())
            + " of layers."
        )


def plot(path: str, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as handle:
        data = json.load(handle)
    names, torch_ratio, onnx_ratio = [], [], []
    for layer in data["layers"]:
        ok = {m["label"]: m for m in layer["measurements"] if m["status"] == "ok"}
        names.append(layer["name"])
        torch_ratio.append(ok["auto/torch"]["median_s"] / ok["native/torch"]["median_s"])
        onnx_ratio.append(ok["auto/onnx"]["median_s"] / ok["native/onnx"]["median_s"])
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.2))
    rows = range(len(names))
    ax.barh([r + 0.2 for r in rows], torch_ratio, height=0.4, label="auto on PyTorch / PyTorch conv_transpose")
    ax.barh([r - 0.2 for r in rows], onnx_ratio, height=0.4, label="auto on onnxruntime / ORT ConvTranspose")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(rows), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("time ratio (median, same run; < 1: the lowering is faster)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/bench/bench.json"
    main(source)
    if len(sys.argv) > 2:
        plot(source, sys.argv[2])
