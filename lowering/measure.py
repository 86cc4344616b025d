"""Side-by-side timing of lowered variants against the native kernels, measured the careful way.

Every variant of a layer (strategy x backend x device, plus PyTorch's and onnxruntime's own
ConvTranspose) is compiled first, checked once against the float64 reference, warmed up, and then
timed in rounds, each in a shuffled order. Every variant gets an equal share of the time budget
(its call time estimated by the median of its warm-up calls), so fast variants get more samples
than slow ones (before, one 30 ms variant left every layer with only 3-5 samples per variant); a
variant's samples are spread evenly over all rounds, so slow drifts of the machine (frequency,
other load) reach every variant alike rather than only those still being timed. Each timed call
directly follows an untimed call of the same variant, and the variants of one runtime run back to
back: what is measured is the layer in its steady state (its weights and buffers in cache, its
runtime's threads awake), the way a model runs it again and again, and not whatever the variant
before it left behind (PyTorch's native 3-D decoder timed 0.94 ms alone and 1.24 ms shuffled among
onnxruntime and NumPy calls). Medians and spreads come from those rounds.
Thread counts are fixed for every runtime and reported. Peak extra memory is the process's
resident-set high-water mark above its level before the call (Linux `clear_refs`), measured on one
call per variant before the timing starts.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LoweringError
from .ir import Graph
from .resample import bootstrap_medians, ratio_interval

NATIVE = "native"  # the runtime's own ConvTranspose as users call it (PyTorch: eager conv_transpose)
NATIVE_PREPACKED = "native-prepacked"  # PyTorch's ConvTranspose with weights reordered once (torch.compile freezing)
NATIVES = (NATIVE, NATIVE_PREPACKED)


@dataclass
class Measurement:
    """One variant's figures on one layer."""

    strategy: str
    backend: str
    device: str
    median_s: float = float("nan")
    min_s: float = float("nan")
    max_s: float = float("nan")
    q1_s: float = float("nan")
    q3_s: float = float("nan")
    runs: int = 0
    gflops: float = float("nan")
    peak_fraction: float = float("nan")
    vs_torch_native: float = float("nan")
    vs_onnx_native: float = float("nan")
    # the 95% bootstrap intervals of those two ratios (`lowering.resample`): a tie or a real difference
    vs_torch_native_interval: list[float] | None = None
    vs_onnx_native_interval: list[float] | None = None
    peak_extra_bytes: int | None = None
    max_abs_error: float = float("nan")
    max_rel_error: float = float("nan")
    status: str = "ok"  # ok, declined: ..., failed: ...

    @property
    def label(self) -> str:
        return f"{self.strategy}/{self.backend}" + ("" if self.device == "cpu" else f"/{self.device}")


@dataclass
class LayerResult:
    name: str
    spec: str
    useful_macs: int
    input_shape: list
    output_shape: list
    measurements: list[Measurement] = field(default_factory=list)
    auto_choice: dict[str, str] = field(default_factory=dict)  # backend -> strategy auto picked
    static_choice: dict[str, str] = field(default_factory=dict)  # backend -> what the static cost model picks

    def best(self, backend: str | None = None, exclude_native: bool = True) -> Measurement | None:
        ok = [
            m
            for m in self.measurements
            if m.status == "ok"
            and (backend is None or m.backend == backend)
            and not (exclude_native and m.strategy in NATIVES)
        ]
        return min(ok, key=lambda m: m.median_s, default=None)


# ----------------------------------------------------------------- machine facts


