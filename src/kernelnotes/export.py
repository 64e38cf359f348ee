"""A note as a Jupyter notebook or a percent-format Python script that runs outside KernelNotes.

The prose becomes Markdown cells (formulas kept), each executed block a code cell in page order with
its includes resolved, and the result recorded for the block's current code becomes the cell's
outputs (with the device it came from). Blocks of different sessions never see each other's
variables on a page, so where the session changes the export starts a fresh namespace (and restores
the old one on returning to a session), and running it top to bottom reproduces the page.
A `check=` block calls `kernelnotes.api.check`, which prints the page's pass/fail table.

Formats are written with nbformat and jupytext, not by hand. No mkdocs here: the CLI (`kn export`)
and the site (download links) both call `export_note`.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
from nbformat import NotebookNode
from nbformat import v4 as nbf

from kernelnotes.cache import _imported_modules as imported_modules
from kernelnotes.note import Note, Snippet
from kernelnotes.pipeline import Outcome
from kernelnotes.problems import Problem
from kernelnotes.results import RunResult

FORMATS = {"ipynb": ".ipynb", "py": ".py"}
# Import names whose distribution is named otherwise on PyPI.
PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python"}
_MORE = re.compile(r"^\s*<!--\s*more\s*-->\s*$")


@dataclass
class Export:
    notebook: NotebookNode
    problems: list[Problem] = field(default_factory=list)

    def text(self, fmt: str) -> str:
        """The export in a format of FORMATS."""
        if fmt == "ipynb":
            return str(nbformat.writes(self.notebook))
        if fmt == "py":
            return str(jupytext.writes(self.notebook, fmt="py:percent"))
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_note(
    note: Note,
    source: str,
    outcomes: Sequence[Outcome],
    display_path: str = "",
    snippets_dir: Path | None = None,
) -> Export:
    """Build the notebook of `note` (its file's text is `source`) from the pipeline's outcomes.

    `outcomes` are the note's executed blocks (what `Pipeline.run` returns for it, fresh or looked up
    with `execute=False`); `display_path` names the note in problems (default: its path). A block
    importing a module of `snippets_dir` (on the workers' path) is reported: the export lacks it.
    """
    where = display_path or note.path
    ordered = sorted(outcomes, key=lambda o: o.snippet.index)
    builder = _Builder(note, where, ordered)
    if snippets_dir is not None:
        builder.problems += _local_imports(ordered, snippets_dir, where)
    parts = (
        _notebook_parts(source, ordered)
        if note.kind == "notebook"
        else _markdown_parts(source, note, ordered)
    )
    for part in parts:
        if isinstance(part, str):
            if part.strip():
                builder.cells.append(nbf.new_markdown_cell(part.strip("\n")))
        else:
            builder.add_block(part)
    return builder.finish()


class _Builder:
    def __init__(self, note: Note, where: str, outcomes: list[Outcome]) -> None:
        self.note = note
        self.where = where
        self.outcomes = outcomes
        self.cells: list[NotebookNode] = []
        self.problems: list[Problem] = []
        self.sessions = {o.snippet.session for o in outcomes}
        self.current: str | None = None
        self.seen: set[str] = set()
        self.count = 0
        self.shown = [o.result for o in outcomes if _current(o)]
        devices = Counter(_device(r) for r in self.shown if r is not None)
        self.main_device = devices.most_common(1)[0][0] if devices else ""

    def add_block(self, outcome: Outcome) -> None:
        snippet = outcome.snippet
        if len(self.sessions) > 1 and snippet.session != self.current:
            self.cells.append(nbf.new_code_cell(self._session_switch(snippet)))
        self.current = snippet.session
        self.seen.add(snippet.session)
        result = outcome.result if _current(outcome) else None
        if result is not None and _device(result) != self.main_device:
            self.cells.append(nbf.new_markdown_cell(f"*下面这个块的输出记录于 {_device(result)}。*"))
        self.count += 1
        cell = nbf.new_code_cell(_code(snippet), execution_count=self.count if result else None)
        cell.metadata["kernelnotes"] = {
            "line": snippet.start_line,
            "session": snippet.attrs.get("session") or None,
            **({"device": result.device, "recorded": result.created_at} if result else {}),
        }
        if result is not None:
            cell.outputs = _outputs(result, snippet, self.count)
            if result.error:
                cell.metadata["tags"] = ["raises-exception"]  # nbclient and nbconvert run on past it
        self.cells.append(cell)
        self._report(outcome)

    def _session_switch(self, snippet: Snippet) -> str:
        name = snippet.attrs.get("session")
        if not name:
            return "kn_session(None)  # 页面上这个块单独运行：全新的命名空间"
        if snippet.session in self.seen:
            return f"kn_session({json.dumps(name, ensure_ascii=False)})  # 回到会话 {name}：恢复它的变量"
        return f"kn_session({json.dumps(name, ensure_ascii=False)})  # 新会话 {name}：页面上它从全新的命名空间开始"

    def _report(self, outcome: Outcome) -> None:
        line = outcome.snippet.start_line
        if outcome.result is None or outcome.stale:
            why = "no result recorded" if outcome.result is None else "only a result of older code recorded"
            hint = f"run `kn run {self.where}` or `kn export --run`; the cell is exported without outputs"
            self.problems.append(Problem(self.where, line, f"{why} for this block", hint, "warning"))
        elif outcome.failed:
            hint = "fix the block; its cell carries the recorded error"
            self.problems.append(Problem(self.where, line, f"block failed: {outcome.failure_line()}", hint))

    def finish(self) -> Export:
        codes = [o.snippet for o in self.outcomes]
        head = [nbf.new_markdown_cell(self._intro(codes))]
        if codes:
            head.append(nbf.new_code_cell(_setup(codes, len(self.sessions) > 1)))
        cells = head + self.cells
        for number, cell in enumerate(cells):
            cell.id = f"kn-{number}"  # not nbformat's random ids: a rebuild writes the same file
        nb = nbf.new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
                "kernelnotes": {"source": self.where, "title": self.note.title},
            },
        )
        return Export(nb, self.problems)

    def _intro(self, codes: list[Snippet]) -> str:
        lines = [
            f"> 本文件由 KernelNotes 从笔记 `{self.where}` 导出：正文是 Markdown 单元，"
            "页面上执行的每个代码块按顺序成为一个代码单元（`--8<--` 引入的文件已展开），"
            "单元的输出是页面上为当前代码记录的结果。"
        ]
        if codes:
            packages = " ".join(requirements(codes))
            lines += [
                "",
                f"> **运行前安装**：`pip install {packages}`" if packages else "> 只需要 Python 标准库。",
            ]
        if self.main_device:
            first = next(r for r in self.shown if r is not None and _device(r) == self.main_device)
            versions = ", ".join(f"{k} {v}" for k, v in sorted(first.versions.items()) if v)
            lines += ["", f"> 输出记录于 {self.main_device}，{first.created_at[:10]}（{versions}）。"]
        return "\n".join(lines)


def _local_imports(outcomes: Sequence[Outcome], snippets_dir: Path, where: str) -> list[Problem]:
    """Blocks importing a module of the snippets folder: the workers find it, a reader would not."""
    problems = []
    for outcome in outcomes:
        for name in sorted(imported_modules(outcome.snippet.code)):
            for rel in (f"{name}.py", f"{name}/__init__.py"):
                if (snippets_dir / rel).is_file():
                    shown = f"{snippets_dir.name}/{rel}"
                    message = f"the block imports {shown}, which the export does not contain"
                    hint = f'include it into the block with --8<-- "{shown}" instead'
                    problems.append(Problem(where, outcome.snippet.start_line, message, hint, "warning"))
                    break
    return problems


def requirements(snippets: Sequence[Snippet]) -> list[str]:
    """The PyPI distributions an export needs: third-party imports, torch for DEVICE, kernelnotes
    for checks."""
    names = {m for s in snippets for m in imported_modules(s.code)}
    needed = {PIP_NAMES.get(n, n) for n in names if n not in sys.stdlib_module_names and n != "__future__"}
    if _uses_torch(snippets):
        needed.add("torch")
    if any(s.attrs.get("check") for s in snippets):
        needed.add("kernelnotes")
    return sorted(needed)


def _uses_torch(snippets: Sequence[Snippet]) -> bool:
    names = {m for s in snippets for m in imported_modules(s.code)}
    return bool(names & {"torch", "triton", "kernelnotes"}) or any(s.attrs.get("check") for s in snippets)


def _setup(snippets: Sequence[Snippet], sessions: bool) -> str:
    """The first code cell: DEVICE as the worker sets it, and the session switch when needed."""
    lines = ["# 准备：DEVICE 与页面上的工作进程一致（有 GPU 时为 cuda，张量默认建在 GPU 上）"]
    if sessions:
        lines.append("_KN_KEEP = set(globals())  # 解释器自带的名字，切换会话时保留")
    if _uses_torch(snippets):
        lines += [
            "import os",
            "",
            "import torch",
            "",
            'DEVICE = "cuda" if torch.cuda.is_available() else "cpu"',
            'if DEVICE == "cuda":',
            '    torch.set_default_device("cuda")',
            "else:",
            '    os.environ.setdefault("TRITON_INTERPRET", "1")  # 没有 GPU：Triton 内核由解释器在 CPU 上运行',
            "del os, torch  # 各代码块自己导入需要的模块，和页面上一样",
        ]
    else:
        lines.append('DEVICE = "cpu"')
    if sessions:
        lines += ["", _SESSION_SWITCH]
    return "\n".join(lines)


# Kept in the exported file itself: the export runs with no KernelNotes installed.
_SESSION_SWITCH = '''_KN_KEEP |= {"DEVICE", "kn_session", "_KN_KEEP", "_KN_SAVED", "_KN_CURRENT"}
_KN_SAVED = {}
_KN_CURRENT = None


def kn_session(name):
    """Start session `name` (None: a block that runs alone) as the page does: the current session's
    variables are put aside, and those of `name` come back (none the first time)."""
    global _KN_CURRENT
    import re

    space = globals()
    mine = {k: v for k, v in space.items() if k not in _KN_KEEP and not re.fullmatch(r"_i*\\d+", k)}
    if _KN_CURRENT is not None:
        _KN_SAVED[_KN_CURRENT] = mine
    for k in mine:
        del space[k]
    space.update(_KN_SAVED.pop(name, {}) if name is not None else {})
    _KN_CURRENT = name'''


def _code(snippet: Snippet) -> str:
    code = snippet.code.rstrip()
    check = str(snippet.attrs.get("check") or "")
    if not check:
        return code
    kernel, _, function = check.partition(":")
    bench = ", bench=True" if str(snippet.attrs.get("bench", "")).lower() in {"on", "true", "1"} else ""
    lines = [
        "",
        "",
        f'# check="{check}"：在参考内核 {kernel} 的示例输入上逐个 dtype 比对，打印和页面上一样的表格',
    ]
    if str(snippet.attrs.get("expect", "")).lower() == "fail":
        lines.append('# expect="fail"：这个块本来就应该失败，表格里会出现 FAIL')
    lines += [
        "from kernelnotes.api import check",
        "",
        f'check_cases = check({function or kernel}, "{kernel}", device=DEVICE{bench})',
    ]
    return code + "\n".join(lines)


def _outputs(result: RunResult, snippet: Snippet, count: int) -> list[NotebookNode]:
    from kernelnotes.api import check_table

    text = result.stdout
    if result.check:
        text += check_table(str(snippet.attrs.get("check", "")).partition(":")[0], result.check) + "\n"
    outputs = [nbf.new_output("stream", name="stdout", text=text)] if text else []
    if result.value and not snippet.attrs.get("check"):
        outputs.append(nbf.new_output("execute_result", {"text/plain": result.value}, execution_count=count))
    for figure in result.figures:
        if figure.format in ("svg", "png"):
            mime = "image/svg+xml" if figure.format == "svg" else "image/png"
            outputs.append(nbf.new_output("display_data", {mime: figure.data, "text/plain": "<Figure>"}))
    if result.error:
        last = result.error.strip().split("\n")[-1]
        name, _, value = last.partition(": ") if re.match(r"^\w+(\.\w+)*: ", last) else ("Error", "", last)
        outputs.append(
            nbf.new_output("error", ename=name, evalue=value, traceback=result.error.rstrip().split("\n"))
        )
    return outputs


def _current(outcome: Outcome) -> bool:
    return outcome.result is not None and not outcome.stale


def _device(result: RunResult) -> str:
    return f"{result.device}（{result.device_class}）" if result.device_class else result.device


def _markdown_parts(source: str, note: Note, outcomes: Sequence[Outcome]) -> list[str | Outcome]:
    """The prose between the executed blocks, and the blocks, in page order (front matter left out)."""
    lines = source.split("\n")
    parts: list[str | Outcome] = []
    position = note.body_line - 1
    for outcome in outcomes:
        start, end = outcome.snippet.start_line - 1, outcome.snippet.end_line - 1  # 0-based fence lines
        parts += [_prose(lines[position:start]), outcome]
        position = end + 1
    parts.append(_prose(lines[position:]))
    return parts


def _prose(lines: list[str]) -> str:
    return "\n".join(line for line in lines if not _MORE.match(line))


def _notebook_parts(source: str, outcomes: Sequence[Outcome]) -> list[str | Outcome]:
    """A notebook note's cells: its n-th code cell is its snippet n (a cell not run stays as text)."""
    by_index = {o.snippet.index: o for o in outcomes}
    parts: list[str | Outcome] = []
    code_cells = 0
    for cell in nbformat.reads(source, as_version=4).cells:
        if cell.cell_type == "code":
            outcome = by_index.get(code_cells)
            parts.append(outcome if outcome is not None else f"```python\n{cell.source}\n```")
            code_cells += 1
        elif cell.cell_type == "markdown":
            parts.append(cell.source)
    return parts


def export_path(out: Path, note_path: str, fmt: str) -> Path:
    """Where `kn export` writes a note: the note's file name with the format's suffix."""
    return out / (Path(note_path).stem + FORMATS[fmt])
