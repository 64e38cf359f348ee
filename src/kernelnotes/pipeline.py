"""The execution pipeline: which snippets run, what they depend on, and which results to show.

Every stage goes through the plugin hooks (collect_snippets, choose_runner, store_result, and in the
worker check_snippet and collect_figures), so the built-in Python runner and kernel checker are
plugins like any other. One pipeline serves the CLI (`kn run`), the mkdocs plugin and pytest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kernelnotes.blockattrs import BlockOptions
from kernelnotes.cache import KeyMaker
from kernelnotes.limits import run_limits
from kernelnotes.note import Note, Snippet
from kernelnotes.results import FAILED, RunResult
from kernelnotes.runs import RunStore
from kernelnotes.settings import Settings

if TYPE_CHECKING:
    from kernelnotes.app import App


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"  # default for blocks without device=; "auto" = cuda when present
    timeout: float = 60.0  # seconds per block unless timeout= says otherwise
    output_limit: int = 200_000  # characters of output kept per block
    memory_limit_mb: int = 0  # address-space limit of CPU workers (0 = none)
    jobs: int = 1  # worker processes
    force: bool = False  # run even when a fresh result is cached
    execute: bool = True  # False: show recorded results only (fresh or stale), run nothing


@dataclass
class Outcome:
    """A snippet with the result shown for it."""

    note_path: str
    snippet: Snippet
    key: str
    result: RunResult | None  # None: never run on this device class
    cached: bool = False
    stale: bool = False  # the result was computed for different code (e.g. an imported GPU result)
    # newest result on each other device, with whether it was recorded for other code (stale)
    others: list[tuple[RunResult, bool]] = field(default_factory=list)

    @property
    def expected_to_fail(self) -> bool:
        """`expect="fail"` marks a block that demonstrates a failure (a deliberately wrong kernel)."""
        return self.snippet.options.expect == "fail"

    @property
    def failed(self) -> bool:
        """Whether this block breaks the build: it failed, or it passed while expected to fail."""
        if self.result is None or self.stale:
            return False
        return (self.result.status == FAILED) != self.expected_to_fail

    def failure_line(self) -> str:
        """One line saying why the block failed, for logs and CLI output."""
        if self.result is None or not self.failed:
            return ""
        if self.expected_to_fail:
            return 'passed, but it is marked expect="fail"'
        if self.result.error:
            return self.result.error.strip().split("\n")[-1]
        bad = [c for c in self.result.check if not c.ok]
        return f"check {self.result.check_name}: {len(bad)} of {len(self.result.check)} cases fail"


class Runner(Protocol):
    """Executes the blocks of one session in order; returns one result per block.

    `run_session` is called from up to `context.options.jobs` threads at once (one session each), so
    a runner shared between sessions must be thread-safe. A runner may also define
    `warm_up(context)`: `mkdocs serve` calls it from a background thread after each build, so the
    first block an author edits does not wait for an interpreter to start.
    """

    def run_session(self, note: Note, snippets: list[Snippet], context: RunContext) -> list[RunResult]: ...

    def close(self) -> None: ...


@dataclass
class RunContext:
    """What the execution hooks (`choose_runner`, `store_result`) and runners receive.

    Public and documented (README "Hooks"); the pipeline itself stays internal.
    - `settings`: the project's resolved settings (root, notes and snippets folders, defaults).
    - `options`: this run's RunOptions (device, timeout, jobs, memory limit, force, execute).
    - `stash`: plugin state for the pipeline's lifetime (e.g. a pool of workers); objects with a
      `close()` method are closed with the pipeline. Guard it with `lock` from runner threads.
    - `lock`: serialises access to `stash` and `store` across the job threads.
    - `store`: the results store (RunStore) that `store_result` implementations write to.
    - `code_version`: a hash of every registered plugin's code and the kernels; runners restart
      long-lived workers when it changes, so no stale module is ever served.
    - `block_options(snippet)`: the block's typed attributes (plugin-declared ones included).
    """

    settings: Settings
    options: RunOptions
    store: RunStore
    block_options: Callable[[Snippet], BlockOptions]
    stash: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    code_version: str = ""


class Pipeline:
    """Runs what is not cached and says what to show for every block; built by `App.pipeline()`."""

    def __init__(self, app: App, options: RunOptions) -> None:
        self.app = app
        self.settings = app.settings
        self.index = app.index
        self.pm = app.pm
        self.options = options
        self.store = app.store
        self.context = RunContext(self.settings, options, self.store, app.block_options)
        self._lock = self.context.lock  # sqlite connection and stash are shared by job threads
        self.executed = 0
        self._sources: list[Path] | None = None
        # results not worth keeping (a timeout, a crash) from a `hold` run, for the next run only:
        # serve's preview runs a note's blocks, and the full build right after must not run them again
        self._held: dict[str, RunResult] = {}

    # ---- the public entry points ----------------------------------------------------------------

    def run(
        self, notes: Iterable[Note], progress: Callable[[Outcome], None] | None = None, hold: bool = False
    ) -> list[Outcome]:
        """Outcomes for every collected snippet of `notes`, executing what is not cached. `hold`:
        the next run reuses the results of this one that are not stored (timeouts, crashes)."""
        held, self._held = self._held, {}
        if self._sources is None:
            self._sources = self.app.plugin_sources()
        keys = self.key_maker()
        self.context.code_version = keys.project_hash()  # runners restart workers when it changed
        work = [(note, group) for note in notes for group in self._sessions(self.snippets(note))]
        if self.options.jobs > 1 and len(work) > 1:
            with ThreadPoolExecutor(self.options.jobs) as pool:
                chunks = list(
                    pool.map(lambda item: self._run_group(item[0], item[1], keys, progress, held, hold), work)
                )
        else:
            chunks = [self._run_group(note, group, keys, progress, held, hold) for note, group in work]
        return sorted((o for chunk in chunks for o in chunk), key=lambda o: (o.note_path, o.snippet.index))

    def warm_up(self, notes: Iterable[Note]) -> threading.Thread | None:
        """Start, in a background thread, the runners that the notes' executable blocks use and that
        can warm up (see Runner); returns the thread, or None when there is nothing to start."""
        if not self.options.execute:
            return None
        first: dict[str, Snippet] = {}
        for note in notes:
            for snippet in self.snippets(note):
                if snippet.executable:
                    first.setdefault(snippet.language, snippet)
        runners: list[Any] = []
        with self._lock:  # choose_runner is called under the lock (it fills the stash)
            for snippet in first.values():
                runner = self.pm.hook.choose_runner(snippet=snippet, context=self.context)
                if callable(getattr(runner, "warm_up", None)) and runner not in runners:
                    runners.append(runner)
        if not runners:
            return None
        thread = threading.Thread(
            target=lambda: [r.warm_up(self.context) for r in runners], name="kernelnotes-warm-up", daemon=True
        )
        thread.start()
        return thread

    def key_maker(self) -> KeyMaker:
        """Cache keys over this project's code: the snippets folder and every registered plugin."""
        if self._sources is None:
            self._sources = self.app.plugin_sources()
        return KeyMaker(
            self.settings.snippets_dir,
            self.options.device,
            sources=self._sources,
            declared=self.app.attribute_specs,
            limits=run_limits(self.settings, self.options),
        )

    def snippets(self, note: Note) -> list[Snippet]:
        found = [s for group in self.pm.hook.collect_snippets(note=note) for s in group or []]
        return sorted({s.index: s for s in found}.values(), key=lambda s: s.index)

    @property
    def stash(self) -> dict[str, Any]:
        return self.context.stash

    def close(self) -> None:
        for value in self.stash.values():
            close = getattr(value, "close", None)
            if callable(close):
                close()
        self.stash.clear()

    # ---- internals ------------------------------------------------------------------------------

    @staticmethod
    def _sessions(snippets: list[Snippet]) -> list[list[Snippet]]:
        """Blocks sharing a `session` run together in page order; any other block runs alone."""
        groups: dict[str, list[Snippet]] = {}
        for s in snippets:
            groups.setdefault(s.session, []).append(s)
        return sorted(groups.values(), key=lambda g: g[0].index)

    def _run_group(
        self,
        note: Note,
        group: list[Snippet],
        keys: KeyMaker,
        progress: Callable[[Outcome], None] | None,
        held: dict[str, RunResult],
        hold: bool,
    ) -> list[Outcome]:
        with self._lock:  # KeyMaker caches file hashes: one thread at a time
            group_keys = keys.keys(group)
        with self._lock:
            cached = [self.store.fresh(key) for key, _ in group_keys]
        again = [held.get(key) for key, _ in group_keys]  # run by the preview just before, not stored
        run_now = self.options.execute and (
            self.options.force or any(r is None and h is None for r, h in zip(cached, again))
        )
        if run_now:
            results = self._execute(note, group)
            for result, (key, code_key) in zip(results, group_keys):
                result.key, result.code_key = key, code_key
        outcomes = []
        for i, (snippet, (key, code_key)) in enumerate(zip(group, group_keys)):
            if run_now:
                outcome = Outcome(note.path, snippet, key, results[i])
                with self._lock:
                    self.executed += 1
                    if not results[i].retry:  # a timeout or crash is not a result worth keeping
                        self.pm.hook.store_result(outcome=outcome, context=self.context)
                    elif hold:
                        self._held[key] = results[i]
            else:
                outcome = Outcome(
                    note.path, snippet, key, cached[i] or again[i], cached=cached[i] is not None
                )
            with self._lock:
                latest = self.store.latest(note.path, snippet.index, code_key)
            shown = outcome.result.device if outcome.result else None
            outcome.others = [(r, r.code_key != code_key) for r in latest if r.device != shown]
            if outcome.result is None and outcome.others:
                # nothing for this code here: show the newest recorded result, stale unless its code matches
                outcome.result, outcome.stale = outcome.others.pop(0)
            if progress is not None:
                progress(outcome)
            outcomes.append(outcome)
        return outcomes

    def _execute(self, note: Note, group: list[Snippet]) -> list[RunResult]:
        with self._lock:
            runner = self.pm.hook.choose_runner(snippet=group[0], context=self.context)
        if runner is None:
            message = f"no runner for language {group[0].language or '(none)'!r}; install a plugin that provides one"
            return [RunResult(status=FAILED, error=message) for _ in group]
        # a block whose include is missing, or whose attributes are invalid, is not run: its code or
        # its settings are not what the author meant
        missing = {s.index: reason for s in group if (reason := self._not_runnable(s))}
        ran = iter(runner.run_session(note, [s for s in group if s.index not in missing], self.context))
        return [
            RunResult(status=FAILED, error=missing[s.index]) if s.index in missing else next(ran)
            for s in group
        ]

    def _not_runnable(self, snippet: Snippet) -> str:
        """Why a block cannot run as written (one line), or "" when it can."""
        reasons = [
            f'line {inc.line}: include "{inc.spec}" not found' for inc in snippet.includes if not inc.path
        ]
        reasons += [f"invalid attribute {e}" for e in self.app.block_options(snippet).errors]
        return "; ".join(reasons)


def note_files(notes_dir: Path, paths: Iterable[Path] = ()) -> list[Path]:
    """Note files to run: the given files or folders (default: the whole notes folder)."""
    from kernelnotes.index import NOTE_SUFFIXES, walk_notes

    chosen = list(paths) or [notes_dir]
    files: list[Path] = []
    for path in chosen:
        if path.is_dir():
            files += [p for p, _ in walk_notes(path)]
        elif path.suffix in NOTE_SUFFIXES:
            files.append(path)
    return sorted({p.resolve() for p in files})
