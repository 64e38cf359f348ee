"""The site cache (kernelnotes.site_cache) changes no byte of the site, on its fast and slow paths,
and steps aside with one log line for a mkdocs-material it was not tested with."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from kernelnotes import site_cache

from . import blogsite


@pytest.mark.slow
def test_fast_paths_build_the_same_site_as_material_alone(tmp_path):
    blogsite.write_project(tmp_path, cache=True)
    fast = blogsite.build(tmp_path, tmp_path / "fast")
    assert fast.returncode == 0, fast.stderr[-3000:]
    # both excerpt paths ran: fast for plain notes, material's own for footnotes after the separator
    # and for a separator inside a code block
    counts = re.search(r"kernelnotes: site cache: (.*)", fast.stderr)
    assert counts and "excerpt fast" in counts[1] and "excerpt slow" in counts[1], fast.stderr[-2000:]
    blogsite.write_config(tmp_path, site_url="https://example.org/", cache=False)
    shutil.rmtree(tmp_path / ".kernelnotes" / "cache", ignore_errors=True)
    slow = blogsite.build(tmp_path, tmp_path / "slow")
    assert slow.returncode == 0, slow.stderr[-3000:]
    assert "site cache" not in slow.stderr
    a, b = blogsite.pages(tmp_path / "fast"), blogsite.pages(tmp_path / "slow")
    assert sorted(a) == sorted(b) and len(a) > 8
    assert [name for name in a if a[name] != b[name]] == []
    home = a["index.html"]
    assert "真正的摘要到这里" in home and "后文" not in home  # the separator in the code block did not cut
    assert "alpha 的摘要" in "".join(text for name, text in a.items() if name.startswith("page/"))


def test_untested_material_version_keeps_the_slow_path_with_one_log_line(monkeypatch, caplog):
    from material.plugins.blog.structure import Excerpt

    site_cache.uninstall()
    original = Excerpt.render
    monkeypatch.setattr(site_cache, "MATERIAL_RANGE", ((9, 0), (9, 1)))
    monkeypatch.setattr(site_cache.STATE, "installed", {})
    with caplog.at_level(logging.INFO, logger="mkdocs.plugins.kernelnotes"):
        skipped = site_cache.install()
        site_cache.install()  # a serve rebuild: no second line
    try:
        assert len(skipped) == 1 and "mkdocs-material" in skipped[0]
        assert Excerpt.render is original  # material's own excerpt rendering stays
        lines = [r.getMessage() for r in caplog.records if "site cache off" in r.getMessage()]
        assert len(lines) == 1 and ">=9.0,<9.1" in lines[0]
    finally:
        site_cache.uninstall()
    assert Excerpt.render is original


def test_render_cache_sees_a_changed_include(tmp_path, monkeypatch):
    """A page whose Markdown is unchanged but whose --8<-- file changed is rendered again."""
    from mkdocs.config import load_config
    from mkdocs.structure.files import File, Files
    from mkdocs.structure.pages import Page

    (tmp_path / "docs").mkdir()
    (tmp_path / "part.txt").write_text("first version\n", encoding="utf-8")
    (tmp_path / "docs" / "index.md").write_text('# T\n\n--8<-- "part.txt"\n', encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\nmarkdown_extensions:\n  - pymdownx.snippets:\n      base_path: ['.']\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(str(tmp_path / "mkdocs.yml"))
    site_cache.uninstall()
    site_cache.install()
    try:
        site_cache.configure(config)

        def render() -> str:
            file = File("index.md", config.docs_dir, config.site_dir, config.use_directory_urls)
            page = Page(None, file, config)
            page.read_source(config)
            page.render(config, Files([file]))
            return page.content or ""

        assert "first version" in render()
        assert "first version" in render()
        assert site_cache.summary() == "1 render hit, 1 render miss"
        (tmp_path / "part.txt").write_text("second version\n", encoding="utf-8")
        assert "second version" in render()
        assert site_cache.summary() == "1 render miss"
    finally:
        site_cache.uninstall()


def test_cached_page_warns_again_and_survives_a_fresh_process(tmp_path, monkeypatch, caplog):
    """A broken link warns on every build, cached or not (so --strict still fails), and the saved
    cache serves the next process."""
    from mkdocs.config import load_config
    from mkdocs.structure.files import File, Files
    from mkdocs.structure.pages import Page

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# T\n\n[gone](missing.md)\n", encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = load_config(str(tmp_path / "mkdocs.yml"))
    site_cache.uninstall()
    site_cache.install()
    saved = tmp_path / "cache" / "site.json"
    try:
        site_cache.configure(config)

        def render() -> str:
            file = File("index.md", config.docs_dir, config.site_dir, config.use_directory_urls)
            page = Page(None, file, config)
            page.read_source(config)
            page.render(config, Files([file]))
            return page.content or ""

        first = render()
        site_cache.save(saved)
        for state in (site_cache.STATE.renders, site_cache.STATE.excerpts, site_cache.STATE.search):
            state.clear()  # a fresh process
        site_cache.load(saved)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mkdocs"):
            assert render() == first
        assert site_cache.summary() == "1 render hit, 1 render miss"
        assert [r.levelno for r in caplog.records if "missing.md" in r.getMessage()] == [logging.WARNING]
    finally:
        site_cache.uninstall()


def test_post_list_answers_in_as_a_list_does(tmp_path):
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import File
    from mkdocs.structure.pages import Page

    config = MkDocsConfig()
    config.load_dict({"site_name": "x", "docs_dir": str(tmp_path), "site_dir": str(tmp_path / "site")})
    config.validate()

    def page(name: str, title: str, file: File | None = None) -> Page:
        file = file or File(f"{name}.md", str(tmp_path), str(tmp_path / "site"), True)
        return Page(title, file, config)

    a, b, c = page("a", "A"), page("b", "B"), page("c", "C")
    twin = page("a", "A", a.file)  # another Page object equal to `a` (same title and File)
    stranger = page("a", "A")  # same path, another File object: not equal under mkdocs 1.6
    posts = site_cache._PostList([a, b])
    plain = [a, b]
    probes = [a, b, c, twin, stranger, "a.md", None]
    assert (
        [p in posts for p in probes]
        == [p in plain for p in probes]
        == [True, True, False, True, False, False, False]
    )
    for change in (
        lambda l: l.append(c),
        lambda l: l.remove(b),
        lambda l: l.__setitem__(0, c),
        lambda l: l.clear(),
    ):
        change(posts)
        change(plain)
        assert [p in posts for p in probes] == [p in plain for p in probes]
