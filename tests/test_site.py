"""A real `mkdocs build --strict` of the repository's notes, and of a broken note."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

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
