"""Slugs for notes: readable ASCII, with Chinese titles spelled in pinyin.

mkdocs-material's default slugify drops CJK characters, which leaves Chinese titles with an empty or
colliding slug; the site (`post_slugify` in mkdocs.yml), the index and `kn new` all use this one.
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


def slugify_factory(**kwargs: Any) -> Any:
    """For mkdocs.yml's `post_slugify`/`slugify`, which expect a factory like pymdownx.slugs."""
    return lambda text, sep="-": slugify(text, sep)
