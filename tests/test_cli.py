"""The command line as a user meets it: `python -m lowering ...` in a subprocess, and
`lowering.cli.main([...])` in-process for the cases that need no fresh interpreter.

The multiply-add numbers are worked out by hand from N·C·(M/g)·Πk·Πi (ConvTranspose) and
N·M·(C/g)·Πk·Πo (Conv); user errors must be one line on stderr, no traceback, exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_model, one_line, run_cli, tensor_info
from onnx import helper

from lowering import cli, parse_ir
from lowering.cli import main

# ConvTranspose: X (2, 4, 5, 4), W (4, 3, 3, 2), group 2 -> M = 6, stride 1, no pads -> Y (2, 6, 7, 5)
#   multiply-adds N·C·(M/g)·Πk·Πi = 2·4·3·(3·2)·(5·4) = 2880
# Conv: X (2, 6, 7, 5), W (9, 2, 3, 3), group 3, pads 1 -> Y (2, 9, 7, 5)
#   multiply-adds N·M·(C/g)·Πk·Πo = 2·9·2·(3·3)·(7·5) = 11340
MACS = {"up": 2880, "mix": 11340}
TOTAL = 14220

# DCGAN generator, batch 1: 100 -> 512x4x4 (k4 s1 on 1x1), then k4 s2 p1 doubling the image each layer.
DCGAN_MACS = {
    "up0": 100 * 512 * 16 * 1,
    "up1": 512 * 256 * 16 * 4 * 4,
    "up2": 256 * 128 * 16 * 8 * 8,
    "up3": 128 * 64 * 16 * 16 * 16,
    "up4": 64 * 3 * 16 * 32 * 32,
}


def two_conv_model(batch: int | str = 2) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w_up"], ["t"], name="up", group=2),
        helper.make_node("Conv", ["t", "w_mix"], ["y"], name="mix", group=3, pads=[1, 1, 1, 1]),
    ]
    return make_model(
        nodes,
        [tensor_info("x", [batch, 4, 5, 4])],
        [tensor_info("y", [batch, 9, 7, 5])],
        initializers={
            "w_up": rng.standard_normal((4, 3, 3, 2)).astype(np.float32),
            "w_mix": rng.standard_normal((9, 2, 3, 3)).astype(np.float32),
        },
    )


@pytest.fixture
def model_path(tmp_path) -> Path:
    path = tmp_path / "two_conv.onnx"
    onnx.save(two_conv_model(), path)
    return path


def mac_table(stdout: str) -> dict[str, tuple[str, str, str, int]]:
    """Rows of the multiply-add table: name -> (op, input shape, output shape, multiply-adds)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["node", "op"]) + 2
    rows = {}
    for line in lines[start:]:
        parts = line.split()
        if parts[0] == "total":
            rows["total"] = ("", "", "", int(parts[-1].replace(",", "")))
        else:
            rows[parts[0]] = (parts[1], parts[2], parts[3], int(parts[-1].replace(",", "")))
    return rows


def ir_part(stdout: str) -> str:
    return stdout[: stdout.index("}\n") + 2]


# ----------------------------------------------------------------- inspect


