"""What runs inside a note's process: the blocks of one session, and calls of its checked function.

The process is forked from the zygote (worker_main.py) for one session and killed after it, so
whatever a block does to process state dies with it. It is trusted with nothing: it answers the
zygote's requests on one socket, each reply must echo the request's nonce, and a check's verdict is
never its to give — it only returns what the function computed, as tensors (torch.save bytes),
to the checker process (checker_process.py), which compares them with the reference.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import sys
import time
import traceback
from typing import Any

from kernelnotes.protocol import ChannelClosed, recv, send
from kernelnotes.timing import timed

SNIPPET_FILE = "<kernelnotes-snippet>"


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


class NoteProcess:
    """Serves `run` and `call` requests on `fd` until told to end or the zygote goes away."""

    def __init__(self, fd: int, scratch: Any, pm: Any, fd_limit: int = 200_000) -> None:
        self.fd = fd
        self.scratch = scratch
        self.pm = pm
        self.fd_limit = fd_limit
        self.sessions: dict[str, dict[str, Any]] = {}
        self.limited = False

    def serve(self) -> None:
        while True:
            try:
                request, blobs = recv(self.fd)
            except ChannelClosed:
                return
            kind = request.get("type")
            out: list[bytes] = []
            if kind == "run":
                reply = self.run(request)
            elif kind == "call":
                reply, out = self.call(request, blobs)
            else:
                return
            reply["nonce"] = request.get("nonce")
            send(self.fd, reply, out)

    # ---- blocks ---------------------------------------------------------------------------------

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        self._apply_memory_limit(req)
        session = str(req.get("session", ""))
        namespace = self.sessions.setdefault(session, {"__name__": "__main__", "__builtins__": __builtins__})
        device = str(req.get("device", "cpu"))
        namespace["DEVICE"] = device
        out = BoundedWriter(int(req.get("output_limit", 1_000_000)))
        reply: dict[str, Any] = {"type": "ran", "status": "passed"}
        start = time.perf_counter()
        self._scratch_reset()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), _default_device(device):
                value = self._execute(req["code"], namespace)
            if value is not None:
                reply["value"] = _short_repr(value)
            check = req.get("check")
            if check:
                name, _, func_name = str(check).partition(":")
                func_name = func_name or name
                if not callable(namespace.get(func_name)):
                    raise LookupError(
                        f"check={check!r} needs the block to define a function {func_name}(...)"
                    )
        except SystemExit as exc:
            reply.update(status="failed", error=f"the snippet called sys.exit({exc.code!r})")
        except KeyboardInterrupt:
            reply.update(status="failed", error="interrupted")
        except BaseException as exc:  # a snippet may raise anything; report it, keep serving
            reply.update(status="failed", error=format_error(exc, req))
        reply["duration"] = time.perf_counter() - start
        reply["stdout"] = out.getvalue() + self.scratch_read()
        reply["figures"] = self._figures()
        return reply

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

    def _apply_memory_limit(self, req: dict[str, Any]) -> None:
        """The address-space limit of a CPU block. Not on CUDA: the driver reserves far more address
        space than it uses, so any useful limit would stop CUDA from starting."""
        limit = int(req.get("memory_limit_mb") or 0)
        if limit > 0 and not self.limited and req.get("device") == "cpu":
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit * 2**20, limit * 2**20))
            self.limited = True

    def _figures(self) -> list[dict[str, Any]]:
        from dataclasses import asdict

        try:
            return [asdict(f) for group in self.pm.hook.collect_figures() for f in group]
        except Exception as exc:  # a broken figure must not lose the snippet's result
            return [{"format": "text", "data": f"figure capture failed: {exc}"}]

    # ---- checked functions ----------------------------------------------------------------------

    def call(self, req: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        """Call the session's function on inputs the checker chose; return its outputs as tensors."""
        import torch

        function = self.sessions.get(str(req.get("session", "")), {}).get(str(req.get("function")))
        device = str(req.get("device", "cpu"))
        out = BoundedWriter(int(req.get("output_limit", 1_000_000)))
        try:
            args, kwargs = torch.load(io.BytesIO(blobs[0]), weights_only=True)
            if not callable(function):
                raise LookupError(f"no function {req.get('function')!r}")
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                # the one timing method (kernelnotes.timing): do_bench after a warm-up on CUDA
                value, ms = timed(lambda: function(*args, **kwargs), device, int(req.get("repeats", 1)))
        except BaseException as exc:  # reported to the checker as the function's own error
            return {
                "type": "returned",
                "ok": False,
                "error_type": type(exc).__name__,
                "error": str(exc)[:2000],
                "stdout": out.getvalue(),
            }, []
        reply: dict[str, Any] = {
            "type": "returned",
            "ok": True,
            "ms": ms,
            "stdout": out.getvalue(),
        }
        plain = _plain(value)
        if plain is _OPAQUE:
            reply["opaque"] = type(value).__name__
            return reply, []
        buffer = io.BytesIO()
        torch.save(plain, buffer)
        return reply, [buffer.getvalue()]

    # ---- output written to file descriptors -----------------------------------------------------

    def _scratch_reset(self) -> None:
        self.scratch.seek(0)
        self.scratch.truncate()

    def scratch_read(self) -> str:
        """Output written straight to file descriptors 1 and 2 (by C code or subprocesses)."""
        sys.stdout.flush()
        return read_scratch(self.scratch, self.fd_limit)


