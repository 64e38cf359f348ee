"""Speed-ups for `mkdocs build` / `mkdocs serve` that never change a byte of the output.

Each save under `mkdocs serve` rebuilds every page through the whole stack. Most of that work repeats
the previous build exactly, so it is memoised here, keyed on everything the result depends on:

- **Page Markdown → HTML** (`mkdocs.structure.pages.Page.render`): keyed on the page's Markdown (after
  every `on_page_markdown`, so inlined results are part of it), its source and URL, the site's file
  list, the config file and whatever a plugin adds through `page_salt`; the files pulled in by
  pymdownx.snippets are recorded while rendering and re-hashed at each lookup.
- **Blog excerpts** (material's `Excerpt.render`): material converts the *whole* post again for
  each listing page it appears on (home, archive, categories) and then cuts the excerpt out of the
  HTML. Here only the Markdown before the separator is converted, when that provably gives the same
  HTML (the separator survives as raw HTML, and nothing after it defines footnotes, references or
  abbreviations the excerpt could use); otherwise material's own path runs. Results are memoised.
- **Templates**: serve makes a new Jinja environment for every rebuild, which compiles every
  template again; their bytecode is kept (Jinja's own BytecodeCache, checked against the source).
- **Rendered pages** (the theme's template for each page, most of a rebuild once the Markdown is
  cached): keyed on the page's own HTML, table of contents and metadata, the excerpts a listing
  shows, and a site-wide signature of what any page shows of the others — every page's title, URL,
  metadata, neighbours and categories, and the navigation — plus the config file and the theme's
  files. A text edit re-renders the note and the listings showing its excerpt; a title edit, every
  page. A page whose context holds anything a plugin outside mkdocs.yml's known set added is
  rendered every time. Kept in the process only (serve), for the pages of the last build.
- **Posts' front matter and excerpt parsers**: material reads every post's YAML again at each build
  (memoised by its text, a copy returned) and makes a Markdown parser per excerpt up front (made on
  first use instead: cached excerpts never need one).
- **Search entries** (material's search `SearchIndex.add_entry_from_context`): HTML parsing and
  jieba segmentation per page, keyed on the page's HTML, URL, table of contents and indexed meta;
  material's regex that strips `data-search-*` attributes runs only on pages that have some; under
  serve, jieba's dictionary is loaded in the background after the first build (`warm_up`).
- **Per-build bookkeeping that grew with the site**: material's blog asks `page in blog.posts` of
  every page (a list scan with a Python `__eq__`: quadratic), now a lookup by the page's File; the
  theme's file list (mkdocs walks mkdocs-material's thousands of icons) is read once per process
  for an installed theme; every Jinja environment made for the theme (material's plugins make one
  per translation) shares the compiled templates; the navigation's and each page's signature are
  computed once per build.

The patches reach into mkdocs 1.6 and mkdocs-material 9.8 (both frozen); `install()` checks the
versions and the shapes it relies on, and otherwise leaves that part alone with one log line, so
the build takes the slow path and stays correct. Caches live in the process (serve keeps it) and
are saved after a `mkdocs build` and when serve stops (`.kernelnotes/cache/site.json`: the entries
the last build used), so a fresh `mkdocs build` starts from them; a changed config file starts empty.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.kernelnotes")

# The versions these patches were tested against (pyproject.toml pins the same ranges).
MKDOCS_RANGE = ((1, 6), (1, 7))
MATERIAL_RANGE = ((9, 8), (9, 9))
MAX_ENTRIES = 20_000  # per cache; a cache past this is cleared (a serve session of a huge site)


@dataclass
class State:
    config_sig: str = ""  # the config file and the options a render depends on
    page_salt: Callable[[Any], str] | None = None  # a plugin's per-page render inputs (results)
    effects: Any = None  # a plugin's side effects of a render, recorded and replayed (RenderEffects)
    renders: dict[str, tuple[tuple[tuple[str, str], ...], dict[str, Any]]] = field(default_factory=dict)
    excerpts: dict[str, tuple[tuple[tuple[str, str], ...], dict[str, Any]]] = field(default_factory=dict)
    search: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)  # jieba's output by section text (in the process)
    pages: dict[str, str] = field(default_factory=dict)  # rendered page templates (in the process only)
    theme_sig: str = ""
    theme_reads_pages: bool = True  # until the theme is scanned: key on every page's data
    site: tuple[Any, str] | None = None  # (this build's page list, its signature)
    nav: tuple[Any, str] | None = None  # (this build's navigation, its signature)
    rows: dict[int, tuple[Any, tuple[Any, ...]]] = field(default_factory=dict)  # this build's _page_row
    globals: tuple[Any, str] | None = None  # (this build's Jinja environment, its globals' signature)
    stats: dict[str, int] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)  # keys this build used: what save() keeps
    recording: list[str] | None = None  # files pymdownx.snippets opened during the current render
    installed: dict[str, bool] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1


STATE = State()


def _version(dist: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version(dist).split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return ()


def _in_range(found: tuple[int, ...], bounds: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return bool(found) and bounds[0] <= found < bounds[1]


def _sha(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _file_sha(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _deps_fresh(deps: tuple[tuple[str, str], ...]) -> bool:
    return all(_file_sha(path) == sha for path, sha in deps)


@contextlib.contextmanager
def _recording() -> Iterator[list[str]]:
    """Collect the files included (pymdownx.snippets, kernelnotes.mdext) while the block runs."""
    outer, STATE.recording = STATE.recording, []
    try:
        yield STATE.recording
    finally:
        inner, STATE.recording = STATE.recording, outer
        if outer is not None:
            outer.extend(inner)


def _files_sig(files: Any) -> str:
    """One hash of every file's source path and URL (relative links and their validation use them)."""
    cached = getattr(files, "_kn_sig", None)
    if cached and cached[0] == len(files):
        return cached[1]
    sig = _sha(*sorted(f"{f.src_uri}\t{f.url}\t{f.inclusion}" for f in files))
    files._kn_sig = (len(files), sig)
    return sig


