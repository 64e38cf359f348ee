"""Execution limits honoured by every front end and part of the cache key; kill -9 of the worker or of
`kn run` leaves a consistent index and no processes behind (issue 13, items 4 and 7)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from kernelnotes.cache import KeyMaker
from kernelnotes.index import Index
from kernelnotes.limits import Limits
from kernelnotes.parse import parse_markdown
from kernelnotes.pipeline import RunOptions
from kernelnotes.running import load_notes, make_pipeline
from kernelnotes.settings import load_settings

BIG = '# 大块内存\n\n```python exec="on"\nblob = bytearray(6 * 2**30)\nprint("allocated")\n```\n'


def mkdocs_yml(root: Path, options: str = "") -> None:
    text = "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      db: kn.db\n"
    (root / "mkdocs.yml").write_text(text + "".join(f"      {o}\n" for o in options.split(";") if o))


def kn(root: Path, *args: str):  # type: ignore[no-untyped-def]
    from kernelnotes.cli import build_cli

    cwd = os.getcwd()
    os.chdir(root)
    try:
        return CliRunner().invoke(build_cli(), list(args))
    finally:
        os.chdir(cwd)


def test_kn_run_honours_the_memory_limit_of_mkdocs_yml_and_a_new_limit_reruns(project):
    project.note("big.md", BIG)
    mkdocs_yml(project.root, "memory_limit_mb: 4096")
    limited = kn(project.root, "run")
    assert limited.exit_code == 1 and "MemoryError" in limited.output, limited.output
    mkdocs_yml(project.root)  # no limit: the cached failure is not this run's result
    free = kn(project.root, "run")
    assert free.exit_code == 0 and "1 executed" in free.output, free.output
    mkdocs_yml(project.root, "memory_limit_mb: 5000")  # and the pass is not served under a limit
    again = kn(project.root, "run")
    assert again.exit_code == 1 and "1 executed" in again.output and "MemoryError" in again.output


def test_a_changed_timeout_reruns_and_the_key_holds_every_limit(project):
    project.note("t.md", '# T\n\n```python exec="on"\nprint("quick")\n```\n')
    mkdocs_yml(project.root)
    assert "1 executed" in kn(project.root, "run").output
    assert "0 executed, 1 cached" in kn(project.root, "run").output
    assert "1 executed" in kn(project.root, "run", "--timeout", "30").output
    snippet = parse_markdown('```python exec="on"\nx = 1\n```\n', "k.md", project.resolver()).note.snippets
    keys = {
        KeyMaker(project.snippets, "cpu", limits=limits).keys(snippet)[0][0]
        for limits in (Limits(), Limits(timeout=30), Limits(memory_limit_mb=512))
    }
    assert len(keys) == 3
    assert KeyMaker(project.snippets, "cpu").keys(snippet) != KeyMaker(project.snippets, "cuda").keys(snippet)


def _wait_for(path: Path, seconds: float = 120) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.1)
    raise AssertionError(f"{path} was never written")


def _gone(pid: int, seconds: float = 20) -> bool:
    """The process no longer exists (or is a zombie waiting for a reaper that is not ours)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _hanging_note(project, marker: Path) -> None:  # type: ignore[no-untyped-def]
    marker.parent.mkdir()  # a new file directly in the index's folder (the root here) is refused
    project.note(
        "hang.md",
        f'# 挂起\n\n```python exec="on" timeout="300"\nimport os, subprocess, time\n'
        f'child = subprocess.Popen(["sleep", "300"])\n'
        f'open({str(marker)!r}, "w").write(f"{{os.getpid()}} {{os.getppid()}} {{child.pid}}\\n")\n'
        f"time.sleep(300)\n```\n\n"
        f'```python exec="on"\nprint("next block")\n```\n',
    )


def test_kill_9_of_the_worker_mid_block_fails_that_block_only(project):
    marker = project.root / "out" / "pids.txt"
    _hanging_note(project, marker)
    settings = load_settings(notes=project.notes, db=project.root / "kn.db", cwd=project.root)
    pipeline = make_pipeline(settings, Index(settings.db_path), RunOptions(timeout=300))
    found: list = []
    thread = threading.Thread(target=lambda: found.extend(pipeline.run(load_notes(settings)[0])))
    thread.start()
    try:
        block, zygote, sleeper = _wait_for(marker)
        os.kill(zygote, signal.SIGKILL)
        thread.join(120)
    finally:
        pipeline.close()
    hang, after = found
    assert hang.failed and "killed by SIGKILL" in hang.result.error and hang.result.retry
    assert after.result.ok and after.result.stdout == "next block\n"
    assert all(_gone(pid) for pid in (block, zygote, sleeper))
    db = sqlite3.connect(project.root / "kn.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM runs").fetchone() == (1,)  # the killed block is not cached


def test_kill_9_of_kn_run_leaves_no_process_and_a_consistent_index(project):
    marker = project.root / "out" / "pids.txt"
    _hanging_note(project, marker)
    project.note("ok.md", '# 好\n\n```python exec="on"\nprint("fine")\n```\n')
    mkdocs_yml(project.root)
    kn_run = subprocess.Popen(
        [str(Path(sys.executable).parent / "kn"), "run", "notes/hang.md"],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        block, zygote, sleeper = _wait_for(marker)
        kn_run.send_signal(signal.SIGKILL)
        kn_run.wait(10)
        assert all(_gone(pid) for pid in (block, zygote, sleeper))
    finally:
        kn_run.kill()
    db = sqlite3.connect(project.root / "kn.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rerun = kn(project.root, "run", "notes/ok.md")
    assert rerun.exit_code == 0, rerun.output


def test_pytest_notes_honours_the_memory_limit_of_mkdocs_yml(pytester):
    pytester.makefile(
        ".yml",
        mkdocs="site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      db: kn.db\n"
        "      memory_limit_mb: 4096\n",
    )
    (pytester.mkdir("notes") / "big.md").write_text(BIG, encoding="utf-8")
    result = pytester.runpytest_subprocess("notes")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*MemoryError*"])