def thread_settings(threads: int) -> dict[str, Any]:
    """Fix every runtime's thread count to `threads`; return what each now uses."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    blas = [
        {k: info.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "torch": torch.get_num_threads(),
        "onnxruntime": threads,
        "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }


def machine_facts() -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowering"


def measured_peak_gflops(threads: int, refresh: bool = False) -> dict[str, float]:
    """The machine's float32 peak, as the best of a large NumPy matmul and a large torch 1x1 conv
    in channels-last; measured once per machine, thread count and library versions, then cached."""
    import torch

    facts = machine_facts()
    key = json.dumps([facts["cpu"], threads, facts["numpy"], facts["torch"], os.environ.get("OPENBLAS_CORETYPE")])
    path = _cache_dir() / "peak.json"
    cache: dict[str, Any] = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if not refresh and key in cache:
        return cache[key]

    def best_rate(fn: Callable[[], object], flops: float, repeats: int = 7) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    numpy_rate = best_rate(lambda: a @ a, 2 * n**3)
    x = torch.randn(8, 512, 32, 32).to(memory_format=torch.channels_last)
    w = torch.randn(512, 512, 1, 1).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        conv_rate = best_rate(lambda: torch.nn.functional.conv2d(x, w), 2 * 8 * 512 * 512 * 32 * 32)
    result = {"numpy_matmul": numpy_rate, "torch_conv1x1": conv_rate, "peak": max(numpy_rate, conv_rate)}
    cache[key] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=1))
    except OSError:
        pass
    return result


# ----------------------------------------------------------------- memory


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_bytes(call: Callable[[], object]) -> int | None:
    """Resident-set high-water mark during `call` above the level before it (Linux only)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        call()
        return None
    before = _status_kib("VmRSS")
    call()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


# ----------------------------------------------------------------- variants


@dataclass
class Variant:
    measurement: Measurement
    call: Callable[[], object] | None  # a ready-to-time call with inputs already in place
    outputs: Callable[[], dict[str, np.ndarray]] | None = None
    timed: Callable[[], float] | None = None  # one call, returning its seconds


def _timer(compiled, call: Callable[[], object]) -> Callable[[], float]:
    """Seconds of one call: wall clock on the CPU; CUDA events after synchronisation on the GPU."""
    if compiled.device == "cuda" and compiled.backend == "torch":
        import torch

        def timed() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            call()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3

        return timed

    def wall() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return wall


def _timed_call(compiled, inputs: dict[str, np.ndarray]) -> tuple[Callable[[], object], Callable[[], dict]]:
    """The cheapest call that runs the compiled graph (no per-call input checks or conversions)."""
    if compiled.backend == "torch" and "module" in compiled.artifacts:
        import torch

        module = compiled.artifacts["module"]
        device = compiled.device
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[v.name])).to(device) for v in compiled.graph.inputs]
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def call() -> object:
            with torch.inference_mode():
                out = module(*tensors)
            sync()
            return out

        return call, lambda: compiled(inputs)
    if compiled.backend == "onnx" and "session" in compiled.artifacts:
        session = compiled.artifacts["session"]
        names = [v.name for v in compiled.graph.outputs]
        feeds = {v.name: np.ascontiguousarray(inputs[v.name], dtype=v.dtype) for v in compiled.graph.inputs}
        return (lambda: session.run(names, feeds)), lambda: compiled(inputs)
    return (lambda: compiled.run(inputs)), lambda: compiled(inputs)


def ready_variant(compiled, inputs: dict[str, np.ndarray], measurement: Measurement) -> Variant:
    """A compiled graph as a variant ready to time: its cheapest call with the inputs in place, a
    checked call for its outputs, and its timer."""
    call, outputs = _timed_call(compiled, inputs)
    return Variant(measurement, call, outputs, _timer(compiled, call))


def build_variants(
    graph: Graph,
    inputs: dict[str, np.ndarray],
    strategies: list[str],
    backends: list[str],
    devices: list[str],
    threads: int,
    tune: bool = False,
) -> tuple[list[Variant], dict[str, str], dict[str, str]]:
    """Every variant compiled and ready to time, auto's picks, and the static cost model's picks."""
    from .api import lower
    from .compile import compile

    def picks(lowered_graph: Graph) -> str:
        notes = lowered_graph.meta.get("lowering_notes") or []
        return ", ".join(n.splitlines()[0].split(": ", 1)[-1].split(" (")[0] for n in notes)

    variants: list[Variant] = []
    auto_choice: dict[str, str] = {}
    static_choice = {b: picks(lower(graph, "auto", backend=b)) for b in backends} if "auto" in strategies else {}
    natives = [(NATIVE, b) for b in ("torch", "onnx") if b in backends]
    natives += [(NATIVE_PREPACKED, "torch")] if "torch" in backends else []
    plan = natives + [(s, b) for s in strategies for b in backends]
    for device in devices:
        for strategy, backend in plan:
            m = Measurement(strategy, backend, device)
            try:
                if strategy in NATIVES:
                    candidate = graph
                else:
                    options = {"backend": backend, "tune": tune, "device": device} if strategy == "auto" else {}
                    candidate = lower(graph, strategy, **options)
                    if strategy == "auto":
                        auto_choice[backend] = picks(candidate)
                options = {"threads": threads} if backend == "onnx" else {}
                if strategy in NATIVES and backend == "torch":
                    if strategy == NATIVE_PREPACKED and device != "cpu":
                        raise LoweringError("prepacked ConvTranspose weights are a oneDNN (CPU) feature")
                    options["prepack"] = strategy == NATIVE_PREPACKED  # eager native reorders every call
                compiled = compile(candidate, backend, device, **options)
            except LoweringError as error:
                m.status = f"declined: {error}"
                variants.append(Variant(m, None))
                continue
            variants.append(ready_variant(compiled, inputs, m))
    return variants, auto_choice, static_choice


