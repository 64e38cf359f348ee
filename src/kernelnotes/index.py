"""The SQLite index of notes: tags, categories, snippets, problems and Chinese-aware full-text search.

All SQL of the project lives here. The schema (see README "The index") is plain SQLite made with
sqlite-utils, so `sqlite-utils tables index.db --counts` and `datasette index.db` work on it as is.
Indexing is incremental: a file whose size and mtime (or, failing that, content hash) and included
files are unchanged is not parsed again; deleted notes disappear; a renamed note keeps its id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
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


def _migration_5(db: sqlite_utils.Database) -> None:
    """A count of the writes to runs, kept by triggers whoever writes (any process, any code), so a
    reader can keep what it read until the count moves (RunStore's memo)."""
    db.execute("create table runs_changes (n integer not null)")
    db.execute("insert into runs_changes (n) values (0)")
    for event in ("insert", "update", "delete"):
        db.execute(
            f"create trigger runs_changes_{event} after {event} on runs "
            "begin update runs_changes set n = n + 1; end"
        )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
)


BUSY_TIMEOUT_S = 30.0  # how long one statement waits for another process's write to finish
_WRITE_TRIES = 4  # busy timeouts in a row before a writer gives up (2 minutes)


class IndexBusy(RuntimeError):
    """Another process kept the index locked for longer than a writer waits."""


def open_db(
    path: str | Path | None, *, verify: bool = False, notices: list[str] | None = None
) -> sqlite_utils.Database:
    """Open (creating and migrating) the index at `path`; None means an in-memory database.

    The one place a database connection is made, so every front end shares the same rules:
    WAL (readers never wait for the indexer, nor it for them), a busy timeout, and writes that take
    the write lock up front (`writing`) so concurrent `kn` and `mkdocs` processes queue instead of
    failing with "database is locked". A file SQLite reports as corrupt (with `verify`, also after
    `PRAGMA quick_check`) is moved aside and replaced by a fresh index, keeping the recorded results
    that can still be read; the line saying so is appended to `notices`.
    The connection may be used from the pipeline's job threads, which serialise access with a lock.
    """
    if path is None:
        db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
        migrate(db)
        return db
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen = file_identity(path)
    try:
        return _open_file(path, verify)
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        line = recover(path, str(exc), seen)
    if notices is not None:
        notices.append(line)
    else:
        logging.getLogger("kernelnotes").warning(line)
    return _open_file(path, verify=False)


def _open_file(path: Path, verify: bool) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        db = sqlite_utils.Database(conn)
        # switching to WAL needs a moment of exclusive access (only the first open of a new file)
        _retry_busy(db.enable_wal, path)
        if verify:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                first = problems[0].replace("*** in database main ***", "")
                raise sqlite3.DatabaseError("database disk image is malformed: " + " ".join(first.split()))
        migrate(db)
    except BaseException:
        conn.close()
        raise
    return db


def is_corruption(exc: BaseException) -> bool:
    """Whether an sqlite3 error means the file is damaged (as opposed to locked, full or misused)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (11, 26):  # SQLITE_CORRUPT, SQLITE_NOTADB
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and any(
        s in text for s in ("malformed", "not a database", "corrupt")
    )


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _retry_busy(action: Callable[[], Any], path: Path | str) -> Any:
    for attempt in range(_WRITE_TRIES):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            if attempt == _WRITE_TRIES - 1:
                raise IndexBusy(
                    f"{path}: error: the index stayed locked by another kn or mkdocs process for "
                    f"{int(BUSY_TIMEOUT_S * _WRITE_TRIES)} s (let it finish, then try again)"
                ) from exc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def writing(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that holds SQLite's write lock from its first statement.

    A deferred transaction that reads first and writes later fails at once with "database is
    locked" when another process wrote in between (WAL gives no retry there); `BEGIN IMMEDIATE`
    waits for the lock (busy timeout, retried) and then reads the latest data. Nested: a savepoint.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    _retry_busy(lambda: db.conn.execute("BEGIN IMMEDIATE"), _db_file(db))
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def _db_file(db: sqlite_utils.Database) -> str:
    rows = db.conn.execute("PRAGMA database_list").fetchall()
    return str(rows[0][2] or ":memory:") if rows else ":memory:"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file, to tell whether another process replaced it meanwhile."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def recover(path: Path, reason: str, seen: tuple[int, int] | None) -> str:
    """Move a corrupt index aside, start a fresh one with the results still readable; say so in one line.

    The notes tables are a cache of notes/ (the next update rebuilds them); the runs table is not:
    results that cannot be read back are lost unless they were exported (`kn results export`).
    Serialised with an advisory lock (released by the kernel if the process dies), and skipped when
    another process already replaced the file `seen` (its `file_identity`) since it was found corrupt.
    """
    reason = " ".join(reason.split())
    with _folder_lock(path.parent):
        if file_identity(path) != seen:
            return f"{path}: warning: the index was corrupt ({reason}); another process has rebuilt it"
        runs, total = _salvage_runs(path)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal"):  # the WAL belongs to the damaged file; -shm is rebuilt from it
            source = Path(str(path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))
        Path(str(path) + "-shm").unlink(missing_ok=True)
        db = _open_file(path, verify=False)
        if runs:
            with writing(db):
                db.table("runs").insert_all(runs, pk=("key", "device"), replace=True, batch_size=_BATCH)
        db.close()
    lost = (
        "none lost"
        if total is not None and total == len(runs)
        else (f"{total - len(runs)} lost" if total is not None else "any others lost")
    )
    return (
        f"{path}: error: the index was corrupt ({reason}); moved it to {aside.name} and rebuilt it from "
        f"the notes; {len(runs)} recorded results kept, {lost} (`kn results import results` "
        "restores exported ones)"
    )


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An advisory lock on the index's folder: no lock file to leave behind, freed when the process dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: recovery is not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _salvage_runs(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """The rows of the runs table that can still be read from a damaged file, and how many it had."""
    rows: list[dict[str, Any]] = []
    total: int | None = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return rows, None
    conn.row_factory = sqlite3.Row
    try:
        try:
            total = conn.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.Error:
            total = None
        try:
            for row in conn.execute("select * from runs"):
                rows.append(dict(row))
        except sqlite3.Error:
            pass
    finally:
        conn.close()
    return rows, total


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the migrations the database has not seen; `PRAGMA user_version` counts them.

    Under the write lock, re-reading the version: two processes opening a new index at once must
    not both create its tables.
    """
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"index schema v{version} is newer than this KernelNotes (v{len(MIGRATIONS)}); upgrade"
        )
    if version == len(MIGRATIONS):
        return
    with writing(db):
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")


