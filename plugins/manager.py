"""The plugin manager: built-ins, installed entry points and a local folder, all through one path."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

import pluggy

from kernelnotes.plugins import hookspecs

ENTRY_POINT_GROUP = "kernelnotes"

# Built-in features are ordinary plugins registered from this tuple, exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "kernelnotes.plugins.kernel_library",
    "kernelnotes.plugins.exec_snippets",
    "kernelnotes.plugins.python_runner",
    "kernelnotes.plugins.kernel_checker",
    "kernelnotes.plugins.matplotlib_capture",
    "kernelnotes.plugins.markdown_renderer",
    "kernelnotes.plugins.runs_writer",
)


def get_plugin_manager(
    plugins_dir: str | Path | None = None,
    *,
    load_entry_points: bool | None = None,
) -> pluggy.PluginManager:
    """Build a plugin manager with the built-ins, installed plugins and `plugins_dir/*.py`.

    Installed plugins are skipped when KERNELNOTES_LOAD_PLUGINS=0 (the test suite sets it, so a
    plugin installed on a developer's machine cannot change test outcomes).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points is None:
        load_entry_points = os.environ.get("KERNELNOTES_LOAD_PLUGINS", "1") != "0"
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if plugins_dir is not None:
        for path in sorted(Path(plugins_dir).glob("*.py")):
            pm.register(_load_file(path), name=f"local:{path.name}")
    pm.check_pending()
    return pm


def _load_file(path: Path) -> object:
    module_name = f"kernelnotes_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot load as a plugin module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def plugin_sources(pm: pluggy.PluginManager, plugins_dir: str | Path | None = None) -> list[Path]:
    """The source files a result can depend on: the package folder of every registered plugin
    (a plugin module's helpers usually live beside it), every file of `plugins_dir`, the kernels
    and the worker-side core modules. The cache key hashes them, so editing any of them re-runs
    the blocks that depend on them."""
    from kernelnotes.cache import result_sources

    files: set[Path] = set(result_sources())
    folders: set[Path] = set()
    for _name, plugin in pm.list_name_plugin():
        module = plugin if inspect.ismodule(plugin) else inspect.getmodule(type(plugin))
        source = getattr(module, "__file__", None)
        if source:
            path = Path(source).resolve()
            files.add(path)
            if getattr(module, "__package__", ""):  # part of a package: its siblings count too
                folders.add(path.parent)
    if plugins_dir is not None and Path(plugins_dir).is_dir():
        folders.add(Path(plugins_dir).resolve())
    for folder in folders:
        files.update(p for p in folder.glob("*.py") if p.is_file())
    return sorted(files)


def plugin_names(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    """Each registered plugin with the hooks it implements (for `kn plugins`)."""
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append((name, hooks))
    return rows
