"""Reports of a run: JUnit XML (one testcase per block), and the one outcome table behind both the
site's execution report page and CI's Markdown summary."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from kernelnotes.inline import inert
from kernelnotes.pipeline import Outcome

# XML 1.0 forbids most control characters (ANSI colour codes carry ESC): drop them from reports.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    return _NOT_XML.sub("", text)


def case_name(outcome: Outcome, notes_prefix: str) -> str:
    """The block's location as `notes/posts/x.md:42`, which CI systems link to."""
    return f"{notes_prefix}{outcome.note_path}:{outcome.snippet.start_line}"


def write_junit(outcomes: Sequence[Outcome], path: Path, notes_prefix: str = "notes/") -> None:
    failures = sum(o.failed for o in outcomes)
    skipped = sum(o.result is None for o in outcomes)
    suite = ET.Element(
        "testsuite",
        name="kernelnotes",
        tests=str(len(outcomes)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{sum(o.result.duration for o in outcomes if o.result and not o.cached):.3f}",
    )
    for o in outcomes:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{notes_prefix}{o.note_path}",
            name=case_name(o, notes_prefix),
            file=f"{notes_prefix}{o.note_path}",
            line=str(o.snippet.start_line),
            time=f"{o.result.duration:.3f}" if o.result else "0",
        )
        props = ET.SubElement(case, "properties")
        r = o.result
        for key, value in (
            ("device", r.device if r else ""),
            ("cached", str(o.cached).lower()),
            ("check", str(o.snippet.attrs.get("check", ""))),
        ):
            ET.SubElement(props, "property", name=key, value=value)
        if r is None:
            ET.SubElement(case, "skipped", message="not run")
        elif o.failed:
            failed_cases = [c for c in r.check if not c.ok]
            failure = ET.SubElement(case, "failure", message=_xml(o.failure_line()[:500]))
            failure.text = _xml(
                r.error
                or "\n".join(f"{c.label} {c.dtype} {c.shape}: {c.message or c.max_abs}" for c in failed_cases)
            )
        if r is not None and r.stdout:
            ET.SubElement(case, "system-out").text = _xml(r.stdout[:20_000])
    ET.indent(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def outcome_table(outcomes: Sequence[Outcome], name: Callable[[Outcome], str]) -> list[str]:
    """The one table of block outcomes (the site's report page and CI's summary), slowest first.

    `name(outcome)` renders the first cell (a link on the site, `notes/x.md:42` in CI).
    """
    rows = [
        "| block | status | seconds | device | cache | check | max error vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (-(o.result.duration if o.result else 0), o.note_path)):
        r = o.result
        if r is None:
            rows.append(f"| {name(o)} | not run | | | | | |")
            continue
        worst = max((c.max_abs for c in r.check if c.max_abs is not None), default=None)
        check = f"{inert(r.check_name)} {sum(c.ok for c in r.check)}/{len(r.check)}" if r.check else ""
        rows.append(
            f"| {name(o)} | {'stale' if o.stale else inert(r.status)} | {r.duration:.2f} | "
            f"{inert(r.device)} ({inert(r.created_at[:10])}) | {'hit' if o.cached else 'miss'} | {check} | "
            f"{'' if worst is None else f'{worst:.1e}'} |"
        )
    return rows


def counts_line(outcomes: Sequence[Outcome]) -> str:
    failed = sum(o.failed for o in outcomes)
    executed = sum(1 for o in outcomes if o.result is not None and not o.cached and not o.stale)
    total = sum(o.result.duration for o in outcomes if o.result is not None)
    return (
        f"{len(outcomes)} blocks · {failed} failed · {executed} executed in this build · "
        f"{sum(o.cached for o in outcomes)} from cache · {total:.1f} s of recorded run time"
    )


def summary_markdown(outcomes: Sequence[Outcome], notes_prefix: str = "notes/") -> str:
    """CI's job summary: the outcome table with each block named `notes/x.md:42`."""
    lines = ["## KernelNotes snippets", "", counts_line(outcomes), ""]
    lines += outcome_table(outcomes, lambda o: "`" + case_name(o, notes_prefix).replace("`", "'") + "`")
    return "\n".join(lines) + "\n"


def report_markdown(outcomes: Sequence[Outcome], title: str = "代码执行报告") -> str:
    """The site's execution report page (like sphinx-gallery's execution times): one row per block."""

    def link(o: Outcome) -> str:
        target = o.note_path.replace(" ", "%20").replace(")", "%29")
        return f"[{inert(o.note_path)}:{o.snippet.start_line}]({target})"

    lines = ["---", "hide: [navigation, toc]", "---", "", f"# {title}", "", counts_line(outcomes), ""]
    return "\n".join(lines + outcome_table(outcomes, link)) + "\n"
