from __future__ import annotations

import datetime as dt
import json

import pytest

from kernelnotes.parse import make_excerpt, parse_file, parse_info


def parse(project, rel, text):
    path = project.note(rel, text)
    return parse_file(path, rel, project.resolver())


# ---- front matter ---------------------------------------------------------------------------------


def test_front_matter_fields_and_unknown_keys_kept(project):
    r = parse(
        project,
        "a.md",
        """
        ---
        title: 在线 softmax
        date: 2025-03-14
        categories: [深度学习]
        tags:
          - softmax
          - attention
        slug: online-softmax
        draft: true
        authors: [kn]
        description: 一句话
        series: flash
        ---
        正文
        """,
    )
    n = r.note
    assert r.problems == []
    assert (n.title, n.slug, n.draft, n.description) == ("在线 softmax", "online-softmax", True, "一句话")
    assert n.date == dt.datetime(2025, 3, 14) and n.updated is None
    assert n.categories == ["深度学习"] and n.tags == ["softmax", "attention"] and n.authors == ["kn"]
    assert n.meta["series"] == "flash"


def test_date_mapping_created_updated_and_datetime(project):
    n = parse(
        project,
        "a.md",
        """
        ---
        date:
          created: 2024-12-01 08:30:00
          updated: 2025-01-02
        ---
        x
        """,
    ).note
    assert n.date == dt.datetime(2024, 12, 1, 8, 30) and n.updated == dt.datetime(2025, 1, 2)


def test_title_falls_back_to_h1_then_file_name(project):
    assert (
        parse(project, "a.md", "---\ntags: [x]\n---\n\n# 扩散模型入门\n\ntext\n").note.title == "扩散模型入门"
    )
    n = parse(project, "sub/linear-attention.md", "just text\n").note
    assert n.title == "linear-attention" and n.slug == "linear-attention"


def test_slug_from_chinese_title_is_the_sites_unicode_slug(project):
    # the slug mkdocs-material and Zensical give a note without `slug:` (pymdownx.slugs, case lower)
    assert parse(project, "a.md", "# 梯度检查点 Demo\n").note.slug == "梯度检查点-demo"


def test_quoted_date_is_accepted_with_a_warning(project):
    r = parse(project, "a.md", "---\ndate: '2025-01-31'\n---\nx\n")
    assert r.note.date == dt.datetime(2025, 1, 31)
    assert [p.severity for p in r.problems] == ["warning"] and "unquoted" in r.problems[0].hint


@pytest.mark.parametrize("value", ["2024/01/31", "yesterday", "2024-13-45"])
def test_unparseable_date_is_a_problem_and_note_still_parsed(project, value):
    r = parse(project, "a.md", f"---\ntitle: T\ndate: {value}\n---\nbody\n")
    assert r.note is not None and r.note.title == "T" and r.note.date is None
    assert (
        len(r.problems) == 1
        and "is not a date" in r.problems[0].message
        and "YYYY-MM-DD" in r.problems[0].hint
    )


def test_updated_without_created(project):
    r = parse(project, "a.md", "---\ndate:\n  updated: 2025-01-02\n---\nx\n")
    assert "no 'created'" in r.problems[0].message and r.note.date is None


def test_broken_yaml_reports_line_and_keeps_body(project):
    r = parse(project, "bad.md", "---\ntitle: ok\ntags: [a, b\nslug: x\n---\n# 标题\n\n扩散正文\n")
    assert r.note is not None and r.note.title == "标题" and "扩散正文" in r.note.body
    (p,) = r.problems
    assert p.path == "bad.md" and p.line >= 3 and "invalid YAML" in p.message
    assert str(p).startswith(f"bad.md:{p.line}: error: invalid YAML")


def test_unclosed_front_matter(project):
    r = parse(project, "a.md", "---\ntitle: x\n\nbody\n")
    assert r.note is not None and "never closed" in r.problems[0].message


# ---- excerpt ----------------------------------------------------------------------------------------


def test_excerpt_is_text_before_more_without_h1(project):
    n = parse(project, "a.md", "---\ntitle: T\n---\n# T\n\n第一段 $x^2$。\n\n<!-- more -->\n\n后文\n").note
    assert n.excerpt == "第一段 $x^2$。"


