"""The snippet worker process: imports torch once, then executes many snippets on request.

Protocol: length-prefixed JSON messages on the pipes it was started with (requests on stdin, replies
on a duplicate of the original stdout). File descriptors 1 and 2 are pointed at a scratch file so
that output written by C code cannot corrupt the protocol; it is collected after each snippet.
Run as `python -m kernelnotes.worker_main`.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import io
import json
import os
import platform
import struct
import sys
import tempfile
import time
import traceback
from typing import Any, BinaryIO

SNIPPET_FILE = "<kernelnotes-snippet>"


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None when the other side is gone (also mid-message)."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    (size,) = struct.unpack("!I", header)
    body = stream.read(size)
    if len(body) < size:
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    data = json.dumps(message, default=str).encode()
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


class BoundedWriter(io.TextIOBase):
    """A text sink that keeps the first `limit` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        # subprocess.run(..., stdout=sys.stdout) writes to fd 1, which goes to the scratch file
        return 1

    @property
    def buffer(self) -> _BytesToText:
        return _BytesToText(self)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += (
                f"\n… output truncated: {self.dropped:,} more characters not shown (limit {self.limit:,})\n"
            )
        return text


class _BytesToText:
    """`sys.stdout.buffer` for a BoundedWriter: bytes are decoded and kept with the text."""

    def __init__(self, text: BoundedWriter) -> None:
        self.text = text

    def write(self, data: bytes) -> int:
        self.text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        pass


class Worker:
    """Executes snippets in per-session namespaces; state lives until the next `reset`."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.pm: Any = None
        self.kernels: dict[str, Any] | None = None
        self.scratch = tempfile.TemporaryFile()
        self.fd_limit = 200_000
        self.environment = self._environment()
        # Choose Triton's interpreter (no GPU) before any block can import triton: triton.language
        # decorates its own helpers (tl.sum, tl.max, ...) at import time, and helpers decorated
        # without TRITON_INTERPRET break every interpreted kernel later in this process.
        import kernelnotes.kernels  # noqa: F401

    # ---- requests -------------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("type")
        if kind == "hello":
            return {"type": "hello", "environment": self.environment}
        if kind == "reset":
            self.reset(request.get("purge_prefixes") or [])
            return {"type": "reset"}
        if kind == "run":
            return {"type": "result", "result": self.run(request)}
        return {"type": "error", "message": f"unknown request {kind!r}"}

    def reset(self, purge_dirs: list[str]) -> None:
        """Forget every session and the modules imported from the project's snippet folders."""
        self.sessions.clear()
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if any(path.startswith(d) for d in purge_dirs):
                del sys.modules[name]
        # no gc.collect() here: with torch loaded it costs ~25 ms per session, and reference
        # counting already frees the dropped namespaces

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        session = req["session"]
        namespace = self.sessions.setdefault(session, {"__name__": "__main__", "__builtins__": __builtins__})
        device = self._resolve_device(req.get("device", "auto"))
        namespace["DEVICE"] = device
        out = BoundedWriter(int(req.get("output_limit", 1_000_000)))
        result: dict[str, Any] = {
            "status": "passed",
            "device_class": device,
            "device": self.environment["devices"].get(device, device),
            "versions": self.environment["versions"],
        }
        start = time.perf_counter()
        self._scratch_reset()
        try:
            with (
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(out),
                self._default_device(device),
            ):
                value = self._execute(req["code"], namespace)
            if value is not None:
                result["value"] = _short_repr(value)
            check = req.get("check")
            if check:
                result["check_name"] = check
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    cases = self._check(check, namespace, device, bench=bool(req.get("bench")))
                result["check"] = cases
                if not cases or not all(c["ok"] for c in cases):
                    result["status"] = "failed"
                    if not cases:
                        result["error"] = f"check {check!r} produced no cases"
        except SystemExit as exc:
            result.update(status="failed", error=f"the snippet called sys.exit({exc.code!r})")
        except KeyboardInterrupt:
            result.update(status="failed", error="interrupted")
        except BaseException as exc:  # a snippet may raise anything; report it, keep serving
            result.update(status="failed", error=self._format_error(exc, req))
        result["duration"] = time.perf_counter() - start
        result["stdout"] = out.getvalue() + self._scratch_read()
        result["figures"] = self._figures()
        result["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return result

    # ---- execution ------------------------------------------------------------------------------

    def _execute(self, code: str, namespace: dict[str, Any]) -> Any:
        """Run `code`; return the value of a final expression statement, as a REPL shows it."""
        tree = ast.parse(code, SNIPPET_FILE)
        last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        if last is not None:
            tree.body.pop()
        exec(compile(tree, SNIPPET_FILE, "exec"), namespace)
        if last is None:
            return None
        value = eval(compile(ast.Expression(last.value), SNIPPET_FILE, "eval"), namespace)
        return None if _is_figure(value) else value

    def _format_error(self, exc: BaseException, req: dict[str, Any]) -> str:
        """A traceback trimmed to the user's code, with the note file's own line numbers."""
        source_map: list[list[Any]] = req.get("source_map") or []
        lines = [f"{type(exc).__name__}: {exc}"]
        if isinstance(exc, SyntaxError) and exc.filename == SNIPPET_FILE and exc.lineno:
            path, line = _map_line(source_map, exc.lineno, req)
            return f'  File "{path}", line {line}\n    {(exc.text or "").strip()}\nSyntaxError: {exc.msg}'
        frames = []
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == SNIPPET_FILE:
                path, line = _map_line(source_map, frame.lineno or 0, req)
                code_lines = req["code"].split("\n")
                text = code_lines[(frame.lineno or 1) - 1].strip() if frame.lineno else ""
                frames.append(f'  File "{path}", line {line}, in {frame.name}\n    {text}')
            elif frames and not frame.filename.startswith(os.path.dirname(__file__)):
                frames.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if not frames:
            # raised outside the block's own code (e.g. by a kernel during a check): show where
            here = os.path.dirname(__file__)
            tail = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(here)]
            frames = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in tail[-6:]]
        if not frames:
            return lines[0]
        return "Traceback (most recent call last):\n" + "\n".join(frames[-12:]) + "\n" + lines[0]

    # ---- checks, figures, devices ---------------------------------------------------------------

    def _check(self, check: str, namespace: dict[str, Any], device: str, bench: bool) -> list[dict[str, Any]]:
        from dataclasses import asdict

        name, _, func_name = check.partition(":")
        kernels = self._kernels()
        if name not in kernels:
            raise LookupError(
                f"unknown kernel {name!r} in check=; known kernels: {', '.join(sorted(kernels))}"
            )
        func_name = func_name or name
        function = namespace.get(func_name)
        if not callable(function):
            raise LookupError(f"check={check!r} needs the block to define a function {func_name}(...)")
        cases = self._plugins().hook.check_snippet(
            function=function, kernel=kernels[name], device=device, bench=bench
        )
        if cases is None:
            raise LookupError("no plugin implements check_snippet")
        return [asdict(c) for c in cases]

    def _kernels(self) -> dict[str, Any]:
        if self.kernels is None:
            from kernelnotes.registry import load_kernels

            self.kernels = load_kernels(self._plugins())
        return self.kernels

    def _plugins(self) -> Any:
        if self.pm is None:
            from kernelnotes.plugins.manager import get_plugin_manager

            self.pm = get_plugin_manager(os.environ.get("KERNELNOTES_PLUGINS_DIR") or None)
        return self.pm

    def _figures(self) -> list[dict[str, Any]]:
        from dataclasses import asdict

        try:
            return [asdict(f) for group in self._plugins().hook.collect_figures() for f in group]
        except Exception as exc:  # a broken figure must not lose the snippet's result
            return [{"format": "text", "data": f"figure capture failed: {exc}"}]

    def _resolve_device(self, requested: str) -> str:
        if requested == "auto":
            return "cuda" if "cuda" in self.environment["devices"] else "cpu"
        return requested

    @contextlib.contextmanager
    def _default_device(self, device: str) -> Any:
        """Blocks marked device="cuda"/"auto" create tensors on the GPU without naming it."""
        if device != "cuda":
            yield
            return
        import torch

        torch.set_default_device("cuda")
        try:
            yield
        finally:
            torch.set_default_device(None)

    def _environment(self) -> dict[str, Any]:
        versions = {"python": platform.python_version()}
        devices = {"cpu": _cpu_name()}
        try:
            import torch

            versions["torch"] = torch.__version__
            if torch.cuda.is_available():
                devices["cuda"] = torch.cuda.get_device_name(0)
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

    def _scratch_reset(self) -> None:
        self.scratch.seek(0)
        self.scratch.truncate()

    def _scratch_read(self) -> str:
        """Output written straight to file descriptors 1 and 2 (by C code or subprocesses)."""
        sys.stdout.flush()
        self.scratch.seek(0)
        data = self.scratch.read(self.fd_limit + 1)
        text = data[: self.fd_limit].decode("utf-8", "replace")
        if len(data) > self.fd_limit:
            text += f"\n… output written to file descriptors truncated at {self.fd_limit:,} bytes\n"
        return text


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


