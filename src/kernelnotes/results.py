"""What running a snippet produces: plain data that crosses the worker pipe, the runs table and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASSED, FAILED = "passed", "failed"


@dataclass
class CheckCase:
    """One example input of a kernel, compared between the snippet's function and the reference."""

    label: str
    dtype: str
    shape: str
    ok: bool
    max_abs: float | None = None
    max_rel: float | None = None
    bound: float | None = None  # the tolerance the error had to stay under
    message: str = ""
    snippet_ms: float | None = None
    reference_ms: float | None = None
    kernel_ms: float | None = None


@dataclass
class Figure:
    format: str  # "svg" or "png" (base64)
    data: str


@dataclass
class RunResult:
    """The outcome of one snippet. `error` holds a traceback trimmed to the note's own lines."""

    status: str
    stdout: str = ""
    value: str = ""  # repr of the block's last expression, like a REPL
    error: str = ""
    figures: list[Figure] = field(default_factory=list)
    check: list[CheckCase] = field(default_factory=list)
    check_name: str = ""
    duration: float = 0.0
    device: str = ""  # e.g. "cpu" or "NVIDIA H100 80GB HBM3"
    device_class: str = ""  # "cpu" or "cuda"
    versions: dict[str, str] = field(default_factory=dict)  # torch, triton, cuda, driver, python
    created_at: str = ""
    key: str = ""  # the cache key it was computed for
    code_key: str = ""  # the key without the device class: same code, same inputs
    retry: bool = False  # the worker timed out or died: run it again next time instead of caching

    @property
    def ok(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        data = dict(data)
        data["figures"] = [Figure(**f) for f in data.get("figures") or []]
        data["check"] = [CheckCase(**c) for c in data.get("check") or []]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})
