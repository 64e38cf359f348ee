"""The Python-Markdown extension `kernelnotes.mdext`: includes, block identities and the result fence.

It runs wherever Python-Markdown runs: `mkdocs build/serve`, `zensical build` (which runs Markdown
extensions but no MkDocs plugins) and a plain `markdown.markdown(text, extensions=[...])`.

- **Includes.** `--8<--` lines are resolved by kernelnotes' one `IncludeResolver` (the index and the
  pipeline use the same): against the project root, then snippets/, never outside the project, never
  through a symlink that leaves it. It replaces pymdownx.snippets, whose rules differed (it followed
  symlinks out of the project and resolved against the working directory). A missing include leaves
  the directive in place; the index reports it once and the block fails with one line.
- **Identities.** Before superfences runs, the page's exec blocks are parsed and given their cache
  keys (the same `KeyMaker` as `kn run`), so the fence finds a block's result by what the block is
  (its code, attributes and the session blocks before it), never by its position.
- **The fence.** A superfences custom fence per runnable language (kernelnotes.fence) renders the
  highlighted source and the result.

List it after pymdownx.superfences in `markdown_extensions`; `config` names the mkdocs.yml whose
`kernelnotes` section locates the index and the results (default: ./mkdocs.yml).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from markdown import Markdown
from markdown.extensions import Extension
from markdown.preprocessors import Preprocessor

from kernelnotes import fence, site_cache

log = logging.getLogger("mkdocs.plugins.kernelnotes")


class IncludePreprocessor(Preprocessor):
    """Resolves `--8<--` includes with the project's include rules (see module docstring)."""

    def __init__(self, md: Markdown, ext: KernelNotesExtension) -> None:
        super().__init__(md)
        self.ext = ext

    def run(self, lines: list[str]) -> list[str]:
        from kernelnotes.parse import resolve_includes

        view = self.ext.view()
        if view is None or not any("8<" in line for line in lines):
            return lines
        resolver = view.app.resolver
        code, includes, _map = resolve_includes(lines, 1, "", resolver, [])
        # the site cache reuses this page's HTML only while these files are unchanged
        site_cache.record_reads(
            str(resolver.root / i.path) if i.path else f"missing:{i.spec}" for i in includes
        )
        return code.split("\n")


class BlockKeysPreprocessor(Preprocessor):
    """Gives every exec block of the page its cache key, for the fence to look its result up."""

    def __init__(self, md: Markdown, ext: KernelNotesExtension) -> None:
        super().__init__(md)
        self.ext = ext

    def run(self, lines: list[str]) -> list[str]:
        view = self.ext.view()
        blocks: dict[str, deque[tuple[str, str]]] = {}
        if view is not None:
            for content, keys in view.page_keys(lines):
                blocks.setdefault(content, deque()).append(keys)
        self.md.kernelnotes_blocks = blocks
        self.md.kernelnotes_view = view  # the view of this extension's `config`, for the fence
        return lines


class KernelNotesExtension(Extension):
    def __init__(self, **kwargs: Any) -> None:
        self.config = {"config": ["", "mkdocs.yml whose kernelnotes section to use (default: ./mkdocs.yml)"]}
        super().__init__(**kwargs)

    def view(self) -> fence.ResultsView | None:
        return fence.ResultsView.current(self.getConfig("config") or None)

    def extendMarkdown(self, md: Markdown) -> None:
        self.md = md
        md.registerExtension(self)  # reset() between pages
        # pymdownx.snippets runs at 32 and superfences at 25: includes first, then identities
        md.preprocessors.register(IncludePreprocessor(md, self), "kernelnotes_includes", 32)
        md.preprocessors.register(BlockKeysPreprocessor(md, self), "kernelnotes_blocks", 29)
        superfences = (
            md.preprocessors["fenced_code_block"] if "fenced_code_block" in md.preprocessors else None
        )
        extension = getattr(superfences, "extension", None)
        if extension is None or not hasattr(extension, "extend_super_fences"):
            log.warning("kernelnotes.mdext: list pymdownx.superfences before it; results are not shown")
            return
        for language in fence.languages(self.view()):
            fence.register(extension, language)

    def reset(self) -> None:
        self.md.kernelnotes_blocks = {}
        self.md.kernelnotes_view = None


def makeExtension(**kwargs: Any) -> KernelNotesExtension:
    return KernelNotesExtension(**kwargs)
