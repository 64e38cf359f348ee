"""Built-in plugin: runs Python blocks in persistent worker processes (torch imported once each)."""

from __future__ import annotations

import os
import queue
import threading
from typing import TYPE_CHECKING

from kernelnotes.plugins.hookspecs import hookimpl
from kernelnotes.results import FAILED, RunResult
from kernelnotes.worker import WorkerError, WorkerProcess

if TYPE_CHECKING:
    from kernelnotes.note import Note, Snippet
    from kernelnotes.pipeline import RunContext

LANGUAGES = {"python", "py", "python3", "pycon"}
STASH_KEY = "python-runner"


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
    """A pool of `jobs` workers. A worker is replaced when it dies, times out, or when the project's
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
        if options.memory_limit_mb:
            env["KERNELNOTES_MEMORY_LIMIT_MB"] = str(options.memory_limit_mb)
        if context.settings.plugins_dir:
            env["KERNELNOTES_PLUGINS_DIR"] = str(context.settings.plugins_dir)
        self.workers: queue.Queue[WorkerProcess] = queue.Queue()
        self.all = [WorkerProcess(env, cwd=context.settings.root) for _ in range(max(1, options.jobs))]
        for worker in self.all:
            self.workers.put(worker)
        self.project_hash = ""
        self._lock = threading.Lock()

    def run_session(self, note: Note, snippets: list[Snippet], context: RunContext) -> list[RunResult]:
        """Called from the pipeline's job threads: each takes a worker of its own from the pool."""
        self._restart_if_project_changed(context)
        worker = self.workers.get()
        try:
            return self._run(worker, note, snippets, context)
        finally:
            self.workers.put(worker)

    def _run(
        self, worker: WorkerProcess, note: Note, snippets: list[Snippet], context: RunContext
    ) -> list[RunResult]:
        options = context.options
        results: list[RunResult] = []
        display_path = _display_path(note, context)
        try:
            # every session starts from a clean namespace, with snippet modules imported afresh
            worker.request({"type": "reset", "purge_prefixes": [str(context.settings.snippets_dir)]}, 60)
        except WorkerError as exc:
            return [
                RunResult(status=FAILED, error=f"could not start the Python worker: {exc}") for _ in snippets
            ]
        lost = ""
        for snippet in snippets:
            block = context.block_options(snippet)
            timeout = block.timeout or options.timeout
            request = {
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
            }
            if lost:
                # the session's namespace died with the worker: running on would only give NameErrors
                results.append(RunResult(status=FAILED, error=f"not run: {lost}", retry=True))
                continue
            try:
                reply = worker.request(request, timeout)
                results.append(RunResult.from_dict(reply["result"]))
            except WorkerError as exc:
                results.append(RunResult(status=FAILED, error=f"{exc}", duration=timeout, retry=True))
                lost = f"an earlier block of this session (line {snippet.start_line}) ended the worker"
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


def _display_path(note: Note, context: RunContext) -> str:
    notes_dir = context.settings.notes_dir
    try:
        return (notes_dir / note.path).relative_to(context.settings.root).as_posix()
    except ValueError:
        return note.path
