"""Built-in plugin: renders a snippet's result as a pymdownx.details admonition after the block.

Output and tracebacks go into fenced code blocks, so whatever a snippet prints (`<script>`
included) is shown as text. Figures are `<img>`s — of a published file when the front end gives a
`figure_link` (the site does: megabytes of base64 in the Markdown made every page convert slowly),
else of a data URI; an image cannot run scripts either way.
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

from kernelnotes.inline import inert
from kernelnotes.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from kernelnotes.pipeline import Outcome
    from kernelnotes.results import CheckCase, Figure, RunResult


@hookimpl
def render_result(outcome: Outcome, figure_link: Callable[[Figure], str] | None) -> str:
    result = outcome.result
    if result is None:
        return '!!! info "not run yet"\n    This block has no recorded result; run `kn run` or build the site with execution on.\n'
    kind, title = _title(outcome, result)
    body: list[str] = []
    if result.stdout.strip():
        body.append(_fence(result.stdout.rstrip("\n"), "text"))
    if result.value:
        body.append(_fence(result.value, "python"))
    if result.error:
        body.append(_fence(result.error, "pytb"))
    if result.check:
        body.append(_check_table(result.check_name, result.check))
    body += [_figure(f, figure_link) for f in result.figures]
    body += [
        f"*Also recorded on {inert(r.device)} ({inert(r.created_at[:10])}): {inert(r.status)}, {r.duration:.2f} s"
        + (" — stale: recorded for an earlier version of this code*" if stale else "*")
        for r, stale in outcome.others
    ]
    if not body:
        body.append("*(no output)*")
    opener = "!!!" if kind in {"failure", "warning"} else "???+"
    return f'{opener} {kind} "{title}"\n\n' + "\n\n".join(_indent(b) for b in body) + "\n"


def _title(outcome: Outcome, result: RunResult) -> tuple[str, str]:
    where = f"{result.device_class or '?'}: {result.device}" if result.device else "?"
    parts = [result.status, where, f"{result.duration:.2f} s"]  # quoted as a whole by _quote
    if outcome.stale:
        parts.insert(0, "stale")
        parts.append(f"recorded {result.created_at[:10]} for an earlier version of this code")
        return "warning", _quote(" · ".join(parts))
    if outcome.cached:
        parts.append(f"cached {result.created_at[:16].replace('T', ' ')}")
    if outcome.expected_to_fail:
        parts.insert(1, "expected to fail")
    return ("success" if result.ok else "failure"), _quote(" · ".join(parts))


def _check_table(name: str, cases: list[CheckCase]) -> str:
    passed = sum(c.ok for c in cases)
    head = (
        f"**check {inert(name)}: {passed}/{len(cases)} cases pass**\n\n"
        "| case | dtype | shapes | max abs err | max rel err | tolerance | result | snippet ms | torch ms | Triton ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for c in cases:
        verdict = "pass" if c.ok else "**FAIL**" + (f" {_cell(c.message)}" if c.message else "")
        rows.append(
            "| "
            + " | ".join(
                [
                    _cell(c.label),
                    _cell(c.dtype),
                    _cell(c.shape),
                    _num(c.max_abs),
                    _num(c.max_rel),
                    _num(c.bound),
                    verdict,
                    _ms(c.snippet_ms),
                    _ms(c.reference_ms),
                    _ms(c.kernel_ms),
                ]
            )
            + " |"
        )
    return head + "\n" + "\n".join(rows)


def _figure(figure: Figure, figure_link: Callable[[Figure], str] | None) -> str:
    if figure.format not in ("svg", "png"):
        return _fence(figure.data, "text")
    if figure_link is not None:
        uri = figure_link(figure)
    elif figure.format == "svg":
        uri = "data:image/svg+xml;base64," + base64.b64encode(figure.data.encode()).decode("ascii")
    else:
        uri = "data:image/png;base64," + figure.data
    return f'<img class="kn-figure" alt="figure" src="{html.escape(uri)}">'


def _fence(text: str, lang: str) -> str:
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else "" for line in text.split("\n"))


def _quote(value: str) -> str:
    return html.escape(value)  # escapes quotes too: safe inside the admonition title's "..."


def _cell(value: object) -> str:
    return inert(" ".join(str(value).split())[:300])


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
