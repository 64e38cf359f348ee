"""The snippet worker: a zygote that imports torch and the kernels once and forks a process per session.

Run as `python -m kernelnotes.worker_main`; the parent (worker.py) talks to it with length-prefixed
JSON on stdin and on a duplicate of the original stdout. Three kinds of process:

- the zygote (this module's `Zygote`) never executes note code. It imports torch, Triton, the
  kernels and the plugins once, then relays requests. Its state is therefore the same warm, clean
  state for every note.
- a note's process (note_process.py), forked from the zygote for a note's first block and killed
  when the next note starts: nothing one note does to process state (torch defaults, patched
  modules such as kernelnotes.kernels.testing, sys.modules, environment, cwd, RNG) reaches another.
  The note's sessions run in it in page order, each in its own namespace. A spare is forked after
  each reply, while the parent stores the result, so a new note costs a hand-over, not a fork.
  It may write anywhere but the index (sandbox.WriteGuard, Landlock), and it has only its own socket
  to the zygote: the parent's pipes and the checker's socket are closed in it.
- the checker (checker_process.py), forked before any note code runs: it makes the example inputs,
  runs the reference and the Triton kernel, times them and compares; it sees the note's function
  only as outputs (tensors) sent back by the note's process.

The zygote owns the verdict: a block's status comes from its note's process, but a check's cases
only from the checker, and a reply that is not the expected one (a forged or out-of-order message,
wrong nonce) fails the block and ends its process. Timeouts and crashes are measured here too, so
the zygote stays warm: only the note's process is killed.

CUDA and fork: a process that initialised CUDA cannot fork children that use it. The zygote never
initialises CUDA: PYTORCH_NVML_BASED_CUDA_CHECK=1 makes `torch.cuda.is_available()` (called when the
kernels are imported) ask NVML instead of the CUDA runtime, the GPU's name is read in a short-lived
forked probe, and `_fork()` refuses to fork if torch.cuda.is_initialized() ever becomes true. Each
note's process and the checker initialise CUDA for themselves after the fork.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import platform
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kernelnotes.protocol import (
    BadMessage,
    ChannelClosed,
    ChannelTimeout,
    ParentGone,
    read_message,
    recv,
    send,
    write_message,
)

__all__ = ["main", "read_message", "write_message"]

# Fields a note's process may set in a block's result; everything else is the zygote's or the checker's.
_BLOCK_FIELDS = ("status", "stdout", "value", "error", "figures")


class Violation(Exception):
    """The note's process sent something other than the reply it was asked for."""


class Child:
    """A forked process and the zygote's end of its socket."""

    def __init__(self, pid: int, fd: int, scratch: Any = None) -> None:
        self.pid, self.fd, self.scratch = pid, fd, scratch


