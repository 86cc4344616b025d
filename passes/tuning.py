"""Measured choice for `auto --tune`: time each candidate lowering of one node, cache the winner.

The node is cut out into a one-node graph (same shapes, attributes and weights), lowered by each
candidate, compiled for the target backend and device in that backend's default configuration
(PyTorch on CPU: weights prepacked for oneDNN), and timed as `lowering bench` times
(`lowering.measure.time_steady_state`: steady-state calls, equal shares of the budget); a candidate
replaces the static model's pick only where it measured more than `OVERRIDE_MARGIN` faster. The
decision is cached in a user file keyed by the layer's signature (geometry, element type, whether
the weights are constants), the backend, the device, the library versions and a fingerprint of
this project's own source (its lowerings and backends decide what is measured), so a layer is
measured once per machine and software stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node

from .strategy import LoweringStrategy

# A measured candidate replaces the static model's pick only where it is faster by more than this
# share. Two timings of one graph in one bench run differ by up to 10% on these machines, and over
# three bench runs 13 of the 18 picks that tuning took from the static model by less measured slower
# in the bench itself (1.03-1.24x the static pick; the other five 0.95-1.00x).
OVERRIDE_MARGIN = 0.10


def measured_choice(seconds: dict[str, float], static: str, margin: float = OVERRIDE_MARGIN) -> str:
    """The fastest measured candidate where it beats the static pick by more than `margin` (or the
    static pick was not measured), else the static pick: a measurement overrules the model only by
    more than its own noise."""
    fastest = min(seconds, key=seconds.__getitem__)
    if static not in seconds or seconds[static] > (1 + margin) * seconds[fastest]:
        return fastest
    return static


def cache_file() -> Path:
    base = os.environ.get("LOWERING_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lowering"
    )
    return Path(base) / "tune.json"


@functools.cache
def source_fingerprint() -> str:
    """A hash of the `lowering` and `passes` sources: a changed lowering or backend invalidates old timings."""
    import lowering

    digest = hashlib.sha256()
    for package in (Path(lowering.__file__).parent, Path(__file__).parent):
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package.parent).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    from lowering import __version__

    return {
        "lowering": __version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "ort": onnxruntime.__version__,
        "source": source_fingerprint(),
    }


def signature(graph: Graph, node: Node, geometry: ConvTransposeGeometry, backend: str, device: str) -> str:
    fields = asdict(geometry)
    fields["batch"] = geometry.batch if isinstance(geometry.batch, int) else 1
    fields["dtype"] = node.inputs[0].dtype
    fields["constant_weights"] = graph.constant_value(node.inputs[1]) is not None
    return json.dumps({"layer": fields, "backend": backend, "device": device, "versions": _versions()}, sort_keys=True)


def load_cache() -> dict[str, dict]:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def store(key: str, entry: dict) -> None:
    cache = load_cache()
    cache[key] = entry
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(cache, indent=1))
        os.replace(temp, path)
    except OSError:
        pass  # an unwritable cache only costs a re-measurement next time


def single_node_graph(graph: Graph, node: Node) -> tuple[Graph, dict[str, np.ndarray]]:
    """The node alone, with its weights (constant or random stand-ins) and random inputs."""
    rng = np.random.default_rng(0)
    g = Graph("tune")
    x = node.inputs[0]
    shape = tuple(d if isinstance(d, int) else 1 for d in x.shape)
    xv = g.add_input("x", shape, x.dtype)
    feeds = {"x": rng.standard_normal(shape).astype(x.dtype)}
    operands = []
    for index, value in enumerate(node.inputs[1:], start=1):
        if value is None:
            operands.append(None)
            continue
        data = graph.constant_value(value)
        if data is None:
            operands.append(g.add_input(f"in{index}", value.shape, value.dtype))
            feeds[f"in{index}"] = rng.standard_normal(value.shape).astype(value.dtype)
        else:
            operands.append(g.add_initializer(f"c{index}", data))
    y = g.add_node("ConvTranspose", [xv, *operands], node.attrs).outputs[0]
    g.outputs.append(y)
    return g, feeds


def measure(
    graph: Graph, node: Node, candidates: dict[str, LoweringStrategy], backend: str, device: str, seconds: float
) -> dict[str, float]:
    """Median seconds per call of each candidate lowering of `node` on `backend`/`device`."""
    from lowering.api import lower
    from lowering.compile import compile
    from lowering.measure import Measurement, ready_variant, time_steady_state

    single, feeds = single_node_graph(graph, node)
    variants = {}
    for name, strategy in candidates.items():
        try:
            pipeline = f"canonicalize,{strategy.name},fold-constants,dce"
            lowered = lower(single, pipeline=pipeline, **_options(strategy))
            compiled = compile(lowered, backend, device)
        except LoweringError:
            continue
        variants[name] = ready_variant(compiled, feeds, Measurement(name, backend, device))
    times = time_steady_state(list(variants.values()), budget_s=seconds, min_rounds=3, max_rounds=100)
    return {name: statistics.median(times[id(v)]) for name, v in variants.items()}


def _options(strategy: LoweringStrategy) -> dict:
    return {name: getattr(strategy, name) for name in strategy.options()}
