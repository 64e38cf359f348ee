"""Full-text search for Chinese and English with stock SQLite FTS5, no extension needed.

FTS5's unicode61 tokenizer treats a run of Chinese characters as one token, so `扩散` is not found
in `连续扩散模型`; the trigram tokenizer cannot match one- or two-character words. We therefore index
every CJK character as its own token, by putting an invisible separator (U+200B, which unicode61
treats as a separator) around it, and search a CJK word as a phrase of its characters: `扩散` becomes
the phrase "扩 散", which matches exactly where the two characters stand side by side. English words
are left to unicode61 (with the porter stemmer), so `online softmax` works as usual. Fragments are
cut from the original text (`highlighter`, `fragment`), never from the separated one. Because the
stored text is plain, the database opens as it is in sqlite-utils and datasette.
"""

from __future__ import annotations

import re

SEP = "\u200b"
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{CJK}]+")
# what unicode61 keeps as token characters: letters and digits (underscore separates)
_TOKEN = re.compile(rf"[{CJK}]|[^\W_{CJK}]+")


def index_text(text: str) -> str:
    """Text as stored in the FTS table: each CJK character stands alone as a token."""
    # one substitution per run of CJK characters (not per character): 3x faster on Chinese text
    return _CJK_RUN.sub(lambda m: SEP + SEP.join(m.group()) + SEP, text)


def query_terms(query: str) -> list[list[str]]:
    """Split a user query into terms, each a list of tokens; FTS syntax characters are dropped."""
    return [tokens for word in query.split() if (tokens := _TOKEN.findall(word))]


def highlighter(query: str) -> re.Pattern[str] | None:
    """A pattern for the query's terms as they appear in the original text (for fragments).

    Like the FTS query: a CJK word matches its characters side by side, the tokens of one term may
    be separated by punctuation or spaces; an English word matches case-insensitively as the start
    of a word, without the last letters porter would strip (`sampling` finds `samples`).
    """
    patterns = []
    for tokens in query_terms(query):
        parts = []
        for token in tokens:
            if _CJK_RUN.fullmatch(token):
                parts.append(re.escape(token))
            else:
                stem = token if len(token) <= 4 else token[: max(4, len(token) - 3)]
                parts.append(rf"(?<![^\W_]){re.escape(stem)}[^\W_]*")
        patterns.append(r"[\W_]*".join(parts))
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


def fragment(text: str, pattern: re.Pattern[str], width: int, mark: tuple[str, str]) -> str | None:
    """About `width` characters of `text` around the first match, matches wrapped in `mark`.

    None when nothing matches. Cost is one regex scan of `text`: callers bound its length.
    """
    found = pattern.search(text)
    if found is None:
        return None
    start = max(0, found.start() - (width - (found.end() - found.start())) // 3)
    end = min(len(text), start + width)
    window = pattern.sub(lambda m: mark[0] + m.group() + mark[1], text[start:end])
    return ("…" if start else "") + window + ("…" if end < len(text) else "")


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression for a plain-text query: every term must match, as a phrase.

    Each token is quoted, so words like AND/OR/NOT and characters like * ( - are searched as text.
    """
    return " ".join('"' + " ".join(tokens) + '"' for tokens in query_terms(query))
