"""Faults of the index, with real processes: kill -9 midway, a damaged index.db, concurrent writers
and readers, and malformed results files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernelnotes.index import Index, open_db
from kernelnotes.results import RunResult
from kernelnotes.runs import RunStore

HOSTILE = Path(__file__).parent / "hostile"
KN = [sys.executable, "-c", "from kernelnotes.cli import main; main()"]
ENV = {**os.environ, "KERNELNOTES_LOAD_PLUGINS": "0", "NO_MKDOCS_2_WARNING": "1", "COLUMNS": "200"}
PARAGRAPH = "连续扩散模型把数据逐步加噪，再学习反向去噪的过程。score matching 估计对数密度的梯度。" * 8


def make_project(root: Path, n_notes: int) -> Path:
    """A project folder with `n_notes` notes (~2.5 KB each) and an mkdocs.yml; returns its root."""
    (root / "notes" / "posts").mkdir(parents=True)
    (root / "snippets").mkdir()
    (root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\n", encoding="utf-8"
    )
    (root / "notes" / "index.md").write_text("# 首页\n", encoding="utf-8")
    for i in range(n_notes):
        (root / "notes" / "posts" / f"n{i}.md").write_text(
            f"---\ntitle: 笔记 {i}\ndate: 2025-01-01\ntags: [扩散模型, t{i % 50}]\n---\n\n"
            f"# 笔记 {i}\n\n{PARAGRAPH}\n\n第 {i} 篇：采样 sampler{i}。\n",
            encoding="utf-8",
        )
    return root


def kn(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KN, *args], cwd=root, capture_output=True, text=True, env=ENV, timeout=timeout)


def start_kn(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*KN, *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def db_path(root: Path) -> Path:
    return root / ".kernelnotes" / "index.db"


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def count_notes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("select count(*) from notes").fetchone()[0]


def save_results(path: Path, n: int) -> None:
    store = RunStore(Index(path).db)
    for i in range(n):
        result = RunResult(
            status="passed", stdout=f"{i}\n", device="cpu", device_class="cpu", key=f"k{i}",
            created_at=f"2025-01-01T00:00:{i:02d}",
        )  # fmt: skip
        store.save("posts/n0.md", i, 10 + i, result)
    store.db.close()


# ---- kill -9 ---------------------------------------------------------------------------------------


def test_kill_9_of_kn_index_midway_leaves_a_consistent_index_and_no_lock(tmp_path):
    root = make_project(tmp_path, 1500)
    proc = start_kn(root, "index")
    wal = Path(str(db_path(root)) + "-wal")
    deadline = time.monotonic() + 120
    # The update is one transaction; once its pages spill into the WAL, it is midway.
    while (not wal.exists() or wal.stat().st_size < 2_000_000) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, "kn index finished before it could be killed midway"
    assert integrity(db_path(root)) == "ok"
    assert count_notes(db_path(root)) == 0  # all or nothing: the killed update left no half of itself
    # no stale lock: the next commands neither wait nor fail
    started = time.monotonic()
    again = kn(root, "index")
    assert again.returncode == 0, again.stderr
    assert "1501 added" in again.stderr and "locked" not in again.stderr
    assert time.monotonic() - started < 60
    found = kn(root, "search", "sampler7")
    assert found.returncode == 0 and "posts/n7.md" in found.stdout
    assert integrity(db_path(root)) == "ok"


# ---- a damaged index.db ------------------------------------------------------------------------------


def _garbage_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(os.urandom(100))


def _garbage_middle(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(16384))


def _truncated(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage", [_garbage_header, _garbage_middle, _truncated], ids=lambda f: f.__name__)
def test_damaged_index_is_reported_in_one_line_moved_aside_and_rebuilt(tmp_path, damage):
    root = make_project(tmp_path, 300)
    first = kn(root, "index")
    assert first.returncode == 0, first.stderr
    save_results(db_path(root), 3)
    with sqlite3.connect(db_path(root)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, then damage it
    damage(db_path(root))

    result = kn(root, "index")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "corrupt" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{db_path(root)}: error: the index was corrupt (")
    assert "moved it to index.db.corrupt-" in lines[0] and "kn results import" in lines[0]
    assert "Traceback" not in result.stderr
    assert "301 added" in result.stderr  # rebuilt from the notes
    assert (
        len([p for p in db_path(root).parent.glob("index.db.corrupt-*") if not p.name.endswith("-wal")]) == 1
    )
    assert integrity(db_path(root)) == "ok"
    found = kn(root, "search", "sampler42")
    assert found.returncode == 0 and "posts/n42.md" in found.stdout, found.stderr
    if damage is _garbage_header:  # nothing can be read back: the line says results were lost
        assert "0 recorded results kept" in lines[0]


@pytest.mark.parametrize("damage", [_garbage_header, _garbage_middle, _truncated], ids=lambda f: f.__name__)
def test_search_on_a_damaged_index_answers_without_a_traceback(tmp_path, damage):
    """`kn search` does not read the whole file first; damage its queries meet is repaired the same way."""
    root = make_project(tmp_path, 300)
    assert kn(root, "index").returncode == 0
    with sqlite3.connect(db_path(root)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    damage(db_path(root))
    result = kn(root, "search", "sampler42")
    assert result.returncode == 0, result.stderr
    assert "posts/n42.md" in result.stdout and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "corrupt" in line]) <= 1


def test_damage_only_a_query_sees_is_repaired_by_the_command_that_hits_it(tmp_path):
    """Garbage inside the full-text index's data passes `PRAGMA quick_check`; the search meets it."""
    root = make_project(tmp_path, 50)
    assert kn(root, "index").returncode == 0
    save_results(db_path(root), 2)
    with sqlite3.connect(db_path(root)) as conn:
        conn.execute("update notes_search_fts_data set block = randomblob(length(block)) where id > 10")
    result = kn(root, "search", "sampler7")
    assert result.returncode == 0, result.stderr
    assert "posts/n7.md" in result.stdout
    lines = [line for line in result.stderr.splitlines() if "corrupt" in line]
    assert len(lines) == 1 and "2 recorded results kept, none lost" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_open_db_salvages_readable_results_of_a_corrupt_file(tmp_path):
    path = tmp_path / "index.db"
    save_results(path, 4)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:  # damage the first table's root page (notes), not the runs table
        f.seek(4096 * 2)
        f.write(b"\xff" * 4096)
    notices: list[str] = []
    db = open_db(path, verify=True, notices=notices)
    assert len(notices) == 1 and "(database disk image is malformed: Page 3: btreeInitPage()" in notices[0]
    assert "4 recorded results kept, none lost" in notices[0]
    assert db.execute("select count(*) from runs").fetchone()[0] == 4
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---- concurrency -------------------------------------------------------------------------------------


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.mark.parametrize("round_", range(2))
def test_two_kn_index_at_once_and_index_racing_the_first_search_all_succeed(tmp_path, round_):
    root = make_project(tmp_path, 400)
    procs = [start_kn(root, "index"), start_kn(root, "index"), start_kn(root, "search", "sampler3")]
    (a, b, search) = _finish(procs)
    for _, _, err in (a, b, search):
        assert "locked" not in err and "Traceback" not in err, err
    assert a[0] == 0 and b[0] == 0, a[2] + b[2]
    assert search[0] == 0 and "posts/n3.md" in search[1], search[2]
    assert count_notes(db_path(root)) == 401 and integrity(db_path(root)) == "ok"


