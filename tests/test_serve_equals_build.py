"""What `mkdocs serve` shows after an edit is what a clean `mkdocs build --strict` makes of the same
files: a note's text, its title and tags, a theme template, an included snippet and an imported
module, mkdocs.yml, a new note, a deleted note and a draft flag, with the site cache on (the fast
paths, the memoised page templates among them) — compared page by page."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from . import blogsite
from .test_serve import free_port

# what serve adds to every page (a page reloads itself after a rebuild)
LIVERELOAD = re.compile(r"<script>\nvar livereload = function.*?</script>(?=</body>)", re.S)


class Serve:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.log = root, port, root / "serve.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=blogsite.ENV,
                start_new_session=True,
            )
        self.builds = 0
        self._wait(lambda text: "Serving on" in text)
        time.sleep(1.0)  # let the watcher settle before the first edit
        self.builds = self._count()

    def _count(self) -> int:
        return self.log.read_text(errors="replace").count("Reloading browsers")

    def _wait(self, ready, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not ready(self.log.read_text(errors="replace")):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(self.log.read_text(errors="replace")[-4000:])
            time.sleep(0.2)

    def rebuilt(self) -> None:
        """Wait for the rebuild an edit started, and for quiet afterwards."""
        self._wait(lambda text: text.count("Reloading browsers") > self.builds)
        time.sleep(1.5)
        self._wait(lambda text: "Building documentation" not in text.rsplit("Reloading browsers", 1)[1])
        self.builds = self._count()

    def mark(self) -> int:
        return len(self.log.read_text(errors="replace"))

    def since(self, mark: int) -> str:
        """The log written after `mark`."""
        return self.log.read_text(errors="replace")[mark:]

    def get(self, path: str) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}/{urllib.parse.quote(path)}"
            with urllib.request.urlopen(url, timeout=30) as response:
                return LIVERELOAD.sub("", response.read().decode("utf-8"))
        except urllib.error.HTTPError:
            return None

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def assert_serve_equals_clean_build(serve: Serve, root: Path, step: str) -> dict[str, str]:
    site = root / f"clean-{step}"
    # clean means clean: not even the site cache the earlier builds saved (a stale entry there would
    # make the "clean" build as wrong as serve)
    shutil.rmtree(root / ".kernelnotes" / "cache", ignore_errors=True)
    result = blogsite.build(root, site)
    assert result.returncode == 0, result.stderr[-3000:]
    clean = blogsite.pages(site)
    served = {name: serve.get(name.removesuffix("index.html")) for name in clean}
    served = {name: blogsite.comparable(name, page or "") for name, page in served.items()}
    different = [name for name in clean if served[name] != clean[name]]
    if different:
        diff = difflib.unified_diff(
            clean[different[0]].splitlines(), (served[different[0]] or "").splitlines(), lineterm="", n=1
        )
        detail = "\n".join(list(diff)[:40])
        raise AssertionError(f"after {step}: served pages differ from a clean build: {different}\n{detail}")
    return clean


def site_files(site: Path) -> set[str]:
    return {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_serve_shows_what_a_clean_build_makes_after_each_edit(tmp_path):
    port = free_port()
    blogsite.write_project(tmp_path, site_url=f"http://127.0.0.1:{port}/")
    serve = Serve(tmp_path, port)
    try:
        assert_serve_equals_clean_build(serve, tmp_path, "start")
        posts = tmp_path / "notes" / "posts"

        # a note: its text, in the excerpt the listings show
        alpha = posts / "alpha.md"
        mark = serve.mark()
        alpha.write_text(alpha.read_text("utf-8").replace("的摘要", "的新摘要"), "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "note")
        assert "alpha 的新摘要" in pages["alpha/index.html"] + pages["index.html"]
        # and the rebuild rendered again only the note and the listings that show its excerpt
        counts = re.findall(r"site cache: (.*)", serve.log.read_text(errors="replace"))[-1]
        hits, misses = (int(re.search(rf"(\d+) page {w}", counts)[1]) for w in ("hit", "miss"))  # type: ignore[index]
        assert misses <= 6 and hits >= 8, counts
        # the note's page was shown before the full rebuild, which then wrote the listings showing
        # its excerpt first and reloaded the browsers again
        log = serve.since(mark)
        assert "posts/alpha.md shown in" in log and "page(s) the edit changes shown" in log, log

        # its body, after the excerpt: the preview is the page the full build makes (one reload)
        beta = posts / "beta.md"
        mark = serve.mark()
        beta.write_text(beta.read_text("utf-8").replace("## 正文", "## 正文\n\n正文里新加的一句。"), "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "body")
        assert "正文里新加的一句" in pages["beta/index.html"]
        log = serve.since(mark)
        assert "posts/beta.md shown in" in log, log
        assert "reload again" not in log and "the edit changes shown" not in log, log

        # a title, a tag, a date and a pin: the note moves to another archive month and to the top of
        # the listings; every listing, the tags page and the search index show the new title
        mark = serve.mark()
        alpha.write_text(
            alpha.read_text("utf-8")
            .replace("title: 笔记 alpha", "title: 笔记 alpha 改名\npin: true")
            .replace("tags: [attention]", "tags: [显存]")
            .replace("date: 2025-01-01", "date: 2024-12-01"),
            "utf-8",
        )
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "title-tag-date-pin")
        assert "笔记 alpha 改名" in pages["alpha/index.html"] and "显存" in pages["tags/index.html"]
        assert "笔记 alpha 改名" in pages["tags/index.html"] and "archive/2024/index.html" in pages
        # front matter: no preview; the build wrote the note and the listings first
        log = serve.since(mark)
        assert " shown in " not in log and "page(s) the edit changes shown" in log, log

        # a template of the theme's custom_dir: every page
        blogsite.write_theme_override(tmp_path, "页脚二")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "theme")
        assert 'content="页脚二"' in pages["gamma/index.html"]

        # an included snippet (--8<--) and a module an exec block imports
        (tmp_path / "snippets" / "shared.py").write_text("def shared():\n    return 'v2'\n", "utf-8")
        (tmp_path / "snippets" / "helper.py").write_text("def value():\n    return 42\n", "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "snippets")
        assert "v2" in pages["alpha/index.html"] and "value 42" in pages["runs/index.html"]

        # mkdocs.yml: every page changes
        config = (tmp_path / "mkdocs.yml").read_text("utf-8")
        (tmp_path / "mkdocs.yml").write_text(config.replace("site_name: t\n", "site_name: 新名字\n"), "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "config")
        assert "新名字" in pages["beta/index.html"]
        before = site_files(tmp_path / "clean-config")

        # a new note, a deleted note and a draft flag
        blogsite.write_post(tmp_path, "delta", "笔记 delta", "2025-03-01", "强化学习", "SSM")
        (posts / "beta.md").unlink()
        blogsite.write_post(tmp_path, "gamma", "笔记 gamma", "2025-01-03", extra="draft: true\n")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "new-deleted-draft")
        # serve rewrites only what changed: what a clean build no longer makes is gone from it too
        gone = before - site_files(tmp_path / "clean-new-deleted-draft")
        assert "beta/index.html" in gone
        assert [name for name in sorted(gone) if serve.get(name.removesuffix("index.html")) is not None] == []
        listing = pages["index.html"] + pages.get("page/2/index.html", "") + pages["tags/index.html"]
        assert "笔记 delta" in listing and "笔记 beta" not in listing and "笔记 gamma" not in listing
    finally:
        serve.stop()


HOOK = """
from pathlib import Path


