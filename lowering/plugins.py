"""User plugins: Python modules that register their own passes, strategies or CLI commands on import.

A plugin is an ordinary module; importing it runs its `@register_pass` / `@register_strategy` /
`@command` decorators, after which its passes are known by name to pipelines (`-p`), its
strategies to `--strategy`, `lower`, `auto` and `compare`, exactly like the built-in ones:

    lowering lower model.onnx -o out.onnx --plugin my_passes -p canonicalize,my-pass,dce
    lowering lower model.onnx -o out.onnx --plugin ./my_passes.py --strategy my-strategy

`load_plugins` takes module names (imported as `import NAME`, with the current directory as a
last resort, since a console script does not put it on `sys.path`) or paths of `.py` files.
Anything that goes wrong is one line that names the plugin: a module that does not exist, or the
first line of the exception the module raised while importing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .errors import LoweringError


class PluginError(LoweringError):
    """A plugin could not be found or raised an exception while it was imported."""


# Plugins loaded from a file, by resolved path: loading one twice must not register its passes twice.
_LOADED_FILES: dict[Path, ModuleType] = {}
# Every plugin module imported by `load_plugin`, by module name (for `isolated_registries`).
_LOADED_MODULES: dict[str, ModuleType] = {}


def _is_path(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or (os.altsep is not None and os.altsep in name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _load_file(name: str) -> ModuleType:
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"plugin '{name}': no such file")
    if path.suffix != ".py":
        raise PluginError(f"plugin '{name}': a plugin file must be a Python source file ending in .py")
    if path in _LOADED_FILES:
        return _LOADED_FILES[path]
    module_name = path.stem if path.stem.isidentifier() else "lowering_plugin"
    if module_name in sys.modules:  # do not shadow a module of the same name imported from elsewhere
        module_name = f"lowering_plugin_{len(_LOADED_FILES)}_{module_name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin '{name}': cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    _LOADED_FILES[path] = module
    return module


def _names_plugin(error: ModuleNotFoundError, name: str) -> bool:
    """Whether the missing module is the plugin (or a package on its dotted path), not one it imports."""
    return error.name is not None and (name == error.name or name.startswith(error.name + "."))


def _load_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if not _names_plugin(error, name):  # the plugin itself imports something that is missing
            raise
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # last, so a plugin never shadows an installed module
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as error:
            if not _names_plugin(error, name):
                raise
    raise PluginError(
        f"plugin '{name}': no module named '{name}' (give an importable module name or the path of a .py file)"
    )


def load_plugin(name: str) -> ModuleType:
    """Import one plugin, given as a module name (`my_passes`, `pkg.passes`) or a `.py` path.

    Importing a module twice is harmless (Python caches it), and so is loading the same file twice.
    Raises `PluginError` with one line naming the plugin when it is missing or fails to import.
    """
    name = name.strip()
    if not name:
        raise PluginError("plugin: empty name")
    try:
        module = _load_file(name) if _is_path(name) else _load_module(name)
    except PluginError:
        raise
    except (Exception, SystemExit) as error:
        raise PluginError(f"plugin '{name}' failed to import: {_first_line(error)}") from error
    _LOADED_MODULES.setdefault(module.__name__, module)
    return module


def load_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import every plugin in `names` in order (see `load_plugin`) and return the modules.

    A name may also be a comma-separated list (`--plugin a,b`).
    """
    modules = []
    for entry in names:
        for name in entry.split(","):
            if name.strip():
                modules.append(load_plugin(name))
    return modules


@contextmanager
def isolated_registries() -> Iterator[None]:
    """Undo, on exit, every pass, strategy, CLI command and plugin module registered inside the block.

    For tests and notebooks, which define and register passes repeatedly in one interpreter:

        with isolated_registries():
            load_plugins(["my_passes.py"])
            ...                       # my passes are known here
        # ... and forgotten here, so a later registration of the same names is no conflict
    """
    from passes import PASSES, STRATEGIES

    from .cli import COMMANDS

    tables = (PASSES, STRATEGIES, COMMANDS, _LOADED_FILES, _LOADED_MODULES)
    saved = [dict(table) for table in tables]
    imported = set(sys.modules)
    try:
        yield
    finally:
        for name, module in list(_LOADED_MODULES.items()):
            if name not in imported and sys.modules.get(name) is module:
                del sys.modules[name]  # a plugin first imported inside the block is imported afresh next time
        for table, before in zip(tables, saved, strict=True):
            table.clear()
            table.update(before)  # type: ignore[attr-defined]


__all__ = ["PluginError", "isolated_registries", "load_plugin", "load_plugins"]
