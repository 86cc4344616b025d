"""What every worked example does with its PyTorch model: export, lower every way, run, compare, time.

1. export the model with `torch.onnx.export` (the torch.export-based exporter, `dynamo=True`,
   with a symbolic batch dimension), at the export batch;
2. read it back with `lowering.from_onnx` and lower it with every strategy (`auto` folds
   BatchNormalization first; a strategy that declines a layer says why and the example goes on);
3. run the original and every lowered model in onnxruntime on a batch of another size (the batch
   stays symbolic through lowering and export) and compare each with PyTorch on the same input;
4. time them, interleaved round by round after a warm-up, and print the medians.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

import lowering
from lowering.api import strategy_names
from lowering.backends.onnxrt import session_options

QUICK = os.environ.get("LOWERING_EXAMPLES_QUICK") == "1"  # the test suite: every step, fewer timed runs
WARMUP = 1 if QUICK else 5
ROUNDS = 3 if QUICK else 30
MIN_ROUNDS = 1 if QUICK else 5
ROW_BUDGET_S = 0.4  # a slow model stops being timed after MIN_ROUNDS rounds and this much time


@dataclass
class Row:
    name: str
    conv_transpose: str
    error: float | None
    session: ort.InferenceSession | None
    note: str = ""
    seconds: float | None = None


def export(
    model: torch.nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str], output: str
) -> onnx.ModelProto:
    """`torch.onnx.export` with the torch.export-based exporter and a symbolic first (batch) dimension."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # the exporter logs about optional packages (torchvision) it skips
        try:
            program = torch.onnx.export(
                model,
                tuple(inputs),
                dynamo=True,
                verbose=False,
                input_names=list(names),
                output_names=[output],
                dynamic_shapes=tuple({0: batch} for _ in inputs),
            )
        finally:
            logging.disable(logging.NOTSET)
    return program.model_proto


def randomize_batchnorm(model: torch.nn.Module, seed: int = 1) -> None:
    """Trained-looking BatchNorm statistics and affine parameters (at initialisation BatchNorm is
    nearly the identity, which would hide a wrong fold)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = session_options(threads=1 if QUICK else None)  # quick runs share the machine with each other
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _max_error(session: ort.InferenceSession, feeds: dict[str, np.ndarray], want: np.ndarray) -> float:
    got = session.run(None, feeds)[0]
    if got.shape != want.shape:
        raise AssertionError(f"output shape {list(got.shape)}, PyTorch gives {list(want.shape)}")
    return float(np.abs(got.astype(np.float64) - want).max())


def _time(rows: list[Row], feeds: dict[str, np.ndarray]) -> None:
    """Median seconds per run of each session, measured in interleaved rounds after a warm-up.

    A model slower than the others leaves the rounds once it has MIN_ROUNDS samples and has used
    ROW_BUDGET_S, so one slow lowering does not make the example slow."""
    live = [r for r in rows if r.session is not None]
    for row in live:
        start = time.perf_counter()
        for _ in range(WARMUP):
            row.session.run(None, feeds)  # type: ignore[union-attr]
            if time.perf_counter() - start > ROW_BUDGET_S / 2:
                break
    samples: dict[str, list[float]] = {r.name: [] for r in live}
    for round_ in range(ROUNDS):
        for row in live:
            taken = samples[row.name]
            if round_ >= MIN_ROUNDS and sum(taken) > ROW_BUDGET_S:
                continue
            start = time.perf_counter()
            row.session.run(None, feeds)  # type: ignore[union-attr]
            taken.append(time.perf_counter() - start)
    for row in live:
        row.seconds = statistics.median(samples[row.name])


def run_example(
    title: str,
    model: torch.nn.Module,
    make_inputs,
    names: Sequence[str],
    output: str = "output",
    *,
    export_batch: int = 2,
    run_batch: int = 3,
) -> list[Row]:
    """Export `model`, lower it every way, check and time each result; print and return the table.

    `make_inputs(batch)` gives the model's input tensors for a batch size.
    """
    started = time.perf_counter()
    torch.manual_seed(0)
    model = model.eval()
    exported = export(model, make_inputs(export_batch), names, output)
    inputs = make_inputs(run_batch)
    with torch.no_grad():
        want = model(*inputs).double().numpy()
    feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}

    graph = lowering.from_onnx(exported)
    before = len(graph.nodes_of("ConvTranspose"))
    original = _session(exported)
    rows = [Row("original", str(before), _max_error(original, feeds, want), original)]
    for strategy in strategy_names():
        try:
            lowered = lowering.lower(graph, strategy)
        except lowering.LoweringError as error:
            rows.append(Row(strategy, f"{before} -> -", None, None, f"declined: {error}"))
            continue
        session = _session(lowering.to_onnx(lowered))
        after = len(lowered.nodes_of("ConvTranspose"))
        rows.append(Row(strategy, f"{before} -> {after}", _max_error(session, feeds, want), session))
    _time(rows, feeds)

    shapes = ", ".join(f"{v.name} {list(v.shape)}" for v in graph.inputs)  # type: ignore[arg-type]
    print(f"{title}")
    print(f"  exported by torch.onnx.export (dynamo) at batch {export_batch}: {shapes}; run at batch {run_batch}")
    print(f"  {'model':<16}{'ConvTranspose':>14}{'max |err| vs PyTorch':>22}{'median ms':>11}{'vs original':>13}")
    base = rows[0].seconds
    for row in rows:
        if row.session is None:
            print(f"  {row.name:<16}{row.conv_transpose:>14}  {row.note}")
            continue
        ratio = f"{row.seconds / base:.2f}x" if base and row.seconds else "-"
        milliseconds = f"{row.seconds * 1e3:.3f}" if row.seconds is not None else "-"
        print(f"  {row.name:<16}{row.conv_transpose:>14}{row.error:>22.1e}{milliseconds:>11}{ratio:>13}")
    print(
        f"  ({time.perf_counter() - started:.1f} s in all; time: median of up to {ROUNDS} interleaved onnxruntime "
        f"runs, CPU with {os.cpu_count()} cores)"
    )
    return rows


def check(rows: list[Row], tolerance: float) -> None:
    """Exit non-zero if any model that ran is off from PyTorch by more than `tolerance` (CI runs this)."""
    bad = [r.name for r in rows if r.error is not None and not r.error <= tolerance]
    if bad:
        raise SystemExit(f"max error above {tolerance:g} for: {', '.join(bad)}")
    if all(r.session is None for r in rows[1:]):
        raise SystemExit("no strategy lowered the model")
