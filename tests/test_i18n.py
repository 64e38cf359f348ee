"""Pages speak the site's language: result boxes, check tables and the report page from gettext
catalogs; timings shown only with what they measured (never an interpreter time as kernel speed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import markdown
import pytest

from kernelnotes.i18n import catalog_messages, device_label, translator
from kernelnotes.note import Snippet
from kernelnotes.pipeline import Outcome
from kernelnotes.plugins.manager import get_plugin_manager
from kernelnotes.report import fill_report, report_markdown
from kernelnotes.results import CheckCase, RunResult

from .conftest import REPO
from .test_site import mkdocs_build

CJK = re.compile(r"[\u3400-\u9fff\uff08\uff09\uff1a]")
CPU = "AMD EPYC 9454 48-Core Processor (2 cores)"
EXTENSIONS = ["admonition", "pymdownx.details", "pymdownx.superfences", "tables", "md_in_html"]


def outcome(device_class: str = "cpu", **kwargs) -> Outcome:
    cases = [
        CheckCase("ragged", "float32", "37x1000", True, 1e-7, 2e-6, 1e-5, "", 0.4, 0.02, 21.17),
        CheckCase("tiny", "float16", "3x5", False, 0.5, 0.1, 1e-3, "max error too large", 0.1, 0.01, 7.77),
    ]
    result = RunResult(
        status="failed",
        stdout="hello\n",
        check=cases,
        check_name="softmax",
        duration=1.25,
        device=CPU if device_class == "cpu" else "NVIDIA H200",
        device_class=device_class,
        created_at="2026-11-24T06:37:00+00:00",
    )
    snippet = Snippet(0, "python", {"exec": "on", "check": "softmax"}, 3, 9, "def softmax(x): ...")
    return Outcome("posts/x.md", snippet, "k", result, **kwargs)


class _Text(HTMLParser):
    """Visible text outside <pre>/<code> (the author's code and its output are not our machinery)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.skip += tag in ("pre", "code")

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        self.skip -= tag in ("pre", "code")

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if not self.skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def english_machinery(text: str) -> list[str]:
    """English catalog messages (their fixed words) found in `text`."""
    found = []
    for msgid, translation in catalog_messages("zh").items():
        for piece in re.split(r"\{\w+\}", msgid):
            piece = piece.strip(" ·:().,—")
            if piece in translation:  # a name both languages write alike (CPU, Triton)
                continue
            if len(piece) >= 3 and re.search(rf"(?<![A-Za-z]){re.escape(piece)}(?![A-Za-z])", text):
                found.append(piece)
    return found


def render(o: Outcome, language: str) -> str:
    pm = get_plugin_manager()
    text = pm.hook.render_result(outcome=o, figure_link=None, language=language)
    return markdown.markdown(text, extensions=EXTENSIONS)


def test_result_box_reads_entirely_in_chinese():
    html = render(outcome(cached=True), "zh")
    text = visible_text(html)
    assert english_machinery(text) == [], english_machinery(text)
    assert "失败" in text and "CPU（2 核）" in text and "2026年11月24日" in text and "解释器" in text
    assert f"title='{CPU}'" in html  # the full CPU name stays in a tooltip


def test_result_box_reads_entirely_in_english():
    text = visible_text(render(outcome(cached=True), "en"))
    assert not CJK.search(text), CJK.findall(text)
    assert "CPU (2 cores)" in text and "November 24, 2026" in text and "max abs err" in text


def test_cpu_check_never_shows_an_interpreter_time_as_kernel_speed():
    for language in ("zh", "en"):
        html = render(outcome(), language)
        assert "21.17" not in html and "7.77" not in html  # the interpreter's times are not shown
        assert "0.02" in html  # torch on CPU measured the reference: a real CPU time
    gpu = render(outcome("cuda"), "en")
    assert "21.17" in gpu and "Triton ms" in gpu and "Timed on NVIDIA H200" in gpu


def test_report_page_in_chinese_separates_gpu_timings_from_cpu_runs():
    outcomes = [outcome(), outcome("cuda")]
    page = report_markdown(outcomes, "zh")
    html = markdown.markdown(page.split("---", 2)[2], extensions=EXTENSIONS)
    html = fill_report(html, outcomes, "zh", lambda path: f"../{path}/")
    assert html.count("<table>") == 2 and 'href="../posts/x.md/"' in html
    text = visible_text(html)
    assert english_machinery(text.replace("posts/x.md", "")) == []
    assert text.index("GPU 上记录的结果") < text.index("CPU 上的正确性运行")
    assert "代码执行报告" in text and "未命中" in text and "miss" not in text


def test_every_message_written_into_pages_has_a_chinese_translation():
    sources = [REPO / "plugins" / "markdown_renderer.py", REPO / "src" / "kernelnotes" / "report.py"]
    used = set()
    for path in sources:
        code = path.read_text(encoding="utf-8")
        for match in re.finditer(r"gettext\(\s*((?:\"[^\"]*\"\s*)+)", code):
            used.add("".join(re.findall(r"\"([^\"]*)\"", match.group(1))))
    missing = sorted(used - set(catalog_messages("zh")))
    assert len(used) >= 30 and missing == []


def test_device_labels():
    zh, en = translator("zh"), translator("en")
    assert device_label(CPU, "cpu", zh) == "CPU（2 核）"
    assert device_label(CPU, "cpu", en) == "CPU (2 cores)"
    assert device_label("NVIDIA H200", "cuda", zh) == "NVIDIA H200"
    assert translator("zh-CN").gettext("passed") == "通过"  # a regional tag falls back to its language
    assert translator("fr").gettext("passed") == "passed"  # no catalog: English


@pytest.mark.slow
@pytest.mark.parametrize("language", ["zh", "en"])
def test_built_note_page_speaks_the_sites_language(tmp_path, language):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "index.md").write_text(
        '# 页\n\n```python exec="on"\nprint(40 + 2)\n```\n\n```python exec="on" timeout="1"\nwhile True: pass\n```\n',
        encoding="utf-8",
    )
    (tmp_path / "mkdocs.yml").write_text(
        f"site_name: t\ndocs_dir: notes\ntheme:\n  name: material\n  language: {language}\n"
        "plugins:\n  - kernelnotes\nmarkdown_extensions:\n  - admonition\n  - pymdownx.details\n"
        "  - pymdownx.superfences\n  - tables\n",
        encoding="utf-8",
    )
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site", strict=False)
    assert result.returncode == 0, result.stderr[-2000:]
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    boxes = re.findall(r'<details class="\w+".*?</details>|<div class="admonition \w+">.*?</div>', html, re.S)
    assert len(boxes) == 2
    text = visible_text(" ".join(boxes))
    report = visible_text((tmp_path / "site" / "execution" / "index.html").read_text(encoding="utf-8"))
    report = report.split("代码执行报告" if language == "zh" else "Execution report", 1)[-1]
    if language == "zh":
        assert english_machinery(text) == [] and "通过" in text and "失败" in text
        assert "共 2 段代码" in report
    else:
        assert not CJK.search(text) and "passed" in text and "failed" in text
        assert "2 blocks" in report