def _store(cache: dict, key: str, value: Any) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = value
    STATE.used.add(key)


def _toc_tokens(toc: Any) -> list[dict[str, Any]]:
    """A table of contents as the plain tokens mkdocs' get_toc builds it from (JSON-able)."""
    return [
        {"level": i.level, "id": i.id, "name": i.title, "children": _toc_tokens(i.children)}
        for i in toc or []
    ]


def _toc(tokens: list[dict[str, Any]]) -> Any:
    """A new table of contents for each page (material's blog appends excerpts' items to a view's)."""
    from mkdocs.structure.toc import get_toc

    return get_toc(tokens)  # type: ignore[arg-type]


# ---- on disk: a fresh `mkdocs build` starts from the previous build's entries --------------------

FORMAT = 3  # 2: a render's entry holds its side effects; 3: excerpts as a fresh document each


def load(path: Path) -> None:
    """Read the entries saved by the previous build when this process has none (a fresh build)."""
    if STATE.renders or STATE.excerpts or STATE.search or not path.is_file():
        return
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != FORMAT or data.get("config_sig") != STATE.config_sig:
            return
        for name in ("renders", "excerpts"):
            getattr(STATE, name).update(
                {k: (tuple(tuple(d) for d in deps), value) for k, (deps, value) in data[name].items()}
            )
        STATE.search.update(data["search"])
    except (OSError, ValueError, KeyError, TypeError):
        log.info(f"kernelnotes: site cache {path} unreadable: starting empty")


def save(path: Path) -> None:
    """Write the entries the last build used (others are gone from the site)."""
    data = {
        "format": FORMAT,
        "config_sig": STATE.config_sig,
        "renders": {k: v for k, v in STATE.renders.items() if k in STATE.used},
        "excerpts": {k: v for k, v in STATE.excerpts.items() if k in STATE.used},
        "search": {k: v for k, v in STATE.search.items() if k in STATE.used},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), "utf-8")
        tmp.replace(path)
    except OSError as error:
        log.info(f"kernelnotes: site cache not saved to {path}: {error}")


# ---- configuration ------------------------------------------------------------------------------


class RenderEffects:
    """What a plugin does during a page's Markdown→HTML besides the HTML (e.g. publish a figure the
    page links to): `end()` returns it as JSON-able data after a render, `replay(page, data)` does it
    again when the render is a cache hit."""

    def begin(self) -> None: ...

    def end(self) -> Any:
        return None

    def replay(self, page: Any, data: Any) -> None: ...


def configure(
    config: Any, page_salt: Callable[[Any], str] | None = None, effects: RenderEffects | None = None
) -> None:
    """Called at each build's on_config: a changed config file empties every cache."""
    path = config.config_file_path
    text = _config_text(Path(path)) if path else ""
    sig = _sha(
        text,
        path,
        config.docs_dir,
        config.site_url,
        config.use_directory_urls,
        sorted(config.markdown_extensions),
    )
    if sig != STATE.config_sig:
        STATE.renders.clear()
        STATE.excerpts.clear()
        STATE.search.clear()
        STATE.segments.clear()  # the config names jieba's dictionaries
        STATE.pages.clear()
    # rendered pages are large: keep only the previous build's (a serve session edits a few)
    STATE.pages = {k: v for k, v in STATE.pages.items() if k in STATE.used}
    STATE.site = STATE.globals = STATE.nav = None
    STATE.rows = {}
    STATE.config_sig = sig
    STATE.page_salt = page_salt
    STATE.effects = effects
    STATE.used = set()


_INHERIT = re.compile(r"^INHERIT:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(?:#.*)?$", re.M)


def _config_text(path: Path) -> str:
    """The config file's text and that of the files it INHERITs from (mkdocs merges them)."""
    return "\0".join(text for _, text in _config_chain(path))


def config_files(path: Path) -> list[Path]:
    """The files a config is read from: itself and its INHERIT chain (serve watches them)."""
    return [p for p, _ in _config_chain(path)]


def _config_chain(path: Path) -> list[tuple[Path, str]]:
    """Each file of the INHERIT chain with its text, each read once ("" for a missing one)."""
    chain: list[tuple[Path, str]] = []
    while len(chain) < 10:
        try:
            text = path.read_text("utf-8", "replace")
        except OSError:
            text = ""
        chain.append((path, text))
        parent = _INHERIT.search(text)
        if parent is None:
            break
        path = path.parent / parent[1].strip()
    return chain


