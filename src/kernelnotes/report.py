"""Reports of a run: JUnit XML (one testcase per block), and the one outcome table behind both the
site's execution report page and CI's Markdown summary."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from kernelnotes.i18n import Translator, device_label, translator
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


def outcome_rows(
    outcomes: Sequence[Outcome], name: Callable[[Outcome], str], t: Translator
) -> tuple[list[str], list[list[str]]]:
    """The one table of block outcomes (the site's report page and CI's summary), slowest first:
    its headers and rows, each cell inline HTML (text made inert).

    `name(outcome)` renders the first cell (a link on the site, `notes/x.md:42` in CI).
    """
    headers = ("block", "status", "seconds", "device", "cache", "check", "max error vs reference")
    rows = []
    for o in sorted(outcomes, key=lambda o: (-(o.result.duration if o.result else 0), o.note_path)):
        r = o.result
        if r is None:
            rows.append([name(o), inert(t.gettext("not run")), "", "", "", "", ""])
            continue
        worst = max((c.max_abs for c in r.check if c.max_abs is not None), default=None)
        check = f"{inert(r.check_name)} {sum(c.ok for c in r.check)}/{len(r.check)}" if r.check else ""
        device = f"<span title='{html.escape(r.device, quote=True)}'>{inert(device_label(r.device, r.device_class, t))}</span>"
        rows.append(
            [
                name(o),
                inert(t.gettext("stale" if o.stale else r.status)),
                f"{r.duration:.2f}",
                f"{device} ({inert(t.date(r.created_at))})",
                inert(t.gettext("hit" if o.cached else "miss")),
                check,
                "" if worst is None else f"{worst:.1e}",
            ]
        )
    return [inert(t.gettext(h)) for h in headers], rows


def outcome_table(outcomes: Sequence[Outcome], name: Callable[[Outcome], str], t: Translator) -> list[str]:
    """The outcome table as Markdown lines (CI's summary)."""
    headers, rows = outcome_rows(outcomes, name, t)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def outcome_table_html(outcomes: Sequence[Outcome], name: Callable[[Outcome], str], t: Translator) -> str:
    """The outcome table as HTML (the report page: thousands of rows, which Markdown's table
    extension takes a second to convert at every rebuild)."""
    headers, rows = outcome_rows(outcomes, name, t)
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>\n<thead>\n<tr>{head}</tr>\n</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def counts_line(outcomes: Sequence[Outcome], t: Translator) -> str:
    return inert(
        t.gettext(
            "{blocks} blocks · {failed} failed · {executed} executed in this build · {cached} from cache · "
            "{seconds} s of recorded run time",
            blocks=len(outcomes),
            failed=sum(o.failed for o in outcomes),
            executed=sum(1 for o in outcomes if o.result is not None and not o.cached and not o.stale),
            cached=sum(o.cached for o in outcomes),
            seconds=f"{sum(o.result.duration for o in outcomes if o.result is not None):.1f}",
        )
    )


def summary_markdown(outcomes: Sequence[Outcome], notes_prefix: str = "notes/") -> str:
    """CI's job summary (English, like all CLI output): the outcome table, blocks named `notes/x.md:42`."""
    t = translator("en")
    lines = ["## KernelNotes snippets", "", counts_line(outcomes, t), ""]
    lines += outcome_table(outcomes, lambda o: "`" + case_name(o, notes_prefix).replace("`", "'") + "`", t)
    return "\n".join(lines) + "\n"


# Where the report page's tables go: its Markdown holds these, and `fill_report` puts the tables in
# the HTML (the notes' URLs are known by then).
_TABLE_SLOT = '<div class="kn-report-table" data-kn-table="{name}"></div>'


def _report_groups(outcomes: Sequence[Outcome]) -> dict[str, list[Outcome]]:
    """Results recorded on a GPU (whose timings mean something) apart from CPU correctness runs."""
    gpu = [o for o in outcomes if o.result is not None and o.result.device_class == "cuda"]
    ids = {id(o) for o in gpu}
    return {"gpu": gpu, "cpu": [o for o in outcomes if id(o) not in ids]}


def report_markdown(outcomes: Sequence[Outcome], language: str = "en") -> str:
    """The site's execution report page (like sphinx-gallery's execution times), in the site's
    language, with a slot for each table (see `fill_report`)."""
    t = translator(language)
    groups = _report_groups(outcomes)
    # not in the site search: it names blocks by file and line (search finds the notes themselves),
    # and its table, which changes with most edits, would be segmented again at every serve rebuild
    lines = ["---", "hide: [navigation, toc]", "search:", "  exclude: true", "---", ""]
    lines += [f"# {inert(t.gettext('Execution report'))}", ""]
    lines += [counts_line(outcomes, t), ""]
    if groups["gpu"]:
        lines += [
            f"## {inert(t.gettext('Recorded on a GPU'))}",
            "",
            inert(t.gettext("Timings here are GPU timings, measured after a warm-up.")),
            "",
            _TABLE_SLOT.format(name="gpu"),
            "",
        ]
    heading = t.gettext("Correctness runs on CPU")
    note = t.gettext(
        "On CPU, blocks run for their output and their checks; Triton kernels run under the interpreter and are not timed."
    )
    lines += [f"## {inert(heading)}", "", inert(note), "", _TABLE_SLOT.format(name="cpu")]
    return "\n".join(lines) + "\n"


def fill_report(
    page_html: str, outcomes: Sequence[Outcome], language: str, href: Callable[[str], str | None]
) -> str:
    """The report page's HTML with its tables in their slots; `href(note_path)` is the note's URL
    relative to the report page (None: not a page of the site, shown as text)."""
    t = translator(language)

    def name(o: Outcome) -> str:
        label = f"{inert(o.note_path)}:{o.snippet.start_line}"
        target = href(o.note_path)
        return label if target is None else f'<a href="{html.escape(target, quote=True)}">{label}</a>'

    for group, members in _report_groups(outcomes).items():
        page_html = page_html.replace(_TABLE_SLOT.format(name=group), outcome_table_html(members, name, t), 1)
    return page_html
