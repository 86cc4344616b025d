"""`lowering lower`: the written model against onnxruntime running the original model.

Each run goes through `lowering.cli.main([...])` in-process (one test also runs the real
`python -m lowering` in a subprocess). The original model is written with `lowering.to_onnx`;
the oracle is onnxruntime on that original, and the lowered model must agree within float32 rounding,
pass the ONNX checker with `full_check=True`, contain no ConvTranspose, and keep every other node and
the graph's interface.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lowering import Graph, to_onnx
from lowering.cli import main
from lowering.examples import example

STRATEGY_PARAMS = ["zero-insertion", "matrix", "col2im", "subpixel", "subpixel-fused", "auto"]


def small_graph() -> Graph:
    """x -> ConvTranspose -> Relu -> Mul(scale) -> y, with a side output through Sigmoid."""
    rng = np.random.default_rng(0)
    graph = Graph("small")
    x = graph.add_input("x", (2, 3, 5, 4), "float32")
    w = graph.add_initializer("w", rng.standard_normal((3, 4, 3, 3)).astype(np.float32))
    b = graph.add_initializer("b", rng.standard_normal(4).astype(np.float32))
    up = graph.op("ConvTranspose", x, w, b, name="up", strides=[2, 2], pads=[1, 1, 0, 1], output_padding=[1, 0])
    act = graph.op("Relu", up, name="act")
    scale = graph.add_initializer("scale", np.array([0.5], np.float32))
    y = graph.op("Mul", act, scale, name="scale_mul")
    side = graph.op("Sigmoid", up, name="gate")
    graph.rename(y, "y")
    graph.rename(side, "gate_out")
    graph.outputs += [y, side]
    return graph


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small.onnx"
    onnx.save(to_onnx(small_graph()), path)
    return path


@pytest.fixture(scope="module")
def dcgan_model(tmp_path_factory) -> Path:
    """The built-in example written out, so its original can run in onnxruntime."""
    path = tmp_path_factory.mktemp("models") / "dcgan.onnx"
    onnx.save(to_onnx(example("dcgan")), path)
    return path


def io_signature(values) -> list[tuple]:
    out = []
    for v in values:
        t = v.type.tensor_type
        out.append(
            (v.name, t.elem_type, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim])
        )
    return out


def run_ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def random_feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    initializers = {i.name for i in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def check_lowered_model(original_path: Path, lowered_path: Path) -> onnx.ModelProto:
    original = onnx.load(original_path)
    lowered = onnx.load(lowered_path)
    onnx.checker.check_model(lowered, full_check=True)
    assert not [n for n in lowered.graph.node if n.op_type == "ConvTranspose"]
    kept = {(n.name, n.op_type) for n in lowered.graph.node}
    for node in original.graph.node:
        if node.op_type not in ("ConvTranspose", "BatchNormalization"):  # auto folds BatchNormalization
            assert (node.name, node.op_type) in kept, f"node {node.name} ({node.op_type}) was lost"
    initializers = {i.name for i in original.graph.initializer}
    assert io_signature(v for v in lowered.graph.input if v.name not in initializers) == io_signature(
        v for v in original.graph.input if v.name not in initializers
    )
    assert io_signature(lowered.graph.output) == io_signature(original.graph.output)

    feeds = random_feeds(original)
    want = run_ort(original, feeds)
    got = run_ort(lowered, feeds)
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype == np.float32
        scale = max(float(np.abs(expected).max()), 1e-3)
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    return lowered


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------- every strategy


@pytest.mark.parametrize("strategy", STRATEGY_PARAMS)
def test_lower_small_model(strategy: str, small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    code, _, err = run_cli(["lower", str(small_model), "-o", str(out), "--strategy", strategy], capsys)
    assert code == 0, err
    assert out.exists()
    check_lowered_model(small_model, out)


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("matrix", ["--matrix-budget", str(1 << 30)]),
        ("auto", ["--backend", "torch"]),
        ("auto", ["--backend", "numpy"]),
        ("auto", ["--matrix-budget", "0"]),
    ],
)
def test_lower_small_model_with_options(strategy: str, extra: list[str], small_model: Path, tmp_path: Path, capsys):
    """The options the CLI forwards to the passes."""
    out = tmp_path / "lowered.onnx"
    code, stdout, err = run_cli(
        ["lower", str(small_model), "-o", str(out), "--strategy", strategy, "--explain", *extra], capsys
    )
    assert code == 0, err
    check_lowered_model(small_model, out)
    if extra == ["--matrix-budget", "0"]:
        assert not stdout.startswith("up: matrix") and re.search(r"matrix\s+declined: .*budget", stdout)


@pytest.mark.parametrize("form", ["fused", "per-phase"])
def test_lower_subpixel_forms(form: str, small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    code, _, err = run_cli(
        ["lower", str(small_model), "-o", str(out), "--strategy", "subpixel", "--form", form], capsys
    )
    assert code == 0, err
    lowered = check_lowered_model(small_model, out)
    convs = [n for n in lowered.graph.node if n.op_type == "Conv"]
    assert len(convs) == (1 if form == "fused" else 4)  # k=3, s=2: all four phases have taps


@pytest.mark.parametrize("strategy", ["zero-insertion", "col2im", "subpixel", "auto"])
def test_lower_dcgan_example(strategy: str, dcgan_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dcgan_lowered.onnx"
    code, _, err = run_cli(["lower", "--example", "dcgan", "-o", str(out), "--strategy", strategy], capsys)
    assert code == 0, err
    assert "lowered 5 ConvTranspose node(s)" in err
    check_lowered_model(dcgan_model, out)


def test_lower_dcgan_matrix_is_over_the_default_budget(tmp_path: Path, capsys) -> None:
    """DCGAN's 512 -> 256 layer would need hundreds of MiB as an explicit F^T: refused, nothing written."""
    out = tmp_path / "dcgan_lowered.onnx"
    code, stdout, err = run_cli(["lower", "--example", "dcgan", "-o", str(out), "--strategy", "matrix"], capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "ConvTranspose 'up1'" in err and "budget" in err
    assert not out.exists()


# --------------------------------------------------------------------------- reporting


def explained(stdout: str, graph: Graph, strategies: set[str]) -> None:
    """Per ConvTranspose node: one line naming it and the chosen strategy, then its cost figures."""
    from lowering import node_geometry

    for node in graph.nodes_of("ConvTranspose"):
        lines = [line for line in stdout.splitlines() if line.startswith(f"{node.name}: ")]
        assert len(lines) == 1, stdout
        assert lines[0].split(": ")[1].split()[0] in strategies
        block = " ".join(stdout[stdout.index(lines[0]) :].split())
        useful = node_geometry(node).useful_macs()
        assert f"useful {useful:,} MACs" in block
        for figure in ("executed", "largest intermediate", "weights"):
            assert re.search(figure + r" [0-9,]+", block), figure


@pytest.mark.parametrize("strategy", STRATEGY_PARAMS)
def test_explain_prints_choice_and_costs(strategy: str, small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    code, stdout, err = run_cli(
        ["lower", str(small_model), "-o", str(out), "--strategy", strategy, "--explain"], capsys
    )
    assert code == 0, err
    explained(stdout, small_graph(), set(STRATEGY_PARAMS) - {"auto"} if strategy == "auto" else {strategy})


def test_explain_auto_on_every_dcgan_layer(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dcgan_lowered.onnx"
    code, stdout, err = run_cli(["lower", "--example", "dcgan", "-o", str(out), "--explain"], capsys)
    assert code == 0, err
    explained(stdout, example("dcgan"), set(STRATEGY_PARAMS) - {"auto"})
    assert "declined" in stdout  # matrix is over auto's budget on the large layers, and says so


def test_print_after_all_goes_to_stderr(small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    code, stdout, err = run_cli(
        ["lower", str(small_model), "-o", str(out), "--strategy", "col2im", "--print-after-all"], capsys
    )
    assert code == 0, err
    for name in ("canonicalize", "col2im", "fold-constants", "dce"):
        assert f"// ----- IR after {name}" in err
    assert "// ----- IR" not in stdout
    after_canonicalize = err.split("// ----- IR after canonicalize")[1].split("// ----- IR after")[0]
    after_col2im = err.split("// ----- IR after col2im")[1].split("// ----- IR after")[0]
    assert "ConvTranspose(" in after_canonicalize and "ConvTranspose(" not in after_col2im
    assert "Col2Im(" in after_col2im


# --------------------------------------------------------------------------- refusals


def test_col2im_needs_opset_18(small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    args = ["lower", str(small_model), "-o", str(out), "--strategy", "col2im", "--opset", "17"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "Col2Im" in err and "18" in err and "17" in err
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary file left behind either


def test_other_strategies_write_opset_17(small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    args = ["lower", str(small_model), "-o", str(out), "--strategy", "zero-insertion", "--opset", "17"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    lowered = check_lowered_model(small_model, out)
    assert [o.version for o in lowered.opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_matrix_refusal_leaves_an_existing_output_alone(small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    out.write_bytes(b"previous contents")
    os.utime(out, (1_000_000_000, 1_000_000_000))
    args = ["lower", str(small_model), "-o", str(out), "--strategy", "matrix", "--matrix-budget", "1000"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("lowering lower: error: ")
    assert "ConvTranspose 'up'" in err and "budget" in err and "1000 B" in err
    assert out.read_bytes() == b"previous contents"
    assert out.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lowered.onnx"]


def test_unknown_strategy_is_a_usage_error(small_model: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "lowered.onnx"
    with pytest.raises(SystemExit) as info:
        main(["lower", str(small_model), "-o", str(out), "--strategy", "fft"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fft" in err
    assert not out.exists()


def test_command_line_entry_point(small_model: Path, tmp_path: Path) -> None:
    """The real command, in a subprocess: exit 0, a report on stderr, the model written."""
    out = tmp_path / "lowered.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "lowering", "lower", str(small_model), "-o", str(out), "--strategy", "zero-insertion"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "lowered 1 ConvTranspose node(s) with 'zero-insertion' (0 left)" in result.stderr
    check_lowered_model(small_model, out)


def test_auto_gets_the_device_without_tuning_too():
    """`--device` reaches auto's static model (it has GPU rates), not only `--tune`."""
    import argparse

    from lowering.cli_lower import lowering_options

    base = dict(strategy="auto", pipeline=None, matrix_budget=None, form=None, backend="torch")
    assert lowering_options(argparse.Namespace(**base, tune=False, device="cuda")) == {
        "backend": "torch",
        "device": "cuda",
    }
    tuned = lowering_options(argparse.Namespace(**base, tune=True, device="cpu"))
    assert tuned == {"backend": "torch", "device": "cpu", "tune": True}
    assert lowering_options(argparse.Namespace(**{**base, "strategy": "col2im"}, tune=False, device="cuda")) == {}
