"""Built-in plugin: renders a snippet's result as a pymdownx.details admonition after the block.

Every word it writes is a message of the site's language (kernelnotes.i18n catalogs).

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

from kernelnotes.i18n import Translator, device_label, translator
from kernelnotes.inline import inert
from kernelnotes.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable

    from kernelnotes.pipeline import Outcome
    from kernelnotes.results import Figure, RunResult


@hookimpl
def render_result(outcome: Outcome, figure_link: Callable[[Figure], str] | None, language: str) -> str:
    t = translator(language)
    result = outcome.result
    if result is None:
        return (
            f'!!! info "{_quote(t.gettext("not run yet"))}"\n    '
            + inert(
                t.gettext(
                    "This block has no recorded result; run `kn run` or build the site with execution on."
                )
            )
            + "\n"
        )
    kind, title = _title(outcome, result, t)
    body: list[str] = []
    if result.stdout.strip():
        body.append(_fence(result.stdout.rstrip("\n"), "text"))
    if result.value:
        body.append(_fence(result.value, "python"))
    if result.error:
        body.append(_fence(result.error, "pytb"))
    if result.check:
        body.append(_check_table(result, t))
    body += [_figure(f, figure_link, t) for f in result.figures]
    for other, stale in outcome.others:
        line = t.gettext(
            "Also recorded on {device} ({date}): {status}, {seconds} s",
            device=inert(device_label(other.device, other.device_class, t)),
            date=inert(t.date(other.created_at)),
            status=inert(t.gettext(other.status)),
            seconds=f"{other.duration:.2f}",
        )
        if stale:
            line += t.gettext(" — stale: recorded for an earlier version of this code")
        body.append(f"*{line}*")
    if not body:
        body.append("*" + inert(t.gettext("(no output)")) + "*")
    opener = "!!!" if kind in {"failure", "warning"} else "???+"
    return f'{opener} {kind} "{title}"\n\n' + "\n\n".join(_indent(b) for b in body) + "\n"


def _title(outcome: Outcome, result: RunResult, t: Translator) -> tuple[str, str]:
    """The box's title: status, device (full name in a tooltip), run time, when it was recorded."""
    device = device_label(result.device, result.device_class, t) if result.device else "?"
    where = f"<span title='{html.escape(result.device, quote=True)}'>{_quote(device)}</span>"
    parts = [
        _quote(t.gettext(result.status)),
        where,
        _quote(t.gettext("{seconds} s", seconds=f"{result.duration:.2f}")),
    ]
    if outcome.stale:
        parts.insert(0, _quote(t.gettext("stale")))
        parts.append(
            _quote(
                t.gettext(
                    "recorded {date} for an earlier version of this code", date=t.date(result.created_at)
                )
            )
        )
        return "warning", " · ".join(parts)
    if outcome.cached:
        parts.append(_quote(t.gettext("cached {when}", when=t.datetime(result.created_at))))
    if outcome.expected_to_fail:
        parts.insert(1, _quote(t.gettext("expected to fail")))
    return ("success" if result.ok else "failure"), " · ".join(parts)


def _check_table(result: RunResult, t: Translator) -> str:
    """Errors against the reference per case; timings only with what they measured.

    On CPU the Triton kernel runs under Triton's interpreter, which times Python, not the kernel: its
    column says so and shows no number, so the page never implies a speed comparison.
    """
    cases = result.check
    on_gpu = result.device_class == "cuda"
    passed = sum(c.ok for c in cases)
    head = t.gettext(
        "check {name}: {passed}/{total} cases pass",
        name=inert(result.check_name),
        passed=passed,
        total=len(cases),
    )
    columns = [
        t.gettext("case"),
        t.gettext("dtype"),
        t.gettext("shapes"),
        t.gettext("max abs err"),
        t.gettext("max rel err"),
        t.gettext("tolerance"),
        t.gettext("result"),
        t.gettext("snippet ms"),
        t.gettext("torch ms"),
        t.gettext("Triton ms") if on_gpu else t.gettext("Triton"),
    ]
    lines = [
        f"**{head}**",
        "",
        "| " + " | ".join(inert(c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for c in cases:
        verdict = (
            inert(t.gettext("pass"))
            if c.ok
            else f"**{inert(t.gettext('FAIL'))}**" + (f" {_cell(c.message)}" if c.message else "")
        )
        kernel = _ms(c.kernel_ms) if on_gpu else inert(t.gettext("interpreter"))
        cells = [
            _cell(c.label),
            _cell(c.dtype),
            _cell(c.shape),
            _num(c.max_abs),
            _num(c.max_rel),
            _num(c.bound),
        ]
        lines.append(
            "| " + " | ".join([*cells, verdict, _ms(c.snippet_ms), _ms(c.reference_ms), kernel]) + " |"
        )
    if on_gpu:
        note = t.gettext("Timed on {device} after a warm-up (median).", device=inert(result.device))
    else:
        note = t.gettext(
            "On CPU the Triton kernel runs under Triton's interpreter: it is checked for correctness, not timed."
        )
    return "\n".join(lines) + f"\n\n*{inert(note)}*"


def _figure(figure: Figure, figure_link: Callable[[Figure], str] | None, t: Translator) -> str:
    if figure.format not in ("svg", "png"):
        return _fence(figure.data, "text")
    if figure_link is not None:
        uri = figure_link(figure)
    elif figure.format == "svg":
        uri = "data:image/svg+xml;base64," + base64.b64encode(figure.data.encode()).decode("ascii")
    else:
        uri = "data:image/png;base64," + figure.data
    return f'<img class="kn-figure" alt="{html.escape(t.gettext("figure"))}" src="{html.escape(uri)}">'


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
