"""Glue shared by the front ends that run snippets: loading notes, building a pipeline, sharding."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

from kernelnotes.app import App
from kernelnotes.index import Index
from kernelnotes.note import Note
from kernelnotes.parse import IncludeResolver, parse_file
from kernelnotes.pipeline import Pipeline, RunOptions, note_files
from kernelnotes.problems import Problem
from kernelnotes.settings import Settings


def load_notes(settings: Settings, paths: list[Path] | None = None) -> tuple[list[Note], list[Problem]]:
    """Parse the notes to run (all of them by default); unparseable files become problems."""
    resolver = IncludeResolver(settings.root, settings.snippets_dir)
    notes, problems = [], []
    for path in note_files(settings.notes_dir, paths or []):
        result = parse_file(path, note_name(settings, path), resolver)
        problems += [p for p in result.problems if p.severity == "error"]
        if result.note is not None:
            notes.append(result.note)
    return notes, problems


def note_name(settings: Settings, path: Path) -> str:
    """How results name a note: its path under the notes folder; a file elsewhere (`kn run other/x.md`)
    by its path from the project root, or its absolute path, so two such files never share a name."""
    path = path.resolve()
    for base in (settings.notes_dir, settings.root):
        if path.is_relative_to(base.resolve()):
            return path.relative_to(base.resolve()).as_posix()
    return path.as_posix()


def make_pipeline(settings: Settings, index: Index, options: RunOptions) -> Pipeline:
    """A pipeline over an index the caller opened (tests, benchmarks); front ends use `App`."""
    return App(settings, index=index).pipeline(options)


def notes_to_run(app: App, paths: list[Path] | None = None) -> tuple[list[Note], list[Problem]]:
    """The notes to run, parsed once: those in the notes folder come from the index (updated first
    by the caller); files elsewhere (`kn run drafts/x.md`) are parsed here and their errors returned."""
    settings = app.settings
    files = note_files(settings.notes_dir, paths or [])
    inside = [p for p in files if p.is_relative_to(settings.notes_dir.resolve())]
    outside = [p for p in files if p not in inside]
    notes = app.index.parsed_notes(app.resolver, [note_name(settings, p) for p in inside]) if inside else []
    extra, problems = load_notes(settings, outside) if outside else ([], [])
    return sorted(notes + extra, key=lambda n: n.path), problems


def changed_paths(root: Path, notes_dir: Path) -> list[Path]:
    """Notes that git reports as modified, staged or untracked (any file name, any folder depth)."""
    top = Path(
        subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    out = subprocess.run(
        ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", str(notes_dir)],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    entries = out.split("\0")
    paths = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        if entry[0] in "RC":  # a rename or copy is followed by its old path
            i += 1
        paths.append(top / entry[3:])
    return [p for p in paths if p.exists() and p.suffix in (".md", ".ipynb")]


def select_shard(pipeline: Pipeline, notes: list[Note], shard: str) -> list[Note]:
    """Notes of shard K of N: greedy balance by recorded duration (1 s when never run), whole notes
    per shard so sessions stay together; deterministic for the same notes and recorded durations."""
    k, n = _parse_shard(shard)
    weights = []
    for note in notes:
        seconds = 0.0
        for s in pipeline.snippets(note):
            latest = pipeline.store.latest(note.path, s.index)
            seconds += latest[0].duration if latest else 1.0
        weights.append((seconds, note.path, note))
    loads = [0.0] * n
    chosen: list[Note] = []
    # heaviest first (ties: a hash of the path, then the path); each note goes to the least loaded
    # shard, the lowest index on ties. Shards agree when they read the same recorded durations.
    for seconds, _path, note in sorted(weights, key=lambda w: (-w[0], zlib.crc32(w[1].encode()), w[1])):
        target = min(range(n), key=lambda i: (loads[i], i))
        loads[target] += seconds
        if target == k - 1:
            chosen.append(note)
    return sorted(chosen, key=lambda note: note.path)


def _parse_shard(shard: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"--shard {shard!r}: write K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {shard!r}: K must be between 1 and N")
    return k, n