class Zygote:
    def __init__(self, requests: int, replies: Any) -> None:
        self.requests, self.replies = requests, replies
        self.exited: dict[int, int] = {}  # pid -> wait status of reaped children
        self.fd_limit = 200_000
        # Choose Triton's interpreter (no GPU) before any block can import triton: triton.language
        # decorates its own helpers at import time, and helpers decorated without TRITON_INTERPRET
        # break every interpreted kernel later in the process.
        import kernelnotes.kernels  # noqa: F401
        from kernelnotes.plugins.manager import get_plugin_manager
        from kernelnotes.registry import load_kernels
        from kernelnotes.sandbox import WriteGuard, set_child_subreaper, set_dumpable

        self.pm = get_plugin_manager(os.environ.get("KERNELNOTES_PLUGINS_DIR") or None)
        self.kernels = load_kernels(self.pm)  # every op module imported once, here
        self.environment = _environment(self)
        protected = [Path(p) for p in os.environ.get("KERNELNOTES_PROTECT", "").split(os.pathsep) if p]
        self.tmp = tempfile.mkdtemp(prefix="kernelnotes-")  # the notes' TMPDIR, made before the guard
        self.guard = WriteGuard(protected, writable=[Path(self.tmp)])
        self.environment["write_guard"] = "on" if self.guard.active else self.guard.reason
        set_dumpable(False)
        set_child_subreaper()  # a block's orphaned subprocesses come back to us, to be ended with its session
        gc.freeze()  # forked children do not copy-on-write the zygote's objects when they collect
        self.child: Child | None = None
        self.spare: Child | None = None
        self.checker: Child | None = None
        self.checker = self._fork_checker()

    # ---- requests from the parent ---------------------------------------------------------------

    def serve(self) -> None:
        requests = os.fdopen(self.requests, "rb")
        while True:
            request = read_message(requests)
            if request is None or request.get("type") == "exit":
                return
            try:
                reply = self.handle(request)
            except ParentGone:
                return
            write_message(self.replies, reply)
            if self.spare is None:
                self.spare = self._fork_note()  # after replying: the parent is busy storing the result

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("type")
        self._reap()
        if kind == "hello":
            return {"type": "hello", "environment": self.environment}
        if kind == "reset":
            self._end_child()
            return {"type": "reset"}
        if kind == "run":
            return {"type": "result", "result": self.run(request)}
        return {"type": "error", "message": f"unknown request {kind!r}"}

    def close(self) -> None:
        for child in (self.child, self.spare, self.checker):
            if child is not None:
                _kill(child.pid)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- one block ------------------------------------------------------------------------------

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        device = self._resolve_device(str(req.get("device", "auto")))
        timeout = float(req.get("timeout", 60))
        deadline = time.monotonic() + timeout
        result: dict[str, Any] = {
            "status": "passed",
            "device_class": device,
            "device": self.environment["devices"].get(device, device),
            "versions": self.environment["versions"],
        }
        if req.get("new_process"):
            self._end_child()  # the previous note's process: nothing of it reaches this note
        if self.child is None:
            self.child, self.spare = self.spare or self._fork_note(), None
        child = self.child
        start = time.perf_counter()
        request = {k: v for k, v in req.items() if k not in ("type", "new_process")}
        request.update(type="run", device=device, nonce=os.urandom(8).hex())
        try:
            send(child.fd, request)
            reply = self._reply(child, request, deadline)
            result.update({k: reply[k] for k in _BLOCK_FIELDS if k in reply})
            if result["status"] not in ("passed", "failed"):
                raise Violation("a block status that is neither passed nor failed")
            duration = float(reply.get("duration", 0.0))
            if req.get("check") and result["status"] == "passed":
                check_start = time.perf_counter()
                self._check(child, req, device, deadline, result)
                duration += time.perf_counter() - check_start
            result["duration"] = duration
        except ChannelTimeout:
            self._lose(child, result, f"timed out after {timeout:g} s; the block's process was stopped")
            result["duration"] = timeout
        except BadMessage as exc:
            self._lose(child, result, f"the block broke the worker protocol ({exc}); its process was stopped")
            result["duration"] = time.perf_counter() - start
        except (ChannelClosed, OSError):
            self._lose(child, result, self._death_reason(child))
            result["duration"] = time.perf_counter() - start
        except Violation as exc:
            self._lose(child, result, f"the block broke the worker protocol ({exc}); its process was stopped")
            result["duration"] = time.perf_counter() - start
        result["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return result

    def _reply(self, child: Child, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        expected = {"run": "ran", "call": "returned"}[request["type"]]
        reply, blobs = recv(child.fd, deadline, watch=self.requests)
        if reply.get("type") != expected or reply.get("nonce") != request["nonce"]:
            raise Violation(f"expected a {expected!r} reply to this request, got something else")
        reply["_blobs"] = blobs
        return reply

    def _check(
        self, child: Child, req: dict[str, Any], device: str, deadline: float, result: dict[str, Any]
    ) -> None:
        """The checker drives the check; the note's process only answers its calls, through us."""
        check = str(req["check"])
        result["check_name"] = check
        checker = self.checker
        assert checker is not None
        send(
            checker.fd,
            {
                "type": "check",
                "check": check,
                "device": device,
                "bench": bool(req.get("bench")),
                "session": req.get("session", ""),
            },
        )
        try:
            while True:
                message, blobs = recv(checker.fd, deadline, watch=self.requests)
                if message.get("type") == "call":
                    call = {
                        **message,
                        "nonce": os.urandom(8).hex(),
                        "output_limit": req.get("output_limit", 200_000),
                    }
                    send(child.fd, call, blobs)
                    reply = self._reply(child, call, deadline)
                    result["stdout"] = result.get("stdout", "") + str(reply.get("stdout", ""))
                    answer: dict[str, Any] = {"type": "returned"}
                    answer.update(
                        (k, reply[k]) for k in ("ok", "error_type", "error", "opaque", "ms") if k in reply
                    )
                    send(checker.fd, answer, reply["_blobs"][:1])
                elif message.get("type") == "cases":
                    cases = message.get("cases") or []
                    result["check"] = cases
                    if not cases or not all(c.get("ok") for c in cases):
                        result["status"] = "failed"
                        if not cases:
                            result["error"] = f"check {check!r} produced no cases"
                    return
                else:
                    result.update(status="failed", error=str(message.get("error", "the check failed")))
                    return
        except ParentGone:
            raise
        except BaseException:
            # the check did not finish (the note's process died, hung or misbehaved): the checker
            # is mid-check, so replace it with a fresh one from this clean process
            _kill(checker.pid)
            os.close(checker.fd)
            self.checker = self._fork_checker()
            raise

    def _lose(self, child: Child, result: dict[str, Any], error: str) -> None:
        """The session's process is gone or no longer trusted: end it; its namespace is lost."""
        tail = read_scratch_tail(child, self.fd_limit)
        self._end_child()
        result.update(status="failed", error=error, retry=True, lost=True)
        result.setdefault("stdout", tail)
        result.pop("check", None)

    def _death_reason(self, child: Child) -> str:
        status = self._wait(child.pid, 5)
        if status is None:
            return "the block's process sent a broken reply and was stopped"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            reason = f"the worker process was killed by {name}"
            if name == "SIGKILL":
                reason += " (out of memory, or killed from outside)"
            return reason
        return f"the worker process exited with status {os.WEXITSTATUS(status)}"

    # ---- processes ------------------------------------------------------------------------------

    def _fork(self) -> tuple[int, int]:
        """Fork with a socket to the child; returns (pid, our end) in the parent, (0, its end) in it."""
        import socket

        if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
            raise RuntimeError("CUDA was initialised in the zygote: its forked processes could not use it")
        ours, theirs = socket.socketpair()
        ours_fd, theirs_fd = ours.detach(), theirs.detach()
        pid = os.fork()
        if pid == 0:
            os.close(ours_fd)
            return 0, theirs_fd
        os.close(theirs_fd)
        return pid, ours_fd

    def _fork_checker(self) -> Child:
        from kernelnotes import checker_process
        from kernelnotes.sandbox import set_parent_death_signal

        pid, fd = self._fork()
        if pid:
            return Child(pid, fd)
        try:
            set_parent_death_signal()
            self._close_in_child(keep=fd)
            checker_process.serve(fd, self.pm, self.kernels)
        finally:
            os._exit(0)

    def _fork_note(self) -> Child:
        from kernelnotes.note_process import NoteProcess
        from kernelnotes.sandbox import set_parent_death_signal

        scratch = tempfile.TemporaryFile(dir=self.tmp)
        pid, fd = self._fork()
        if pid:
            return Child(pid, fd, scratch)
        code = 0
        try:
            set_parent_death_signal()
            self._close_in_child(keep=fd)
            os.dup2(scratch.fileno(), 1)
            os.dup2(scratch.fileno(), 2)
            self.guard.apply()
            os.environ["TMPDIR"] = tempfile.tempdir = self.tmp
            _fresh_random_state()
            import faulthandler

            faulthandler.enable()  # a segfault's Python traceback goes to the scratch file
            NoteProcess(fd, scratch, self.pm, self.fd_limit).serve()
        except BaseException:
            import traceback

            traceback.print_exc()  # into the scratch file: the zygote shows it with the failure
            code = 70
        finally:
            os._exit(code)

    def _close_in_child(self, keep: int) -> None:
        """A forked process keeps only its own socket: no way to the parent, the checker or a sibling."""
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, self.requests)
        os.close(null)
        siblings = [c for c in (self.checker, self.child, self.spare) if c]
        fds = {self.replies.fileno()} | {c.fd for c in siblings}
        fds |= {c.scratch.fileno() for c in siblings if c.scratch is not None}
        for fd in fds:
            if fd != keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if os.getppid() == 1:
            os._exit(0)

    def _end_child(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            _kill(child.pid)
            os.close(child.fd)
            if child.scratch is not None:
                child.scratch.close()
        self._kill_strays()

    def _kill_strays(self) -> None:
        """End processes a block left behind: as subreaper, the zygote inherits them when their
        parent dies. Anything of ours that is not the checker or a note's process is one."""
        ours = {c.pid for c in (self.checker, self.child, self.spare) if c}
        try:
            with open(f"/proc/self/task/{os.getpid()}/children", encoding="ascii") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return
        for pid in pids:
            if pid not in ours:
                _kill(pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = status
            if len(self.exited) > 1000:
                self.exited.pop(next(iter(self.exited)))

    def _wait(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if pid in self.exited:
                return self.exited.pop(pid)
            time.sleep(0.005)
        return None

    def _resolve_device(self, requested: str) -> str:
        if requested == "auto":
            return "cuda" if "cuda" in self.environment["devices"] else "cpu"
        return requested


def read_scratch_tail(child: Child, limit: int) -> str:
    from kernelnotes.note_process import read_scratch

    if child.scratch is None:
        return ""
    try:
        return read_scratch(child.scratch, limit)
    except (OSError, ValueError):
        return ""


def _fresh_random_state() -> None:
    """Seed the RNGs from the OS, as a new process would: every note's process is forked from the same
    zygote, and must not share its random numbers with the others."""
    import random

    random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _environment(zygote: Zygote) -> dict[str, Any]:
    versions = {"python": platform.python_version()}
    devices = {"cpu": _cpu_name()}
    try:
        import torch

        versions["torch"] = torch.__version__
        if torch.cuda.is_available():  # NVML-based here (see the module docstring): CUDA stays cold
            devices["cuda"] = _cuda_name(zygote)
            versions["cuda"] = str(torch.version.cuda)
            versions["driver"] = _nvidia_driver()
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        versions["triton"] = version("triton")
    except Exception:
        pass
    return {"versions": versions, "devices": devices, "pid": os.getpid()}


def _cuda_name(zygote: Zygote) -> str:
    """The GPU's name as torch reports it, asked in a forked probe so that the zygote never
    initialises CUDA itself."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            import torch

            os.write(write_end, json.dumps(torch.cuda.get_device_name(0)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while select.select([read_end], [], [], 120)[0]:
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    try:
        return str(json.loads(data))
    except ValueError:
        return "cuda"


def _nvidia_driver() -> str:
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    """The CPU model as results record it, e.g. "AMD EPYC 9454 (2 cores)"."""
    name = platform.processor() or platform.machine() or "cpu"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            name = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name
            )
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def main() -> None:
    # `python -m` puts the working directory (the project root) first on sys.path; drop it, so a
    # block can never import the top-level kernels/ or plugins/ folders under their bare names.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.getcwd():
        sys.path.pop(0)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # before torch is imported: see the docstring
    replies = os.fdopen(os.dup(1), "wb")
    log = os.fdopen(os.dup(2), "w")  # the parent's log of this worker: why it could not go on
    # From here on fds 1 and 2 go to a scratch file: stray output cannot corrupt the protocol.
    scratch = tempfile.TemporaryFile()
    os.dup2(scratch.fileno(), 1)
    os.dup2(scratch.fileno(), 2)
    zygote = None
    try:
        zygote = Zygote(0, replies)
        zygote.serve()
    except BaseException:
        import traceback

        traceback.print_exc(file=log)
        log.flush()
        raise
    finally:
        if zygote is not None:
            zygote.close()
        # the whole process group: a block's own subprocesses end with the worker
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":
    main()