def test_excerpt_without_separator_takes_paragraphs_up_to_about_300_chars():
    body = "# T\n\n" + "\n\n".join(
        ["短段落一。", "```python\nprint(1)\n\nprint(2)\n```", "短段落二。", "长" * 400]
    )
    excerpt = make_excerpt(body)
    assert excerpt.startswith("短段落一。\n\n短段落二。")
    assert "print" not in excerpt and "#" not in excerpt
    assert 250 <= len(excerpt) <= 360 and excerpt.endswith("…")


def test_excerpt_of_one_long_paragraph_is_cut_at_a_sentence():
    text = "这是一个句子。" * 80
    excerpt = make_excerpt(text)
    assert excerpt.endswith("。…") and len(excerpt) <= 302


# ---- snippets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "language", "attrs"),
    [
        (
            'python exec="on" session="s1" check="softmax:my_softmax"',
            "python",
            {"exec": "on", "session": "s1", "check": "softmax:my_softmax"},
        ),
        ("python exec=on linenums='1' hl", "python", {"exec": "on", "linenums": "1", "hl": True}),
        ('{.python .extra #code exec="on"}', "python", {"exec": "on", "id": "code"}),
        ("", "", {}),
        ("Bash", "Bash", {}),  # as written: superfences matches languages case-sensitively
    ],
)
def test_parse_info(info, language, attrs):
    assert parse_info(info) == (language, attrs)


def test_snippets_with_lines_attrs_and_indentation(project):
    n = parse(
        project,
        "a.md",
        """
        ---
        title: t
        ---
        text

        ```python exec="on" session="a"
        x = 1
        ```

        - item

            ~~~~bash
            echo hi
            ~~~~

        ````markdown
        ```python
        nested
        ```
        ````
        """,
    ).note
    s0, s1, s2 = n.snippets
    assert (s0.language, s0.attrs, s0.start_line, s0.end_line, s0.code) == (
        "python",
        {"exec": "on", "session": "a"},
        6,
        8,
        "x = 1",
    )
    assert s0.executable and not s1.executable
    assert (s1.language, s1.code, s1.start_line) == ("bash", "echo hi", 12)
    assert s2.language == "markdown" and s2.code == "```python\nnested\n```"


def test_include_is_resolved_and_its_hash_recorded(project):
    project.snippet("softmax.py", "def f(x):\n    return x\n")
    path = project.note("a.md", '```python exec="on"\n--8<-- "snippets/softmax.py"\nprint(f(1))\n```\n')
    n = parse_file(path, "a.md", project.resolver()).note
    (s,) = n.snippets
    assert s.code == "def f(x):\n    return x\nprint(f(1))"
    assert s.includes[0].path == "snippets/softmax.py" and len(s.includes[0].sha) == 64
    assert n.includes == {"snippets/softmax.py": s.includes[0].sha}
    # the same name without the folder resolves against snippets/ too
    path.write_text('```python\n--8<-- "softmax.py"\n```\n', encoding="utf-8")
    assert "def f" in parse_file(path, "a.md", project.resolver()).note.snippets[0].code


def test_include_lines_and_sections_and_block_form(project):
    project.snippet("k.py", "a = 1\nb = 2\nc = 3\n# --8<-- [start:core]\nd = 4\n# --8<-- [end:core]\n")
    project.snippet("m.py", "m = 0\n")
    n = parse(
        project,
        "a.md",
        """
        ```python
        --8<-- "snippets/k.py:2:3"
        ```

        ```python
        --8<-- "snippets/k.py:core"
        ```

        ```python
        --8<--
        snippets/m.py
        snippets/k.py:1:1
        --8<--
        ```
        """,
    ).note
    assert [s.code for s in n.snippets] == ["b = 2\nc = 3", "d = 4", "m = 0\na = 1"]


def test_include_outside_project_is_refused(project, tmp_path_factory):
    secret = tmp_path_factory.mktemp("elsewhere") / "secret.py"
    secret.write_text("TOKEN = 1\n")
    r = parse(
        project, "a.md", f'```python\n--8<-- "{secret}"\n--8<-- "../{secret.parent.name}/secret.py"\n```\n'
    )
    assert "TOKEN" not in r.note.snippets[0].code
    assert len(r.problems) == 2


