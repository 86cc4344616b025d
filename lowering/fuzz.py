"""Fuzzing the front door: mutated ONNX bytes and attributes through `from_onnx`, `lower` and `run`.

Every outcome must be either a success that matches the float64 reference, or a clean refusal (a
`LoweringError` with a one-line message). Anything else — another exception, a wrong answer — is
a finding. `check_model_bytes` is the oracle; the test suite drives it with hypothesis for a bounded
time and `lowering fuzz` runs it for longer, saving each finding as a regression case.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .dtypes import TOLERANCE
from .errors import LoweringError

STRATEGIES_TO_RUN = ("zero-insertion", "col2im", "subpixel", "auto")
BACKENDS_TO_RUN = ("onnx", "numpy", "torch")


@dataclasses.dataclass
class Outcome:
    kind: str  # "ok", "refused" or "finding"
    detail: str = ""


FUZZ_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE}


def seed_model(
    strides=(2, 2),
    pads=(1, 1, 1, 1),
    dilations=(1, 1),
    output_padding=(1, 1),
    group=1,
    kernel=(3, 3),
    channels=2,
    out_per_group=2,
    size=(4, 4),
    opset=18,
    dtype="float32",
    batch=1,
    bias=True,
) -> onnx.ModelProto:
    """A small valid ConvTranspose + Relu model (the seed the mutations start from)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((channels, out_per_group, *kernel)).astype(dtype)
    b = rng.standard_normal(out_per_group * group).astype(dtype)
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w", "b"] if bias else ["x", "w"],
        ["t"],
        name="up",
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        output_padding=list(output_padding),
        group=group,
    )
    relu = helper.make_node("Relu", ["t"], ["y"], name="act")
    element = FUZZ_TYPES[dtype]
    graph = helper.make_graph(
        [node, relu],
        "fuzz",
        [helper.make_tensor_value_info("x", element, [batch, channels, *size])],
        [helper.make_tensor_value_info("y", element, [f"y{i}" for i in range(2 + len(size))])],
        initializer=[numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if bias else []),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check_model_bytes(data: bytes) -> Outcome:
    """Load, lower every way and run; compare each result with the reference of the unlowered graph."""
    import tempfile
    from pathlib import Path

    from .api import lower
    from .compile import compile
    from .frontends.onnx import from_onnx
    from .reference import evaluate

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(data)
        try:
            graph = from_onnx(path)
        except LoweringError as error:
            return _refusal(error)
        except Exception as error:  # the finding: an uncaught exception on bad input
            return Outcome("finding", f"from_onnx raised {type(error).__name__}: {error}")
    rng = np.random.default_rng(1)
    try:
        feeds = {
            v.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in v.shape]).astype(v.dtype)
            for v in graph.inputs
        }
        reference = evaluate(graph, feeds)
    except LoweringError as error:
        return _refusal(error)
    except Exception as error:
        return Outcome("finding", f"evaluate raised {type(error).__name__}: {error}")
    # where a type overflows and float64 does not, or a weight is not finite, only crashes and refusals count
    compare = not _beyond_its_type(graph, reference)
    for strategy, backend in itertools.product(STRATEGIES_TO_RUN, BACKENDS_TO_RUN):
        where = f"{strategy} on {backend}"
        options = {"backend": backend} if strategy == "auto" else {}  # auto picks per backend
        try:
            outputs = compile(lower(graph, strategy, **options), backend)(feeds)
        except LoweringError as error:
            outcome = _refusal(error)
            if outcome.kind == "finding":
                return outcome
            continue
        except Exception as error:
            return Outcome("finding", f"{where}: {type(error).__name__}: {error}")
        for name, ref in reference.items() if compare else ():
            got = np.asarray(outputs[name], np.float64)
            scale = max(float(np.nanmax(np.abs(ref), initial=0.0)), 1.0)
            tol = max(TOLERANCE.get(graph.value(name).dtype or "float32", 1e-4), 1e-4)  # float32 kernels at most
            if got.shape != ref.shape or not np.allclose(got, ref, rtol=tol, atol=tol * scale, equal_nan=True):
                return Outcome("finding", f"{where}: output '{name}' differs from the reference")
    return Outcome("ok")


SAFE_FLOAT32 = float(np.finfo(np.float32).max) ** 0.5  # products of two such numbers still fit


def _beyond_its_type(graph, reference: dict[str, np.ndarray]) -> bool:
    """Where the arithmetic itself, not a lowering, makes the results differ: a mutated weight near
    float32's limit (the float32 lowerings overflow where the float64 reference does not), a result
    near the limit of its own type (float16 overflows at 65504), or a weight that is NaN or infinite
    (IEEE makes it times an inserted zero or a padded tap NaN, where the reference never forms that
    product, so the lowerings spread NaN to more outputs)."""
    weights = [np.asarray(v.const, np.float64) for v in graph.initializers.values() if v.const.dtype.kind == "f"]
    if any(not np.isfinite(w).all() for w in weights):
        return True
    if any(w.size and np.abs(w).max() > SAFE_FLOAT32 for w in weights):
        return True
    for name, ref in reference.items():
        dtype = graph.value(name).dtype or "float32"
        limit = float(np.finfo(dtype).max) / 2 if dtype == "float16" else SAFE_FLOAT32
        if ref.size and np.nanmax(np.abs(ref), initial=0.0) > limit:
            return True
    return False


def _refusal(error: LoweringError) -> Outcome:
    message = str(error)
    if not message or "\n" in message:
        return Outcome("finding", f"refusal is not one line: {message!r}")
    return Outcome("refused", message)


def mutate_bytes(data: bytes, rng: random.Random, edits: int = 3) -> bytes:
    """Flip, insert, delete or overwrite a few bytes."""
    buffer = bytearray(data)
    for _ in range(edits):
        if not buffer:
            break
        position = rng.randrange(len(buffer))
        action = rng.randrange(4)
        if action == 0:
            buffer[position] ^= 1 << rng.randrange(8)
        elif action == 1:
            buffer.insert(position, rng.randrange(256))
        elif action == 2:
            del buffer[position]
        else:
            buffer[position] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
    return bytes(buffer)


def attribute_variants(rng: random.Random) -> Iterator[onnx.ModelProto]:
    """Seed models with random ConvTranspose attributes: mostly valid, now and then not."""

    def pick(lo: int, hi: int, valid_lo: int, count: int) -> tuple[int, ...]:
        low = lo if rng.random() < 0.1 else valid_lo
        return tuple(rng.randint(low, hi) for _ in range(count))

    while True:
        rank = rng.choice((1, 2, 2, 3))
        yield seed_model(
            strides=pick(-1, 4, 1, rank),
            pads=pick(-2, 4, 0, 2 * rank),
            dilations=pick(0, 3, 1, rank),
            output_padding=pick(-1, 3, 0, rank),
            group=rng.choice((1, 1, 2, 3)),
            kernel=pick(0, 4, 1, rank),
            channels=rng.choice((2, 4)),
            out_per_group=rng.choice((1, 2)),
            size=pick(0, 5, 1, rank),
            opset=rng.choice((11, 13, 17, 18, 21)),
            dtype=rng.choice(("float32", "float32", "float32", "float16", "float64")),
            batch=rng.choice((1, 1, 1, 2, 0)),
            bias=rng.random() < 0.8,
        )
