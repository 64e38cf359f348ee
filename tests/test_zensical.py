"""The same notes under Zensical (mkdocs-material's successor: reads mkdocs.yml, runs Python-Markdown
extensions, no MkDocs plugins): every exec block shows its recorded result, by the fence alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernelnotes.index import Index
from kernelnotes.parse import IncludeResolver

from .conftest import REPO

pytestmark = pytest.mark.slow

# a result box: the renderer's details (passed) or admonition (failed, stale)
BOX = re.compile(r'<details class="(success|failure|warning)"|class="admonition (success|failure|warning)"')


def exec_blocks_per_page() -> dict[str, int]:
    index = Index(None)
    index.update(REPO / "notes", IncludeResolver(REPO, REPO / "snippets"))
    counts: dict[str, int] = {}
    for row in index.db.query(
        "select notes.path, notes.slug, count(*) as n from snippets join notes on notes.id = snippets.note_id"
        " where notes.kind = 'markdown' group by notes.id"
    ):
        executable = sum(
            1
            for s in index.note(row["path"])["snippets"]
            if str(s["attrs"].get("exec", "")).lower() in {"on", "true", "1", "yes"}
        )
        if executable:
            counts[row["slug"]] = executable
    return counts


def test_zensical_build_shows_every_recorded_result(tmp_path):
    zensical = Path(sys.executable).parent / "zensical"
    if not zensical.exists():
        pytest.fail("zensical is a dev dependency: pip install -e '.[dev]'")
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "mkdocs.yml", copy)
    for name in ("notes", "snippets", "overrides", "results"):
        shutil.copytree(REPO / name, copy / name)
    env = {**os.environ, "KERNELNOTES_LOAD_PLUGINS": "0"}
    result = subprocess.run(
        [str(zensical), "build"], cwd=copy, capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    site = copy / "site"
    expected = exec_blocks_per_page()
    assert len(expected) >= 20
    for slug, blocks in expected.items():
        page = (site / slug / "index.html").read_text(encoding="utf-8")
        boxes = len(BOX.findall(page))
        assert boxes == blocks, f"{slug}: {boxes} result boxes for {blocks} exec blocks"
        assert "stale" not in page and "not run yet" not in page, f"{slug}: a result is not current"
    # the feed, tags and search work as under mkdocs
    home = (site / "index.html").read_text(encoding="utf-8")
    assert home.count('class="md-post') >= 5
    assert (site / "tags" / "index.html").exists()
    search = json.loads((site / "search.json").read_text(encoding="utf-8"))
    assert "FlashAttention" in json.dumps(search, ensure_ascii=False)
    assert (site / "feed_rss_created.xml").exists()