def install() -> list[str]:
    """Patch what the installed versions allow; return one line per part left on the slow path."""
    skipped = []
    if _in_range(_version("mkdocs"), MKDOCS_RANGE):
        _install_once("render", _patch_page_render)
        _install_once("theme-env", _patch_theme_env)
    else:
        skipped.append(f"mkdocs {version('mkdocs')} is not {_range(MKDOCS_RANGE)}")
    material = _version("mkdocs-material")
    if _in_range(material, MATERIAL_RANGE):
        patches = (
            ("excerpt", _patch_excerpt),
            ("search", _patch_search),
            ("search-context", _patch_search_context),
            ("pages", _patch_pages),
            ("posts", _patch_post_yaml),
        )
        for name, patch in patches:
            if not _install_once(name, patch):
                skipped.append(f"mkdocs-material's {name} code is not the shape this cache expects")
    elif material:
        skipped.append(f"mkdocs-material {version('mkdocs-material')} is not {_range(MATERIAL_RANGE)}")
    _install_once("snippets", _patch_snippets)
    _install_once("templates", _patch_list_templates)
    for line in skipped:
        if line not in STATE.installed:
            STATE.installed[line] = True
            log.info(f"kernelnotes: site cache off ({line}): pages are built the slow way")
    return skipped


def warm_up() -> threading.Thread | None:
    """Serve, after a build: load jieba's dictionary in the background (1-2 s), which material's
    search otherwise loads at the first page it must segment again, the author's first save."""
    jieba = sys.modules.get("jieba")
    if jieba is None or getattr(getattr(jieba, "dt", None), "initialized", True):
        return None
    thread = threading.Thread(target=jieba.initialize, name="kernelnotes-jieba", daemon=True)
    thread.start()
    return thread


_FROZEN = False


def freeze_startup() -> None:
    """Serve, after its first build: move what the process holds by then (modules, the theme, the
    caches) out of the garbage collector's full passes, which otherwise walk all of it during each
    rebuild. Once per process; what the first build left in cycles stays (one build's worth)."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()


def summary() -> str:
    """One line of this build's cache counts (then reset), for the build log."""
    line = ", ".join(f"{v} {k}" for k, v in sorted(STATE.stats.items()))
    STATE.stats.clear()
    return line


def _range(bounds: tuple[tuple[int, int], tuple[int, int]]) -> str:
    return f">={bounds[0][0]}.{bounds[0][1]},<{bounds[1][0]}.{bounds[1][1]}"


def _install_once(name: str, patch: Callable[[], bool]) -> bool:
    if name not in STATE.installed:
        STATE.installed[name] = patch()
    return STATE.installed[name]


def uninstall() -> None:
    """Restore the original methods (tests run the slow path with this)."""
    for target, attr, original in reversed(_ORIGINALS):
        if original is _MISSING:
            delattr(target, attr)
        else:
            setattr(target, attr, original)
    _ORIGINALS.clear()
    for name in (
        "render", "excerpt", "search", "search-context", "snippets", "pages", "posts", "templates", "theme-env"
    ):  # fmt: skip
        STATE.installed.pop(name, None)


_ORIGINALS: list[tuple[Any, str, Any]] = []


_MISSING = object()


def _replace(target: Any, attr: str, new: Any) -> None:
    _ORIGINALS.append((target, attr, target.__dict__.get(attr, _MISSING)))
    setattr(target, attr, new)


# ---- pymdownx.snippets: which files a page pulls in ----------------------------------------------


def _patch_snippets() -> bool:
    try:
        from pymdownx.snippets import SnippetPreprocessor
    except ImportError:
        return True
    original = SnippetPreprocessor.get_snippet_path
    original_download = SnippetPreprocessor.download

    def get_snippet_path(self: Any, path: str) -> Any:
        found = original(self, path)
        if STATE.recording is not None:
            STATE.recording.append(found or f"missing:{path}")
        return found

    def download(self: Any, url: str) -> Any:
        if STATE.recording is not None:
            STATE.recording.append(f"url:{url}")  # never cached: its content is not ours to hash
        return original_download(self, url)

    download.cache_clear = original_download.cache_clear  # type: ignore[attr-defined]  # an lru_cache

    _replace(SnippetPreprocessor, "get_snippet_path", get_snippet_path)
    _replace(SnippetPreprocessor, "download", download)
    return True


def _deps(paths: list[str]) -> tuple[tuple[str, str], ...] | None:
    """(path, sha) of each recorded file; None when something recorded cannot be hashed: a URL, or a
    missing include (the file that would satisfy it later is not known here)."""
    if any(p.startswith(("url:", "missing:")) for p in paths):
        return None
    return tuple(sorted({(p, _file_sha(p)) for p in paths}))


def record_reads(paths: Iterable[str]) -> None:
    """Files a Markdown conversion pulled in (kernelnotes.mdext's includes: absolute paths, or
    "missing:SPEC"): a memoised page or excerpt is reused only while they are unchanged."""
    if STATE.recording is not None:
        STATE.recording.extend(paths)


# ---- mkdocs: Page.render -----------------------------------------------------------------------


