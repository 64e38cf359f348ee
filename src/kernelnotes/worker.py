"""The parent's handle on a snippet worker (see worker_main.py for the other side).

The worker is a zygote: it imports torch once and forks a process per session, and it enforces
block timeouts and survives crashes of those processes itself. This handle is the last line: a
worker that stops answering (or dies) within the request's time is killed with its whole process
group and replaced, and the caller gets a clear error instead of a hang or a crash.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kernelnotes.protocol import read_message, write_message


class WorkerError(RuntimeError):
    """The worker did not answer: it timed out or died. The message says which and why."""


class WorkerProcess:
    def __init__(
        self, env: dict[str, str] | None = None, cwd: Path | None = None, start_timeout: float = 120.0
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.environment: dict[str, Any] = {}
        self.started = 0  # how many processes this handle has started (replacements included)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.close()
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kernelnotes.worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,  # a snippet's Ctrl-C or killpg does not reach the parent
        )
        self.started += 1
        self.environment = self._exchange({"type": "hello"}, self.start_timeout)["environment"]

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request (starting the worker if needed) and wait for its reply.

        Raises WorkerError when the worker times out (it is then killed) or dies.
        """
        if not self.alive:
            self.start()
        return self._exchange(message, timeout)

    def _exchange(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            write_message(self.proc.stdin, message)  # type: ignore[arg-type]
        except BrokenPipeError:
            raise WorkerError(self._death_reason()) from None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerError(f"timed out after {timeout:g} s; the worker was stopped and replaced")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                reply = read_message(self.proc.stdout)  # type: ignore[arg-type]
                if reply is None:
                    raise WorkerError(self._death_reason())
                return reply
            if self.proc.poll() is not None:
                raise WorkerError(self._death_reason())

    def _death_reason(self) -> str:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # alive but talking nonsense: stop it
            self.kill()
            return "the worker sent a broken reply and was stopped"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"the worker process was killed by {name}"
            if name == "SIGKILL":
                reason += " (out of memory, or killed from outside)"
        else:
            reason = f"the worker process exited with status {code}"
        self._log.seek(0)
        tail = self._log.read()[-2000:].decode("utf-8", "replace").strip()
        return reason + (f"\n{tail}" if tail else "")

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group outlives an exited leader
        except (ProcessLookupError, PermissionError):
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                write_message(self.proc.stdin, {"type": "exit"})  # type: ignore[arg-type]
                self.proc.wait(timeout=2)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()  # the whole process group: a block's own subprocesses end with the worker
        for stream in (self.proc.stdin, self.proc.stdout, self._log):
            if stream is not None:
                stream.close()
        self.proc = None
