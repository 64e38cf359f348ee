from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlite_utils

from kernelnotes.index import Index


def note(title, body, tags=(), categories=(), date="2025-01-01", extra=""):
    fm = [f"title: {title}", f"date: {date}"]
    if tags:
        fm.append("tags: [" + ", ".join(tags) + "]")
    if categories:
        fm.append("categories: [" + ", ".join(categories) + "]")
    return "---\n" + "\n".join(fm) + extra + "\n---\n\n" + body + "\n"


@pytest.fixture
def corpus(project, index):
    project.note(
        "sde.md",
        note(
            "扩散模型的 SDE 视角",
            "连续扩散模型将数据逐步加噪，反向过程采样。",
            ["扩散模型", "SDE"],
            ["生成模型"],
            "2025-05-01",
        ),
    )
    project.note(
        "ddim.md",
        note(
            "DDIM 采样",
            "确定性的采样过程，步数更少。扩散。",
            ["扩散模型", "采样"],
            ["生成模型"],
            "2025-06-01",
        ),
    )
    project.note(
        "ckpt.md",
        note(
            "梯度检查点",
            "用重计算换显存，反向传播时重新计算激活值的梯度。",
            ["梯度检查点", "显存"],
            ["工程实践"],
            "2024-11-01",
        ),
    )
    project.note(
        "flash.md",
        note(
            "FlashAttention 的分块计算",
            "online softmax 维护 running max 与 sum；分块读入 Q、K、V。",
            ["attention", "softmax"],
            ["深度学习"],
            "2025-03-01",
        ),
    )
    project.note(
        "mixed.md",
        note(
            "Mixed precision",
            "Loss scaling keeps small gradients from flushing to zero in fp16. 梯度缩放。",
            ["混合精度"],
            ["工程实践"],
            "2025-02-01",
        ),
    )
    report = index.update(project.notes, project.resolver())
    assert report.problems == [] and len(report.added) == 5
    return index


def paths(hits):
    return [h.path for h in hits]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("扩", {"sde.md", "ddim.md"}),  # one character
        ("扩散", {"sde.md", "ddim.md"}),  # two characters inside a longer run: 连续扩散模型
        ("梯度", {"ckpt.md", "mixed.md"}),
        ("采样", {"sde.md", "ddim.md"}),
        ("扩散模型", {"sde.md", "ddim.md"}),  # three or more characters
        ("重新计算激活值", {"ckpt.md"}),
        ("FlashAttention 分块", {"flash.md"}),  # mixed query: every word must match
        ("online softmax", {"flash.md"}),
        ("ONLINE Softmax", {"flash.md"}),  # case-insensitive
        ("gradient", {"mixed.md"}),  # porter stemming: gradients
        ("模型扩散", set()),  # characters present but not adjacent in that order
        ("扩散 显存", set()),
    ],
)
def test_chinese_english_and_mixed_queries(corpus, query, expected):
    assert set(paths(corpus.search(query))) == expected


def test_default_fts5_tokenizer_would_have_failed(corpus):
    """The reason for our tokenisation: stock unicode61 sees 连续扩散模型将数据逐步加噪 as one token."""
    db = sqlite_utils.Database(memory=True)
    db.execute("create virtual table t using fts5(body)")
    db.execute("insert into t values ('连续扩散模型将数据逐步加噪')")
    assert db.execute("select count(*) from t where t match '扩散'").fetchone()[0] == 0


@pytest.mark.parametrize(
    "query",
    ['"扩散', "扩散*", "扩散 AND", "(扩散)", "-扩散", "扩散 OR NOT", "NEAR(扩散", "title:扩散", "^扩散"],
)
def test_fts_syntax_characters_are_searched_as_text(corpus, query):
    found = paths(corpus.search(query))
    if any(w in query for w in ("AND", "OR", "NOT", "NEAR", "title")):
        assert found == []  # the words themselves are searched for, and no note contains them
    else:
        assert set(found) == {"sde.md", "ddim.md"}


def test_only_syntax_characters_finds_nothing_without_error(corpus):
    assert corpus.search('" * ( ) -') == []


def test_title_and_tag_matches_rank_above_body_matches(project, index):
    filler = "其他内容。" * 20
    project.note("body.md", note("另一篇", filler + "这里提到了扩散一次。" + filler))
    project.note("tag.md", note("另一篇二", filler + filler, tags=["扩散模型"]))
    project.note("title.md", note("扩散入门", filler + filler))
    index.update(project.notes, project.resolver())
    assert paths(index.search("扩散")) == ["title.md", "tag.md", "body.md"]