def _quantiles(times: list[float]) -> tuple[float, float]:
    if len(times) < 4:
        return min(times), max(times)
    q = statistics.quantiles(times, n=4)
    return q[0], q[2]


def _runtime_groups(variants: list[Variant]) -> list[list[Variant]]:
    """The variants split by the runtime that executes them (backend and device), in first-seen order."""
    groups: dict[tuple[str, str], list[Variant]] = {}
    for v in variants:
        groups.setdefault((v.measurement.backend, v.measurement.device), []).append(v)
    return list(groups.values())


# the variants the bench's targets compare (auto against each native kernel) get this many shares of
# a layer's budget, every other strategy one: their medians decide the verdicts, so they get the samples
JUDGED_STRATEGIES = (*NATIVES, "auto")
JUDGED_SHARES = 3


def _shares(v: Variant) -> int:
    return JUDGED_SHARES if v.measurement.strategy in JUDGED_STRATEGIES else 1


def _samples_wanted(
    variants: list[Variant], single: dict[int, float], budget_s: float, min_rounds: int, max_rounds: int
) -> dict[int, int]:
    """Timed calls per variant: each gets its shares of the budget (a timed call and its untimed one
    both count; `JUDGED_SHARES` for auto and the natives, one for every other strategy), at least
    `min_rounds`, at most `max_rounds`. A slow variant (a 30 ms sparse matrix) no longer holds the fast
    ones of the same layer to a handful of samples; once a variant has its samples it drops out of the
    later rounds."""
    share = budget_s / max(1, sum(_shares(v) for v in variants))
    return {
        id(v): int(min(max_rounds, max(min_rounds, _shares(v) * share / (2 * max(single[id(v)], 1e-7)))))
        for v in variants
    }


