"""Untrusted text (titles, tags, file names, problem messages) made safe for where it lands.

Notes are written by anyone who can open a pull request, so their metadata is untrusted input:

- a terminal interprets ESC sequences (clear screen, fake lines, OSC 8 hyperlinks) and bidi controls:
  `terminal_text` shows every such character as a visible escape (`\\x1b`, `\\n`, `\\u202e`);
- XML 1.0 forbids most control characters and HTML readers never want them: `plain_text` drops them;
- HTML needs `<`, `&` and quotes escaped exactly once: `html_text` returns `markupsafe.Markup`, which
  Jinja's `|e` (and every autoescaping environment, such as the RSS plugin's) leaves as it is.
"""

from __future__ import annotations

import json
import re
from typing import Any

from markupsafe import Markup

# C0 controls except tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and characters XML
# 1.0 cannot carry (lone surrogates, U+FFFE/U+FFFF).
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# What must never reach a terminal raw: every control character (newlines fake whole lines) and the
# bidi overrides/isolates that reorder what is shown ("Trojan Source").
_NOT_TERMINAL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def plain_text(value: Any) -> str:
    """`value` as text without control characters (valid in XML, shown the same in any reader)."""
    return _NOT_TEXT.sub("", str(value))


def html_text(value: Any) -> Markup:
    """Plain text escaped once for HTML; already-escaped `Markup` is returned as it is."""
    if isinstance(value, Markup):
        return value
    return Markup.escape(plain_text(value))


def terminal_text(value: Any) -> str:
    """`value` for a terminal: control and bidi characters shown as visible escapes, never obeyed."""
    return _NOT_TERMINAL.sub(_visible, str(value))


def terminal_json(data: Any) -> str:
    """JSON for a terminal: `json.dumps` escapes C0 controls; this also escapes C1 and bidi ones."""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
