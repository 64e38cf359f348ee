"""Results rendered by the fence: the one place where a block's result becomes HTML.

A pymdownx.superfences custom fence (validator + formatter, markdown-exec's shape) for each language
a runner executes. The validator accepts a block whose attributes say `exec="on"`; the formatter
shows the highlighted source and the block's result, found by the block's identity (its cache key,
computed by `kernelnotes.mdext` from the page's blocks) in a `ResultsView`:

- under `mkdocs build/serve` the kernelnotes plugin runs the pipeline first and hands the view this
  build's outcomes (executed or cached, with figures published as files);
- anywhere else (`zensical build`, a plain `markdown.markdown`) the view reads the index database and
  the committed results folder named by mkdocs.yml: what `kn run` or CI recorded.

The result's Markdown comes from the `render_result` hook and is converted here with the same
admonition/details/tables/highlight extensions the site uses.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from markdown import Markdown

from kernelnotes.blockattrs import key_attrs, parse_bool

if TYPE_CHECKING:
    from kernelnotes.app import App
    from kernelnotes.cache import KeyMaker
    from kernelnotes.pipeline import Outcome
    from kernelnotes.results import Figure

PYTHON = ("python", "py", "python3")


def content_key(language: str, attrs: dict[str, Any], code: str) -> str:
    """What a block is, as the page shows it: language, result-changing attributes and code."""
    data = {"l": language.lower(), "a": key_attrs(attrs), "c": code.strip("\n")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def languages(view: ResultsView | None) -> list[str]:
    """The fence languages: Python's names plus those other runner plugins declare."""
    found = list(PYTHON)
    if view is not None:
        for group in view.app.pm.hook.exec_languages():
            found += [lang for lang in group or [] if lang not in found]
    return found


def register(superfences: Any, language: str) -> None:
    """Add the result fence for `language` to a superfences extension instance."""
    superfences.extend_super_fences(
        language,
        functools.partial(_superfences_formatter, class_name=language),
        functools.partial(_superfences_validator),
        None,
    )


def validator(
    language: str, inputs: dict[str, str], options: dict[str, Any], attrs: dict[str, Any], md: Markdown
) -> bool:
    """Take a block whose attributes say exec="on"; every attribute goes to `options`."""
    # superfences gives a bare flag its own name as value (`bench` -> "bench"), or None in the brace
    # form: a flag means on, as the parser reads it
    values = {k: (True if v is None or v == k else v) for k, v in inputs.items()}
    try:
        if not parse_bool(values.get("exec", "off")):
            return False
    except ValueError:
        return False
    options.update(values)
    return True


def formatter(
    src: str, language: str, class_name: str, options: dict[str, Any], md: Markdown, **kwargs: Any
) -> str:
    """The highlighted source, then the block's result, as the block's `show=` asks."""
    view = getattr(md, "kernelnotes_view", None) or ResultsView.current()
    show = str(options.get("show", "both"))
    source = _highlight(src, language, options, md, kwargs)
    if view is None:
        return source
    blocks = getattr(md, "kernelnotes_blocks", {})
    queue = blocks.get(content_key(language, options, src))
    keys = queue.popleft() if queue else view.single_block_keys(language, options, src)
    outcome = view.outcome(language, options, src, keys)
    result = view.render_html(outcome, md)
    if show == "source" or not result:
        return source
    if show == "output":
        return result
    return source + "\n" + result


def _superfences_validator(
    language: str, inputs: dict[str, str], options: dict[str, Any], attrs: dict[str, Any], md: Markdown
) -> bool:
    md.preprocessors["fenced_code_block"].get_hl_settings()
    return validator(language, inputs, options, attrs, md)


def _superfences_formatter(
    src: str = "",
    language: str = "",
    options: dict[str, Any] | None = None,
    md: Markdown | None = None,
    class_name: str = "",
    **kwargs: Any,
) -> str:
    assert md is not None
    return formatter(src, language, class_name, options or {}, md, **kwargs)


def _highlight(src: str, language: str, options: dict[str, Any], md: Markdown, kwargs: dict[str, Any]) -> str:
    """The source as superfences shows any other block (pygments, line numbers, title)."""
    hl = {k: str(v) for k, v in options.items() if k in ("hl_lines", "linenums", "title")}
    processor = md.preprocessors["fenced_code_block"]
    return str(
        processor.highlight(
            src=src,
            language=language,
            options=hl,
            md=md,
            classes=list(kwargs.get("classes") or []),
            id_value=kwargs.get("id_value", ""),
            attrs={},
        )
    )