def _patch_page_render() -> bool:
    from mkdocs.structure.pages import Page

    original = Page.render

    def render(self: Any, config: Any, files: Any) -> None:
        if self.markdown is None or not STATE.config_sig:
            return original(self, config, files)
        salt = STATE.page_salt(self) if STATE.page_salt else ""
        key = _sha(
            "page", STATE.config_sig, self.markdown, self.file.src_uri, self.file.url, _files_sig(files), salt
        )
        hit = STATE.renders.get(key)
        if hit and _deps_fresh(hit[0]):
            STATE.count("render hit")
            STATE.used.add(key)
            _restore_render(self, hit[1], files)
            for name, level, message in hit[1]["log"]:  # a cached page warns like a rendered one
                logging.getLogger(name).log(level, message)
            if STATE.effects is not None and hit[1].get("effects") is not None:
                STATE.effects.replay(self, hit[1]["effects"])
            return None
        if STATE.effects is not None:
            STATE.effects.begin()
        with _recording() as used, _warnings() as warnings:
            original(self, config, files)
        effects = STATE.effects.end() if STATE.effects is not None else None
        deps = _deps(used)
        if deps is not None:
            _store(STATE.renders, key, (deps, {**_saved_render(self), "log": warnings, "effects": effects}))
        STATE.count("render miss")
        return None

    _replace(Page, "render", render)
    return True


