"""Reports of a run: JUnit XML (one testcase per block) and a Markdown summary."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

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


def summary_markdown(outcomes: Sequence[Outcome], notes_prefix: str = "notes/") -> str:
    passed = sum(1 for o in outcomes if o.result and not o.stale and not o.failed)
    failed = sum(o.failed for o in outcomes)
    cached = sum(o.cached for o in outcomes)
    lines = [
        "## KernelNotes snippets",
        "",
        f"{len(outcomes)} blocks: {passed} passed, {failed} failed, {cached} from cache.",
        "",
        "| block | status | device | seconds | cache | check |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        r = o.result
        status = "not run" if r is None else ("stale" if o.stale else r.status)
        check = ""
        if r is not None and r.check:
            worst = max((c.max_abs or 0.0) for c in r.check)
            check = f"{r.check_name}: {sum(c.ok for c in r.check)}/{len(r.check)}, max err {worst:.1e}"
        lines.append(
            f"| `{case_name(o, notes_prefix)}` | {status} | {r.device if r else ''} | "
            f"{r.duration:.2f} | {'hit' if o.cached else 'miss'} | {check} |"
            if r
            else f"| `{case_name(o, notes_prefix)}` | {status} | | | | |"
        )
    return "\n".join(lines) + "\n"