def test_tag_and_category_filters(corpus):
    assert paths(corpus.search("采样", tag="采样")) == ["ddim.md"]
    assert set(paths(corpus.search("梯度", category="工程实践"))) == {"ckpt.md", "mixed.md"}
    assert paths(corpus.search("梯度", tag="显存")) == ["ckpt.md"]
    assert corpus.search("梯度", tag="nope") == []
    assert paths(corpus.search("softmax", tag="SOFTMAX")) == [
        "flash.md"
    ]  # tag names match case-insensitively


def test_hit_has_fragment_with_marked_match_and_labels(corpus):
    from kernelnotes.index import MARK_CLOSE, MARK_OPEN

    (hit,) = corpus.search("加噪")
    assert f"{MARK_OPEN}加噪{MARK_CLOSE}" in hit.fragment and "\u200b" not in hit.fragment
    assert hit.tags == ["扩散模型", "SDE"] and hit.categories == ["生成模型"] and hit.date == "2025-05-01"
    assert corpus.search("采样", limit=1)[0].path in {"sde.md", "ddim.md"}


def test_tags_with_counts(corpus):
    tags = dict(corpus.tags())
    assert tags["扩散模型"] == 2 and tags["显存"] == 1 and corpus.tags()[0] == ("扩散模型", 2)


# ---- incremental indexing ----------------------------------------------------------------------------


def test_unchanged_files_are_not_parsed_again(corpus, project):
    report = corpus.update(project.notes, project.resolver())
    assert (report.parsed, report.unchanged, report.added, report.updated) == (0, 5, [], [])


def test_touched_but_identical_file_is_not_parsed(corpus, project):
    path = project.notes / "sde.md"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    report = corpus.update(project.notes, project.resolver())
    assert report.parsed == 0 and report.unchanged == 5
    assert corpus.update(project.notes, project.resolver()).unchanged == 5  # mtime was recorded


def test_changed_note_is_reparsed_and_search_follows(corpus, project):
    project.note("sde.md", note("随机微分方程", "这次只谈 Itô 积分。", ["SDE"]))
    report = corpus.update(project.notes, project.resolver())
    assert report.updated == ["sde.md"] and report.parsed == 1
    assert paths(corpus.search("扩散")) == ["ddim.md"]
    assert paths(corpus.search("积分")) == ["sde.md"]
    assert dict(corpus.tags()).get("扩散模型") == 1


def test_deleted_note_disappears_with_its_rows(corpus, project):
    (project.notes / "ddim.md").unlink()
    report = corpus.update(project.notes, project.resolver())
    assert report.deleted == ["ddim.md"]
    assert paths(corpus.search("扩散")) == ["sde.md"]
    assert (
        corpus.db.execute(
            "select count(*) from note_tags where note_id not in (select id from notes)"
        ).fetchone()[0]
        == 0
    )
    assert corpus.db.execute("select count(*) from notes_search").fetchone()[0] == 4


def test_renamed_note_moves_and_keeps_its_id(corpus, project):
    old_id = corpus.note("ckpt.md")["id"]
    (project.notes / "engineering").mkdir()
    (project.notes / "ckpt.md").rename(project.notes / "engineering" / "ckpt.md")
    report = corpus.update(project.notes, project.resolver())
    assert (
        report.renamed == [("ckpt.md", "engineering/ckpt.md")] and report.deleted == [] and report.added == []
    )
    assert corpus.note("engineering/ckpt.md")["id"] == old_id and corpus.note("ckpt.md") is None
    assert paths(corpus.search("显存")) == ["engineering/ckpt.md"]


def test_change_to_included_file_reindexes_the_note(project, index):
    inc = project.snippet("f.py", "def first():\n    pass\n")
    project.note("a.md", '# A\n\n```python\n--8<-- "snippets/f.py"\n```\n')
    index.update(project.notes, project.resolver())
    inc.write_text("def second():\n    pass\n")
    report = index.update(project.notes, project.resolver())
    assert report.updated == ["a.md"]
    assert "second" in index.note("a.md")["snippets"][0]["code"]


