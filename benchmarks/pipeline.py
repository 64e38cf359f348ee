"""Benchmark: the snippet pipeline against markdown-exec, side by side in one run.

    python benchmarks/pipeline.py            # the repository's notes (several minutes)
    python benchmarks/pipeline.py --quick    # a tiny generated site (the test suite runs this)

Measures the warm worker's per-snippet overhead, the cost of a note's fresh process (each note runs
in its own process forked from the worker's zygote), a cold build (nothing cached), a rebuild with
nothing changed, a build with the kernelnotes plugin switched off, a rebuild after editing one note,
and — when markdown-exec is installed — the same notes built by markdown-exec, which executes every
block in-process on every build. Each build is a fresh `mkdocs build` process, as CI and `serve` see it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "KERNELNOTES_LOAD_PLUGINS": "0", "MPLBACKEND": "Agg"}


def executed(log: str) -> str:
    """The plugin's own count from the build log ("kernelnotes: 109 blocks, 3 executed, ...")."""
    match = re.search(r"kernelnotes: (\d+) blocks, (\d+) executed", log)
    return f"{match[2]} of {match[1]} blocks executed" if match else ""


def build(config: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-f", str(config), "-d", str(config.parent / "site")],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=config.parent,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"build of {config} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def make_site(root: Path, quick: bool) -> None:
    if quick:
        (root / "notes" / "posts").mkdir(parents=True)
        (root / "snippets").mkdir()
        (root / "notes" / "index.md").write_text("# Home\n", encoding="utf-8")
        for i in range(3):
            blocks = "\n\n".join(
                f'```python exec="on" session="s"\nx{j} = {j} * {i}\nprint(x{j})\n```' for j in range(4)
            )
            (root / "notes" / "posts" / f"n{i}.md").write_text(f"# Note {i}\n\n{blocks}\n", encoding="utf-8")
        (root / "mkdocs.yml").write_text(
            "site_name: bench\ndocs_dir: notes\nplugins:\n  - kernelnotes\nmarkdown_extensions:\n"
            "  - admonition\n  - tables\n  - pymdownx.details\n  - pymdownx.superfences\n",
            encoding="utf-8",
        )
    else:
        shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
        for name in ("notes", "snippets", "overrides"):
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, root / name)


def variant(root: Path, name: str, option: str, extra_plugin: str = "") -> Path:
    """mkdocs.yml with one more kernelnotes option (e.g. `execute: false`), plus `extra_plugin`."""
    text = (root / "mkdocs.yml").read_text(encoding="utf-8")
    if "  - kernelnotes:\n" not in text:
        text = text.replace("  - kernelnotes\n", "  - kernelnotes:\n", 1)
    text = text.replace("  - kernelnotes:\n", f"  - kernelnotes:\n      {option}\n", 1)
    if extra_plugin:
        text = text.replace("  - kernelnotes:\n", f"  - {extra_plugin}\n  - kernelnotes:\n", 1)
    path = root / f"mkdocs-{name}.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _overhead(texts: list[str], per_block: bool) -> tuple[float, float]:
    """Median and worst overhead (ms, per block or per note) of a warm worker beyond the blocks' own
    run time, over 3 runs of these notes (the first run, which starts the worker, is not counted)."""
    from kernelnotes.index import Index
    from kernelnotes.parse import IncludeResolver, parse_markdown
    from kernelnotes.pipeline import RunOptions
    from kernelnotes.running import make_pipeline
    from kernelnotes.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "notes").mkdir()
        settings = load_settings(notes=root / "notes", db=root / "kn.db", cwd=root)
        pipeline = make_pipeline(settings, Index(None), RunOptions(force=True))
        parsed = [
            parse_markdown(t, f"bench{i}.md", IncludeResolver(root, root)).note for i, t in enumerate(texts)
        ]
        notes = [n for n in parsed if n is not None]
        try:
            pipeline.run(notes)  # start the worker (imports torch once)
            overheads = []
            for _ in range(3):
                start = time.perf_counter()
                outcomes = pipeline.run(notes)
                wall = time.perf_counter() - start
                own = sum(o.result.duration for o in outcomes if o.result)
                overheads.append((wall - own) / (len(outcomes) if per_block else len(notes)) * 1e3)
        finally:
            pipeline.close()
    return statistics.median(overheads), max(overheads)


def snippet_overhead(n: int = 40) -> tuple[float, float]:
    """Per-block overhead (ms): one note of n blocks, each its own session."""
    return _overhead(["\n\n".join(f'```python exec="on"\nvalue_{i} = {i} + 1\n```' for i in range(n))], True)


def note_overhead(n: int = 20) -> tuple[float, float]:
    """Per-note overhead (ms): n notes of one block each, so each block runs in a freshly forked process."""
    return _overhead([f'```python exec="on"\nvalue = {i} + 1\n```' for i in range(n)], False)


def main(argv: list[str] | None = None) -> list[tuple[str, float, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a tiny generated site instead of the repository's notes"
    )
    args = parser.parse_args(argv)
    rows: list[tuple[str, float, str]] = []
    overhead, worst = snippet_overhead(10 if args.quick else 40)
    rows.append(
        ("per-block overhead, warm worker", overhead / 1e3, f"≤ 30 ms (worst of 3 runs {worst:.1f} ms)")
    )
    per_note, worst = note_overhead(5 if args.quick else 20)
    rows.append(
        (
            "per-note overhead (a fresh forked process)",
            per_note / 1e3,
            f"one-block notes (worst of 3 runs {worst:.1f} ms)",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_site(root, args.quick)
        config = root / "mkdocs.yml"
        cold, log = build(config)
        rows.append(("cold build (nothing cached)", cold, executed(log)))
        noop, log = build(config)
        rows.append(("rebuild, nothing changed", noop, executed(log)))
        no_exec, _ = build(variant(root, "no-exec", "execute: false"))
        rows.append(
            (
                "build with execution off (recorded results shown)",
                no_exec,
                f"rebuild / this = {noop / no_exec:.2f} (target ≤ 1.2)",
            )
        )
        off_s, _ = build(variant(root, "off", "enabled: false"))
        rows.append(("build with the kernelnotes plugin off (no results)", off_s, ""))
        note = next(
            p
            for p in sorted((root / "notes").rglob("*.md"), reverse=True)
            if 'exec="on"' in p.read_text("utf-8")
        )
        lines = note.read_text(encoding="utf-8").split("\n")
        first = next(i for i, line in enumerate(lines) if 'exec="on"' in line)
        lines.insert(first + 1, "edited = True  # a code change: this block (and its session) must run again")
        note.write_text("\n".join(lines), encoding="utf-8")
        one, log = build(config)
        rows.append((f"rebuild after editing one block of {note.name}", one, executed(log)))
        try:
            import markdown_exec  # noqa: F401
        except ImportError:
            rows.append(("markdown-exec build", float("nan"), "not installed: pip install markdown-exec"))
        else:
            peer = variant(root, "markdown-exec", "enabled: false", "markdown-exec")
            first, _ = build(peer)
            second, _ = build(peer)
            rows.append(("markdown-exec build", first, "executes every block in-process"))
            rows.append(
                (
                    "markdown-exec rebuild, nothing changed",
                    second,
                    f"kernelnotes is {second / noop:.1f}x faster",
                )
            )
    table = Table("measure", "seconds", "note", title="KernelNotes pipeline vs markdown-exec")
    for name, seconds, note_text in rows:
        table.add_row(name, f"{seconds:.3f}", note_text)
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
