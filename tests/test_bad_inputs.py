"""The catalogue of bad inputs: each run as a user runs the CLI, with its one-line message and exit code.

Every case builds its input in a temporary folder, runs `python -m lowering ...` in a subprocess and
checks: the exit code, exactly one line on stderr matching the expected message, no traceback, and
no output file left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowering
from lowering.layers import parse_layer


def conv_transpose_model(path: Path, *, w_shape=(2, 3, 3, 3), x_shape=(1, 2, 4, 4), opset=18, **attrs) -> Path:
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], **attrs}
    w = np.ones(w_shape, np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m", "h", "w"][: len(x_shape)])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def good_model(tmp: Path) -> Path:
    return conv_transpose_model(tmp / "good.onnx")


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # argv after `python -m lowering`, given the temp folder
    message: str  # regex the single stderr line must match
    code: int = 2


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _no_conv_transpose(tmp: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"], name="act")
    graph = helper.make_graph(
        [node],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    path = tmp / "relu.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


def _edited_weight(tmp: Path, edit: Callable[[onnx.TensorProto], None]) -> Path:
    """The good model with its weight initializer edited in place (bytes the ONNX checker accepts)."""
    model = onnx.load(str(good_model(tmp)))
    edit(model.graph.initializer[0])
    path = tmp / "edited.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _long_raw_data(tensor: onnx.TensorProto) -> None:
    tensor.raw_data += bytes(8)  # the checker catches short data, not extra


def _unknown_element_type(tensor: onnx.TensorProto) -> None:
    tensor.data_type = 127


def _declared_output(tmp: Path, shape: list[int]) -> Path:
    """The good model with its output declared as `shape` (it computes [1, 3, 7, 7])."""
    model = onnx.load(str(good_model(tmp)))
    output = model.graph.output[0]
    output.CopyFrom(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, shape))
    path = tmp / "declared.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _run_inputs(tmp: Path, feeds: dict) -> list[str]:
    np.savez(tmp / "in.npz", **feeds)
    return ["run", str(good_model(tmp)), "--inputs", str(tmp / "in.npz"), "-o", str(tmp / "out.npz")]


CASES = [
    Case("missing file", lambda t: ["inspect", str(t / "nope.onnx")], r"no such file"),
    Case("directory", lambda t: ["inspect", str(t)], r"is a directory"),
    Case("empty file", lambda t: ["inspect", str(_write(t, "e.onnx", b""))], r"file is empty"),
    Case(
        "truncated model",
        lambda t: ["inspect", str(_write(t, "t.onnx", good_model(t).read_bytes()[:57]))],
        r"not a valid ONNX protobuf|fails the ONNX checker|not an ONNX model",
    ),
    Case(
        "random bytes",
        lambda t: ["inspect", str(_write(t, "r.onnx", bytes(range(7, 250, 3)) * 3))],
        r"not a valid ONNX protobuf|not an ONNX model",
    ),
    Case(
        "protobuf that is not a model",
        lambda t: ["inspect", str(_write(t, "p.onnx", numpy_helper.from_array(np.ones(3), "t").SerializeToString()))],
        r"not an ONNX model|not a valid ONNX protobuf",
    ),
    Case(
        "fails the checker",
        lambda t: ["inspect", str(conv_transpose_model(t / "c.onnx", strides=[2.5, 2.0]))],
        r"fails the ONNX checker|attribute 'strides'",
    ),
    Case(
        "attribute of the wrong length",
        lambda t: ["inspect", str(conv_transpose_model(t / "l.onnx", strides=[2, 2, 2]))],
        r"ConvTranspose 'up': attribute 'strides': has 3 values, expected 2",
    ),
    Case(
        "negative stride",
        lambda t: ["inspect", str(conv_transpose_model(t / "n.onnx", strides=[2, -1]))],
        r"ConvTranspose 'up': attribute 'strides' axis 1: must be >= 1, got -1",
    ),
    Case(
        "output_padding too large",
        lambda t: ["inspect", str(conv_transpose_model(t / "o.onnx", output_padding=[2, 0]))],
        r"ConvTranspose 'up': attribute 'output_padding' axis 0: is 2 but must be smaller than stride 2",
    ),
    Case(
        "weight contradicts the node",
        lambda t: ["inspect", str(conv_transpose_model(t / "w.onnx", w_shape=(3, 3, 3, 3)))],
        r"weight W dimension 0 is 3 but input X has 2 channels",
    ),
    Case(
        "kernel_shape contradicts the weight",
        lambda t: ["inspect", str(conv_transpose_model(t / "k.onnx", kernel_shape=[3, 2]))],
        r"attribute 'kernel_shape' axis 1: is 2 but weight W has kernel size 3",
    ),
    Case(
        "symbolic spatial dimension",
        lambda t: ["inspect", str(conv_transpose_model(t / "s.onnx", x_shape=(1, 2, "H", 4)))],
        r"symbolic",
    ),
    Case(
        "empty spatial axis",
        lambda t: ["inspect", str(conv_transpose_model(t / "z.onnx", x_shape=(1, 2, 0, 4)))],
        r"ConvTranspose 'up': input X spatial axis 0 has size 0; a convolution needs at least one input position",
    ),
    Case(
        "initializer data longer than its shape",
        lambda t: ["inspect", str(_edited_weight(t, _long_raw_data))],
        r"initializer 'w': its data does not fit its shape \[2, 3, 3, 3\] \(cannot reshape array of size 56",
    ),
    Case(
        "initializer of an unknown element type",
        lambda t: ["inspect", str(_edited_weight(t, _unknown_element_type))],
        r"initializer 'w' has an unknown element type \(127\)",
    ),
    Case(
        "declared output shape contradicts the node",
        lambda t: ["inspect", str(_declared_output(t, [1, 7, 8, 8]))],
        r"graph output 'y' is declared \[1, 7, 8, 8\] but its node computes \[1, 3, 7, 7\] \(axis 1: 7 vs 3\)",
    ),
    Case(
        "opset below the supported range",
        lambda t: ["inspect", str(conv_transpose_model(t / "o6.onnx", opset=6))],
        r"opset 6 is not supported|fails the ONNX checker",
    ),
    Case(
        "opset above the supported range",
        lambda t: ["inspect", str(conv_transpose_model(t / "o99.onnx", opset=99))],
        r"opset 99|fails the ONNX checker",
    ),
    Case("run: missing input", lambda t: _run_inputs(t, {}), r"missing input\(s\) x"),
    Case(
        "run: extra input",
        lambda t: _run_inputs(t, {"x": np.zeros((1, 2, 4, 4), np.float32), "z": np.zeros(1)}),
        r"unknown input\(s\) z",
    ),
    Case("run: wrong shape", lambda t: _run_inputs(t, {"x": np.zeros((1, 2, 4, 5), np.float32)}), r"axis 3: 5 vs 4"),
    Case(
        "run: wrong dtype",
        lambda t: _run_inputs(t, {"x": np.zeros((1, 2, 4, 4), np.int64)}),
        r"element type int64, the graph expects float32",
    ),
    Case(
        "run: inputs file missing",
        lambda t: ["run", str(good_model(t)), "--inputs", str(t / "none.npz"), "-o", str(t / "out.npz")],
        r"cannot read inputs .*no such file",
    ),
    Case(
        "unwritable output path",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "no" / "such" / "dir" / "out.onnx")],
        r"directory .* does not exist",
    ),
    Case(
        "output path equal to the input path",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "good.onnx")],
        r"is the input file",
    ),
    Case(
        "matrix budget",
        lambda t: [
            "lower",
            str(good_model(t)),
            "-o",
            str(t / "m.onnx"),
            "--strategy",
            "matrix",
            "--matrix-budget",
            "100",
        ],
        r"needs .* above the budget of 100 B",
    ),
    Case(
        "threads below one",
        lambda t: ["compare", "--layer", "C=2 M=2 in=4x4 k=3 s=2", "--threads", "0"],
        r"argument --threads: must be >= 1, got 0",
    ),
    Case(
        "batches not integers",
        lambda t: ["bench", "--batches", "1,abc"],
        r"argument --batches: 'abc' is not an integer",
    ),
    Case(
        "negative timing budget", lambda t: ["bench", "--time", "-1"], r"argument --time: must be >= 0 seconds, got -1"
    ),
    Case(
        "negative matrix budget",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "m.onnx"), "--matrix-budget", "-5"],
        r"argument --matrix-budget: must be >= 0, got -5",
    ),
    Case(
        "draw resolution too high",
        lambda t: ["draw", str(good_model(t)), "-o", str(t / "g.png"), "--dpi", "100000"],
        r"--dpi must be between 10 and 1200, got 100000",
    ),
    Case(
        "fuzz findings folder is a file",
        lambda t: ["fuzz", "--seconds", "0", "--out", str(good_model(t))],
        r"--out '.*good\.onnx' is a file, not a directory",
    ),
    Case(
        "strategy and pipeline both given",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "b.onnx"), "--strategy", "subpixel", "-p", "dce"],
        r"--strategy subpixel is not in -p 'dce', which names every pass to run",
    ),
    Case(
        "empty pass in a pipeline",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "e.onnx"), "-p", "canonicalize,,dce"],
        r"pipeline 'canonicalize,,dce' has no pass name at position 2 of 3",
    ),
    Case(
        "opset for a Python backend",
        lambda t: ["emit", str(good_model(t)), "--backend", "numpy", "--opset", "18", "-o", str(t / "e.py")],
        r"--opset applies to --backend onnx only, not 'numpy'",
    ),
    Case(
        "emitted module named like its constants",
        lambda t: ["emit", str(good_model(t)), "--backend", "numpy", "-o", str(t / "m.npz")],
        r"--backend numpy writes a \.py file, name it \.py",
    ),
    Case(
        "plot not named .png",
        lambda t: ["compare", "--layer", "C=2 M=2 in=4x4 k=3 s=2", "--plot", str(t / "p.jpg")],
        r"--plot '.*p\.jpg': the plot is a PNG image, name it \.png",
    ),
    Case("empty layer spec", lambda t: ["compare", "--layer", ""], r"layer spec: 'C=' is required"),
    Case(
        "inputs file that is not an archive",
        lambda t: [
            "run",
            str(good_model(t)),
            "--inputs",
            str(_write(t, "in.npz", b"not a zip")),
            "-o",
            str(t / "o.npz"),
        ],
        r"cannot read inputs '.*in\.npz': not an \.npz archive",
    ),
    Case(
        "unknown strategy",
        lambda t: ["lower", str(good_model(t)), "-o", str(t / "u.onnx"), "--strategy", "magic"],
        r"invalid choice: 'magic'",
    ),
]


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowering", *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line(case: Case, tmp_path: Path):
    before = set(tmp_path.rglob("*"))
    argv = case.build(tmp_path)
    made = set(tmp_path.rglob("*")) - before
    result = run_cli(argv)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(case.message, lines[0]), lines[0]
    assert set(tmp_path.rglob("*")) - before == made, "a refused run left a file behind"


def test_model_without_conv_transpose_passes_through_with_a_note(tmp_path: Path):
    source = _no_conv_transpose(tmp_path)
    result = run_cli(["lower", str(source), "-o", str(tmp_path / "out.onnx")])
    assert result.returncode == 0, result.stderr
    assert re.search(r"no ConvTranspose", result.stderr)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert [n.op_type for n in out.graph.node] == ["Relu"]


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float16_and_float64_models_run(tmp_path: Path, dtype: str):
    graph = parse_layer(f"N=1 C=2 M=3 in=4x4 k=3 s=2 p=1 dtype={dtype}")
    path = tmp_path / "m.onnx"
    path.write_bytes(lowering.to_onnx(graph).SerializeToString())
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(dtype)}
    np.savez(tmp_path / "in.npz", **feeds)
    for strategy in ("subpixel", "col2im", "zero-insertion"):
        result = run_cli(
            [
                "run",
                str(path),
                "--inputs",
                str(tmp_path / "in.npz"),
                "-o",
                str(tmp_path / "out.npz"),
                "--strategy",
                strategy,
                "--backend",
                "numpy",
            ]
        )
        assert result.returncode == 0, result.stderr
        out = np.load(tmp_path / "out.npz")["y"]
        assert out.dtype == np.dtype(dtype)
        ref = lowering.evaluate(graph, feeds)["y"]
        tolerance = 5e-3 if dtype == "float16" else 1e-12
        assert np.abs(out - ref).max() <= tolerance * np.abs(ref).max()


# strategies whose lowered graphs multiply exactly the products of the definition (no padding zeros
# times inputs): NaN and Inf reach exactly the outputs the reference sends them to. `auto` only
# chooses such forms (fused sub-pixel without padding taps, a dense matrix without structural zeros).
EXACT = [
    ("zero-insertion", {}),
    ("col2im", {}),
    ("subpixel", {"form": "per-phase"}),
    ("subpixel", {}),
    ("matrix", {"sparse": "yes"}),
    ("matrix", {"sparse": "exact"}),
    ("auto", {}),
]
NAN_LAYERS = ["N=1 C=2 M=2 in=5x5 k=3 s=2 p=1 op=1", "N=1 C=3 M=2 in=4x4 k=4 s=2 p=1", "N=2 C=3 M=4 in=1x1 k=4 s=1 p=0"]


@pytest.mark.parametrize("spec", NAN_LAYERS)
@pytest.mark.parametrize(("strategy", "options"), EXACT, ids=[f"{s}-{'-'.join(o.values())}" for s, o in EXACT])
@pytest.mark.parametrize("backend", ["numpy", "torch", "onnx"])
def test_nan_and_inf_propagate_as_the_reference(strategy: str, options: dict, backend: str, spec: str):
    graph = parse_layer(spec)
    shape = graph.inputs[0].shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[[1, flat.size // 2, flat.size - 1]] = [np.nan, np.inf, -np.inf]
    ref = lowering.evaluate(graph, {"x": x})["y"]
    got = lowering.compile(lowering.lower(graph, strategy, **options), backend)({"x": x})["y"]
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.array_equal(np.isposinf(got), np.isposinf(ref)) and np.array_equal(np.isneginf(got), np.isneginf(ref))
    finite = np.isfinite(ref)
    if finite.any():
        assert np.abs(got[finite] - ref[finite]).max() <= 1e-5 * np.abs(ref[finite]).max()


def test_interrupted_run_leaves_no_partial_file(tmp_path: Path):
    """SIGINT while a long run is busy: exit 130, the existing output file untouched, no temp file."""
    out = tmp_path / "out.npz"
    out.write_bytes(b"previous contents")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lowering",
            "run",
            "--example",
            "dcgan",
            "--batch",
            "1024",
            "--backend",
            "numpy",
            "--strategy",
            "zero-insertion",
            "-o",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr
    assert out.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == ["out.npz"]