def time_steady_state(
    live: list[Variant],
    *,
    budget_s: float,
    min_rounds: int = 3,
    max_rounds: int = 200,
    warmup_s: float = 0.2,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[int, list[float]]:
    """Seconds of each variant's timed calls (keyed by id), by the protocol in this module's docstring:
    a warm-up that also estimates each call, an equal share of `budget_s` per variant, shuffled rounds
    with the variants of one runtime back to back, each timed call right after an untimed one of the
    same variant. `lowering bench` and `auto --tune` both measure this way, so a tuned pick is what
    the bench would have found best."""
    single: dict[int, float] = {}
    for v in live:  # warm-up, and an estimate of each call's time: the median of the warm-up calls
        start = time.perf_counter()
        calls: list[float] = []
        while len(calls) < 3 or time.perf_counter() - start < warmup_s:
            t0 = time.perf_counter()
            v.call()  # type: ignore[misc]
            calls.append(time.perf_counter() - t0)
            if time.perf_counter() - start > 10 * warmup_s:
                break
        single[id(v)] = statistics.median(calls)
    wanted = _samples_wanted(live, single, budget_s, min_rounds, max_rounds)
    rounds = max(wanted.values(), default=0)
    times: dict[int, list[float]] = {id(v): [] for v in live}
    groups = _runtime_groups(live)
    shuffler = random.Random(seed)
    for index in range(rounds):
        if progress and index % max(1, rounds // 10) == 0:
            progress(f"round {index + 1}/{rounds}")
        shuffler.shuffle(groups)
        for group in groups:
            shuffler.shuffle(group)
            for v in group:
                if _samples_by(index + 1, wanted[id(v)], rounds) > _samples_by(index, wanted[id(v)], rounds):
                    v.call()  # type: ignore[misc]  # the steady state: this variant's data, this runtime's threads
                    times[id(v)].append(v.timed())  # type: ignore[misc]
    return times


def _samples_by(rounds_done: int, wanted: int, rounds: int) -> int:
    """How many of a variant's `wanted` samples fall in the first `rounds_done` of `rounds` rounds: spread
    evenly, so a variant with few samples is timed across the whole run, not only in its first rounds
    (a drift of the machine then reaches every variant alike; one variant timed in the first 5 of 27
    rounds measured 1.48x the same graph timed in all 27)."""
    return rounds_done * wanted // rounds


def measure_layer(
    name: str,
    spec: str,
    graph: Graph,
    *,
    strategies: list[str],
    backends: list[str],
    devices: list[str],
    threads: int,
    peak_gflops: float,
    budget_s: float = 2.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
    warmup_s: float = 0.2,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    tune: bool = False,
) -> LayerResult:
    """Compile, check and time every variant of one single-ConvTranspose (or any) graph."""
    from .geometry import node_geometry
    from .reference import evaluate

    rng = np.random.default_rng(seed)
    inputs = {
        v.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in v.shape]).astype(v.dtype)
        for v in graph.inputs
    }
    macs = sum(node_geometry(n).useful_macs() for n in graph.nodes if n.op in ("ConvTranspose", "Conv"))
    result = LayerResult(name, spec, macs, list(graph.inputs[0].shape), list(graph.outputs[0].shape))
    reference = evaluate(graph, inputs)
    variants, result.auto_choice, result.static_choice = build_variants(
        graph, inputs, strategies, backends, devices, threads, tune
    )
    live = [v for v in variants if v.call is not None]

    from .cli_run import relative_error

    for v in live:
        if progress:
            progress(f"{name}: checking {v.measurement.label}")
        try:
            outputs = v.outputs()  # type: ignore[misc]
            worst = [relative_error(outputs[k], ref) for k, ref in reference.items()]
            v.measurement.max_abs_error = max(w[0] for w in worst)
            v.measurement.max_rel_error = max(w[1] for w in worst)
            v.measurement.peak_extra_bytes = peak_extra_bytes(v.call)  # type: ignore[arg-type]
        except Exception as error:  # a runtime refusing a configuration is a result, not a crash
            v.measurement.status = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    live = [v for v in live if v.measurement.status == "ok"]

    times = time_steady_state(
        live,
        budget_s=budget_s,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        warmup_s=warmup_s,
        seed=seed,
        progress=(lambda text: progress(f"{name}: {text}")) if progress else None,
    )

    for v in live:
        samples = times[id(v)]
        m = v.measurement
        m.runs = len(samples)
        m.median_s = statistics.median(samples)
        m.min_s, m.max_s = min(samples), max(samples)
        m.q1_s, m.q3_s = _quantiles(samples)
        m.gflops = 2 * macs / m.median_s / 1e9
        m.peak_fraction = m.gflops / peak_gflops if peak_gflops else float("nan")
    # each variant's resampled medians once (a native's serve every ratio to it); the natives draw
    # from a stream of their own, so that a native against itself still shows its spread
    resampled = {id(v): bootstrap_medians(times[id(v)], seed=seed) for v in live}
    native = {
        v.measurement.backend: (v.measurement.median_s, bootstrap_medians(times[id(v)], seed=seed + 1))
        for v in live
        if v.measurement.strategy == NATIVE and v.measurement.device == "cpu"
    }
    for v in live:
        m = v.measurement
        for backend, field_name in (("torch", "vs_torch_native"), ("onnx", "vs_onnx_native")):
            if backend in native:
                median, medians = native[backend]
                setattr(m, field_name, m.median_s / median)
                setattr(m, field_name + "_interval", list(ratio_interval(resampled[id(v)], medians)))
    result.measurements = [v.measurement for v in variants]
    return result


def result_to_json(result: LayerResult) -> dict[str, Any]:
    data = asdict(result)
    for m, raw in zip(result.measurements, data["measurements"], strict=True):
        raw["label"] = m.label
    return data
