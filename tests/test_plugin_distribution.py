"""A real plugin distribution (tests/plugins/kn-demo-plugin), pip-installed, seen by every front end.

It provides a kernel a note checks against, a runner for another language, a renderer and a command,
and is written against `kernelnotes.api` alone. Installed with pip into a folder of its own (not
into the test venv), and put on PYTHONPATH of the `kn`/`mkdocs` processes with installed plugins on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow

NOTE = """\
# 三倍

```python exec="on" check="triple"
def triple(x):
    return x * 3
```

```upper exec="on"
shout this
```
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The distribution built and installed by pip (a copy, so the test may edit its installed code)."""
    work = tmp_path_factory.mktemp("dist")
    source = work / "src"
    shutil.copytree(REPO / "tests" / "plugins" / "kn-demo-plugin", source)
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert list(target.glob("kn_demo_plugin-*.dist-info")) or list(target.glob("kn_demo_plugin*"))
    return target


def run(root: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KERNELNOTES_LOAD_PLUGINS": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p),
    }
    return subprocess.run(
        [sys.executable, "-c", "from kernelnotes.cli import main; main()", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_installed_plugin_is_seen_by_every_front_end(project, installed):
    root = project.root
    (root / "mkdocs.yml").write_text("site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\n")
    project.note("posts/triple.md", NOTE)

    plugins = run(root, installed, "plugins")
    assert "kn_demo_plugin" in plugins.stdout or "demo" in plugins.stdout, plugins.stderr
    kernels = run(root, installed, "kernels", "--json")
    assert '"triple"' in kernels.stdout, kernels.stderr
    command = run(root, installed, "demo-kernels")
    assert command.returncode == 0 and "triple" in command.stdout.split(), command.stderr

    first = run(root, installed, "run")
    assert first.returncode == 0, first.stderr
    assert "2 blocks: 2 passed, 0 failed, 2 executed" in first.stderr, first.stderr
    again = run(root, installed, "run")
    assert "0 executed, 2 cached" in again.stderr, again.stderr

    # the renderer and the runner's language reach the page through the fence
    html = subprocess.run(
        [
            sys.executable,
            "-c",
            "import markdown, sys; from kernelnotes.fence import ResultsView;"
            "print(markdown.markdown(open('notes/posts/triple.md').read(),"
            " extensions=['admonition','pymdownx.details','pymdownx.superfences','kernelnotes.mdext']))",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "KERNELNOTES_LOAD_PLUGINS": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(installed), os.environ.get("PYTHONPATH")) if p),
        },
    )
    assert "UPPER RESULT:" in html.stdout and "SHOUT THIS" in html.stdout, html.stderr[-2000:]

    # editing the installed plugin's kernel re-runs exactly the block that checks against it
    kernel_file = next(installed.glob("kn_demo_plugin/kernels.py"))
    kernel_file.write_text(kernel_file.read_text().replace("FACTOR = 3", "FACTOR = 4"))
    edited = run(root, installed, "run")
    assert edited.returncode == 1 and "1 executed" in edited.stderr, edited.stderr
    assert "posts/triple.md:3" in edited.stderr
