"""Putting results into pages: each executed block's result right after it, and the report page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pluggy

from kernelnotes.parse import IncludeResolver, parse_markdown
from kernelnotes.pipeline import Outcome
from kernelnotes.results import Figure

# Characters that must stay literal in text from a snippet or a results file: HTML, and the Markdown
# that would make links, emphasis, code or table cells out of it.
_INERT = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"} | {c: f"&#{ord(c)};" for c in "[]()*_`|\\!#"}
)


def inert(value: object) -> str:
    """Arbitrary text as inert Markdown (shown as written, never interpreted)."""
    return str(value).translate(_INERT)


def inline_results(
    markdown: str,
    relpath: str,
    outcomes: Sequence[Outcome],
    pm: pluggy.PluginManager,
    figure_link: Callable[[Figure], str] | None = None,
) -> str:
    """Insert each outcome's rendering after its block in `markdown` (a page's text without front matter).

    Blocks are found again in the text we are given, since other plugins may have moved lines; the
    n-th fence of the page is the n-th fence of the note file.
    """
    if not outcomes:
        return markdown
    # includes are already resolved in the outcomes; an inert resolver keeps this a pure text scan
    inert = IncludeResolver(Path("/nonexistent-kernelnotes-root"), Path("/nonexistent-kernelnotes-root"))
    page = parse_markdown(markdown, relpath, inert).note
    if page is None:
        return markdown
    lines = markdown.split("\n")
    by_index = {o.snippet.index: o for o in outcomes}
    # insert from the bottom up so earlier line numbers stay valid
    for snippet in reversed(page.snippets):
        outcome = by_index.get(snippet.index)
        if outcome is None:
            continue
        show = str(outcome.snippet.attrs.get("show", "both"))
        if show == "source":
            continue
        start, end = snippet.start_line - 1, snippet.end_line - 1  # 0-based fence lines
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        rendered = pm.hook.render_result(outcome=outcome, figure_link=figure_link) or ""
        block = ["", *(indent + line if line else line for line in rendered.rstrip("\n").split("\n")), ""]
        if show == "output":
            lines[start : end + 1] = block
        else:
            lines[end + 1 : end + 1] = block
    return "\n".join(lines)


def report_markdown(outcomes: Sequence[Outcome], title: str = "代码执行报告") -> str:
    """The execution report page (like sphinx-gallery's execution times): one row per block."""
    failed = sum(o.failed for o in outcomes)
    executed = sum(1 for o in outcomes if o.result is not None and not o.cached and not o.stale)
    total = sum(o.result.duration for o in outcomes if o.result is not None)
    rows = [
        "---",
        "hide: [navigation, toc]",  # a wide table: use the whole page
        "---",
        "",
        f"# {title}",
        "",
        f"{len(outcomes)} blocks · {failed} failed · {executed} executed in this build · "
        f"{sum(o.cached for o in outcomes)} from cache · {total:.1f} s of recorded run time",
        "",
        "| note | line | status | seconds | device | cache | check | max error vs reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (-(o.result.duration if o.result else 0), o.note_path)):
        r = o.result
        link = f"[{inert(o.note_path)}]({o.note_path.replace(' ', '%20').replace(')', '%29')})"
        if r is None:
            rows.append(f"| {link} | {o.snippet.start_line} | not run | | | | | |")
            continue
        status = "stale" if o.stale else r.status
        worst = max((c.max_abs for c in r.check if c.max_abs is not None), default=None)
        check = f"{inert(r.check_name)} {sum(c.ok for c in r.check)}/{len(r.check)}" if r.check else ""
        rows.append(
            f"| {link} | {o.snippet.start_line} | {inert(status)} | {r.duration:.2f} | "
            f"{inert(r.device)} ({inert(r.created_at[:10])}) | {'hit' if o.cached else 'miss'} | {check} | "
            f"{'' if worst is None else f'{worst:.1e}'} |"
        )
    return "\n".join(rows) + "\n"