def test_missing_include_names_file_and_line(project):
    r = parse(project, "a.md", '# t\n\n```python\nx = 1\n--8<-- "snippets/nope.py"\n```\n')
    (p,) = r.problems
    assert (p.path, p.line) == ("a.md", 5) and 'include "snippets/nope.py" not found' in p.message
    assert r.note.snippets[0].code == 'x = 1\n--8<-- "snippets/nope.py"'


def test_unterminated_fence_reports_opening_line_and_keeps_earlier_snippets(project):
    r = parse(
        project,
        "a.md",
        '---\ntitle: t\n---\n```python\nok\n```\n\ntext\n\n```python exec="on"\nnever closed\n',
    )
    assert [s.code for s in r.note.snippets] == ["ok"]
    (p,) = r.problems
    assert p.line == 10 and "never closed" in p.message


# ---- bad files --------------------------------------------------------------------------------------


def test_empty_binary_and_non_utf8_files(project):
    cases = {"empty.md": b"  \n", "bin.md": b"\x89PNG\r\n\x00\x00", "gbk.md": "# 标题\n\n扩散".encode("gbk")}
    for name, data in cases.items():
        path = project.notes / name
        path.write_bytes(data)
        r = parse_file(path, name, project.resolver())
        assert r.note is None and len(r.problems) == 1, name
    assert (
        "empty" in parse_file(project.notes / "empty.md", "empty.md", project.resolver()).problems[0].message
    )
    gbk = parse_file(project.notes / "gbk.md", "gbk.md", project.resolver()).problems[0]
    assert "UTF-8" in gbk.message and gbk.line == 1


def test_crlf_and_bom(project):
    path = project.notes / "w.md"
    path.write_bytes("\ufeff---\r\ntitle: 窗口\r\n---\r\n```python\r\nx\r\n```\r\n".encode())
    n = parse_file(path, "w.md", project.resolver()).note
    assert n.title == "窗口" and n.snippets[0].code == "x"


# ---- notebooks ------------------------------------------------------------------------------------


def notebook(cells, metadata=None):
    return json.dumps({"cells": cells, "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5})


def test_notebook_title_tags_and_code_cells(project):
    path = project.notes / "nb" / "scan.ipynb"
    path.parent.mkdir()
    path.write_text(
        notebook(
            [
                {"cell_type": "markdown", "source": ["# 选择性扫描\n", "SSM 的并行扫描"], "metadata": {}},
                {"cell_type": "code", "source": ["import math\n", "print(1)"], "metadata": {}, "outputs": []},
                {
                    "cell_type": "code",
                    "source": "y = 2",
                    "metadata": {"kernelnotes": {"check": "selective_scan"}},
                },
            ],
            {
                "tags": ["SSM"],
                "date": "2025-02-03",
                "categories": ["深度学习"],
                "kernelspec": {"language": "python"},
            },
        ),
        encoding="utf-8",
    )
    r = parse_file(path, "nb/scan.ipynb", project.resolver())
    n = r.note
    assert (n.kind, n.title, n.tags, n.categories) == ("notebook", "选择性扫描", ["SSM"], ["深度学习"])
    assert [(s.code, s.start_line, s.language) for s in n.snippets] == [
        ("import math\nprint(1)", 2, "python"),
        ("y = 2", 3, "python"),
    ]
    assert n.snippets[1].attrs == {"exec": "on", "session": "notebook", "check": "selective_scan"}
    assert "并行扫描" in n.body and n.date == dt.datetime(2025, 2, 3)


def test_broken_notebook_is_a_problem(project):
    path = project.notes / "x.ipynb"
    path.write_text('{"cells": [', encoding="utf-8")
    r = parse_file(path, "x.ipynb", project.resolver())
    assert r.note is None and "not a valid notebook" in r.problems[0].message


def test_notebook_string_date_is_not_a_quoted_date_warning(project):
    path = project.notes / "d.ipynb"
    path.write_text(
        notebook([{"cell_type": "markdown", "source": "# T"}], {"date": "2025-10-12"}), encoding="utf-8"
    )
    r = parse_file(path, "d.ipynb", project.resolver())
    assert r.problems == [] and r.note.date == dt.datetime(2025, 10, 12)