@contextlib.contextmanager
def _warnings() -> Iterator[list[tuple[str, int, str]]]:
    """The warnings mkdocs and its extensions log while the block runs (e.g. a broken link), to
    replay on a cache hit, so `--strict` fails on a cached page as on a rendered one."""
    found: list[tuple[str, int, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append((record.name, record.levelno, record.getMessage()))

    handler = Collect(logging.WARNING)
    root = logging.getLogger("mkdocs")
    root.addHandler(handler)
    try:
        yield found
    finally:
        root.removeHandler(handler)


def _saved_render(page: Any) -> dict[str, Any]:
    links = page.links_to_anchors
    return {
        "content": page.content,
        "toc": _toc_tokens(page.toc),
        "title": page._title_from_render,
        "anchors": sorted(page.present_anchor_ids or ()),
        # File objects are per build: keep their paths, find this build's File on a hit
        "links": None if links is None else {f.src_uri: dict(v) for f, v in links.items()},
    }


def _restore_render(page: Any, saved: dict[str, Any], files: Any) -> None:
    page.content = saved["content"]
    page.toc = _toc(saved["toc"])
    page._title_from_render = saved["title"]
    page.present_anchor_ids = set(saved["anchors"])
    if saved["links"] is not None:
        found = {uri: files.get_file_from_path(uri) for uri in saved["links"]}
        page.links_to_anchors = {f: dict(saved["links"][uri]) for uri, f in found.items() if f is not None}


# ---- material: blog excerpts -------------------------------------------------------------------


def _patch_excerpt() -> bool:
    try:
        from material.plugins.blog.structure import Excerpt, ExcerptTreeprocessor, get_toc
    except ImportError:
        return False
    from kernelnotes.blog import fresh_excerpts

    fresh_excerpts()  # first: material's path, which the slow path below calls, resets the parser
    original = Excerpt.render
    code = getattr(original, "__code__", None)
    if code is None or code.co_varnames[:3] != ("self", "page", "separator"):
        return False

    def render(self: Any, page: Any, separator: str) -> None:
        post = self.post
        markdown = post.markdown
        if not post._title_from_render:
            markdown = "\n\n".join([f"# {post.title}", markdown])
        head, found, rest = markdown.partition(separator)
        if not found or not _plain_cut(markdown, head, separator) or _defines_anything(rest):
            STATE.count("excerpt slow")
            return original(self, page, separator)
        files_sig = getattr(self, "_kn_files_sig", "")
        key = _sha("excerpt", STATE.config_sig, head, rest.strip() != "", page.url, post.url, files_sig)
        hit = STATE.excerpts.get(key)
        if hit and _deps_fresh(hit[0]):
            STATE.count("excerpt hit")
            STATE.used.add(key)
            self.markdown, self.content, self.more = markdown, hit[1]["content"], hit[1]["more"]
            self.toc = _toc(hit[1]["toc"])
            return None
        self.file.url = page.url
        at = self.md.treeprocessors.get_index_for_name("excerpt")
        processor: ExcerptTreeprocessor = self.md.treeprocessors[at]
        processor.base = page
        with _recording() as used:  # a fresh document, as kernelnotes.blog.fresh_excerpts makes material's
            html = self.md.reset().convert(head + separator)
        content, cut, after = html.partition(separator)
        self.file.url = post.url
        if not cut:  # the separator did not survive as raw HTML (inside a code block?): material's way
            STATE.count("excerpt slow")
            return original(self, page, separator)
        self.markdown, self.content = markdown, content
        # material's templates use `more` only as a flag ("continue reading"); it is truthy exactly
        # when something follows the separator in the full HTML
        self.more = after or ("\n" if rest.strip() else "")
        self.toc = get_toc(getattr(self.md, "toc_tokens", []))
        deps = _deps(used)
        if deps is not None:
            _store(
                STATE.excerpts,
                key,
                (deps, {"content": self.content, "more": self.more, "toc": _toc_tokens(self.toc)}),
            )
        STATE.count("excerpt fast")
        return None

    _replace(Excerpt, "render", render)

    init, lazy = _lazy_excerpt_init()
    _replace(Excerpt, "__init__", init)
    if lazy:
        _replace(Excerpt, "md", property(_excerpt_markdown))
    return True


def _lazy_excerpt_init() -> tuple[Callable[..., None], bool]:
    """material's Excerpt.__init__ (9.8) without its Markdown parser, made on first use instead: a
    parser per post costs more than the excerpts a rebuild renders when they are cached."""
    from material.plugins.blog import structure

    names = set(structure.Excerpt.__init__.__code__.co_names)
    if not {"Markdown", "_patch", "ExcerptTreeprocessor", "_RelativePathTreeprocessor"} <= names:
        original = structure.Excerpt.__init__

        def init(self: Any, post: Any, config: Any, files: Any) -> None:  # another shape: its own
            original(self, post, config, files)
            self._kn_files_sig = _files_sig(files)

        return init, False

    def lazy_init(self: Any, post: Any, config: Any, files: Any) -> None:
        self.file = copy.copy(post.file)
        self.post = post
        self._set_canonical_url(config.site_url)
        self.config = post.config
        self.meta = post.meta
        self.authors = []
        self.categories = []
        self.more = None
        self._kn_parser_args = (structure._patch(config), files)
        self._kn_files_sig = _files_sig(files)

    return lazy_init, True


def _excerpt_markdown(self: Any) -> Any:
    """The excerpt's parser, made as material's __init__ makes it."""
    from markdown import Markdown
    from material.plugins.blog.structure import ExcerptTreeprocessor
    from mkdocs.structure.pages import _RelativePathTreeprocessor

    parser = self.__dict__.get("_kn_parser")
    if parser is None:
        config, files = self.__dict__.pop("_kn_parser_args")
        parser = Markdown(extensions=config.markdown_extensions, extension_configs=config.mdx_configs)
        parser.treeprocessors.register(ExcerptTreeprocessor(self.post), "excerpt", 0)
        parser.treeprocessors.register(_RelativePathTreeprocessor(self.file, files, config), "relpath", 1)
        self.__dict__["_kn_parser"] = parser
    return parser


def _plain_cut(markdown: str, head: str, separator: str) -> bool:
    """Whether the first separator stands alone on a line outside any fenced block (inside one,
    material's split of the HTML would not find it there)."""
    if not STATE.config_sig:
        return False
    if not (head == "" or head.endswith("\n")) or not re.match(
        r"[ \t]*(\n|$)", markdown[len(head) + len(separator) :]
    ):
        return False
    fences = re.findall(r"^ {0,3}(`{3,}|~{3,})", head, re.M)
    return len(fences) % 2 == 0


def _defines_anything(rest: str) -> bool:
    """Whether the part after the separator could change the excerpt's HTML: footnote, link
    reference or abbreviation definitions (Python-Markdown resolves those document-wide)."""
    return bool(re.search(r"^ {0,3}(\[[^\]\n]+\]:|\*\[)", rest, re.M))


# ---- material: blog posts' front matter --------------------------------------------------------


def _patch_post_yaml() -> bool:
    """material's Post reads every post's front matter with yaml.load at each build: memoised by
    the text (a copy returned, as material mutates the result)."""
    import yaml
    from material.plugins.blog import structure

    if structure.__dict__.get("yaml") is not yaml:
        return False
    _replace(structure, "yaml", _MemoYaml())
    return True


class _MemoYaml:
    """The yaml module with `load` memoised (for one module's use)."""

    def __init__(self) -> None:
        self.memo: dict[tuple[str, Any], Any] = {}

    def __getattr__(self, name: str) -> Any:
        import yaml

        return getattr(yaml, name)

    def load(self, stream: Any, Loader: Any) -> Any:
        import yaml

        if not isinstance(stream, str):
            return yaml.load(stream, Loader)
        key = (stream, Loader)
        if key not in self.memo:
            if len(self.memo) >= MAX_ENTRIES:
                self.memo.clear()
            self.memo[key] = yaml.load(stream, Loader)
        return _copy_data(self.memo[key])


def index_blog_posts(plugins: Iterable[Any]) -> None:
    """Make `page in blog.posts` a lookup: material's blog asks it of every page in two hooks, and
    a list compares each post in turn (Page.__eq__ in Python): 180,000 comparisons a build at 300
    notes, ten times that at 1,000. Call after material's blog has listed its posts (on_files)."""
    if not STATE.installed.get("posts"):
        return
    from material.plugins.blog.plugin import BlogPlugin

    for plugin in plugins:
        blog = getattr(plugin, "blog", None) if isinstance(plugin, BlogPlugin) else None
        if blog is not None and type(getattr(blog, "posts", None)) is list:
            blog.posts = _PostList(blog.posts)


class _PostList(list):
    """A list whose `in` finds a page by its File first. Page.__eq__ (mkdocs 1.6) requires the same
    File object, so only the posts sharing the page's File are compared, as `==` would. Any change
    to the list drops the index (material makes the list once and only reads it)."""

    _index: dict[int, list[Any]] | None = None

    def __contains__(self, item: object) -> bool:
        from mkdocs.structure.pages import Page

        if not isinstance(item, Page):
            return list.__contains__(self, item)
        if self._index is None:
            self._index = {}
            for post in self:
                self._index.setdefault(id(getattr(post, "file", None)), []).append(post)
        return any(post is item or post == item for post in self._index.get(id(item.file), ()))

    def _changed(self) -> None:
        self._index = None

    def __setitem__(self, *args: Any) -> None:
        self._changed()
        list.__setitem__(self, *args)

    def __delitem__(self, *args: Any) -> None:
        self._changed()
        list.__delitem__(self, *args)

    def __iadd__(self, other: Any) -> Any:  # type: ignore[misc]  # list.__iadd__ returns the list
        self._changed()
        return list.__iadd__(self, other)

    def append(self, item: Any) -> None:
        self._changed()
        list.append(self, item)

    def extend(self, items: Any) -> None:
        self._changed()
        list.extend(self, items)

    def insert(self, at: Any, item: Any) -> None:
        self._changed()
        list.insert(self, at, item)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return list.pop(self, *args)

    def remove(self, item: Any) -> None:
        self._changed()
        list.remove(self, item)

    def clear(self) -> None:
        self._changed()
        list.clear(self)


def _patch_theme_env() -> bool:
    """Every Jinja environment mkdocs makes for the theme gets the compiled-template cache: plugins
    make their own (material's translations, several per build), which compiled their templates
    again each time."""
    from mkdocs.theme import Theme

    original = Theme.get_env

    def get_env(self: Any) -> Any:
        env = original(self)
        if env.bytecode_cache is None:
            env.bytecode_cache = _TEMPLATES
        return env

    _replace(Theme, "get_env", get_env)
    return True


# ---- Jinja: the theme's template list ----------------------------------------------------------


def _patch_list_templates() -> bool:
    """mkdocs lists every file of the theme at every build (to copy its assets), walking mkdocs-material's
    thousands of icons: an installed package's folder is walked once per process."""
    import jinja2

    original = jinja2.FileSystemLoader.list_templates

    @functools.cache
    def package_templates(folder: str, followlinks: bool) -> tuple[str, ...]:
        return tuple(original(jinja2.FileSystemLoader(folder, followlinks=followlinks)))

    def list_templates(self: Any) -> list[str]:
        found: set[str] = set()
        for folder in self.searchpath:
            if _installed(folder):
                found.update(package_templates(folder, self.followlinks))
            else:
                found.update(original(jinja2.FileSystemLoader(folder, followlinks=self.followlinks)))
        return sorted(found)

    _replace(jinja2.FileSystemLoader, "list_templates", list_templates)
    return True


def _installed(folder: str) -> bool:
    parts = Path(folder).parts
    return "site-packages" in parts or "dist-packages" in parts


_IMMUTABLE = (str, int, float, bool, type(None), bytes, dt.date, dt.time)  # dt.datetime is a dt.date


def _copy_data(value: Any) -> Any:
    """A deep copy of parsed YAML (dicts, lists and immutable scalars such as dates) in a fraction
    of copy.deepcopy's time; anything else is deep-copied."""
    if isinstance(value, _IMMUTABLE):
        return value
    if type(value) is dict:
        return {k: _copy_data(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_data(v) for v in value]
    return copy.deepcopy(value)


# ---- material: search entries ------------------------------------------------------------------


def _patch_search() -> bool:
    try:
        from material.plugins.search.plugin import SearchIndex
    except ImportError:
        return False
    original = SearchIndex.add_entry_from_context

    def add_entry_from_context(self: Any, page: Any) -> None:
        meta = page.meta or {}
        key = _sha(
            "search",
            STATE.config_sig,
            repr(sorted(self.config.items(), key=lambda kv: kv[0])),
            page.content,
            page.url,
            _toc_sig(page.toc),
            repr(meta.get("title")),
            repr(meta.get("tags")),
            repr(meta.get("search")),
            page.title,
        )
        hit = STATE.search.get(key)
        if hit is not None:
            STATE.count("search hit")
            STATE.used.add(key)
            self.entries.extend({**e, "tags": list(e["tags"])} if "tags" in e else dict(e) for e in hit)
            return
        before = len(self.entries)
        original(self, page)
        _store(STATE.search, key, copy.deepcopy(self.entries[before:]))

    _replace(SearchIndex, "add_entry_from_context", add_entry_from_context)
    segment = getattr(SearchIndex, "_segment_chinese", None)
    if segment is not None:

        def _segment_chinese(self: Any, data: str) -> str:
            """jieba's words of a section's text, memoised by the text: a page that changed (a
            title edit changes every tag page listing it) segments only its changed sections."""
            hit = STATE.segments.get(data)
            if hit is None:
                hit = segment(self, data)
                if len(STATE.segments) >= 10 * MAX_ENTRIES:
                    STATE.segments.clear()
                STATE.segments[data] = hit
            return hit

        _replace(SearchIndex, "_segment_chinese", _segment_chinese)
    return True


_SEARCH_ATTRS = re.compile(r"\s?data-search-\w+=\"[^\"]+\"")


def _patch_search_context() -> bool:
    """material's search strips `data-search-*` attributes from every page with a regex that costs
    milliseconds a page even when there are none: the same, run only when there are some."""
    from material.plugins.search.plugin import SearchPlugin

    original = SearchPlugin.on_page_context
    code = getattr(original, "__code__", None)
    if code is None or not {"add_entry_from_context", "sub"} <= set(code.co_names):
        return False
    if _SEARCH_ATTRS.pattern not in code.co_consts:  # the regex this replaces
        return False

    def on_page_context(self: Any, context: Any, *, page: Any, config: Any, nav: Any) -> Any:
        if not self.config.enabled:
            return None
        self.search_index.add_entry_from_context(page)
        if "data-search-" in page.content:
            page.content = _SEARCH_ATTRS.sub("", page.content)
        return None

    _replace(SearchPlugin, "on_page_context", on_page_context)
    return True


def _toc_sig(toc: Any) -> str:
    def walk(items: Any) -> list[Any]:
        return [(i.id, i.url, i.title, walk(i.children)) for i in items]

    return repr(walk(toc or []))


# ---- Jinja: compiled templates and rendered pages ------------------------------------------------


def cache_templates(env: Any, config: Any, pages: bool = True) -> None:
    """Give a (new, per-build) Jinja environment the process's bytecode cache and, with `pages` (a
    process that builds again: serve), memoise the pages it renders (the theme's templates are most
    of a rebuild once the Markdown is cached)."""
    if env.bytecode_cache is None:
        env.bytecode_cache = _TEMPLATES
    if not pages:
        STATE.pages.clear()
    elif STATE.installed.get("pages") and STATE.config_sig:
        env.template_class = _page_template_class()
        STATE.theme_sig, STATE.theme_reads_pages = _theme_sig(config)


# What mkdocs' get_context and the plugins of mkdocs.yml put in a page's template context. A page
# whose context holds anything else (another plugin's data) is rendered every time.
_CONTEXT_KEYS = frozenset(
    {
        "base_url",  # derived from the page's URL
        "build_date_utc",  # not read by material's templates (checked by _patch_pages)
        "config",
        "extra_css",  # derived from the config and the page's URL
        "extra_javascript",
        "mkdocs_version",
        "nav",
        "page",
        "pages",
        "pagination",  # material's blog views
        "posts",
        "tags",  # material's tags plugin
    }
)


@contextlib.contextmanager
def new_build() -> Iterator[None]:
    """Render outside a build (serve's preview of a note): the per-build signatures of the pages,
    the navigation and the globals are computed afresh, since the previewed pages are new objects."""
    saved = (STATE.site, STATE.nav, STATE.rows, STATE.globals)
    STATE.site = STATE.nav = STATE.globals = None
    STATE.rows = {}
    try:
        yield
    finally:
        STATE.site, STATE.nav, STATE.rows, STATE.globals = saved


def _patch_pages() -> bool:
    """Whether the page memo may run: material's templates must not read the build date (it would
    make every page differ from build to build)."""
    import material

    folder = Path(material.__file__).parent / "templates"
    return not any("build_date_utc" in t.read_text("utf-8", "replace") for t in folder.rglob("*.html"))


def _page_template_class() -> Any:
    global _PAGE_TEMPLATE
    if _PAGE_TEMPLATE is None:
        import jinja2

        class PageTemplate(jinja2.Template):
            """A template whose page renders are memoised by everything the theme reads (_page_key)."""

            def render(self, *args: Any, **kwargs: Any) -> str:
                context = dict(*args, **kwargs)
                key = _page_key(self.name, context, self.environment)
                if key is None:
                    return super().render(context)
                hit = STATE.pages.get(key)
                if hit is not None:
                    STATE.count("page hit")
                    STATE.used.add(key)
                    return hit
                out = super().render(context)
                _store(STATE.pages, key, out)
                STATE.count("page miss")
                return out

        _PAGE_TEMPLATE = PageTemplate
    return _PAGE_TEMPLATE


_PAGE_TEMPLATE: Any = None


def _page_key(name: str | None, context: dict[str, Any], env: Any = None) -> str | None:
    """A key over everything a page template of the theme can read: this page's HTML, table of
    contents and URL; every page's title, URL, metadata and neighbours and the navigation (the
    menus, the listings and the links of every page show those); the config file and the theme's
    files. None when the context holds something this does not know how to key."""
    page, nav, pages = context.get("page"), context.get("nav"), context.get("pages")
    if page is None or nav is None or pages is None or not context.keys() <= _CONTEXT_KEYS:
        return None
    try:
        parts = [
            "page",
            STATE.config_sig,
            STATE.theme_sig,
            name,
            context.get("mkdocs_version"),
            _site_sig(pages),
            _globals_sig(env),
            _nav_key(nav),
            # config values plugins may set at build time (the config file is in config_sig)
            repr(context.get("extra_css")),
            repr(context.get("extra_javascript")),
            _plain(dict(context["config"].get("extra") or {})) if "config" in context else None,
            _page_row(page),
            page.content,
            _toc_sig(page.toc),
            [_link(a) for a in page.ancestors],
            [(t.name, t.hidden, t.url) for t in context.get("tags") or []],
        ]
        if "posts" in context:  # a blog view: the excerpts it lists and its place in the pagination
            parts += [
                [(_page_row(p), p.content, bool(p.more), _toc_sig(p.toc)) for p in context["posts"]],
                context.get("pagination") is not None,
                [v.url for v in getattr(page, "pages", [])],
                len(getattr(page, "posts", [])),
            ]
        return _sha(*parts)
    except Exception as error:  # an object of a shape this does not know: render it
        log.debug(f"kernelnotes: page {getattr(page, 'url', '?')} not memoised: {error!r}")
        return None


def _site_sig(pages: list[Any]) -> str:
    """One hash of the site's pages (computed once per build: the page list is a new object in each
    build, and every page is read before the first render): their paths and URLs; and, when a
    template of the theme reads the `pages` variable, everything each page shows of itself."""
    if STATE.site is not None and STATE.site[0] is pages:
        return STATE.site[1]
    rows: list[tuple[Any, ...]] = [(f.src_uri, f.url) for f in pages]
    if STATE.theme_reads_pages:
        rows += [_page_row(f.page) for f in pages if f.page is not None]
    sig = _sha(*rows)
    STATE.site = (pages, sig)
    return sig


_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)


def _globals_sig(env: Any) -> str:
    """The plain values hooks and plugins put in the template globals (once per build: each build has
    its own environment). A global function or object is keyed by its kind only: what it returns is
    not known here."""
    if env is None:
        return ""
    if STATE.globals is not None and STATE.globals[0] is env:
        return STATE.globals[1]
    values = []
    for name, value in sorted(env.globals.items()):
        try:
            values.append((name, _plain(value) if isinstance(value, _PLAIN) else type(value).__name__))
        except (TypeError, ValueError):  # holds objects: keyed, like a function, by its kind only
            values.append((name, type(value).__name__))
    sig = _sha(*values)
    STATE.globals = (env, sig)
    return sig


def _page_row(page: Any) -> tuple[Any, ...]:
    """What the theme shows of a page: on its own, and in the pages that list it, link to it or sit
    next to it in the navigation (these key the rows of the pages they show). An excerpt lacks some
    of a page's attributes: None stands for them. Computed once per page and build: the rows are
    read when the pages are rendered, after every page was read and its metadata settled."""
    hit = STATE.rows.get(id(page))
    if hit is not None and hit[0] is page:
        return hit[1]
    row = _page_row_of(page)
    STATE.rows[id(page)] = (page, row)
    return row


def _page_row_of(page: Any) -> tuple[Any, ...]:
    get = functools.partial(getattr, page)
    config = get("config", None)
    return (
        page.url,
        page.title,
        _plain(page.meta),
        get("canonical_url", None),
        get("edit_url", None),
        get("is_homepage", None),
        _link(get("parent", None)),
        _link(get("previous_page", None)),
        _link(get("next_page", None)),
        None if config is None else _plain(dict(config)),  # a blog post or excerpt
        [_link(c) for c in get("categories", [])],
        [_plain(dict(a)) for a in get("authors", [])],
    )


def _nav_key(nav: Any) -> str:
    """The navigation's signature, computed once per build (each build makes its own nav)."""
    if STATE.nav is None or STATE.nav[0] is not nav:
        STATE.nav = (nav, _sha(*_nav_sig(nav.items)))
    return STATE.nav[1]


def _nav_sig(items: Any) -> list[Any]:
    """The menus: titles, URLs and the metadata of the pages in them (icons, status)."""
    return [
        (
            type(i).__name__,
            i.title,
            getattr(i, "url", None),
            _plain(i.meta) if getattr(i, "meta", None) else None,
            _nav_sig(i.children or []),
        )
        for i in items
    ]


def _link(item: Any) -> Any:
    return None if item is None else (item.title, getattr(item, "url", None))


def _plain(value: Any) -> str:
    """A stable text of metadata; an object without a stable text makes the key unique (a miss)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if " object at 0x" in text:
        raise ValueError("metadata holds an object without a stable text")
    return text


_READS_PAGES = re.compile(r"(?<![\w.])pages\b")


def _theme_sig(config: Any) -> tuple[str, bool]:
    """The theme's own files (a package's by its version, a project folder such as custom_dir by its
    files), and whether any of its HTML templates reads the `pages` variable (every page's data)."""
    parts: list[Any] = [(_version("mkdocs"), _version("mkdocs-material"))]
    reads_pages = False
    for folder in config.theme.dirs:
        base = Path(folder)
        if _installed(folder):
            parts.append(base.as_posix())
            reads_pages = reads_pages or _package_reads_pages(base.as_posix())
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file():
                text = path.read_text("utf-8", "replace")
                parts.append((path.as_posix(), _sha(text)))
                reads_pages = reads_pages or (path.suffix == ".html" and bool(_READS_PAGES.search(text)))
    return _sha(*parts), reads_pages


@functools.cache
def _package_reads_pages(folder: str) -> bool:
    """Whether an installed theme's templates read `pages` (scanned once per process)."""
    return any(
        _READS_PAGES.search(path.read_text("utf-8", "replace"))
        for path in Path(folder).rglob("*.html")
        if ".icons" not in path.parts
    )


def _memory_bytecode_cache() -> Any:
    import jinja2

    class MemoryBytecodeCache(jinja2.BytecodeCache):
        """Jinja's BytecodeCache in a dict: a bucket rejects bytecode whose source checksum differs."""

        def __init__(self) -> None:
            self.store: dict[str, bytes] = {}

        def load_bytecode(self, bucket: Any) -> None:
            data = self.store.get(bucket.key)
            if data is not None:
                bucket.bytecode_from_string(data)

        def dump_bytecode(self, bucket: Any) -> None:
            self.store[bucket.key] = bucket.bytecode_to_string()

    return MemoryBytecodeCache()


_TEMPLATES = _memory_bytecode_cache()
