"""The SQLite index of notes: tags, categories, snippets, problems and Chinese-aware full-text search.

All SQL of the project lives here. The schema (see README "The index") is plain SQLite made with
sqlite-utils, so `sqlite-utils tables index.db --counts` and `datasette index.db` work on it as is.
Indexing is incremental: a file whose size and mtime (or, failing that, content hash) and included
files are unchanged is not parsed again; deleted notes disappear; a renamed note keeps its id.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from kernelnotes.note import Note
from kernelnotes.parse import IncludeResolver, drop_h1, parse_file, sha256
from kernelnotes.problems import Problem
from kernelnotes.settings import DEFAULT_MAX_NOTE_MB
from kernelnotes.textsearch import fragment, fts_query, highlighter, index_text

NOTE_SUFFIXES = (".md", ".ipynb")
# bm25 column weights for (title, tags, excerpt, body): a title or tag match outranks the body.
WEIGHTS = (10.0, 6.0, 2.0, 1.0)
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"  # highlight markers in fragments; front ends style them
_BATCH = 500
DEFAULT_MAX_NOTE_BYTES = int(DEFAULT_MAX_NOTE_MB * 1e6)
FRAGMENT_CHARS = 120  # a search fragment: about FTS5 snippet()'s 24 tokens of Chinese and English
FRAGMENT_SCAN_CHARS = 100_000  # how far into a hit's body a fragment is looked for (bounds search time)  # SQLite's default limit on host parameters is large, but keep IN lists modest


@dataclass
class IndexReport:
    scanned: int = 0
    parsed: int = 0
    unchanged: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class SearchHit:
    id: int
    path: str
    title: str
    slug: str
    date: str | None
    tags: list[str]
    categories: list[str]
    fragment: str  # with MARK_OPEN/MARK_CLOSE around matches
    score: float


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("notes").create(
        {
            "id": int,
            "path": str,
            "kind": str,
            "slug": str,
            "title": str,
            "date": str,
            "updated": str,
            "draft": int,
            "description": str,
            "excerpt": str,
            "body": str,
            "authors": str,
            "meta": str,
            "size": int,
            "mtime_ns": int,
            "sha": str,
            "includes": str,
            "indexed_at": str,
        },
        pk="id",
    )
    db.table("notes").create_index(["path"], unique=True)
    db.table("notes").create_index(["slug"])
    db.table("notes").create_index(["date"])
    for name in ("tags", "categories"):
        db.table(name).create({"id": int, "name": str}, pk="id")
        db.table(name).create_index(["name"], unique=True)
        link = f"note_{name}"
        key = name[:-1] if name == "tags" else "category"
        db.table(link).create(
            {"note_id": int, f"{key}_id": int},
            pk=("note_id", f"{key}_id"),
            foreign_keys=[("note_id", "notes", "id"), (f"{key}_id", name, "id")],
        )
        db.table(link).create_index([f"{key}_id"])
    db.table("snippets").create(
        {
            "id": int,
            "note_id": int,
            "idx": int,
            "language": str,
            "attrs": str,
            "start_line": int,
            "end_line": int,
            "code": str,
            "code_sha": str,
            "includes": str,
        },
        pk="id",
        foreign_keys=[("note_id", "notes", "id")],
    )
    db.table("snippets").create_index(["note_id", "idx"], unique=True)
    db.table("problems").create(
        {"id": int, "path": str, "line": int, "severity": str, "message": str, "hint": str}, pk="id"
    )
    db.table("problems").create_index(["path"])
    # Search text lives beside the notes (same id) with CJK characters separated; FTS5 indexes it.
    db.table("notes_search").create(
        {"id": int, "title": str, "tags": str, "excerpt": str, "body": str},
        pk="id",
        foreign_keys=[("id", "notes", "id")],
    )
    db.table("notes_search").enable_fts(
        ["title", "tags", "excerpt", "body"],
        fts_version="FTS5",
        tokenize="porter unicode61",
        create_triggers=True,
    )
    # FTS5's `rank` column with our weights: `ORDER BY rank LIMIT k` lets FTS5 compute snippet() for
    # the k hits only; ordering by a bm25() expression computes it for every match (30x slower).
    db.execute(
        "insert into notes_search_fts(notes_search_fts, rank) values ('rank', ?)",
        ["bm25(" + ", ".join(str(w) for w in WEIGHTS) + ")"],
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    """Snippet results (see runs.py): one row per cache key and device."""
    db.table("runs").create(
        {
            "key": str,
            "device": str,
            "device_class": str,
            "note_path": str,
            "snippet_idx": int,
            "start_line": int,
            "status": str,
            "stdout": str,
            "value": str,
            "error": str,
            "figures": str,
            "check_name": str,
            "check_cases": str,
            "duration": float,
            "versions": str,
            "created_at": str,
        },
        pk=("key", "device"),
    )
    db.table("runs").create_index(["note_path", "snippet_idx", "created_at"])


def _migration_3(db: sqlite_utils.Database) -> None:
    """The device-independent code key, so results from other devices can be told current or stale."""
    db.table("runs").add_column("code_key", str)


def _migration_4(db: sqlite_utils.Database) -> None:
    """Results are also looked up by code key (a block identical to one in another note)."""
    db.table("runs").create_index(["code_key"])


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
)


def open_db(path: str | Path | None) -> sqlite_utils.Database:
    """Open (creating and migrating) the index at `path`; None means an in-memory database.

    The connection may be used from the pipeline's job threads, which serialise access with a lock.
    """
    if path is None:
        db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False))
        db.enable_wal()  # readers (kn search, mkdocs serve) do not block the indexer and vice versa
    migrate(db)
    return db


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the migrations the database has not seen; `PRAGMA user_version` counts them."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"index schema v{version} is newer than this KernelNotes (v{len(MIGRATIONS)}); upgrade"
        )
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        with db.atomic():
            step(db)
            db.execute(f"PRAGMA user_version = {number}")


class Index:
    """Reads and writes the note index in one SQLite database."""

    def __init__(self, db: sqlite_utils.Database | str | Path | None) -> None:
        self.db = db if isinstance(db, sqlite_utils.Database) else open_db(db)
        if isinstance(db, sqlite_utils.Database):
            migrate(db)

    # ---- indexing -------------------------------------------------------------------------------

    def update(
        self, notes_dir: Path, resolver: IncludeResolver, *, max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES
    ) -> IndexReport:
        """Bring the index in line with the files under `notes_dir` and return what changed.

        A note larger than `max_note_bytes` is indexed by its head (whole lines), with a warning.
        """
        report = IndexReport()
        existing = {
            r["path"]: r for r in self.db.query("select id, path, size, mtime_ns, sha, includes from notes")
        }
        seen: set[str] = set()
        changed: list[tuple[str, Path, os.stat_result, bytes, str]] = []
        reparse_paths: set[str] = set()
        for path, rel in walk_notes(notes_dir):
            report.scanned += 1
            seen.add(rel)
            try:
                st = path.stat()
            except OSError:
                continue
            row = existing.get(rel)
            includes_ok = row is not None and self._includes_fresh(row, resolver)
            if (
                row is not None
                and includes_ok
                and (row["size"], row["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
            ):
                report.unchanged += 1
                continue
            data = path.read_bytes()
            sha = sha256(data)
            if row is not None and includes_ok and row["sha"] == sha:
                self.db.table("notes").update(row["id"], {"size": st.st_size, "mtime_ns": st.st_mtime_ns})
                report.unchanged += 1
                continue
            changed.append((rel, path, st, data, sha))
            reparse_paths.add(rel)

        gone = {p: r for p, r in existing.items() if p not in seen}
        gone_by_sha: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(gone.values(), key=lambda r: r["path"]):
            gone_by_sha.setdefault(r["sha"], []).append(r)
        next_id = (self.db.execute("select max(id) from notes").fetchone()[0] or 0) + 1
        writes: list[tuple[int, Note, os.stat_result, str]] = []
        failed: list[str] = []
        problems: list[Problem] = []
        for rel, path, st, data, sha in changed:
            if len(data) > max_note_bytes:
                data = _head(data, max_note_bytes)
                problems.append(
                    Problem(
                        rel,
                        0,
                        f"note is {st.st_size / 1e6:.1f} MB, more than max_note_mb"
                        f" ({max_note_bytes / 1e6:g} MB): only its first {len(data) / 1e6:.1f} MB are indexed",
                        "split the note, or raise max_note_mb in the kernelnotes section of mkdocs.yml",
                        "warning",
                    )
                )
            result = parse_file(path, rel, resolver, data)
            problems.extend(result.problems)
            report.parsed += 1
            if result.note is None:
                failed.append(rel)
                continue
            if rel in existing:
                note_id = existing[rel]["id"]
                report.updated.append(rel)
            elif gone_by_sha.get(sha):  # same content under a new path: a rename keeps the note's id
                old = gone_by_sha[sha].pop(0)
                gone.pop(old["path"])
                note_id = old["id"]
                report.renamed.append((old["path"], rel))
            else:
                note_id, next_id = next_id, next_id + 1
                report.added.append(rel)
            writes.append((note_id, result.note, st, sha))

        deleted_ids = [r["id"] for r in gone.values()] + [existing[p]["id"] for p in failed if p in existing]
        report.deleted = sorted(gone)
        # one transaction: sqlite-utils' inner batches become savepoints instead of commits
        with self.db.atomic():
            self._delete_notes(deleted_ids, keep_rows=False)
            self._delete_notes([w[0] for w in writes], keep_rows=True)
            self._write_notes(writes)
            stale_problem_paths = reparse_paths | set(gone) | {old for old, _ in report.renamed}
            for chunk in _chunks(sorted(stale_problem_paths)):
                self.db.table("problems").delete_where(f"path in ({_qs(chunk)})", chunk)
            self.db.table("problems").insert_all(
                (
                    {
                        "path": p.path,
                        "line": p.line,
                        "severity": p.severity,
                        "message": p.message,
                        "hint": p.hint,
                    }
                    for p in problems
                ),
                pk="id",
            )
        report.problems = self.problems()
        return report

    def _includes_fresh(self, row: dict[str, Any], resolver: IncludeResolver) -> bool:
        includes = json.loads(row["includes"] or "{}")
        return all(resolver.file_sha(p) == sha for p, sha in includes.items())

    def _delete_notes(self, ids: list[int], *, keep_rows: bool) -> None:
        """Remove the rows hanging off these notes (and the notes themselves unless `keep_rows`)."""
        for chunk in _chunks(ids):
            where = f"note_id in ({_qs(chunk)})"
            for table in ("note_tags", "note_categories", "snippets"):
                self.db.table(table).delete_where(where, chunk)
            # delete (not replace) so the FTS triggers fire; REPLACE skips delete triggers in SQLite
            self.db.table("notes_search").delete_where(f"id in ({_qs(chunk)})", chunk)
            if not keep_rows:
                self.db.table("notes").delete_where(f"id in ({_qs(chunk)})", chunk)

    def _write_notes(self, writes: list[tuple[int, Note, os.stat_result, str]]) -> None:
        now = dt.datetime.now().isoformat(timespec="seconds")
        tag_ids = self._name_ids("tags", {t for _, n, _, _ in writes for t in n.tags})
        cat_ids = self._name_ids("categories", {c for _, n, _, _ in writes for c in n.categories})
        self.db.table("notes").insert_all(
            (
                {
                    "id": note_id,
                    "path": note.path,
                    "kind": note.kind,
                    "slug": note.slug,
                    "title": note.title,
                    "date": _iso(note.date),
                    "updated": _iso(note.updated),
                    "draft": int(note.draft),
                    "description": note.description,
                    "excerpt": note.excerpt,
                    "body": note.body,
                    "authors": json.dumps(note.authors, ensure_ascii=False),
                    "meta": json.dumps(note.meta, ensure_ascii=False, default=str),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "sha": sha,
                    "includes": json.dumps(note.includes),
                    "indexed_at": now,
                }
                for note_id, note, st, sha in writes
            ),
            pk="id",
            replace=True,
            batch_size=_BATCH,
        )
        self.db.table("note_tags").insert_all(
            ({"note_id": i, "tag_id": tag_ids[t]} for i, n, _, _ in writes for t in n.tags), batch_size=_BATCH
        )
        self.db.table("note_categories").insert_all(
            ({"note_id": i, "category_id": cat_ids[c]} for i, n, _, _ in writes for c in n.categories),
            batch_size=_BATCH,
        )
        self.db.table("snippets").insert_all(
            (
                {
                    "note_id": i,
                    "idx": s.index,
                    "language": s.language,
                    "attrs": json.dumps(s.attrs, ensure_ascii=False),
                    "start_line": s.start_line,
                    "end_line": s.end_line,
                    "code": s.code,
                    "code_sha": sha256(s.code.encode()),
                    "includes": json.dumps([inc.path or inc.spec for inc in s.includes]),
                }
                for i, n, _, _ in writes
                for s in n.snippets
            ),
            pk="id",
            batch_size=_BATCH,
        )
        self.db.table("notes_search").insert_all(
            (
                {
                    "id": i,
                    "title": index_text(n.title),
                    "tags": index_text(" ".join(n.tags + n.categories)),
                    "excerpt": index_text(n.excerpt),
                    "body": index_text(drop_h1(n.body)),  # the title is its own column
                }
                for i, n, _, _ in writes
            ),
            pk="id",
            batch_size=_BATCH,
        )

    def _name_ids(self, table: str, names: set[str]) -> dict[str, int]:
        known = {r["name"]: r["id"] for r in self.db.table(table).rows}
        missing = sorted(names - known.keys())
        if missing:
            self.db.table(table).insert_all(({"name": n} for n in missing), pk="id")
            known = {r["name"]: r["id"] for r in self.db.table(table).rows}
        return known

    # ---- reading --------------------------------------------------------------------------------

    def search(
        self, query: str, *, tag: str | None = None, category: str | None = None, limit: int = 10
    ) -> list[SearchHit]:
        """Notes matching every word of `query` (Chinese or English), best bm25 first."""
        match = fts_query(query)
        if not match:
            return []
        where, params = ["notes_search_fts match :match"], {"match": match, "limit": limit}
        if tag:
            where.append(
                "rowid in (select note_id from note_tags join tags on tags.id = tag_id"
                " where tags.name = :tag collate nocase)"
            )
            params["tag"] = tag
        if category:
            where.append(
                "rowid in (select note_id from note_categories join categories on"
                " categories.id = category_id where categories.name = :category collate nocase)"
            )
            params["category"] = category
        # Rank inside the FTS table; no snippet(): over a note of millions of one-character tokens
        # it takes minutes. Fragments are cut from a bounded window of each hit's text instead.
        sql = f"""
            with top as (
                select rowid as id, rank as score
                from notes_search_fts
                where {" and ".join(where)}
                order by rank
                limit :limit
            )
            select notes.id, notes.path, notes.title, notes.slug, notes.date, top.score,
                   substr(notes.excerpt, 1, {FRAGMENT_SCAN_CHARS}) as excerpt
            from top join notes on notes.id = top.id
            order by top.score, notes.date desc
        """
        rows = list(self.db.query(sql, params))
        labels = self._labels([r["id"] for r in rows])
        pattern = highlighter(query)
        return [
            SearchHit(
                id=r["id"],
                path=r["path"],
                title=r["title"],
                slug=r["slug"],
                date=r["date"],
                tags=labels[r["id"]]["tags"],
                categories=labels[r["id"]]["categories"],
                fragment=" ".join(self._fragment(r, pattern).split()),
                score=r["score"],
            )
            for r in rows
        ]

    def _fragment(self, row: dict[str, Any], pattern: re.Pattern[str] | None) -> str:
        """The first match in the excerpt, else in the body's first FRAGMENT_SCAN_CHARS, else the title;
        the excerpt's start when the match was a tag or a stemmed form. Bounded whatever the note's size."""
        mark = (MARK_OPEN, MARK_CLOSE)
        texts = [lambda: row["excerpt"] or "", lambda: self._body_head(row["id"]), lambda: row["title"] or ""]
        for text in texts if pattern else ():
            found = fragment(text(), pattern, FRAGMENT_CHARS, mark)  # type: ignore[arg-type]
            if found is not None:
                return found
        excerpt = row["excerpt"] or ""
        return excerpt[:FRAGMENT_CHARS] + ("…" if len(excerpt) > FRAGMENT_CHARS else "")

    def _body_head(self, note_id: int) -> str:
        row = self.db.execute(
            f"select substr(body, 1, {FRAGMENT_SCAN_CHARS}) from notes where id = ?", [note_id]
        ).fetchone()
        return drop_h1(row[0] or "") if row else ""

    def _labels(self, ids: list[int]) -> dict[int, dict[str, list[str]]]:
        labels: dict[int, dict[str, list[str]]] = {i: {"tags": [], "categories": []} for i in ids}
        for chunk in _chunks(ids):
            for kind, link, key in (
                ("tags", "note_tags", "tag_id"),
                ("categories", "note_categories", "category_id"),
            ):
                sql = (
                    f"select note_id, name from {link} join {kind} on {kind}.id = {link}.{key}"
                    f" where note_id in ({_qs(chunk)}) order by {link}.rowid"
                )
                for r in self.db.query(sql, chunk):
                    labels[r["note_id"]][kind].append(r["name"])
        return labels

    def tags(self) -> list[tuple[str, int]]:
        """Every tag with the number of notes carrying it, most used first."""
        sql = (
            "select tags.name, count(*) as n from tags join note_tags on tags.id = note_tags.tag_id"
            " group by tags.id order by n desc, tags.name"
        )
        return [(r["name"], r["n"]) for r in self.db.query(sql)]

    def note(self, key: str) -> dict[str, Any] | None:
        """One note by slug or path (relative to the notes folder), with tags, categories, snippets."""
        rows = list(
            self.db.query(
                "select * from notes where slug = :k or path = :k order by path = :k desc limit 1",
                {"k": key.removeprefix("./")},
            )
        )
        if not rows:
            return None
        row = rows[0]
        row.update(self._labels([row["id"]])[row["id"]])
        row["snippets"] = [
            {**s, "attrs": json.loads(s["attrs"]), "includes": json.loads(s["includes"])}
            for s in self.db.query("select * from snippets where note_id = ? order by idx", [row["id"]])
        ]
        for name in ("authors", "meta"):
            row[name] = json.loads(row[name] or "null")
        return row

    def notes(self) -> list[dict[str, Any]]:
        return list(
            self.db.query("select id, path, slug, title, date, draft from notes order by date desc, path")
        )

    def problems(self) -> list[Problem]:
        return [
            Problem(r["path"], r["line"], r["message"], r["hint"], r["severity"])
            for r in self.db.query("select * from problems order by path, line")
        ]

    def counts(self) -> dict[str, int]:
        return {t: self.db.table(t).count for t in ("notes", "tags", "categories", "snippets", "problems")}


def _head(data: bytes, limit: int) -> bytes:
    """The first whole lines of `data` within `limit` bytes; never a split UTF-8 character."""
    cut = data.rfind(b"\n", 0, limit) + 1
    if cut <= 0:  # one enormous line: cut before a UTF-8 continuation byte
        cut = limit
        while cut > 0 and data[cut] & 0xC0 == 0x80:
            cut -= 1
    return data[:cut]


def walk_notes(notes_dir: Path) -> Iterator[tuple[Path, str]]:
    """Note files under `notes_dir` in a stable order, skipping hidden folders and checkpoints."""
    for dirpath, dirnames, filenames in os.walk(notes_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")) and d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(NOTE_SUFFIXES) and not name.startswith("."):
                path = Path(dirpath, name)
                yield path, path.relative_to(notes_dir).as_posix()


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.date().isoformat() if value.time() == dt.time() else value.isoformat(timespec="seconds")


def _chunks(items: Iterable[Any], size: int = _BATCH) -> Iterator[list[Any]]:
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _qs(chunk: list[Any]) -> str:
    return ", ".join("?" for _ in chunk)
