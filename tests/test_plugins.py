"""User passes and strategies: registered like the built-ins, run from Python and from the CLI.

The passes here are defined inside the tests (as classes, or as the source of a plugin module the
test writes), registered with one decorator, and run through `lowering.lower`, a `PassManager`,
and `python -m lowering ... --plugin` in a subprocess. Every result is checked against
`lowering.evaluate` of the original graph (the float64 reference), never against the code under test.
In-process registrations are undone after each test (`isolated_registries`), so no other test sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

import lowering
from lowering.api import strategy_names
from lowering.cli import main
from lowering.errors import LoweringError
from lowering.ir import Graph
from lowering.plugins import PluginError, isolated_registries, load_plugin, load_plugins
from passes import (
    PASSES,
    STRATEGIES,
    Cost,
    Pass,
    PassManager,
    PassResult,
    parse_pipeline,
    register_pass,
    register_strategy,
)

# A user pass, as a plugin module's source: ConvTranspose(x, w, b) -> ConvTranspose(x, w) + b.
SPLIT_BIAS_PLUGIN = textwrap.dedent(
    '''
    """Test plugin: a pass that moves ConvTranspose's bias into an Add, and a strategy."""
    from dataclasses import dataclass

    import numpy as np

    from lowering.ir import Graph
    from passes import Pass, PassResult, register_pass, register_strategy
    from passes.zero_insertion import ZeroInsertion


    @register_pass
    @dataclass
    class SplitBias(Pass):
        name = "split-bias"

        def run(self, graph: Graph) -> PassResult:
            changed = False
            for node in graph.nodes_of("ConvTranspose"):
                b = node.input(2)
                if b is None:
                    continue
                bare = graph.op("ConvTranspose", node.inputs[0], node.inputs[1], before=node, **node.attrs)
                shape = graph.const(np.array([-1] + [1] * (len(bare.shape) - 2), np.int64), "bias_shape")
                y = graph.op("Add", bare, graph.op("Reshape", b, shape, before=node), before=node)
                graph.replace_all_uses_with(node.outputs[0], y)
                graph.remove_node(node)
                changed = True
            return PassResult(graph, changed)


    @register_strategy
    @dataclass
    class MyStrategy(ZeroInsertion):
        name = "my-strategy"
    '''
)


def split_bias_pass() -> type[Pass]:
    """The same pass as SPLIT_BIAS_PLUGIN's, defined here for the in-process tests."""

    @dataclass
    class SplitBias(Pass):
        name = "split-bias"

        def run(self, graph: Graph) -> PassResult:
            changed = False
            for node in graph.nodes_of("ConvTranspose"):
                b = node.input(2)
                if b is None:
                    continue
                bare = graph.op("ConvTranspose", node.inputs[0], node.inputs[1], before=node, **node.attrs)
                shape = graph.const(np.array([-1] + [1] * (len(bare.shape) - 2), np.int64), "bias_shape")
                y = graph.op("Add", bare, graph.op("Reshape", b, shape, before=node), before=node)
                graph.replace_all_uses_with(node.outputs[0], y)
                graph.remove_node(node)
                changed = True
            return PassResult(graph, changed)

    return SplitBias


def small_graph() -> Graph:
    """x (2, 3, 5, 4) -> ConvTranspose (stride 2, asymmetric pads, output padding, bias) -> Relu -> y."""
    rng = np.random.default_rng(0)
    graph = Graph("small")
    x = graph.add_input("x", (2, 3, 5, 4))
    w = graph.add_initializer("w", rng.standard_normal((3, 4, 3, 3)).astype(np.float32))
    b = graph.add_initializer("b", rng.standard_normal(4).astype(np.float32))
    up = graph.op("ConvTranspose", x, w, b, name="up", strides=[2, 2], pads=[1, 1, 0, 1], output_padding=[1, 0])
    y = graph.op("Relu", up, name="act")
    graph.rename(y, "y")
    graph.outputs.append(y)
    return graph


FEEDS = {"x": np.random.default_rng(1).standard_normal((2, 3, 5, 4)).astype(np.float32)}


def reference() -> np.ndarray:
    return lowering.evaluate(small_graph(), FEEDS)["y"]


def assert_matches_reference(graph: Graph, rtol: float = 1e-5) -> None:
    got = lowering.evaluate(graph, FEEDS)["y"]
    want = reference()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.fixture
def isolated():
    with isolated_registries():
        yield


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with the plugin module and the model, as a user would have them."""
    (tmp_path / "split_bias_plugin.py").write_text(SPLIT_BIAS_PLUGIN)
    onnx.save(lowering.to_onnx(small_graph()), tmp_path / "small.onnx")
    return tmp_path


def run_cli(*args: str, cwd: Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m lowering ARGS` (or the installed `lowering` script) in a subprocess, in `cwd`."""
    program = [str(Path(sys.executable).parent / "lowering")] if script else [sys.executable, "-m", "lowering"]
    return subprocess.run([*program, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


# ----------------------------------------------------------------- from Python


def test_user_pass_runs_from_python_like_a_built_in(isolated):
    cls = register_pass(split_bias_pass())
    assert PASSES["split-bias"] is cls
    result = PassManager(parse_pipeline("canonicalize,split-bias,dce")).run(small_graph())
    assert result.modified
    assert [n.op for n in result.graph.nodes] == ["ConvTranspose", "Reshape", "Add", "Relu"]
    assert result.graph.nodes_of("ConvTranspose")[0].input(2) is None
    assert_matches_reference(result.graph, rtol=1e-12)

    lowered = lowering.lower(small_graph(), pipeline="canonicalize,split-bias,zero-insertion,fold-constants,dce")
    assert not lowered.nodes_of("ConvTranspose")
    assert_matches_reference(lowered)
    assert_matches_reference(lowering.from_onnx(lowering.to_onnx(lowered)))


def test_registration_refuses_bad_names_and_duplicates(isolated):
    cls = split_bias_pass()
    register_pass(cls)
    register_pass(cls)  # the same class again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_pass(split_bias_pass())
    bad = split_bias_pass()
    bad.name = "Split_Bias"
    with pytest.raises(ValueError, match="kebab-case"):
        register_pass(bad)
    with pytest.raises(LoweringError, match="unknown pass 'nope'"):
        parse_pipeline("canonicalize,nope")


def test_isolated_registries_forget_what_was_registered_inside():
    before = (dict(PASSES), dict(STRATEGIES))
    with isolated_registries():
        register_pass(split_bias_pass())
        assert "split-bias" in PASSES
    assert (dict(PASSES), dict(STRATEGIES)) == before


# ----------------------------------------------------------------- user strategies in lower, auto, compare


def cheap_col2im() -> type:
    """A user strategy that lowers exactly as col2im does but claims to cost almost nothing."""
    from passes.col2im import Col2ImLowering

    @dataclass
    class Cheap(Col2ImLowering):
        name = "cheap-col2im"

        def cost(self, graph, node, g):
            return Cost(
                self.name, g.useful_macs(), executed_macs=1, largest_intermediate_bytes=1, weight_bytes=1, ops=1
            )

    return Cheap


def test_user_strategy_is_listed_lowered_and_picked_by_auto(isolated):
    register_strategy(cheap_col2im())
    assert "cheap-col2im" in strategy_names()
    assert "cheap-col2im" in PASSES  # a strategy is a pass too, for pipelines

    lowered = lowering.lower(small_graph(), "cheap-col2im")
    assert not lowered.nodes_of("ConvTranspose") and lowered.nodes_of("Col2Im")
    assert_matches_reference(lowered)

    auto = lowering.lower(small_graph(), "auto")
    notes = "\n".join(auto.meta["lowering_notes"])
    assert "up: cheap-col2im" in notes, notes  # the cheapest estimate wins, user strategy or not
    assert_matches_reference(auto)


def test_auto_still_prefers_a_built_in_over_a_costlier_user_strategy(isolated):
    from passes.col2im import Col2ImLowering

    @dataclass
    class Costly(Col2ImLowering):
        name = "costly-col2im"

        def cost(self, graph, node, g):
            return Cost(self.name, g.useful_macs(), 10**15, 10**12, 10**9, 1000)

    register_strategy(Costly)
    auto = lowering.lower(small_graph(), "auto")
    notes = "\n".join(auto.meta["lowering_notes"])
    assert "costly-col2im" in notes and "up: costly-col2im" not in notes
    assert_matches_reference(auto)


# ----------------------------------------------------------------- from the command line, in a subprocess


def test_cli_runs_a_user_pass_by_name_with_plugin(workdir):
    done = run_cli(
        "lower", "small.onnx", "-o", "out.onnx", "--plugin", "split_bias_plugin", "-p", "canonicalize,split-bias,dce",
        cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # no auto-only option is passed to a pipeline without auto
    out = lowering.from_onnx(workdir / "out.onnx")
    assert [n.op for n in out.nodes] == ["ConvTranspose", "Reshape", "Add", "Relu"]
    assert out.nodes_of("ConvTranspose")[0].input(2) is None
    assert_matches_reference(out)


def test_cli_runs_a_user_pass_and_lowering_by_path_with_plugin_before_the_command(workdir):
    done = run_cli(
        "--plugin", str(workdir / "split_bias_plugin.py"), "lower", "small.onnx", "-o", "out.onnx",
        "--strategy", "my-strategy", "-p", "canonicalize,split-bias,my-strategy,fold-constants,dce",
        cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = lowering.from_onnx(workdir / "out.onnx")
    assert not out.nodes_of("ConvTranspose") and out.nodes_of("Conv")
    assert_matches_reference(out)


def test_cli_user_strategy_is_a_strategy_choice(workdir):
    # the installed console script: the current directory is not on sys.path, the plugin is still found
    done = run_cli("lower", "small.onnx", "-o", "out.onnx", "--plugin", "split_bias_plugin", "--strategy",
                   "my-strategy", "--explain", cwd=workdir, script=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "my-strategy" in done.stdout
    out = lowering.from_onnx(workdir / "out.onnx")
    assert not out.nodes_of("ConvTranspose")
    assert_matches_reference(out)

    without = run_cli("lower", "small.onnx", "-o", "out2.onnx", "--strategy", "my-strategy", cwd=workdir)
    assert without.returncode == 2 and "invalid choice: 'my-strategy'" in without.stderr
    assert not (workdir / "out2.onnx").exists()


def test_cli_compare_times_a_user_strategy(workdir):
    done = run_cli(
        "compare", "--plugin", "split_bias_plugin.py", "--layer", "N=1 C=4 M=2 in=4x4 k=3 s=2 p=1",
        "--strategies", "my-strategy,col2im", "--backends", "numpy", "--device", "cpu",
        "--time", "0.05", "--min-rounds", "2", "--json", "compare.json",
        cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads((workdir / "compare.json").read_text())
    rows = {(m["strategy"], m["backend"]): m for layer in figures["layers"] for m in layer["measurements"]}
    mine = rows[("my-strategy", "numpy")]
    assert mine["status"] == "ok" and mine["median_s"] > 0
    assert mine["max_rel_error"] < 1e-5


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        (
            "no_such_plugin_module",
            "plugin 'no_such_plugin_module': no module named 'no_such_plugin_module' "
            "(give an importable module name or the path of a .py file)",
        ),
        ("missing.py", "plugin 'missing.py': no such file"),
        ("broken", "plugin 'broken' failed to import: ModuleNotFoundError: No module named 'not_installed_dep'"),
        ("raises.py", "plugin 'raises.py' failed to import: RuntimeError: refusing to load"),
    ],
)
def test_cli_plugin_errors_are_one_line(workdir, plugin, message):
    (workdir / "broken.py").write_text("import not_installed_dep\n")
    (workdir / "raises.py").write_text("raise RuntimeError('refusing to load\\nsecond line')\n")
    done = run_cli("lower", "small.onnx", "-o", "out.onnx", "--plugin", plugin, cwd=workdir)
    assert done.returncode == 2
    assert done.stderr == f"lowering: error: {message}\n"
    assert not (workdir / "out.onnx").exists()


# ----------------------------------------------------------------- load_plugins itself


def test_load_plugins_by_path_and_name_is_idempotent(workdir, isolated, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    (first,) = load_plugins(["split_bias_plugin.py"])
    assert "split-bias" in PASSES and "my-strategy" in STRATEGIES
    assert load_plugin(str(workdir / "split_bias_plugin.py")) is first  # same file: not executed again
    assert load_plugin("split_bias_plugin") is first  # the module name finds the same module
    assert_matches_reference(lowering.lower(small_graph(), "my-strategy"))


def test_load_plugins_by_module_name_from_the_current_directory(workdir, isolated, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    modules = load_plugins(["split_bias_plugin"])
    assert modules[0].__name__ == "split_bias_plugin"
    assert PASSES["split-bias"].__module__ == "split_bias_plugin"


def test_load_plugin_errors(workdir, isolated, monkeypatch):
    monkeypatch.chdir(workdir)
    with pytest.raises(PluginError, match="no module named 'nope_nope'"):
        load_plugin("nope_nope")
    with pytest.raises(PluginError, match="no such file"):
        load_plugin("nope/nope.py")
    (workdir / "notes.txt").write_text("")
    with pytest.raises(PluginError, match="must be a Python source file"):
        load_plugin("./notes.txt")
    (workdir / "clash.py").write_text(SPLIT_BIAS_PLUGIN.replace('name = "split-bias"', 'name = "dce"'))
    with pytest.raises(PluginError, match=r"'clash.py' failed to import: ValueError: a pass named 'dce' is already"):
        load_plugin("clash.py")
    assert PASSES["dce"].__module__ == "passes.dce"


def test_a_plugin_can_add_a_command(tmp_path, isolated, capsys):
    plugin = tmp_path / "hello_plugin.py"
    plugin.write_text(
        textwrap.dedent(
            """
            from lowering.cli import command

            @command("hello", "say hello", lambda parser: parser.add_argument("who"))
            def _hello(args):
                print(f"hello {args.who}")
            """
        )
    )
    assert main(["--plugin", str(plugin), "hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    assert main(["hello", "world", "--plugin", str(plugin)]) == 0  # after the command too


# ----------------------------------------------------------------- examples/custom_lowering.py

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_lowering.py"


def test_example_lowering_matches_the_reference_on_random_layers(isolated):
    example = load_plugin(str(EXAMPLE))
    assert "im2col" in strategy_names()
    assert example.check_random_layers(40, seed=7) == 40
    lowered = lowering.lower(small_graph(), "im2col")
    assert {n.op for n in lowered.nodes} >= {"Im2Col", "MatMul", "InteriorPad"}
    assert_matches_reference(lowered)


def test_example_script_prints_its_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--layers", "10"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "im2col matches the float64 reference on 10 random layers" in done.stdout
    table = done.stdout.split("\nstrategy ", 1)[1].split("\n\n", 1)[0]  # header, rule, one row per strategy
    rows = {line.split()[0]: line for line in table.splitlines()[2:]}
    for name in ("zero-insertion", "col2im", "subpixel", "auto", "im2col"):
        assert name in rows, done.stdout
    errors = [float(rows[name].split()[3]) for name in ("zero-insertion", "col2im", "im2col")]
    assert max(errors) < 1e-6
    assert "auto weighs im2col with the built-ins" in done.stdout


def test_example_strategy_from_the_cli(workdir):
    done = run_cli("lower", "small.onnx", "-o", "out.onnx", "--plugin", str(EXAMPLE), "--strategy", "im2col",
                   cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = lowering.from_onnx(workdir / "out.onnx")
    assert not out.nodes_of("ConvTranspose")
    assert_matches_reference(out)