def on_env(env, config, files):
    env.globals["kn_banner"] = (Path(config.config_file_path).parent / "banner.txt").read_text("utf-8").strip()
    return env
"""


@pytest.mark.slow
def test_serve_sees_includes_inherited_config_and_hook_globals(tmp_path):
    """What a page shows but its own Markdown does not name: an included file edited alone, a config
    file mkdocs.yml INHERITs from, and a template global a hook reads from a data file."""
    port = free_port()
    blogsite.write_project(tmp_path, site_url=f"http://127.0.0.1:{port}/")
    (tmp_path / "hooks.py").write_text(HOOK, "utf-8")
    (tmp_path / "banner.txt").write_text("横幅一\n", "utf-8")
    (tmp_path / "overrides" / "main.html").write_text(
        '{% extends "base.html" %}\n{% block extrahead %}{{ super() }}'
        '<meta name="kn-banner" content="{{ kn_banner }}">{% endblock %}\n',
        "utf-8",
    )
    config = (tmp_path / "mkdocs.yml").read_text("utf-8")
    head, extensions = config.split("markdown_extensions:")
    (tmp_path / "mkdocs.yml").write_text("INHERIT: base.yml\nhooks:\n  - hooks.py\n" + head, "utf-8")
    (tmp_path / "base.yml").write_text("markdown_extensions:" + extensions, "utf-8")
    serve = Serve(tmp_path, port)
    try:
        assert_serve_equals_clean_build(serve, tmp_path, "start")
        (tmp_path / "snippets" / "shared.py").write_text("def shared():\n    return 'v3'\n", "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "include-alone")
        assert "v3" in pages["beta/index.html"]

        (tmp_path / "banner.txt").write_text("横幅第二版\n", "utf-8")
        beta = tmp_path / "notes" / "posts" / "beta.md"
        beta.write_text(beta.read_text("utf-8").replace("的摘要", "的摘要。"), "utf-8")
        serve.rebuilt()
        pages = assert_serve_equals_clean_build(serve, tmp_path, "hook-global")
        assert 'content="横幅第二版"' in pages["gamma/index.html"]

        base = tmp_path / "base.yml"
        base.write_text(base.read_text("utf-8").replace("permalink: true", 'permalink: "¶¶"'), "utf-8")
        serve.rebuilt()  # serve watches the inherited file itself
        pages = assert_serve_equals_clean_build(serve, tmp_path, "inherited-config")
        assert "¶¶" in pages["alpha/index.html"]
    finally:
        serve.stop()
