"""`mkdocs serve`: an edit re-runs only the edited note's changed block; snippet files are watched."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

NOTE = '# {title}\n\n```python exec="on"\nprint("{text}")\n```\n\n```python exec="on"\nfrom helper import value\nprint(value(), "{title}")\n```\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(log: Path, pattern: str, count: int, timeout: float = 60) -> list[str]:
    """The lines matching `pattern` once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, log.read_text(errors="replace"))
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {count}x {pattern!r} in:\n{log.read_text(errors='replace')[-3000:]}")


def test_serve_reruns_only_what_changed(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "helper.py").write_text("def value():\n    return 1\n")
    for name in ("a", "b"):
        (tmp_path / "notes" / f"{name}.md").write_text(NOTE.format(title=name, text=name), encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\nmarkdown_extensions:\n  - admonition\n"
        "  - pymdownx.details\n  - pymdownx.superfences\n",
        encoding="utf-8",
    )
    log = tmp_path / "serve.log"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "KERNELNOTES_LOAD_PLUGINS": "0"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{free_port()}"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        pattern = r"kernelnotes: (\d+) blocks, (\d+) executed"
        assert wait_for(log, pattern, 1)[0] == ("4", "4")
        # progress in the serve log: each executed block as done/total
        progress = re.findall(r"kernelnotes: block (\d+)/(\d+) ran: (\w+\.md):\d+", log.read_text())
        assert sorted(progress) == [
            ("1", "4", "a.md"),
            ("2", "4", "a.md"),
            ("3", "4", "b.md"),
            ("4", "4", "b.md"),
        ]
        wait_for(log, r"Serving on", 1)
        time.sleep(1.0)  # let the watcher settle before editing
        (tmp_path / "notes" / "a.md").write_text(NOTE.format(title="a", text="edited"), encoding="utf-8")
        assert wait_for(log, pattern, 2)[1] == ("4", "1")  # only the edited block ran
        time.sleep(1.0)
        (tmp_path / "snippets" / "helper.py").write_text("def value():\n    return 2\n")
        assert wait_for(log, pattern, 3)[2] == ("4", "2")  # the two blocks importing helper
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
