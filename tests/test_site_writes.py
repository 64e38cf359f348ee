"""Serve's rebuilds write only what changed, and leave the folder as a clean build would."""

from __future__ import annotations

import os
import time

import mkdocs.utils
import pytest

from kernelnotes import site_writes


@pytest.fixture
def writes():
    assert site_writes.install()
    yield mkdocs.utils
    site_writes.uninstall()


def build(site, pages: dict[str, bytes], assets: dict[str, str] = {}) -> None:  # noqa: B006
    """What mkdocs' build does to the folder: clean, write pages, copy assets, then our sweep."""
    mkdocs.utils.clean_directory(str(site))
    for name, data in pages.items():
        mkdocs.utils.write_file(data, str(site / name))
    for name, source in assets.items():
        mkdocs.utils.copy_file(source, str(site / name))
    site_writes.sweep()


def files(site) -> dict[str, bytes]:
    return {p.relative_to(site).as_posix(): p.read_bytes() for p in site.rglob("*") if p.is_file()}


def test_a_rebuild_rewrites_only_changed_files_and_removes_what_it_no_longer_makes(writes, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / ".keep").write_text("hidden: mkdocs never cleans it")
    asset = tmp_path / "style.css"
    asset.write_text("a {}")
    pages = {"index.html": b"home", "a/index.html": b"A", "b/index.html": b"B"}
    build(site, pages, {"assets/style.css": str(asset)})
    stat = {name: os.stat(site / name).st_ino for name in ("index.html", "a/index.html", "assets/style.css")}
    mtime = os.stat(site / "a/index.html").st_mtime_ns
    time.sleep(0.02)

    # an edit of b, a deleted page c (never made again), an edited asset
    asset.write_text("a { color: red }")
    build(
        site,
        {"index.html": b"home", "a/index.html": b"A", "b/index.html": b"B2"},
        {"assets/style.css": str(asset)},
    )
    assert files(site) == {
        ".keep": b"hidden: mkdocs never cleans it",
        "index.html": b"home",
        "a/index.html": b"A",
        "b/index.html": b"B2",
        "assets/style.css": b"a { color: red }",
    }
    assert os.stat(site / "a/index.html").st_mtime_ns == mtime  # not written again
    assert os.stat(site / "index.html").st_ino == stat["index.html"]

    # b is gone from the site: its file and its folder go too
    build(site, {"index.html": b"home", "a/index.html": b"A"}, {"assets/style.css": str(asset)})
    assert not (site / "b").exists() and set(files(site)) == {
        ".keep",
        "index.html",
        "a/index.html",
        "assets/style.css",
    }


def test_a_file_another_plugin_writes_its_own_way_is_kept(writes, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    build(site, {"index.html": b"home"})
    (site / "feed.xml").write_text("v1")  # a plugin writing with open(), after the sweep
    mkdocs.utils.clean_directory(str(site))
    mkdocs.utils.write_file(b"home", str(site / "index.html"))
    time.sleep(0.02)
    (site / "feed.xml").write_text("v1")  # written again in this build, the same bytes
    site_writes.sweep()
    assert (site / "feed.xml").read_text() == "v1"
    # a build that does not write it: it is stale, and removed
    build(site, {"index.html": b"home"})
    assert not (site / "feed.xml").exists()


def test_a_file_changed_behind_the_builds_back_is_written_again(writes, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    build(site, {"index.html": b"home"})
    (site / "index.html").write_bytes(b"tampered")
    build(site, {"index.html": b"home"})
    assert (site / "index.html").read_bytes() == b"home"
    (site / "index.html").unlink()
    build(site, {"index.html": b"home"})
    assert (site / "index.html").read_bytes() == b"home"


def test_uninstall_restores_mkdocs(tmp_path):
    original = mkdocs.utils.clean_directory
    site_writes.install()
    assert mkdocs.utils.clean_directory is not original
    site_writes.uninstall()
    assert mkdocs.utils.clean_directory is original
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "x.html").write_text("x")
    mkdocs.utils.clean_directory(str(site))  # mkdocs' own: empties the folder
    assert list(site.iterdir()) == []


def test_changed_files_are_reported_and_replaced_whole(writes, tmp_path):
    site = tmp_path / "site"
    asset = tmp_path / "style.css"
    asset.write_text("a {}")
    build(site, {"index.html": b"home", "a/index.html": b"A"}, {"assets/style.css": str(asset)})
    assert sorted(os.path.relpath(p, site) for p in site_writes.track_changes()) == [
        "a/index.html",
        "assets/style.css",
        "index.html",
    ]
    inode = os.stat(site / "a/index.html").st_ino
    build(site, {"index.html": b"home", "a/index.html": b"A2"}, {"assets/style.css": str(asset)})
    # only a changed; serve answers requests meanwhile, so the new bytes came by a rename
    assert [os.path.relpath(p, site) for p in site_writes.track_changes()] == ["a/index.html"]
    assert os.stat(site / "a/index.html").st_ino != inode
    assert files(site) == {"index.html": b"home", "a/index.html": b"A2", "assets/style.css": b"a {}"}
    assert site_writes.track_changes() == []