class Index:
    """Reads and writes the note index in one SQLite database."""

    def __init__(self, db: sqlite_utils.Database | str | Path | None, *, verify: bool = False) -> None:
        """Open the index (see `open_db`; `verify` checks the file for damage first).

        `notices` holds the line saying a corrupt file was moved aside, for the front end to show.
        """
        self.notices: list[str] = []
        self.db = (
            db if isinstance(db, sqlite_utils.Database) else open_db(db, verify=verify, notices=self.notices)
        )
        if isinstance(db, sqlite_utils.Database):
            migrate(db)
        # notes parsed in this process, by path, with the content hash they were parsed from: the
        # pipeline reuses them, so a note is parsed once per change however many front ends ask
        self._parsed: dict[str, tuple[str, Note]] = {}
        self._notes_dir: Path | None = None

    def empty(self) -> bool:
        """True until an update has been committed (a new file, or one whose first update was killed)."""
        return not self.db.execute(
            "select exists(select 1 from notes) or exists(select 1 from problems)"
        ).fetchone()[0]

    # ---- indexing -------------------------------------------------------------------------------

    def update(
        self, notes_dir: Path, resolver: IncludeResolver, *, max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES
    ) -> IndexReport:
        """Bring the index in line with the files under `notes_dir` and return what changed.

        A note larger than `max_note_bytes` is indexed by its head (whole lines), with a warning.
        One write transaction from the first read to the commit: a concurrent update (another `kn
        index`, a `kn search` building the index, `mkdocs serve`) waits, then finds the work done;
        `kill -9` midway leaves the previous state (SQLite rolls the transaction back).
        """
        with writing(self.db):
            return self._update(notes_dir, resolver, max_note_bytes)

    def _update(self, notes_dir: Path, resolver: IncludeResolver, max_note_bytes: int) -> IndexReport:
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
        self._notes_dir = notes_dir
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
            self._parsed[rel] = (sha, result.note)
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
        # one transaction (see update): sqlite-utils' inner batches become savepoints instead of commits
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

    def parsed_notes(self, resolver: IncludeResolver, paths: Iterable[str] | None = None) -> list[Note]:
        """The indexed notes (all, or those at `paths` relative to the notes folder) as parsed notes.

        Reuses what `update` parsed; a note indexed by an earlier process is parsed once here. Its
        problems are already in the problems table, so none are reported again.
        """
        if self._notes_dir is None:
            raise RuntimeError("call update() first: parsed notes come from the indexed notes folder")
        wanted = None if paths is None else set(paths)
        notes = []
        for row in self.db.query("select path, sha from notes order by path"):
            rel = row["path"]
            if wanted is not None and rel not in wanted:
                continue
            cached = self._parsed.get(rel)
            if cached is None or cached[0] != row["sha"]:
                result = parse_file(self._notes_dir / rel, rel, resolver)
                if result.note is None:
                    continue
                self._parsed[rel] = cached = (row["sha"], result.note)
            notes.append(cached[1])
        return notes

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