class ResultsView:
    """The results a site shows, by block key: this build's outcomes, else the recorded ones."""

    _active: ClassVar[ResultsView | None] = None  # set by the mkdocs plugin for the duration of a build
    _loaded: ClassVar[dict[str, ResultsView | None]] = {}
    _lock = threading.Lock()

    def __init__(
        self, app: App, outcomes: Iterable[Outcome] = (), figure_link: Callable[[Figure], str] | None = None
    ) -> None:
        self.app = app
        self.outcomes = {o.key: o for o in outcomes}
        self.figure_link = figure_link
        self._keys: KeyMaker | None = None
        self._md: Markdown | None = None
        self._render_lock = threading.Lock()

    # ---- which view --------------------------------------------------------------------------

    @classmethod
    def activate(cls, view: ResultsView | None) -> None:
        """Make `view` the one every fence uses (the mkdocs plugin, per build); None to release."""
        cls._active = view

    @classmethod
    def current(cls, config: str | None = None) -> ResultsView | None:
        """The active view, else one over the recorded results of mkdocs.yml (`config` or ./)."""
        if cls._active is not None:
            return cls._active
        name = config or "mkdocs.yml"
        with cls._lock:
            if name not in cls._loaded:
                cls._loaded[name] = cls._load(name)
            return cls._loaded[name]

    @classmethod
    def _load(cls, config: str) -> ResultsView | None:
        import logging

        from kernelnotes.app import App
        from kernelnotes.settings import SettingsError

        path = Path(config)
        if not path.is_file():
            return None
        try:
            app = App.load(config=path)
            app.update_index()  # the notes and committed results, as `kn index` would
        except (SettingsError, OSError) as exc:
            logging.getLogger("kernelnotes").warning(f"kernelnotes: results not shown: {exc}")
            return None
        return cls(app)

    # ---- identities ----------------------------------------------------------------------------

    def key_maker(self) -> KeyMaker:
        if self._keys is None:
            self._keys = self.app.pipeline(self.app.run_options(execute=False)).key_maker()
        return self._keys

    def page_keys(self, lines: list[str]) -> Iterator[tuple[str, tuple[str, str]]]:
        """(content key, (cache key, code key)) of each exec block of a page, in page order."""
        from kernelnotes.parse import extract_snippets

        snippets = [s for s in extract_snippets(lines, 1, "", self.app.resolver, []) if s.executable]
        for snippet, keys in zip(snippets, self.key_maker().keys(snippets)):
            yield content_key(snippet.language, dict(snippet.attrs), snippet.code), keys

    def single_block_keys(self, language: str, options: dict[str, Any], src: str) -> tuple[str, str]:
        """Keys of a block seen without its page (no mdext preprocessor): a session of its own."""
        from kernelnotes.note import Snippet

        snippet = Snippet(0, language, {k: v for k, v in options.items()}, 0, 0, src.strip("\n"))
        return self.key_maker().keys([snippet])[0]

    # ---- results -------------------------------------------------------------------------------

    def outcome(self, language: str, options: dict[str, Any], src: str, keys: tuple[str, str]) -> Outcome:
        """This build's outcome for the block, else one made from the recorded results."""
        from kernelnotes.note import Snippet
        from kernelnotes.pipeline import Outcome

        key, code_key = keys
        if key in self.outcomes:
            return self.outcomes[key]
        snippet = Snippet(0, language, dict(options), 0, 0, src)
        store = self.app.store
        fresh = store.fresh(key)
        others = [(r, r.code_key != code_key) for r in store.latest("", -1, code_key)]
        shown = fresh.device if fresh else None
        outcome = Outcome("", snippet, key, fresh, cached=fresh is not None)
        outcome.others = [(r, stale) for r, stale in others if r.device != shown]
        if outcome.result is None and outcome.others:
            outcome.result, outcome.stale = outcome.others.pop(0)
        return outcome

    def render_html(self, outcome: Outcome, md: Markdown) -> str:
        with self._render_lock:  # one converter per view: renders one result at a time
            return self._render_html(outcome, md)

    def _render_html(self, outcome: Outcome, md: Markdown) -> str:
        markdown = (
            self.app.pm.hook.render_result(
                outcome=outcome, figure_link=self.figure_link, language=self.app.settings.language
            )
            or ""
        )
        return self._converter(md).reset().convert(markdown) if markdown else ""

    def _converter(self, md: Markdown) -> Markdown:
        """A Markdown instance for result boxes, highlighting code as the page does."""
        if self._md is None:
            configs: dict[str, dict[str, Any]] = {}
            for ext in getattr(md, "registeredExtensions", []):
                if type(ext).__module__ == "pymdownx.highlight":
                    configs["pymdownx.highlight"] = ext.getConfigs()
            self._md = Markdown(
                extensions=[
                    "admonition",
                    "pymdownx.details",
                    "pymdownx.highlight",
                    "pymdownx.superfences",
                    "tables",
                    "md_in_html",
                    "attr_list",
                ],
                extension_configs=configs,
            )
        return self._md
