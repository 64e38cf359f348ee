"""The checker process: compares a note's function with the reference kernel, out of the note's reach.

Forked from the zygote before any note code runs, it never executes note code: it makes the
kernel's example inputs, runs the `check_snippet` hook (the reference, the Triton kernel, the
comparison, the timings), and reaches the note's function only through `RemoteFunction`, which
sends the inputs to the note's process and reads back the outputs with
`torch.load(weights_only=True)` — tensors and plain containers, never code. So a note that patches
`kernelnotes.kernels.testing.compare`, replaces `torch.allclose` or forges a reply changes nothing
here. It is not dumpable: a same-user process cannot ptrace it or write its memory through /proc.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

from kernelnotes.protocol import ChannelClosed, recv, send


class RemoteAbort(BaseException):
    """The zygote gave up on the note's process (it died, hung or misbehaved): stop this check."""


class RemoteFunction:
    """The note's function, called in the note's process on the arguments given here.

    `timed()` runs it there `repeats` times and returns the last value with the median time in ms,
    measured around the call itself (the pipe and serialisation are not in the snippet's time).
    """

    def __init__(self, fd: int, name: str, session: str, device: str) -> None:
        self.fd, self.__name__, self.session, self.device = fd, name, session, device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.timed(args, kwargs, 1)[0]

    def timed(self, args: Any, kwargs: dict[str, Any], repeats: int) -> tuple[Any, float]:
        import torch

        buffer = io.BytesIO()
        torch.save((list(args), dict(kwargs)), buffer)
        request = {
            "type": "call",
            "function": self.__name__,
            "session": self.session,
            "device": self.device,
            "repeats": repeats,
        }
        send(self.fd, request, [buffer.getvalue()])
        reply, blobs = recv(self.fd)
        if reply.get("type") != "returned":
            raise RemoteAbort(str(reply.get("error", "the note's process did not answer")))
        if not reply.get("ok"):
            name = str(reply.get("error_type") or "Exception")
            raise type(name if name.isidentifier() else "Exception", (Exception,), {})(
                str(reply.get("error", ""))
            )
        if reply.get("opaque") is not None:
            name = str(reply["opaque"])
            return type(name if name.isidentifier() else "object", (), {})(), float(reply.get("ms", 0.0))
        if not blobs:
            raise RemoteAbort("the note's process returned no output")
        value = torch.load(io.BytesIO(blobs[0]), weights_only=True)
        return value, float(reply.get("ms", 0.0))


def serve(fd: int, pm: Any, kernels: dict[str, Any]) -> None:
    """Answer `check` requests from the zygote until it goes away."""
    while True:
        try:
            request, _ = recv(fd)
        except ChannelClosed:
            return
        if request.get("type") != "check":
            return
        try:
            reply = check(fd, pm, kernels, request)
        except RemoteAbort:
            continue  # the zygote already reported what happened to the note's process
        send(fd, reply)


def check(fd: int, pm: Any, kernels: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    name, _, func_name = str(request.get("check", "")).partition(":")
    if name not in kernels:
        known = ", ".join(sorted(kernels))
        return {
            "type": "error",
            "error": f"LookupError: unknown kernel {name!r} in check=; known kernels: {known}",
        }
    function = RemoteFunction(fd, func_name or name, str(request.get("session", "")), str(request["device"]))
    try:
        cases = pm.hook.check_snippet(
            function=function,
            kernel=kernels[name],
            device=request["device"],
            bench=bool(request.get("bench")),
        )
    except RemoteAbort:
        raise
    except Exception as exc:
        return {"type": "error", "error": f"the check failed: {type(exc).__name__}: {exc}"}
    if cases is None:
        return {"type": "error", "error": "LookupError: no plugin implements check_snippet"}
    return {"type": "cases", "cases": [asdict(c) for c in cases]}
