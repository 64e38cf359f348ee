"""A real `mkdocs build --strict` of the repository's notes, and of a broken note."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat

from .conftest import REPO


def mkdocs_build(config, site_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site_dir), *extra],
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "KERNELNOTES_LOAD_PLUGINS": "0"},
    )


def test_repository_site_builds_strict(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "mkdocs.yml", copy)
    for name in ("notes", "snippets", "overrides", "results"):
        shutil.copytree(REPO / name, copy / name)
    result = mkdocs_build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "KernelNotes" in index
    assert (copy / ".kernelnotes" / "index.db").exists()  # the plugin indexed the notes during the build
    # every note with executed blocks links to itself as a notebook and a script, served by the site
    page = (tmp_path / "site" / "online-softmax-flashattention" / "index.html").read_text(encoding="utf-8")
    downloads = tmp_path / "site" / "assets" / "kernelnotes" / "downloads" / "posts"
    for fmt, label in (("ipynb", "下载 Notebook"), ("py", "下载 Python 脚本")):
        href = f"../assets/kernelnotes/downloads/posts/online-softmax-flashattention.{fmt}"
        assert f'href="{href}"' in page and label in page
    notes = [
        p
        for p in (copy / "notes" / "posts").iterdir()
        if p.suffix == ".ipynb" or 'exec="on"' in p.read_text(encoding="utf-8")  # a notebook's cells run
    ]
    assert sorted(p.name for p in downloads.glob("*.ipynb")) == sorted(f"{p.stem}.ipynb" for p in notes)
    nb = nbformat.read(downloads / "online-softmax-flashattention.ipynb", as_version=4)
    nbformat.validate(nb)
    assert any(c.get("outputs") for c in nb.cells)  # the recorded results, embedded
    assert "# %%" in (downloads / "online-softmax-flashattention.py").read_text(encoding="utf-8")


def test_broken_note_fails_strict_build_with_one_clear_line(tmp_path):
    (tmp_path / "notes" / "posts").mkdir(parents=True)
    (tmp_path / "notes" / "index.md").write_text("# Home\n", encoding="utf-8")
    (tmp_path / "notes" / "page.md").write_text(
        '# P\n\n```python\n--8<-- "snippets/missing.py"\n```\n', encoding="utf-8"
    )
    (tmp_path / "snippets").mkdir()
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes\n", encoding="utf-8"
    )
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if "page.md:4" in l]
    assert len(lines) == 1 and 'include "snippets/missing.py" not found' in lines[0]
    assert "Traceback" not in result.stderr
