"""The plugin system: hooks documented and tested, built-ins and third-party plugins on one path."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kernelnotes.kernelspec import Example, KernelSpec, Tolerance
from kernelnotes.plugins import hookspecs
from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.plugins.manager import DEFAULT_PLUGINS, get_plugin_manager, plugin_names
from kernelnotes.registry import KernelRegistryError, load_kernels

from .conftest import REPO

HOOKS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "kernelnotes_spec"))


def test_hooks_are_found():
    assert HOOKS == ["register_commands", "register_kernels"]


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^#### `{hook}\(", readme, re.MULTILINE), (
        f"README.md lacks a '#### `{hook}(...)`' section"
    )
    assert getattr(hookspecs, hook).__doc__


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    source = Path(__file__).read_text(encoding="utf-8")
    assert f"def test_hook_{hook}" in source, f"no test named test_hook_{hook}"


def test_builtins_register_through_the_same_path():
    pm = get_plugin_manager()
    assert [name for name, _ in plugin_names(pm)][: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    assert dict(plugin_names(pm))["kernelnotes.plugins.kernel_library"] == [
        "register_commands",
        "register_kernels",
    ]


def _spec(name):
    return KernelSpec(
        name=name,
        reference=lambda x, upcast=True: x,
        implementation=lambda x: x,
        examples=lambda device, dtype, seed: [Example((1.0,))],
        tolerances={"float32": Tolerance(1e-5, 1e-5)},
        dtypes=("float32",),
        devices=("cpu",),
    )


class ThirdParty:
    @hookimpl
    def register_kernels(self):
        return [_spec("third_party_op")]


def test_hook_register_kernels():
    pm = get_plugin_manager()
    plugin = ThirdParty()
    pm.register(plugin, name="third")
    try:
        kernels = load_kernels(pm)
        assert "third_party_op" in kernels and kernels["third_party_op"].reference(3) == 3
    finally:
        pm.unregister(plugin)
    assert "third_party_op" not in load_kernels(pm)


def test_kernel_registered_twice_is_an_error_naming_both_plugins():
    pm = get_plugin_manager()

    class A:
        @hookimpl
        def register_kernels(self):
            return [_spec("dup")]

    class B:
        @hookimpl
        def register_kernels(self):
            return [_spec("dup")]

    pm.register(A(), name="plugin-a")
    pm.register(B(), name="plugin-b")
    with pytest.raises(KernelRegistryError, match="'dup' registered by both 'plugin-a' and 'plugin-b'"):
        load_kernels(pm)


def test_non_spec_registration_is_rejected():
    pm = get_plugin_manager()

    class Bad:
        @hookimpl
        def register_kernels(self):
            return ["softmax"]

    pm.register(Bad(), name="bad")
    with pytest.raises(KernelRegistryError, match="not a KernelSpec"):
        load_kernels(pm)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "snake_case"),
        ({"dtypes": ("float64",)}, "unknown dtypes"),
        ({"dtypes": ("float16",)}, "no tolerance"),
        ({"devices": ("tpu",)}, "unknown devices"),
    ],
)
def test_kernel_spec_validates(kwargs, message):
    base = {
        "name": "ok",
        "reference": abs,
        "implementation": abs,
        "examples": lambda *a: [],
        "tolerances": {"float32": Tolerance(1e-5, 1e-5)},
        "dtypes": ("float32",),
    }
    with pytest.raises(ValueError, match=message):
        KernelSpec(**{**base, **kwargs})


def test_hook_register_commands():
    from kernelnotes.cli import cli

    class Commands:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello-plugin")
            def hello():
                """Say hello from a plugin."""
                click.echo("hello from plugin")

    pm = get_plugin_manager()
    plugin = Commands()
    pm.register(plugin)
    try:
        pm.hook.register_commands(cli=cli)
        result = CliRunner().invoke(cli, ["hello-plugin"])
        assert result.exit_code == 0 and result.output == "hello from plugin\n"
    finally:
        pm.unregister(plugin)
        cli.commands.pop("hello-plugin", None)


def test_plugins_dir_files_are_registered(tmp_path):
    (tmp_path / "local_kernels.py").write_text(
        "from kernelnotes.plugins.hookspecs import hookimpl\n"
        "@hookimpl\ndef register_commands(cli):\n    pass\n",
        encoding="utf-8",
    )
    pm = get_plugin_manager(tmp_path)
    assert ("local:local_kernels.py", ["register_commands"]) in plugin_names(pm)


def test_installed_plugins_are_not_loaded_during_tests(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "pluggy.PluginManager.load_setuptools_entrypoints", lambda self, group: calls.append(group)
    )
    get_plugin_manager()
    assert calls == []
    get_plugin_manager(load_entry_points=True)
    assert calls == ["kernelnotes"]
