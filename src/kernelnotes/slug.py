"""Slugs for notes.

- `slugify`: readable ASCII, Chinese spelled in pinyin ("在线 softmax" -> "zai-xian-softmax"): what
  `kn new` writes into a new note's `slug:`.
- `site_slug`: the URL the site gives a note without `slug:`. It is pymdownx.slugs' Unicode slug
  (lower case, CJK kept), the one slug callable both mkdocs-material's `post_slugify` and Zensical
  accept, so the index (`kn show SLUG`) and both site generators agree on every note's address.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from kernelnotes.textsearch import CJK

_CJK = re.compile(f"[{CJK}]")


def slugify(text: str, separator: str = "-", **_: Any) -> str:
    """`slugify("在线 softmax 与 FlashAttention")` -> "zai-xian-softmax-yu-flashattention"."""
    if _CJK.search(text):
        from pypinyin import lazy_pinyin  # imported lazily: ~0.1 s, only for Chinese titles

        text = " ".join(lazy_pinyin(text))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", text.lower())
    return separator.join(words)


def site_slug(text: str, separator: str = "-") -> str:
    """The site's slug of a title: `site_slug("在线 Softmax 与 FlashAttention")` -> "在线-softmax-与-flashattention"."""
    from pymdownx.slugs import slugify as pymdownx_slugify

    return str(pymdownx_slugify(case="lower")(text, separator))


def slugify_factory(**kwargs: Any) -> Any:
    """For mkdocs.yml's `post_slugify`/`slugify`, which expect a factory like pymdownx.slugs."""
    return lambda text, sep="-": slugify(text, sep)
