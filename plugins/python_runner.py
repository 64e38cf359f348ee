"""Built-in plugin: runs Python blocks in worker zygotes (torch imported once each), one forked
process per note (see kernelnotes.worker_main)."""

from __future__ import annotations

import os
import queue
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from kernelnotes.limits import block_limits, run_limits
from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import FAILED, RunResult
from kernelnotes.worker import WorkerError, WorkerProcess

if TYPE_CHECKING:
    from kernelnotes.note import Note, Snippet
    from kernelnotes.pipeline import RunContext

LANGUAGES = {"python", "py", "python3", "pycon"}
STASH_KEY = "python-runner"
# The worker enforces each block's timeout itself and stays warm; the parent waits this much longer
# before it declares the whole worker hung and replaces it.
WORKER_GRACE_S = 30.0


@hookimpl
def exec_languages() -> list[str]:
    return sorted(LANGUAGES - {"pycon"})


@hookimpl
def choose_runner(snippet: Snippet, context: RunContext) -> PythonRunner | None:
    if snippet.language not in LANGUAGES:
        return None
    runner = context.stash.get(STASH_KEY)  # called under context.lock
    if runner is None:
        runner = context.stash[STASH_KEY] = PythonRunner(context)
    return runner


class PythonRunner:
    """A pool of `jobs` workers. A worker is replaced when it dies, hangs, or when the project's
    own code (kernels, plugins) changed since it started, so no stale module is ever served."""

    def __init__(self, context: RunContext) -> None:
        options = context.options
        # Split the cores between the workers: torch's default of one thread per core in each of
        # `jobs` workers oversubscribes a small machine, and small-tensor blocks then run 8-30x slower.
        threads = str(max(1, (os.cpu_count() or 1) // max(1, options.jobs)))
        env = {
            "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(context.settings.snippets_dir), os.environ.get("PYTHONPATH")) if p
            ),
            "OMP_NUM_THREADS": threads,
        }
        # what a block's process may not write (kernelnotes.sandbox): the index, the recorded results
        # merged into every build, and the code that checks results
        env["KERNELNOTES_PROTECT"] = os.pathsep.join(str(p) for p in protected_paths(context))
        self.limits = run_limits(context.settings, options)
        if context.settings.plugins_dir:
            env["KERNELNOTES_PLUGINS_DIR"] = str(context.settings.plugins_dir)
        self.workers: queue.Queue[WorkerProcess] = queue.Queue()
        self.all = [WorkerProcess(env, cwd=context.settings.root) for _ in range(max(1, options.jobs))]
        for worker in self.all:
            self.workers.put(worker)
        self.project_hash = ""
        self._lock = threading.Lock()
        # per worker: the note its current process belongs to, and the last block index it ran
        self._last: dict[int, tuple[weakref.ref[Note], int]] = {}

    def run_session(self, note: Note, snippets: list[Snippet], context: RunContext) -> list[RunResult]:
        """Called from the pipeline's job threads: each takes a worker of its own from the pool."""
        self._restart_if_project_changed(context)
        worker = self.workers.get()
        try:
            return self._run(worker, note, snippets, context)
        finally:
            self.workers.put(worker)

    def warm_up(self, context: RunContext) -> None:
        """Start one worker now (torch imported), unless one is running the current code already."""
        self._restart_if_project_changed(context)
        worker = self.workers.get()
        try:
            if not worker.alive:
                worker.start()
        except WorkerError:
            pass  # the block that needs the worker reports why it could not start
        finally:
            self.workers.put(worker)

    def _run(
        self, worker: WorkerProcess, note: Note, snippets: list[Snippet], context: RunContext
    ) -> list[RunResult]:
        options = context.options
        results: list[RunResult] = []
        if not snippets:
            return results
        display_path = _display_path(note, context)
        try:
            if not worker.alive:
                worker.start()
        except WorkerError as exc:
            return [
                RunResult(status=FAILED, error=f"could not start the Python worker: {exc}") for _ in snippets
            ]
        # A note's sessions share one process forked for the note, in page order (each in its own
        # namespace); any other note, or this note again in a later run, gets a fresh process.
        last = self._last.pop(id(worker), None)
        same_note = last is not None and last[0]() is note and snippets[0].index > last[1]
        lost = ""
        for snippet in snippets:
            block = context.block_options(snippet)
            limits = block_limits(snippet, self.limits)
            timeout = limits["timeout"]
            request = {
                **limits,
                "type": "run",
                "code": snippet.code,
                "session": snippet.session,
                "index": snippet.index,
                "path": display_path,
                "start_line": snippet.start_line,
                "source_map": [[p or display_path, line] for p, line in snippet.source_map],
                "device": block.device or options.device,
                "check": block.check,
                "bench": block.bench,
                "output_limit": options.output_limit,
                # a note's first block runs in a freshly forked process: clean modules and state
                "new_process": snippet is snippets[0] and not same_note,
            }
            if lost:
                # the session's namespace died with the worker: running on would only give NameErrors
                results.append(RunResult(status=FAILED, error=f"not run: {lost}", retry=True))
                continue
            try:
                reply = worker.request(request, timeout + WORKER_GRACE_S)
                results.append(RunResult.from_dict(reply["result"]))
                if reply["result"].get("lost"):
                    lost = f"an earlier block of this session (line {snippet.start_line}) ended its process"
            except WorkerError as exc:
                results.append(RunResult(status=FAILED, error=f"{exc}", duration=timeout, retry=True))
                lost = f"an earlier block of this session (line {snippet.start_line}) ended the worker"
        if not lost:
            self._last[id(worker)] = (weakref.ref(note), snippets[-1].index)
        return results

    def _restart_if_project_changed(self, context: RunContext) -> None:
        current = context.code_version
        with self._lock:
            if current != self.project_hash:
                self.project_hash = current
                for worker in self.all:
                    if worker.alive:
                        worker.close()

    def close(self) -> None:
        for worker in self.all:
            worker.close()


def protected_paths(context: RunContext) -> list[Path]:
    """The index, the results folder (settings' `results_dir` when it has one, else `results/`) and
    the folders of the kernelnotes package (its core, kernels/ and plugins/)."""
    import importlib.util

    settings = context.settings
    results_dir = settings.results_dir or settings.root / "results"
    paths = [Path(settings.db_path), Path(results_dir)]
    if settings.plugins_dir is not None:
        paths.append(settings.plugins_dir)  # local plugins register kernels the checker uses
    for name in ("kernelnotes", "kernelnotes.kernels", "kernelnotes.plugins"):
        spec = importlib.util.find_spec(name)
        paths += [Path(p) for p in (spec.submodule_search_locations or [] if spec else [])]
    return paths


def _display_path(note: Note, context: RunContext) -> str:
    notes_dir = context.settings.notes_dir
    try:
        return (notes_dir / note.path).relative_to(context.settings.root).as_posix()
    except ValueError:
        return note.path
