"""The plugin system: hooks documented and tested, built-ins and third-party plugins on one path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

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
    assert HOOKS == [
        "block_attributes",
        "check_snippet",
        "choose_runner",
        "collect_figures",
        "collect_snippets",
        "exec_languages",
        "register_commands",
        "register_kernels",
        "render_result",
        "store_result",
    ]


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
        ({"dtypes": ("int8",)}, "unknown dtypes"),
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


# ---- pipeline hooks: tiny throwaway plugins, registered and unregistered in `finally` --------------


class EchoRunner:
    """Runs `echo` blocks without a worker: each block's result is its code."""

    def __init__(self):
        self.calls = []

    def run_session(self, note, snippets, context):
        from kernelnotes.results import RunResult

        self.calls.append([s.index for s in snippets])
        return [
            RunResult(
                status="passed",
                stdout=s.code,
                device="test",
                device_class="cpu",
                created_at="2026-01-01T00:00:00",
            )
            for s in snippets
        ]

    def close(self):
        pass


class EchoPlugin:
    def __init__(self):
        self.runner = EchoRunner()

    @hookimpl
    def choose_runner(self, snippet, context):
        return self.runner if snippet.language == "echo" else None

    @hookimpl
    def exec_languages(self):
        return ["echo"]


def echo_pipeline(project, *plugins):
    from kernelnotes.app import App
    from kernelnotes.settings import load_settings

    settings = load_settings(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    pm = get_plugin_manager()
    for plugin in plugins:
        pm.register(plugin)
    app = App(settings, pm)
    app.update_index()
    return app, app.pipeline()


def notes_of(app):
    return app.index.parsed_notes(app.resolver)


def render_page(app, outcomes, text):
    """The page as the site renders it: Python-Markdown with superfences and kernelnotes.mdext."""
    import markdown

    from kernelnotes.fence import ResultsView

    ResultsView.activate(ResultsView(app, outcomes))
    try:
        return markdown.markdown(text, extensions=["admonition", "pymdownx.superfences", "kernelnotes.mdext"])
    finally:
        ResultsView.activate(None)


def test_hook_choose_runner(project):
    project.note(
        "a.md", '# A\n\n```echo exec="on" session="x"\none\n```\n\n```echo exec="on" session="x"\ntwo\n```\n'
    )
    plugin = EchoPlugin()
    app, pipeline = echo_pipeline(project, plugin)
    outcomes = pipeline.run(notes_of(app))
    assert [o.result.stdout for o in outcomes] == ["one", "two"] and plugin.runner.calls == [[0, 1]]
    assert [o.cached for o in pipeline.run(notes_of(app))] == [True, True]  # stored and found again


def test_hook_collect_snippets(project):
    class AlsoRunMarked:
        @hookimpl
        def collect_snippets(self, note):
            return [s for s in note.snippets if s.attrs.get("run") is True]

    project.note(
        "a.md", '# A\n\n```echo run\nmarked\n```\n\n```echo\nplain\n```\n\n```echo exec="on"\nexec\n```\n'
    )
    app, pipeline = echo_pipeline(project, EchoPlugin(), AlsoRunMarked())
    assert [o.result.stdout for o in pipeline.run(notes_of(app))] == ["marked", "exec"]


def test_hook_store_result(project):
    class Recorder:
        def __init__(self):
            self.seen = []

        @hookimpl
        def store_result(self, outcome, context):
            self.seen.append((outcome.note_path, outcome.snippet.index, outcome.result.status))

    project.note("a.md", '# A\n\n```echo exec="on"\nx\n```\n')
    recorder = Recorder()
    app, pipeline = echo_pipeline(project, EchoPlugin(), recorder)
    pipeline.run(notes_of(app))
    pipeline.run(notes_of(app))  # cached: nothing new to store
    assert recorder.seen == [("a.md", 0, "passed")]


def test_hook_render_result(project):
    class Plain:
        @hookimpl
        def render_result(self, outcome):
            return f"RESULT: {outcome.result.stdout}"

    project.note("a.md", '# A\n\n- item\n\n    ```echo exec="on"\n    hello\n    ```\n\ntail\n')
    app, pipeline = echo_pipeline(project, EchoPlugin(), Plain())
    outcomes = pipeline.run(notes_of(app))
    html = render_page(app, outcomes, (project.notes / "a.md").read_text())
    # the fence shows the highlighted source, then the renderer's Markdown as HTML, in the list item
    assert re.search(r"<li>.*hello.*<p>RESULT: hello</p>.*</li>", html, re.S), html
    assert html.index("hello") < html.index("RESULT") < html.index("tail")
    # the built-in renderer answers when no other plugin does
    assert (
        pipeline.pm.hook.render_result(outcome=outcomes[0], figure_link=None, language="en")
        == "RESULT: hello"
    )


def test_show_output_replaces_the_block_and_show_source_hides_the_result(project):
    project.note(
        "a.md", '```echo exec="on" show="output"\nAAA\n```\n\n```echo exec="on" show="source"\nBBB\n```\n'
    )
    app, pipeline = echo_pipeline(project, EchoPlugin())
    outcomes = pipeline.run(notes_of(app))
    html = render_page(app, outcomes, (project.notes / "a.md").read_text())
    assert html.count('class="admonition success"') + html.count('<details class="success"') == 1
    assert html.count("AAA") == 1  # output only: the source of the first block is not shown
    assert "BBB" in html


def test_hook_collect_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pm = get_plugin_manager()
    _, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    (figures,) = [f for f in pm.hook.collect_figures() if f]
    assert figures[0].format == "svg" and "<svg" in figures[0].data
    assert plt.get_fignums() == []  # closed, so the next block starts clean


def test_hook_check_snippet():
    import torch

    from kernelnotes.kernelspec import Example, KernelSpec, Tolerance

    spec = KernelSpec(
        name="double",
        reference=lambda x, upcast=True: (x.float() * 2).to(x.dtype),
        implementation=lambda x: x * 2,
        examples=lambda device, dtype, seed: [Example((torch.ones(3, 5, dtype=dtype),), label="ones")],
        tolerances={"float32": Tolerance(1e-5, 1e-5), "float16": Tolerance(1e-2, 1e-2)},
        dtypes=("float32", "float16"),
        devices=("cpu",),
    )
    pm = get_plugin_manager()
    good = pm.hook.check_snippet(function=lambda x: x + x, kernel=spec, device="cpu", bench=False)
    assert [(c.dtype, c.shape, c.ok) for c in good] == [("float32", "3x5", True), ("float16", "3x5", True)]
    bad = pm.hook.check_snippet(function=lambda x: x * 3, kernel=spec, device="cpu", bench=True)
    assert not any(c.ok for c in bad) and bad[0].max_abs == 1.0
    missing = pm.hook.check_snippet(function=lambda x: x, kernel=spec, device="cuda", bench=False)
    assert not missing[0].ok and "does not run on cuda" in missing[0].message


def test_hook_exec_languages(project):
    # a block of a plugin's language gets its result rendered by the fence, like a Python block
    project.note("a.md", '# A\n\n```echo exec="on"\nfrom-echo\n```\n')
    app, pipeline = echo_pipeline(project, EchoPlugin())
    assert "echo" in [lang for group in app.pm.hook.exec_languages() for lang in group]
    html = render_page(app, pipeline.run(notes_of(app)), (project.notes / "a.md").read_text())
    assert html.count("from-echo") == 2 and "passed" in html  # the source, then the result box


def test_hook_block_attributes(project):
    from kernelnotes.blockattrs import AttributeSpec, BadAttribute

    def repeat(value):
        if not str(value).isdigit():
            raise BadAttribute(f"{value!r} is not a count (write repeat=3)")
        return int(value)

    class Repeat:
        seen: ClassVar[list] = []

        @hookimpl
        def block_attributes(self):
            return [AttributeSpec("repeat", repeat, "times to run")]

        @hookimpl
        def choose_runner(self, snippet, context):
            Repeat.seen.append(context.block_options(snippet).extra.get("repeat"))
            return None

    project.note(
        "a.md",
        '```echo exec="on" repeat="3"\nA\n```\n\n```echo exec="on" repeat="x"\nB\n```\n',
    )
    app, pipeline = echo_pipeline(project, EchoPlugin(), Repeat())  # asked first (LIFO)
    good, bad = pipeline.run(notes_of(app))
    assert good.result.ok and Repeat.seen[0] == 3
    assert not bad.result.ok and "repeat: 'x' is not a count (write repeat=3)" in bad.result.error
    # declared attributes are part of the cache key: another value is another result
    keys = pipeline.key_maker()
    a, b = notes_of(app)[0].snippets
    assert keys.keys([a]) != keys.keys([b])