def _map_line(source_map: list[list[Any]], lineno: int, req: dict[str, Any]) -> tuple[str, int]:
    if 0 < lineno <= len(source_map):
        path, line = source_map[lineno - 1]
        return str(path), int(line)
    return str(req.get("path", "?")), int(req.get("start_line", 0)) + lineno


def _is_figure(value: Any) -> bool:
    return type(value).__module__.startswith("matplotlib")


def _short_repr(value: Any, limit: int = 10_000) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<repr failed: {exc}>"
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit:,} more characters)"


def _apply_memory_limit() -> None:
    limit = int(os.environ.get("KERNELNOTES_MEMORY_LIMIT_MB", "0") or 0)
    if limit > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit * 2**20, limit * 2**20))


def main() -> None:
    # `python -m` puts the working directory (the project root) first on sys.path; drop it, so a
    # block can never import the top-level kernels/ or plugins/ folders under their bare names.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.getcwd():
        sys.path.pop(0)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.environ.setdefault("MPLBACKEND", "Agg")
    worker = Worker()
    # From here on fds 1 and 2 go to a scratch file read after each snippet.
    sys.stdout.flush()
    os.dup2(worker.scratch.fileno(), 1)
    os.dup2(worker.scratch.fileno(), 2)
    _apply_memory_limit()
    while True:
        request = read_message(requests)
        if request is None or request.get("type") == "exit":
            return
        write_message(replies, worker.handle(request))


if __name__ == "__main__":
    main()
