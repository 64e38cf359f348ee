"""The one schema of code-block attributes: `exec`, `session`, `check`, `timeout`, `device`, ...

Every attribute a block may carry is declared here once, with its type, default and the hint shown
when a value is wrong (markdown-exec's `validator` plays this role there). The parser, the pipeline,
the runners, the cache key and the fence all read a block's `BlockOptions`, never the raw strings, so
`exec="yes"` and `bench="yes"` mean the same thing everywhere and `timeout="abc"` is one clear line
for that block instead of a traceback. Plugins declare their own attributes through the
`block_attributes` hook; they are validated by the same code and reach runners in `options.extra`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRUE = frozenset({"on", "true", "1", "yes"})
FALSE = frozenset({"off", "false", "0", "no", ""})
DEVICES = ("auto", "cpu", "cuda")
SHOW = ("both", "source", "output")
EXPECT = ("pass", "fail")
_CHECK = re.compile(r"^[a-z][a-z0-9_]*(?::[A-Za-z_]\w*)?$")


class BadAttribute(ValueError):
    """A block attribute with a value outside its type; the message says what to write instead."""


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise BadAttribute(f"{value!r} is not on/off (write on or off)")


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise BadAttribute(f"{value!r} is not one of {', '.join(choices)} (write one of them)")
        return text

    return parse


def _seconds(value: object) -> float:
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise BadAttribute(f"{value!r} is not a number of seconds (write e.g. timeout=120)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadAttribute(f"{value!r} must be a positive number of seconds (write e.g. timeout=120)")
    return seconds


def _check(value: object) -> str:
    text = str(value).strip()
    if value is True or not _CHECK.match(text):
        raise BadAttribute(
            f'{value!r} is not a kernel name (write check="NAME" or check="NAME:function"; `kn kernels` lists them)'
        )
    return text


def _session(value: object) -> str:
    text = str(value).strip()
    if value is True or not text:
        raise BadAttribute('a session needs a name (write session="main")')
    return text


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute: its parser (raises BadAttribute with a hint), and whether it changes results.

    `render_only` attributes change how a result is shown, not what it is: editing them re-runs nothing
    (they are left out of the cache key).
    """

    name: str
    parse: Callable[[object], Any]
    help: str
    render_only: bool = False


BUILTIN: tuple[AttributeSpec, ...] = (
    AttributeSpec("exec", parse_bool, "run this block (on/off)"),
    AttributeSpec("session", _session, "blocks with the same session share one namespace, in page order"),
    AttributeSpec("check", _check, "compare the block's function with a reference kernel: NAME[:function]"),
    AttributeSpec("timeout", _seconds, "seconds this block may run (default: the timeout setting)"),
    AttributeSpec("device", _choice(DEVICES), "where the block runs: auto, cpu or cuda"),
    AttributeSpec("bench", parse_bool, "time the check over several repeats (on/off)"),
    AttributeSpec("show", _choice(SHOW), "what the page shows: both, source or output", render_only=True),
    AttributeSpec("expect", _choice(EXPECT), "fail: the block demonstrates a failure", render_only=True),
)
# Attributes of the fence itself (pymdownx.highlight, attr_list): shown, never interpreted by us.
PASSTHROUGH = frozenset({"title", "hl_lines", "linenums", "id", "class", "linenums_style"})


@dataclass(frozen=True)
class BlockOptions:
    """A block's attributes, typed. `None` means "the setting's default" (timeout, device)."""

    exec: bool = False
    session: str | None = None
    check: str | None = None
    timeout: float | None = None
    device: str | None = None
    bench: bool = False
    show: str = "both"
    expect: str = "pass"
    extra: Mapping[str, Any] = field(default_factory=dict)  # plugin-declared attributes, parsed
    errors: tuple[str, ...] = ()  # one message per bad attribute; a block with errors is not run

    @property
    def kernel(self) -> str | None:
        """The kernel name of `check=` (without the optional `:function`)."""
        return self.check.partition(":")[0] if self.check else None


def parse_options(attrs: Mapping[str, object], declared: Iterable[AttributeSpec] = ()) -> BlockOptions:
    """Type every known attribute of a block; each bad value becomes one message in `errors`.

    Unknown attributes are kept as they are in `extra` (superfences passes them to the HTML), so a
    plugin's attribute never breaks a note when that plugin is not installed.
    """
    specs = {s.name: s for s in (*BUILTIN, *declared)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    errors: list[str] = []
    for name, raw in attrs.items():
        spec = specs.get(name)
        if spec is None:
            if name not in PASSTHROUGH:
                extra[name] = raw
            continue
        try:
            value = spec.parse(raw)
        except BadAttribute as exc:
            errors.append(f"{name}: {exc}")
            continue
        if spec in BUILTIN:
            values[name] = value
        else:
            extra[name] = value
    return BlockOptions(**values, extra=extra, errors=tuple(errors))


def key_attrs(attrs: Mapping[str, object], declared: Iterable[AttributeSpec] = ()) -> dict[str, str]:
    """The attributes that can change a result, normalised (`exec="yes"` and `exec=on` hash alike).

    `device` is left out: the cache key adds the resolved device class itself.
    """
    render_only = {s.name for s in (*BUILTIN, *declared) if s.render_only} | PASSTHROUGH | {"device"}
    options = parse_options(attrs, declared)
    out: dict[str, str] = {}
    for name, raw in sorted(attrs.items()):
        if name in render_only:
            continue
        value = getattr(options, name, None) if hasattr(BlockOptions, name) else options.extra.get(name, raw)
        out[name] = str(raw if value is None else value)
    return out
