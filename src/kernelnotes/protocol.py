"""Messages between the processes that run snippets: length-prefixed JSON, plus optional binary blobs.

A message is a 4-byte big-endian length and a JSON object. When the object has `"blobs": n`, n
binary parts follow, each an 8-byte length and its bytes (tensors saved with `torch.save`).
`read_message`/`write_message` work on buffered streams (the parent's pipes to the zygote);
`send`/`recv` work on raw file descriptors with a deadline, so a process can wait on an untrusted
peer (a note's process) without hanging, and never trusts a length it did not expect.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

MAX_JSON = 64 * 2**20  # a reply's text (output is cut far below this)
MAX_BLOB = 4 * 2**30  # one tensor payload


class ChannelClosed(EOFError):
    """The peer closed its end, or sent something that is not a message."""


class BadMessage(ChannelClosed):
    """The peer sent something that is not a well-formed message (its process may still be alive)."""


class ChannelTimeout(TimeoutError):
    """The deadline passed before a whole message arrived."""


class ParentGone(EOFError):
    """The process that started us went away while we waited on someone else."""


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


def send(fd: int, message: dict[str, Any], blobs: Sequence[bytes] = ()) -> None:
    if blobs:
        message = {**message, "blobs": len(blobs)}
    data = json.dumps(message, default=str).encode()
    parts = [struct.pack("!I", len(data)), data]
    for blob in blobs:
        parts += [struct.pack("!Q", len(blob)), blob]
    payload = memoryview(b"".join(parts))
    while payload:
        written = os.write(fd, payload)
        payload = payload[written:]


def recv(
    fd: int, deadline: float | None = None, watch: int | None = None
) -> tuple[dict[str, Any], list[bytes]]:
    """The next message on `fd` and its blobs.

    Raises ChannelTimeout past `deadline` (a time.monotonic() value), ChannelClosed on end of file or
    a malformed message, and ParentGone when `watch` (our own request pipe) becomes readable first:
    nothing is sent on it while we wait, so readable means the parent closed it.
    """
    (size,) = struct.unpack("!I", _read_exact(fd, 4, deadline, watch))
    if size > MAX_JSON:
        raise BadMessage(f"message of {size:,} bytes is over the limit")
    try:
        message = json.loads(_read_exact(fd, size, deadline, watch))
    except ValueError:
        raise BadMessage("a message that is not JSON") from None
    if not isinstance(message, dict):
        raise BadMessage("a message that is not a JSON object")
    blobs = []
    count = message.get("blobs", 0)
    if not isinstance(count, int) or not 0 <= count <= 4096:
        raise BadMessage("a bad blob count")
    for _ in range(count):
        (length,) = struct.unpack("!Q", _read_exact(fd, 8, deadline, watch))
        if length > MAX_BLOB:
            raise BadMessage(f"a blob of {length:,} bytes is over the limit")
        blobs.append(_read_exact(fd, length, deadline, watch))
    return message, blobs


def _read_exact(fd: int, size: int, deadline: float | None, watch: int | None) -> bytes:
    chunks, left = [], size
    fds = [fd] if watch is None else [fd, watch]
    while left:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise ChannelTimeout()
        ready, _, _ = select.select(fds, [], [], wait)
        if not ready:
            continue
        if fd not in ready:
            raise ParentGone()
        chunk = os.read(fd, min(left, 1 << 22))
        if not chunk:
            raise ChannelClosed("end of file")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