def test_index_search_run_results_and_mkdocs_build_together_never_see_a_locked_database(tmp_path):
    root = make_project(tmp_path, 300)
    results = tmp_path / "results"
    results.mkdir()
    (results / "posts").mkdir()
    (results / "posts" / "n0.md.json").write_text(
        json.dumps({"note": "posts/n0.md", "runs": [_export_row(i) for i in range(20)]}), encoding="utf-8"
    )
    writer = (
        "import sys; from kernelnotes.index import Index; from kernelnotes.runs import RunStore;"
        "from kernelnotes.results import RunResult;"
        "s = RunStore(Index(sys.argv[1]).db)\n"
        "for i in range(200): s.save('posts/n1.md', 0, 1, RunResult(status='passed', key=f'w{i}',"
        " device='cpu', device_class='cpu', created_at='2025-01-01'))"
    )
    procs = [
        start_kn(root, "index"),
        start_kn(root, "search", "sampler5"),
        start_kn(root, "run"),
        start_kn(root, "results", "import", str(results)),
        subprocess.Popen(
            [sys.executable, "-c", writer, str(db_path(root))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mkdocs",
                "build",
                "-q",
                "-f",
                str(root / "mkdocs.yml"),
                "-d",
                str(tmp_path / "site"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        ),
        start_kn(root, "index"),
    ]
    outcomes = _finish(procs)
    for rc, out, err in outcomes:
        assert "locked" not in out + err and "Traceback" not in err, err[-2000:]
        assert rc == 0, err[-2000:]
    with sqlite3.connect(db_path(root)) as conn:
        assert conn.execute("select count(*) from runs where key like 'w%'").fetchone()[0] == 200
        assert conn.execute("select count(*) from runs where key like 'imp%'").fetchone()[0] == 20
    assert integrity(db_path(root)) == "ok"


def test_mkdocs_serve_rebuilding_beside_kn_index_and_search_never_sees_a_locked_database(tmp_path):
    root = make_project(tmp_path, 300)
    log = tmp_path / "serve.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with log.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        )  # fmt: skip
    try:
        # serve's first build and kn create the index at the same moment
        for rc, _, err in _finish([start_kn(root, "index"), start_kn(root, "search", "sampler9")]):
            assert rc == 0 and "locked" not in err, err[-2000:]
        builds = _wait_for_builds(log, 1)
        for round_ in range(3):  # each edit makes serve rebuild (and update the index) while kn runs
            (root / "notes" / "posts" / f"n{round_}.md").write_text(f"# 改了 {round_}\n\n新正文\n", "utf-8")
            (root / "notes" / "posts" / f"new{round_}.md").write_text(
                f"# 新 {round_}\n\nfresh{round_}\n", "utf-8"
            )
            procs = [start_kn(root, "index"), start_kn(root, "search", "sampler9"), start_kn(root, "index")]
            for rc, _, err in _finish(procs):
                assert rc == 0 and "locked" not in err, err[-2000:]
            builds = _wait_for_builds(log, builds + 1)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=20)
    text = log.read_text(errors="replace")
    assert "locked" not in text and "Traceback" not in text, text[-3000:]
    assert integrity(db_path(root)) == "ok" and count_notes(db_path(root)) == 304


def _wait_for_builds(log: Path, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        # mkdocs drops a "Documentation built in" line equal to the one before (its DuplicateFilter),
        # so two rebuilds of the same length look like one: count serve's own per-build lines instead
        done = text.count("Serving on") + text.count("Reloading browsers")
        if done >= count:
            time.sleep(0.5)  # let the watcher settle before the next edit
            return done
        assert "Traceback" not in text, text[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {count} builds in:\n{log.read_text(errors='replace')[-3000:]}")


# ---- malformed results files -------------------------------------------------------------------------


def _export_row(i: int) -> dict[str, object]:
    return {
        "key": f"imp{i}", "device": "cpu", "device_class": "cpu", "snippet_idx": i, "start_line": 3 + i,
        "status": "passed", "stdout": "ok\n", "value": "", "error": "", "check_name": "", "code_key": "",
        "duration": 0.1, "created_at": "2025-01-02T00:00:00", "figures": [], "check": [], "versions": {},
    }  # fmt: skip


def test_malformed_results_file_is_one_line_naming_it_and_the_rest_imports(tmp_path):
    folder = tmp_path / "results"
    (folder / "posts").mkdir(parents=True)
    (folder / "posts" / "good.md.json").write_text(
        json.dumps({"note": "posts/good.md", "runs": [_export_row(0), _export_row(1)]}), encoding="utf-8"
    )
    shutil.copy(HOSTILE / "db-merge-conflict.md.json", folder / "posts" / "conflict.md.json")
    (folder / "posts" / "list.md.json").write_text("[1, 2]", encoding="utf-8")
    (folder / "posts" / "rows.md.json").write_text(
        json.dumps(
            {
                "note": "posts/rows.md",
                "runs": [{"key": 1}, _export_row(2), {**_export_row(3), "check": [{"x": 1}]}],
            }
        ),
        encoding="utf-8",
    )
    report = RunStore(Index(None).db).import_(folder)
    assert report.imported == 3  # good.md's two rows and rows.md's valid one
    by_file = {Path(p.path).name: p for p in report.problems}
    assert set(by_file) == {"conflict.md.json", "list.md.json", "rows.md.json"}
    conflict = str(by_file["conflict.md.json"])
    assert conflict.startswith(
        f"{os.path.relpath(folder / 'posts' / 'conflict.md.json')}:2: error: not valid JSON"
    )
    assert "\n" not in conflict and "kn results export" in conflict
    assert "2 of 3 results are malformed (first: #0)" in str(by_file["rows.md.json"])


def test_malformed_results_file_does_not_break_the_build(tmp_path):
    root = make_project(tmp_path, 2)
    (root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      results_dir: results\n",
        encoding="utf-8",
    )
    (root / "results" / "posts").mkdir(parents=True)
    shutil.copy(HOSTILE / "db-merge-conflict.md.json", root / "results" / "posts" / "n0.md.json")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", str(root / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True, text=True, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "n0.md.json" in line]
    assert len(lines) == 1 and "not valid JSON" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "site" / "posts" / "n1" / "index.html").is_file()