def test_inspect_model_file_subprocess(model_path):
    result = run_cli("inspect", str(model_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = mac_table(result.stdout)
    assert rows["up"] == ("ConvTranspose", "2x4x5x4", "2x6x7x5", MACS["up"])
    assert rows["mix"] == ("Conv", "2x6x7x5", "2x9x7x5", MACS["mix"])
    assert rows["total"][3] == TOTAL
    assert f"{TOTAL:,}" in result.stdout  # thousands separators as printed: 14,220
    graph = parse_ir(ir_part(result.stdout))  # the printed IR is the text form, and it parses
    assert graph.value("t").shape == (2, 6, 7, 5) and graph.value("y").shape == (2, 9, 7, 5)


def test_inspect_in_process(model_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "%t: f32[2,6,7,5] = ConvTranspose(%x, %w_up) {group=2} @up" in out
    assert "elided<" in out  # 72 weights: more than the 16 printed inline
    rows = mac_table(out)
    assert {k: v[3] for k, v in rows.items()} == {**MACS, "total": TOTAL}


def test_inspect_full_prints_every_weight(model_path, capsys):
    assert main(["inspect", "--full", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "elided<" not in out
    w_up = onnx.numpy_helper.to_array(onnx.load(model_path).graph.initializer[0])
    graph = parse_ir(ir_part(out))
    np.testing.assert_array_equal(graph.initializers["w_up"].const, w_up)


def test_inspect_symbolic_batch_counts_one_sample(tmp_path, capsys):
    path = tmp_path / "symbolic.onnx"
    onnx.save(two_conv_model("N"), path)
    assert main(["inspect", str(path)]) == 0
    rows = mac_table(capsys.readouterr().out)
    assert rows["up"][1:3] == ("Nx4x5x4", "Nx6x7x5")
    assert rows["up"][3] == MACS["up"] // 2 and rows["mix"][3] == MACS["mix"] // 2  # per sample: N counted as 1


def test_inspect_example_dcgan_subprocess():
    result = run_cli("inspect", "--example", "dcgan")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("graph @dcgan_generator(%z: f32[1,100,1,1]) {")
    rows = mac_table(result.stdout)
    assert {k: v[3] for k, v in rows.items() if k != "total"} == DCGAN_MACS
    assert rows["total"][3] == sum(DCGAN_MACS.values()) == 104_628_224
    assert rows["up4"][:3] == ("ConvTranspose", "1x64x32x32", "1x3x64x64")


def test_inspect_example_batch(capsys):
    assert main(["inspect", "--example", "dcgan", "--batch", "3"]) == 0
    rows = mac_table(capsys.readouterr().out)
    assert rows["total"][3] == 3 * sum(DCGAN_MACS.values())
    assert rows["up4"] == ("ConvTranspose", "3x64x32x32", "3x3x64x64", 3 * DCGAN_MACS["up4"])


@pytest.mark.parametrize("name", ["unet-decoder", "vocoder"])
def test_inspect_other_examples(name, capsys):
    assert main(["inspect", "--example", name]) == 0
    out = capsys.readouterr().out
    assert parse_ir(ir_part(out)).outputs  # the IR part parses
    assert mac_table(out)["total"][3] > 0


def test_unet_decoder_macs_by_hand(capsys):
    """k2 s2 up-convolution 64 -> 32 on 8x8, then a 3x3 Conv 64 -> 32 on 16x16."""
    assert main(["inspect", "--example", "unet-decoder"]) == 0
    rows = mac_table(capsys.readouterr().out)
    assert rows["up"][3] == 64 * 32 * 4 * 64
    assert rows["conv"][3] == 32 * 64 * 9 * 256


def test_help_subprocess():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lowering")
    assert "inspect" in result.stdout and result.stderr == ""


def test_inspect_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--example" in out and "--full" in out


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: lowering" in capsys.readouterr().out


# ----------------------------------------------------------------- user errors


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _checker_failing(tmp: Path) -> str:
    model = make_model([helper.make_node("Relu", ["x", "x"], ["y"])], [tensor_info("x", [1])], [tensor_info("y", [1])])
    return _write(tmp / "bad.onnx", model.SerializeToString())


# id -> (function of tmp_path giving the arguments, a fragment of the one-line message)
USER_ERRORS = {
    "missing-file": (lambda tmp: ["inspect", str(tmp / "missing.onnx")], "no such file"),
    "directory": (lambda tmp: ["inspect", str(tmp)], "directory"),
    "empty-file": (lambda tmp: ["inspect", _write(tmp / "empty.onnx", b"")], "empty"),
    "not-onnx": (lambda tmp: ["inspect", _write(tmp / "notes.onnx", b"these are not protobuf bytes\xff\xfe")], "ONNX"),
    "checker-failure": (lambda tmp: ["inspect", _checker_failing(tmp)], "checker"),
    "unknown-example": (lambda tmp: ["inspect", "--example", "resnet"], "unknown example 'resnet'"),
    "no-model": (lambda tmp: ["inspect"], "no model given"),
    "model-and-example": (lambda tmp: ["inspect", "--example", "dcgan", str(tmp / "m.onnx")], "not both"),
    "bad-batch": (lambda tmp: ["inspect", "--example", "dcgan", "--batch", "0"], "batch"),
    "batch-not-int": (lambda tmp: ["inspect", "--example", "dcgan", "--batch", "two"], "--batch"),
    "bad-flag": (lambda tmp: ["inspect", "--frobnicate"], "--frobnicate"),
    "bad-global-flag": (lambda tmp: ["--frobnicate", "inspect"], "--frobnicate"),
    "unknown-command": (lambda tmp: ["frobnicate"], "frobnicate"),
}


# a fresh interpreter for a sample of the cases (each costs half a second); all run in-process below
SUBPROCESS_ERRORS = ["missing-file", "not-onnx", "checker-failure", "unknown-example", "no-model", "bad-flag"]


@pytest.mark.parametrize("case", SUBPROCESS_ERRORS)
def test_user_error_subprocess(tmp_path, case):
    make_args, fragment = USER_ERRORS[case]
    result = run_cli(*make_args(tmp_path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert one_line(result.stderr), result.stderr
    assert fragment in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_error_in_process(tmp_path, capsys, case):
    make_args, fragment = USER_ERRORS[case]
    try:
        code = main(make_args(tmp_path))
    except SystemExit as exit_:  # argparse's usage errors exit from inside parse_args
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2
    assert one_line(err) and fragment in err and "Traceback" not in err
    assert out == ""


def test_internal_error_is_one_line_exit_1(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("an invariant broke\nsecond line")

    monkeypatch.setattr(cli.COMMANDS["inspect"], "run", broken)
    assert main(["inspect", "--example", "dcgan"]) == 1
    err = capsys.readouterr().err
    assert one_line(err) and "internal error" in err and "--debug" in err and "Traceback" not in err

    assert main(["--debug", "inspect", "--example", "dcgan"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an invariant broke" in err
    assert main(["inspect", "--example", "dcgan", "--debug"]) == 1  # where the hint's reader puts it
    assert "Traceback" in capsys.readouterr().err
