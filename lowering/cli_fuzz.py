"""`lowering fuzz`: the long, opt-in fuzzing run; findings are saved as regression cases."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from .cli import command, seconds
from .errors import LoweringError


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=seconds, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="fuzz_findings", help="directory for findings (.onnx + .txt each)")


@command("fuzz", "mutate ONNX bytes and attributes and check every outcome is right or a clean refusal", _configure)
def _fuzz(args: argparse.Namespace) -> int:
    from .fuzz import attribute_variants, check_model_bytes, mutate_bytes, seed_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LoweringError(f"--out '{out}' is a file, not a directory for findings")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LoweringError(f"cannot make --out directory '{out}': {error.strerror}") from None
    rng = random.Random(args.seed)
    seed = seed_model().SerializeToString()
    variants = attribute_variants(rng)
    counts = {"ok": 0, "refused": 0, "finding": 0}
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        data = mutate_bytes(seed, rng) if rng.random() < 0.5 else next(variants).SerializeToString()
        outcome = check_model_bytes(data)
        counts[outcome.kind] += 1
        if outcome.kind == "finding":
            stem = out / f"finding_{counts['finding']:04d}"
            stem.with_suffix(".onnx").write_bytes(data)
            stem.with_suffix(".txt").write_text(outcome.detail + "\n")
            print(f"finding: {outcome.detail} -> {stem}.onnx", file=sys.stderr)
    print(
        f"fuzz: {sum(counts.values())} cases: {counts['ok']} ok, {counts['refused']} refused, "
        f"{counts['finding']} findings",
        file=sys.stderr,
    )
    return 1 if counts["finding"] else 0
