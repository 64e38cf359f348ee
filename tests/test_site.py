"""A real `mkdocs build --strict` of the repository's notes, and of a broken note."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import nbformat

from .conftest import REPO


def mkdocs_build(config, site_dir, *extra, strict=True, cwd=None):
    """A real `mkdocs build` in its own process (strict unless asked otherwise)."""
    flags = ["--strict"] if strict else []
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *flags, "-f", str(config), "-d", str(site_dir), *extra],
        capture_output=True,
        text=True,
        cwd=cwd,
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
    # the execution report is a page of the site, but search finds notes, not its rows of block lines
    report = (tmp_path / "site" / "execution" / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<td><a href="([^"]+)">(posts/[^<:]+):\d+</a></td>', report)
    assert len(links) >= len(notes)  # every block's row links to its note's page on this site
    for href, _ in links:
        assert (tmp_path / "site" / "execution" / href / "index.html").resolve().is_file(), href
    assert ("../online-softmax-flashattention/", "posts/online-softmax-flashattention.md") in links
    docs = json.loads((tmp_path / "site" / "search" / "search_index.json").read_text(encoding="utf-8"))[
        "docs"
    ]
    assert docs and not [d for d in docs if d["location"].startswith("execution/")]
    pages = sorted((tmp_path / "site").rglob("*.html"))
    assert len(pages) > 30
    for page in pages:  # readers in mainland China: no Google Fonts, no CDN, nothing from another host
        assert external_requests(page.read_text(encoding="utf-8")) == [], page
    for css in (tmp_path / "site").rglob("*.css"):
        assert external_requests(css.read_text(encoding="utf-8")) == [], css


# what makes a browser fetch something: stylesheets, preconnects, scripts, images, frames, media,
# CSS url()/@import — links a reader may click (<a href>) and the canonical/feed links are not fetches
FETCHES = re.compile(
    r"<(?:link|script|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:href|src|srcset)=[\"']?([^\"' >]+)"
    r"|url\(\s*[\"']?([^\"')]+)|@import\s+[\"']([^\"']+)",
    re.I,
)


def external_requests(text: str, own_host: str = "kernelnotes.example.org") -> list[str]:
    found = []
    for match in FETCHES.finditer(text):
        url = next(g for g in match.groups() if g)
        tag = match[0].lower()
        if tag.startswith("<link") and re.search(r"rel=[\"']?(canonical|alternate)", tag):
            continue
        host = urlsplit(url if not url.startswith("//") else "https:" + url).netloc
        if host and host != own_host:
            found.append(url)
    return found


def test_external_requests_finds_google_fonts():
    page = (
        '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>'
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<link rel="canonical" href="https://kernelnotes.example.org/x/"><a href="https://arxiv.org/">paper</a>'
        '<script src="../assets/katex/katex.min.js"></script><style>@font-face{src:url(//cdn.example/x.woff)}</style>'
    )
    assert external_requests(page) == [
        "https://fonts.gstatic.com",
        "https://fonts.googleapis.com/css?family=Roboto",
        "//cdn.example/x.woff",
    ]


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


def _include_project(root):
    (root / "notes").mkdir()
    (root / "snippets").mkdir()
    (root / "snippets" / "hello.py").write_text('print("hello from an include")\n', encoding="utf-8")
    (root / "notes" / "index.md").write_text("# Home\n", encoding="utf-8")
    (root / "notes" / "short.md").write_text(
        '# 短\n\n```python exec="on"\n--8<-- "hello.py"\n```\n', encoding="utf-8"
    )
    (root / "notes" / "missing.md").write_text(
        '# 缺\n\n```python exec="on"\n--8<-- "snippets/nowhere.py"\n```\n', encoding="utf-8"
    )
    (root / "mkdocs.yml").write_text(
        "site_name: t\ndocs_dir: notes\nplugins:\n  - search\n  - kernelnotes\n"
        "markdown_extensions:\n  - admonition\n  - pymdownx.details\n  - pymdownx.superfences\n"
        "  - pymdownx.snippets\n",
        encoding="utf-8",
    )


def test_site_resolves_includes_like_kn_from_any_folder(tmp_path):
    """main: the documented `--8<-- "x.py"` form crashed `mkdocs build`, and so did `-f` from another
    folder; one missing include killed the whole build. Now: the same resolver as `kn`, one line."""
    root = tmp_path / "project"
    root.mkdir()
    _include_project(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = mkdocs_build(root / "mkdocs.yml", tmp_path / "site", strict=False, cwd=elsewhere)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    short = (tmp_path / "site" / "short" / "index.html").read_text(encoding="utf-8")
    assert short.count("hello from an include") == 2  # the included source, then its output
    lines = [line for line in result.stderr.splitlines() if "nowhere.py" in line]
    assert any(line.startswith("WARNING") and "missing.md:4" in line for line in lines), result.stderr
    missing = (tmp_path / "site" / "missing" / "index.html").read_text(encoding="utf-8")
    assert "not found" in missing  # that block failed with its reason; the page and site built
    strict = mkdocs_build(root / "mkdocs.yml", tmp_path / "site2")
    assert strict.returncode != 0


def test_site_never_publishes_a_file_through_a_symlink(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    _include_project(root)
    outside = tmp_path / "outside.txt"
    outside.write_text("BUILD-MACHINE-SECRET\n", encoding="utf-8")
    (root / "snippets" / "x.py").symlink_to(outside)
    (root / "notes" / "leak.md").write_text(
        '# 漏\n\n```python\n--8<-- "snippets/x.py"\n```\n\n--8<-- "x.py"\n', encoding="utf-8"
    )
    mkdocs_build(root / "mkdocs.yml", tmp_path / "site")  # fails strict for the missing includes
    published = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert published and not [p for p in published if b"BUILD-MACHINE-SECRET" in p.read_bytes()]
