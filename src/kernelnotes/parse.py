"""Parse notes (mkdocs-material blog posts and Jupyter notebooks) into the note model.

Parsing never raises on bad input: every problem becomes a `Problem` naming file and line, and as
much of the note as can be read is still returned, so one broken note never hides the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kernelnotes import boundedyaml
from kernelnotes.note import AttrValue, Include, Note, Snippet
from kernelnotes.problems import Problem
from kernelnotes.slug import site_slug, slugify

EXCERPT_CHARS = 300
MORE = re.compile(r"^\s*<!--\s*more\s*-->\s*$", re.MULTILINE)
FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
H1 = re.compile(r"^#\s+(?P<title>.+?)\s*#*\s*$")
INCLUDE_LINE = re.compile(r"""^(?P<indent>\s*)-{1,}8<-{1,}\s+(?P<q>["'])(?P<spec>[^"']+)(?P=q)\s*$""")
INCLUDE_BLOCK = re.compile(r"^\s*-{1,}8<-{1,}\s*$")
ATTR = re.compile(
    r"""(?P<key>[A-Za-z_][\w.-]*)\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s}]+))"""
    r"""|\.(?P<cls>[\w+-]+)|\#(?P<id>[\w-]+)|(?P<flag>[^\s{}=]+)"""
)
SECTION = re.compile(r"--8<--\s*\[(?P<kind>start|end):(?P<name>[\w-]+)\]")
KNOWN_KEYS = ("title", "date", "categories", "tags", "slug", "draft", "authors", "description")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loader (the C one when available: 10k notes parse several times faster with it).

    A timestamp that looks like a date but is not one (`2024-13-45`) stays a string, so the date
    check can name it instead of YAML raising a bare ValueError.
    """

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)  # type: ignore[misc]
        except ValueError:
            return self.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


@dataclass
class ParseResult:
    note: Note | None
    problems: list[Problem] = field(default_factory=list)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IncludeResolver:
    """Resolves `--8<--` includes against the project root, then snippets/; caches file reads."""

    def __init__(self, root: Path, snippets_dir: Path) -> None:
        self.root = root.resolve()
        self.snippets_dir = snippets_dir.resolve()
        self._cache: dict[Path, tuple[str, str] | None] = {}

    def clear(self) -> None:
        """Forget the files read (a long-lived App re-reads them for every index update)."""
        self._cache.clear()

    def read(self, spec: str) -> tuple[str, str, str] | None:
        """Return (relative path, text, sha) of the file named by `spec` (no line/section suffix).

        Never outside the project (the real path is checked, so no symlink leads out) and never a
        hidden file or folder (`.env`, `.git/`, `.kernelnotes/`): those hold secrets and state.
        """
        for base in (self.root, self.snippets_dir):
            candidate = (base / spec).resolve()
            if not candidate.is_relative_to(self.root) or not candidate.is_file():
                continue  # never read outside the project, whatever the note asks
            if any(part.startswith(".") for part in candidate.relative_to(self.root).parts):
                continue
            if candidate not in self._cache:
                try:
                    data = candidate.read_bytes()
                    self._cache[candidate] = (data.decode("utf-8"), sha256(data))
                except (OSError, UnicodeDecodeError):
                    self._cache[candidate] = None
            cached = self._cache[candidate]
            if cached is not None:
                return candidate.relative_to(self.root).as_posix(), cached[0], cached[1]
        return None

    def file_sha(self, relpath: str) -> str:
        """Current hash of an included file ("" when it is gone): used to detect stale notes."""
        found = self.read(relpath)
        return found[2] if found else ""


def parse_file(path: Path, relpath: str, resolver: IncludeResolver, data: bytes | None = None) -> ParseResult:
    """Parse one note file; `relpath` is how problems and the index name it."""
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return ParseResult(None, [Problem(relpath, 0, f"cannot read file: {exc.strerror}")])
    if not data.strip():
        return ParseResult(
            None, [Problem(relpath, 0, "empty note", "write front matter and a body, or delete it")]
        )
    if b"\x00" in data[:8192]:
        return ParseResult(None, [Problem(relpath, 0, "binary file, not a note", "move it out of notes/")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return ParseResult(
            None,
            [
                Problem(
                    relpath, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", "save the file as UTF-8"
                )
            ],
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if relpath.endswith(".ipynb"):
        return parse_notebook(text, relpath, resolver)
    return parse_markdown(text, relpath, resolver)


def parse_markdown(text: str, relpath: str, resolver: IncludeResolver) -> ParseResult:
    problems: list[Problem] = []
    meta, body, body_line = _split_front_matter(text, relpath, problems)
    lines = body.split("\n")
    snippets = extract_snippets(lines, body_line, relpath, resolver, problems)
    h1 = next((m["title"] for line in lines if (m := H1.match(line))), None)
    note = _build_note(relpath, "markdown", meta, body, h1, snippets, problems)
    note.body_line = body_line
    return ParseResult(note, problems)


def parse_notebook(text: str, relpath: str, resolver: IncludeResolver) -> ParseResult:
    """A notebook: metadata keys as front matter, markdown cells as body, code cells as snippets."""
    problems: list[Problem] = []
    try:
        nb = json.loads(text)
        cells = nb["cells"]
        meta = dict(nb.get("metadata") or {})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        line = getattr(exc, "lineno", 0)
        return ParseResult(
            None, [Problem(relpath, line, f"not a valid notebook: {exc}", "open and re-save it in Jupyter")]
        )
    language = str(
        (meta.get("kernelspec") or {}).get("language")
        or (meta.get("language_info") or {}).get("name")
        or "python"
    )
    parts: list[str] = []
    snippets: list[Snippet] = []
    h1 = None
    for number, cell in enumerate(cells, start=1):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if cell.get("cell_type") == "code":
            attrs: dict[str, AttrValue] = {"exec": "on", "session": "notebook"}  # one kernel per notebook
            extra = (cell.get("metadata") or {}).get("kernelnotes") or {}
            attrs.update({str(k): v if isinstance(v, bool) else str(v) for k, v in extra.items()})
            snippets.append(Snippet(len(snippets), language, attrs, number, number, source))
            parts.append(f"```{language}\n{source}\n```")
        elif cell.get("cell_type") == "markdown":
            if h1 is None:
                h1 = next((m["title"] for line in source.split("\n") if (m := H1.match(line))), None)
            parts.append(source)
    note = _build_note(relpath, "notebook", meta, "\n\n".join(parts), h1, snippets, problems)
    return ParseResult(note, problems)


# Front matter as MkDocs (and so material's blog) finds it: the one rule of the project, used by the
# index, the blog guards (kernelnotes.blog) and the metadata cleaner (kernelnotes.site_metadata).
FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_OPENING = re.compile(r"\A\ufeff?---[ \t]*\n")


def split_front_matter(text: str) -> tuple[str | None, str, int]:
    """(front-matter text, or None when there is none; the body; the body's first line number)."""
    match = FRONT_MATTER.match(text)
    if match is None:
        return None, text, 1
    return match.group(1) or "", text[match.end() :], match.group(0).count("\n") + 1


def _split_front_matter(text: str, relpath: str, problems: list[Problem]) -> tuple[dict[str, Any], str, int]:
    """Return (front matter, body, first body line). Bad YAML leaves meta empty and reports where."""
    raw, body, body_line = split_front_matter(text)
    if raw is None:
        if _OPENING.match(text):
            problems.append(Problem(relpath, 1, "front matter is never closed", "add a line '---' after it"))
        return {}, text, 1
    try:
        meta = boundedyaml.load(raw, _Loader) or {}
    except yaml.YAMLError as exc:
        line = boundedyaml.front_matter_line(exc, default=1)
        reason = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        hint = (
            "write the values out instead of YAML aliases"
            if isinstance(exc, boundedyaml.AliasBombError)
            else "fix the YAML syntax"
        )
        problems.append(Problem(relpath, line, f"invalid YAML front matter: {reason}", hint))
        return {}, body, body_line
    if not isinstance(meta, dict):
        problems.append(Problem(relpath, 2, "front matter is not a mapping", "write 'key: value' lines"))
        return {}, body, body_line
    return {str(k): v for k, v in meta.items()}, body, body_line


def _build_note(
    relpath: str,
    kind: str,
    meta: dict[str, Any],
    body: str,
    h1: str | None,
    snippets: list[Snippet],
    problems: list[Problem],
) -> Note:
    title = str(meta.get("title") or h1 or Path(relpath).stem)
    date_problems: list[Problem] = []
    created, updated = _parse_dates(meta.get("date"), relpath, date_problems)
    # JSON has no date type: a notebook's ISO date string is the normal form, not a quoted date
    problems += [p for p in date_problems if not (kind == "notebook" and p.severity == "warning")]
    return Note(
        path=relpath,
        kind=kind,
        title=title,
        slug=str(meta.get("slug") or site_slug(title) or slugify(Path(relpath).stem)),
        body=body,
        excerpt=make_excerpt(body),
        date=created,
        updated=updated,
        categories=_str_list(meta.get("categories"), "categories", relpath, problems),
        tags=_str_list(meta.get("tags"), "tags", relpath, problems),
        authors=_str_list(meta.get("authors"), "authors", relpath, problems),
        draft=bool(meta.get("draft", False)),
        description=str(meta.get("description") or ""),
        meta=meta,
        snippets=snippets,
    )


def _str_list(value: Any, key: str, relpath: str, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return list(dict.fromkeys(str(v) for v in value))  # keep order, drop repeats
    problems.append(Problem(relpath, 0, f"'{key}' must be a list of names", f"write '{key}: [a, b]'"))
    return []


def _parse_dates(
    value: Any, relpath: str, problems: list[Problem]
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`date: 2024-01-31`, a datetime, or a mapping with `created:` (required) and `updated:`."""
    if value is None:
        return None, None
    if isinstance(value, dict):
        if "created" not in value:
            problems.append(
                Problem(relpath, 0, "date has 'updated' but no 'created'", "add 'created: YYYY-MM-DD'")
            )
            return None, _to_datetime(value.get("updated"), "date.updated", relpath, problems)
        return (
            _to_datetime(value["created"], "date.created", relpath, problems),
            _to_datetime(value.get("updated"), "date.updated", relpath, problems),
        )
    return _to_datetime(value, "date", relpath, problems), None


def _to_datetime(value: Any, key: str, relpath: str, problems: list[Problem]) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            problems.append(
                Problem(
                    relpath,
                    0,
                    f"{key} {value!r} is a quoted string",
                    f"write it unquoted: {key.split('.')[-1]}: {value.strip()}",
                    "warning",
                )
            )
            return parsed.replace(tzinfo=None)
    problems.append(
        Problem(relpath, 0, f"{key} {value!r} is not a date", "write YYYY-MM-DD, e.g. 2025-03-14")
    )
    return None


def make_excerpt(body: str, limit: int = EXCERPT_CHARS) -> str:
    """The text before `<!-- more -->`, else the first paragraphs up to about `limit` characters."""
    match = MORE.search(body)
    if match:
        return drop_h1(body[: match.start()]).strip()
    paragraphs: list[str] = []
    size = 0
    for block in re.split(r"\n\s*\n", split_code(drop_h1(body))[0]):
        stripped = block.strip()
        if not stripped or stripped.startswith(("#", "<", "!!!", "???", "|", "$$")):
            continue  # headings, HTML, admonitions, tables and display math make poor excerpts
        paragraphs.append(stripped)
        size += len(stripped)
        if size >= limit:
            break
    excerpt = "\n\n".join(paragraphs)
    if len(excerpt) > limit + limit // 5:
        cut = excerpt[:limit]
        end = max(cut.rfind(p) for p in "。！？.!?")
        excerpt = (cut[: end + 1] if end >= limit // 2 else cut.rstrip()) + "…"
    return excerpt


def split_code(text: str) -> tuple[str, int]:
    """The text outside fenced code blocks, and the number of non-blank lines inside them."""
    prose: list[str] = []
    code_lines = 0
    fence = ""
    for line in text.split("\n"):
        if not fence:
            m = FENCE_OPEN.match(line)
            if m:
                fence = m["fence"]
            else:
                prose.append(line)
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = ""
        elif line.strip():
            code_lines += 1
    return "\n".join(prose), code_lines


def drop_h1(text: str) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip():
            return "\n".join(lines[i + 1 :]) if H1.match(line) else text
    return text


def parse_info(info: str) -> tuple[str, dict[str, AttrValue]]:
    """Split a fence's info string into (language, attributes), as pymdownx.superfences reads it.

    Accepts `python exec="on" session=a flag` and the brace form `{.python exec="on" #id}`.
    """
    info = info.strip()
    braced = info.startswith("{") and info.endswith("}")
    if braced:
        info = info[1:-1]
    language = ""
    attrs: dict[str, AttrValue] = {}
    for m in ATTR.finditer(info):
        if m["key"]:
            attrs[m["key"]] = next(v for v in (m["dq"], m["sq"], m["bare"]) if v is not None)
        elif m["cls"]:
            if not language:
                language = m["cls"]
        elif m["id"]:
            attrs["id"] = m["id"]
        elif m["flag"]:
            if not language and not braced and not attrs:
                language = m["flag"]
            else:
                attrs[m["flag"]] = True
    return language, attrs


BARE_VALUE = re.compile(r"""(?<![\w"'])([A-Za-z_][\w.-]*)=(?!["'])([^\s}]+)""")


def extract_snippets(
    lines: list[str], first_line: int, relpath: str, resolver: IncludeResolver, problems: list[Problem]
) -> list[Snippet]:
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
        if end is None:
            problems.append(
                Problem(
                    relpath,
                    first_line + i,
                    f"code fence {fence} is never closed",
                    f"add a closing {fence} line",
                )
            )
            break
        body = [_dedent(line, indent) for line in lines[i + 1 : end]]
        language, attrs = parse_info(m["info"])
        code, includes, source_map = resolve_includes(body, first_line + i + 1, relpath, resolver, problems)
        snippet = Snippet(
            len(snippets), language, attrs, first_line + i, first_line + end, code, includes, source_map
        )
        info = m["info"].strip()
        if "exec" in attrs and not info.startswith("{"):
            # superfences reads only quoted values in an info string: unquoted, the page would show
            # the block without its result, so say so instead of running what nobody will see
            problems += [
                Problem(
                    relpath, first_line + i, f"code block attribute {k}={v} needs quotes", f'write {k}="{v}"'
                )
                for k, v in BARE_VALUE.findall(info)
            ]
        if "exec" in attrs:  # our block: every bad attribute is one line, the block is not run
            problems += [
                Problem(relpath, first_line + i, f"code block attribute {err}")
                for err in snippet.options.errors
            ]
        snippets.append(snippet)
        i = end + 1
    return snippets


def _dedent(line: str, indent: int) -> str:
    strip = len(line) - len(line.lstrip(" \t"))
    return line[min(strip, indent) :]


def resolve_includes(
    body: list[str], first_line: int, relpath: str, resolver: IncludeResolver, problems: list[Problem]
) -> tuple[str, tuple[Include, ...], tuple[tuple[str, int], ...]]:
    out: list[str] = []
    where: list[tuple[str, int]] = []
    includes: list[Include] = []
    in_block = False
    for offset, line in enumerate(body):
        lineno = first_line + offset
        if INCLUDE_BLOCK.match(line):
            in_block = not in_block  # block form: one file per line between two `--8<--` lines
            continue
        m = INCLUDE_LINE.match(line)
        spec = m["spec"] if m else (line.strip() if in_block and line.strip() else None)
        if spec is None:
            out.append(line)
            where.append(("", lineno))
            continue
        indent = m["indent"] if m else ""
        text, include, first = _read_include(spec, lineno, relpath, resolver, problems)
        includes.append(include)
        if text is None:
            out.append(line)  # keep the directive so the reader sees what was missing
            where.append(("", lineno))
        else:
            lines = text.rstrip("\n").split("\n")
            out.extend(indent + t if t else t for t in lines)
            where.extend((include.path, first + n) for n in range(len(lines)))
    return "\n".join(out), tuple(includes), tuple(where)


def _read_include(
    spec: str, lineno: int, relpath: str, resolver: IncludeResolver, problems: list[Problem]
) -> tuple[str | None, Include, int]:
    """Read `file`, `file:start:end` (1-based, inclusive) or `file:section` as pymdownx.snippets does."""
    name, _, selector = spec.partition(":")
    found = resolver.read(name)
    if found is None:
        problems.append(
            Problem(
                relpath,
                lineno,
                f'include "{name}" not found',
                f"create {resolver.snippets_dir.name}/{Path(name).name} or fix the path",
            )
        )
        return None, Include(spec, "", lineno), 0
    path, text, sha = found
    first = 1
    if selector:
        lines = text.split("\n")
        start, _, stop = selector.partition(":")
        if start.isdigit() or stop.isdigit() or (not start and not stop):
            lo = max(int(start) - 1 if start.isdigit() else 0, 0)
            hi = int(stop) if stop.isdigit() else len(lines)
            text = "\n".join(lines[lo:hi])
            first = lo + 1
        else:
            section = _section(lines, start)
            if section is None:
                problems.append(
                    Problem(
                        relpath,
                        lineno,
                        f'section "{start}" not found in "{name}"',
                        f"mark it with '# --8<-- [start:{start}]' and '# --8<-- [end:{start}]'",
                    )
                )
                return None, Include(spec, path, lineno, sha), 0
            text = section
            first = (
                next(
                    i for i, line in enumerate(lines, 1) if SECTION.search(line) and f"start:{start}]" in line
                )
                + 1
            )
    return text, Include(spec, path, lineno, sha), first


def _section(lines: list[str], name: str) -> str | None:
    inside, out = False, list[str]()
    for line in lines:
        m = SECTION.search(line)
        if m and m["name"] == name:
            if m["kind"] == "start":
                inside = True
                continue
            return "\n".join(out)
        if inside and not SECTION.search(line):
            out.append(line)
    return None
