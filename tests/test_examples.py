"""The worked examples run as a user runs them: `python examples/NAME.py`, each in its own process.

They start together (most of each one's time is importing torch and exporting with
`torch.onnx.export`), with LOWERING_EXAMPLES_QUICK=1 so they time fewer runs; everything else is
what the README shows. Each example checks itself against PyTorch and exits non-zero on a
mismatch; the test reads its table as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lowering.api import strategy_names

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["dcgan_generator", "unet_decoder", "vocoder_upsampler", "decoder_3d"]
CONV_TRANSPOSE = {"dcgan_generator": 4, "unet_decoder": 3, "vocoder_upsampler": 4, "decoder_3d": 3}
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    env = {**os.environ, "LOWERING_EXAMPLES_QUICK": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    started = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / f"{name}.py")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in EXAMPLES
    }
    done = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_matches_pytorch(runs, name):
    run = runs[name]
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {}
    for line in run.stdout.splitlines():
        fields = line.split()
        if fields and (fields[0] == "original" or fields[0] in strategy_names()):
            rows[fields[0]] = line
    assert set(rows) == {"original", *strategy_names()}, run.stdout
    count = CONV_TRANSPOSE[name]
    assert re.match(rf"\s*original\s+{count}\s", rows["original"])
    for strategy in strategy_names():
        line = rows[strategy]
        if "declined" in line:
            assert strategy == "matrix", line  # only the explicit matrix may refuse (above its budget)
            continue
        match = re.match(rf"\s*{strategy}\s+{count} -> 0\s+(\S+)\s+(\S+)\s+(\S+)x$", line)
        assert match, line
        error, milliseconds, ratio = (float(g) for g in match.groups())
        assert error <= 1e-4 and milliseconds > 0 and ratio > 0, line