def test_bad_notes_are_reported_and_the_rest_indexed(project, index):
    project.note("good.md", note("好的笔记", "扩散"))
    project.note("yaml.md", "---\ntags: [a\n---\n# 坏 YAML\n\n扩散也在这里\n")
    project.note("date.md", "---\ndate: 2024/01/31\n---\n# 坏日期\n")
    project.note("fence.md", "# 未闭合\n\n```python\nx = 1\n")
    project.note("include.md", '# 缺文件\n\n```python\n--8<-- "snippets/missing.py"\n```\n')
    (project.notes / "empty.md").write_text("")
    (project.notes / "binary.md").write_bytes(b"\x00\x01\x02")
    (project.notes / "gbk.md").write_bytes("# 中文\n扩散".encode("gbk"))
    report = index.update(project.notes, project.resolver())
    by_path = {p.path: p for p in report.problems}
    assert set(by_path) == {"yaml.md", "date.md", "fence.md", "include.md", "empty.md", "binary.md", "gbk.md"}
    assert by_path["include.md"].line == 4 and by_path["fence.md"].line == 3
    assert set(paths(index.search("扩散"))) == {"good.md", "yaml.md"}
    assert index.counts()["notes"] == 5  # empty, binary and non-UTF-8 files are not notes
    # problems persist for unchanged files and vanish when a file is fixed
    assert {p.path for p in index.update(project.notes, project.resolver()).problems} == set(by_path)
    project.note("date.md", "---\ndate: 2024-01-31\n---\n# 好日期\n")
    assert "date.md" not in {p.path for p in index.update(project.notes, project.resolver()).problems}


def test_schema_opens_with_sqlite_utils_cli(tmp_path, project):
    db_path = tmp_path / "index.db"
    project.note("a.md", note("标题", "正文", ["t1", "t2"], ["c"]))
    Index(db_path).update(project.notes, project.resolver())
    out = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "tables", str(db_path), "--counts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts = {t["table"]: t["count"] for t in json.loads(out)}
    assert (
        counts["notes"] == 1 and counts["tags"] == 2 and counts["note_tags"] == 2 and counts["snippets"] == 0
    )
    assert "notes_search_fts" in counts
    # sqlite-utils' own search works on the stored text
    db = sqlite_utils.Database(db_path)
    assert db["notes_search"].detect_fts() == "notes_search_fts"


def test_migrations_are_recorded_and_a_newer_schema_is_refused(tmp_path):
    from kernelnotes.index import MIGRATIONS, open_db

    db = open_db(tmp_path / "i.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    open_db(tmp_path / "i.db")  # reopening applies nothing and does not fail
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        open_db(tmp_path / "i.db")


def test_include_created_later_reindexes_the_note(project, index):
    project.note("a.md", '# A\n\n```python\n--8<-- "snippets/later.py"\n```\n')
    assert index.update(project.notes, project.resolver()).problems
    project.snippet("later.py", "LATER = 1\n")
    report = index.update(project.notes, project.resolver())
    assert report.updated == ["a.md"] and report.problems == []
    assert index.note("a.md")["snippets"][0]["code"] == "LATER = 1"


def test_renames_of_identical_files_keep_their_ids(project, index):
    for name in ("b.md", "c.md"):
        project.note(name, "# same\n\nidentical\n")
    index.update(project.notes, project.resolver())
    ids = {p: index.note(p)["id"] for p in ("b.md", "c.md")}
    (project.notes / "b.md").rename(project.notes / "d.md")
    (project.notes / "c.md").rename(project.notes / "e.md")
    report = index.update(project.notes, project.resolver())
    assert sorted(report.renamed) == [("b.md", "d.md"), ("c.md", "e.md")] and not report.added
    assert {index.note("d.md")["id"], index.note("e.md")["id"]} == set(ids.values())


def test_datasette_browses_and_searches_the_index(tmp_path, project):
    import asyncio
    import concurrent.futures
    import urllib.parse

    from datasette.app import Datasette

    project.note("a.md", note("连续扩散模型", "正文：扩散与采样。", ["扩散模型"]))
    project.note("b.md", note("梯度检查点", "重计算。", ["显存"]))
    Index(tmp_path / "kn.db").update(project.notes, project.resolver())

    async def query():
        ds = Datasette([str(tmp_path / "kn.db")])
        notes = await ds.client.get("/kn/notes.json?_shape=array&_col=title")
        # FTS as datasette offers it: a Chinese word is the phrase of its characters
        found = await ds.client.get(
            "/kn/notes_search.json?_shape=array&_search=" + urllib.parse.quote('"扩 散"')
        )
        return notes, found

    # A fresh thread owns its own event loop: Playwright's sync API keeps one
    # running in this worker's main thread when a browser test ran before.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        notes, found = pool.submit(asyncio.run, query()).result()
    assert notes.status_code == 200 and {r["title"] for r in notes.json()} == {"连续扩散模型", "梯度检查点"}
    assert found.status_code == 200 and len(found.json()) == 1