def read_scratch(scratch: Any, limit: int) -> str:
    scratch.seek(0)
    data = scratch.read(limit + 1)
    text = str(data[:limit].decode("utf-8", "replace"))
    if len(data) > limit:
        text += f"\n… output written to file descriptors truncated at {limit:,} bytes\n"
    return text


_OPAQUE = object()


def _plain(value: Any) -> Any:
    """The value with tensors detached to plain torch.Tensor, as torch.load(weights_only=True) reads
    it; _OPAQUE when it is not made of tensors, numbers, strings and containers of them."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor)
    if value is None or isinstance(value, bool | int | float | str | torch.dtype):
        return value
    if isinstance(value, tuple | list):
        items = [_plain(v) for v in value]
        if any(i is _OPAQUE for i in items):
            return _OPAQUE
        # plain containers only: a NamedTuple's class (the note's own) is neither rebuilt from a list
        # nor something torch.load(weights_only=True) may construct
        return tuple(items) if isinstance(value, tuple) else items
    return _OPAQUE


@contextlib.contextmanager
def _default_device(device: str) -> Any:
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


def format_error(exc: BaseException, req: dict[str, Any]) -> str:
    """A traceback trimmed to the user's code, with the note file's own line numbers."""
    source_map: list[list[Any]] = req.get("source_map") or []
    lines = [f"{type(exc).__name__}: {exc}"]
    if isinstance(exc, SyntaxError) and exc.filename == SNIPPET_FILE and exc.lineno:
        path, line = _map_line(source_map, exc.lineno, req)
        return f'  File "{path}", line {line}\n    {(exc.text or "").strip()}\nSyntaxError: {exc.msg}'
    here = os.path.dirname(__file__)
    frames = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == SNIPPET_FILE:
            path, line = _map_line(source_map, frame.lineno or 0, req)
            code_lines = req["code"].split("\n")
            text = code_lines[(frame.lineno or 1) - 1].strip() if frame.lineno else ""
            frames.append(f'  File "{path}", line {line}, in {frame.name}\n    {text}')
        elif frames and not frame.filename.startswith(here):
            frames.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
    if not frames:
        tail = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(here)]
        frames = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' for f in tail[-6:]]
    if not frames:
        return lines[0]
    return "Traceback (most recent call last):\n" + "\n".join(frames[-12:]) + "\n" + lines[0]


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
