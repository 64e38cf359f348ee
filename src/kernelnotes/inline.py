"""Text for pages: arbitrary values (output, device names, messages) as inert Markdown."""

from __future__ import annotations

# Characters that must stay literal in text from a snippet or a results file: HTML, and the Markdown
# that would make links, emphasis, code or table cells out of it.
_INERT = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"} | {c: f"&#{ord(c)};" for c in "[]()*_`|\\!#"}
)


def inert(value: object) -> str:
    """Arbitrary text as inert Markdown (shown as written, never interpreted)."""
    return str(value).translate(_INERT)
