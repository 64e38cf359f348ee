"""Text for pages: inert Markdown for interpolated values, and the execution report page."""

from __future__ import annotations

from collections.abc import Sequence

from kernelnotes.pipeline import Outcome

# Characters that must stay literal in text from a snippet or a results file: HTML, and the Markdown
# that would make links, emphasis, code or table cells out of it.
_INERT = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"} | {c: f"&#{ord(c)};" for c in "[]()*_`|\\!#"}
)


def inert(value: object) -> str:
    """Arbitrary text as inert Markdown (shown as written, never interpreted)."""
    return str(value).translate(_INERT)


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
