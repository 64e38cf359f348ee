"""The runs table: snippet results by cache key and device, and their JSON export/import.

Results recorded on one machine (a GPU runner) can be exported to a folder of JSON files that a
repository commits, and imported where the site is built, keeping the device and date they came from.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import sqlite_utils

from kernelnotes.index import writing
from kernelnotes.problems import Problem
from kernelnotes.results import RunResult

_JSON_FIELDS = {"figures": "figures", "check_cases": "check", "versions": "versions"}
# fields an imported row must have, with their types (the rest default)
_REQUIRED: dict[str, type] = {
    "key": str,
    "device": str,
    "device_class": str,
    "snippet_idx": int,
    "start_line": int,
    "status": str,
    "created_at": str,
}
_REEXPORT = "resolve the conflict or export it again with `kn results export`"


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)


_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "stdout": str,
    "value": str,
    "error": str,
    "check_name": str,
    "code_key": str,
    "duration": (int, float),
}


def _valid_row(row: Any) -> bool:
    """Whether an exported row can be stored and shown (the page renders it as a RunResult)."""
    if not isinstance(row, dict):
        return False
    if not all(isinstance(row.get(k), t) and not isinstance(row.get(k), bool) for k, t in _REQUIRED.items()):
        return False
    if not all(k not in row or isinstance(row[k], t) for k, t in _OPTIONAL.items()):
        return False
    try:
        RunResult.from_dict(row)  # figures and check cases with the fields the page reads
    except (TypeError, AttributeError, ValueError):
        return False
    return True


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


class RunStore:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.table = db.table("runs")
        # Reads memoised while the database is unchanged: a serve rebuild looks up every block's
        # results again, and all but the edited ones are what the previous build read.
        self._reads: dict[tuple[Any, ...], Any] = {}
        self._reads_version: int | None = None

    def _memo(self, key: tuple[Any, ...], read: Any) -> Any:
        """`read()`, or what it returned while nobody has written to runs since (the count kept by
        the index's triggers moves with any write: this process's, or a `kn run` in a terminal)."""
        version = self.db.execute("select n from runs_changes").fetchone()[0]
        if version != self._reads_version or len(self._reads) > 200_000:
            self._reads, self._reads_version = {}, version
        if key not in self._reads:
            self._reads[key] = read()
        return self._reads[key]

    def save(self, note_path: str, snippet_idx: int, start_line: int, result: RunResult) -> None:
        row = self._row(note_path, snippet_idx, start_line, result.to_dict())
        with writing(self.db):
            self.table.upsert(row, pk=("key", "device"))

    def fresh(self, key: str) -> RunResult | None:
        """The newest result computed for exactly this key (the key includes the device class)."""
        found = self._memo(("fresh", key), lambda: self._fresh(key))
        return None if found is None else copy.copy(found)  # callers may set fields on theirs

    def _fresh(self, key: str) -> RunResult | None:
        rows = list(self.db.query("select * from runs where key = ? order by created_at desc limit 1", [key]))
        return self._result(rows[0]) if rows else None

    def latest(self, note_path: str, snippet_idx: int, code_key: str = "") -> list[RunResult]:
        """The newest result of a snippet per device, whatever code it was computed for.

        Rows are stored once per cache key and device, so a block identical to one elsewhere (same
        code and session, hence the same key) finds its results through `code_key` as well.
        """
        found = self._memo(
            ("latest", note_path, snippet_idx, code_key),
            lambda: self._latest(note_path, snippet_idx, code_key),
        )
        return [copy.copy(r) for r in found]

    def _latest(self, note_path: str, snippet_idx: int, code_key: str) -> list[RunResult]:
        sql = """
            select * from runs where (note_path = ? and snippet_idx = ?) or (? != '' and code_key = ?)
            order by created_at desc
        """
        newest: dict[str, dict[str, Any]] = {}
        for row in self.db.query(sql, [note_path, snippet_idx, code_key, code_key]):
            newest.setdefault(row["device"], row)
        rows = sorted(newest.values(), key=lambda r: r["device"])
        rows.sort(key=lambda r: r["device_class"], reverse=True)  # GPU results first
        return [self._result(r) for r in rows]

    def export(self, folder: Path) -> int:
        """Write one JSON file per note with each snippet's newest result per device.

        The files mirror the notes' paths (`posts/x.md` -> `posts/x.md.json`), so two notes never
        share a file whatever their names.
        """
        folder.mkdir(parents=True, exist_ok=True)
        by_note: dict[str, list[dict[str, Any]]] = {}
        newest = """
            select * from runs where created_at = (
                select max(created_at) from runs r2 where r2.note_path = runs.note_path
                and r2.snippet_idx = runs.snippet_idx and r2.device = runs.device)
            order by note_path, snippet_idx, device
        """
        for row in self.db.query(newest):
            by_note.setdefault(row["note_path"], []).append(self._export_row(row))
        for note_path, rows in by_note.items():
            # ".." or a leading "/" must not take the file out of the folder
            parts = [p for p in PurePosixPath(note_path).parts if p not in ("..", "/")]
            target = folder.joinpath(*parts[:-1], parts[-1] + ".json")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                json.dumps({"note": note_path, "runs": rows}, ensure_ascii=False, indent=1, sort_keys=True)
                + "\n",
                encoding="utf-8",
            )
        return sum(len(r) for r in by_note.values())

    def import_(self, folder: Path) -> ImportReport:
        """Merge exported results (one transaction); for the same key and device the newer one wins.

        A file that is not an export (a merge conflict, a truncated download, rows missing fields)
        is one problem naming it, and the other files still import.
        """
        report = ImportReport()
        pending: list[tuple[str, dict[str, Any]]] = []  # (note path, row)
        for path in sorted(folder.rglob("*.json")):
            name = _display(path)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                report.problems.append(
                    Problem(name, exc.lineno, f"not valid JSON: {exc.msg}", _REEXPORT, "error")
                )
                continue
            except (OSError, UnicodeDecodeError) as exc:
                report.problems.append(Problem(name, 0, f"cannot read results file: {exc}", _REEXPORT))
                continue
            if not (
                isinstance(data, dict)
                and isinstance(data.get("note"), str)
                and isinstance(data.get("runs"), list)
            ):
                report.problems.append(
                    Problem(name, 1, 'not a results file (expected {"note": ..., "runs": [...]})', _REEXPORT)
                )
                continue
            bad = [i for i, row in enumerate(data["runs"]) if not _valid_row(row)]
            if bad:
                report.problems.append(
                    Problem(
                        name,
                        0,
                        f"{len(bad)} of {len(data['runs'])} results are malformed (first: #{bad[0]}); the rest imports",
                        _REEXPORT,
                    )
                )
            skip = set(bad)
            pending += [(data["note"], row) for i, row in enumerate(data["runs"]) if i not in skip]
        with writing(self.db):  # read and write under the write lock: a concurrent import waits
            known = {
                (r["key"], r["device"]): r["created_at"]
                for r in self.db.query("select key, device, created_at from runs")
            }
            rows = [
                self._row(note, row["snippet_idx"], row["start_line"], row)
                for note, row in pending
                if known.get((row["key"], row["device"]), "") < row["created_at"]
            ]
            self.table.upsert_all(rows, pk=("key", "device"))
        report.imported = len(rows)
        return report

    def _row(self, note_path: str, snippet_idx: int, start_line: int, data: dict[str, Any]) -> dict[str, Any]:
        row = {
            "key": data["key"],
            "device": data["device"],
            "device_class": data["device_class"],
            "note_path": note_path,
            "snippet_idx": snippet_idx,
            "start_line": start_line,
            "status": data["status"],
            "stdout": data.get("stdout", ""),
            "value": data.get("value", ""),
            "error": data.get("error", ""),
            "check_name": data.get("check_name", ""),
            "code_key": data.get("code_key", ""),
            "duration": data.get("duration", 0.0),
            "created_at": data["created_at"],
        }
        for column, field in _JSON_FIELDS.items():
            row[column] = json.dumps(
                data.get(field) or ([] if field != "versions" else {}), ensure_ascii=False
            )
        return row

    def _export_row(self, row: dict[str, Any]) -> dict[str, Any]:
        data = {k: v for k, v in row.items() if k not in _JSON_FIELDS and k != "note_path"}
        for column, field in _JSON_FIELDS.items():
            data[field] = json.loads(row[column])
        return data

    def _result(self, row: dict[str, Any]) -> RunResult:
        data = self._export_row(row)
        return RunResult.from_dict(data)
