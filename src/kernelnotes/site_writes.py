"""Under `mkdocs serve`, a rebuild writes only the files whose bytes changed.

mkdocs empties the site folder at every build and writes every page and asset again: at a few
hundred notes that is about a thousand files created per save, most of them identical to the ones
just deleted. Under serve (only there: `mkdocs build` starts from an empty folder anyway), this
module instead

- notes, where mkdocs would empty the folder, each file there with its inode, size, mtime and
  ctime (`clean_directory`);
- skips a write (`write_file`) or a copy (`copy_file`) when the file on disk is still the one it
  wrote or copied last time (same stat) and the new bytes (or the copied source) are the same, and
  writes a changed file by renaming a finished one over it (serve answers requests while it
  rebuilds: kernelnotes.serve_preview), reporting it to `track_changes`;
- at the end of the build (`sweep`) removes each noted file that this build neither wrote nor
  kept and that nobody else rewrote (its stat unchanged: a plugin writing with its own `open()`
  changes it), and the folders left empty — so the folder holds exactly what a clean build writes.

The patches reach into mkdocs 1.6 (frozen); `install()` checks the version and otherwise leaves
mkdocs alone, with one log line: the build then takes the slow path and stays correct.
"""

from __future__ import annotations

import hashlib
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.kernelnotes")

MKDOCS_RANGE = ((1, 6), (1, 7))  # the version these patches were tested against (as site_cache)

Stat = tuple[int, int, int, int]


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.originals: dict[str, Any] = {}
        self.written: dict[str, tuple[bytes, Stat]] = {}  # path -> (digest, stat after our write)
        self.copied: dict[str, tuple[str, Stat, Stat]] = {}  # path -> (source, its stat, our copy's)
        self.before: dict[str, Stat] | None = None  # the folder's files when the build began
        self.folders: list[str] = []
        self.kept: set[str] = set()  # written or kept by this build
        self.changed: list[str] = []  # written or copied with new bytes since track_changes()

    def reset(self) -> None:
        self.written.clear()
        self.copied.clear()
        self.before, self.folders = None, []
        self.kept.clear()
        self.changed.clear()


STATE = _State()


def _stat(path: str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()  # sha256 has CPU instructions: 3x blake2b here


def install() -> bool:
    """Patch mkdocs' clean, write and copy (serve only); False, with one log line, on another mkdocs."""
    if STATE.installed:
        return True
    try:
        found = tuple(int(p) for p in version("mkdocs").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        found = ()
    if not (found and MKDOCS_RANGE[0] <= found < MKDOCS_RANGE[1]):
        log.info("kernelnotes: mkdocs is not 1.6: serve writes every file at every rebuild (the slow path)")
        return False
    import mkdocs.utils

    STATE.originals = {
        name: getattr(mkdocs.utils, name) for name in ("clean_directory", "write_file", "copy_file")
    }
    mkdocs.utils.clean_directory = clean_directory
    mkdocs.utils.write_file = write_file
    mkdocs.utils.copy_file = copy_file
    STATE.installed = True
    return True


def uninstall() -> None:
    """Restore mkdocs' own functions (tests, and the end of a serve session)."""
    if not STATE.installed:
        return
    import mkdocs.utils

    for name, original in STATE.originals.items():
        setattr(mkdocs.utils, name, original)
    STATE.installed = False
    STATE.reset()


def clean_directory(directory: str) -> None:
    """Note what the folder holds instead of emptying it (hidden entries are left, as mkdocs does)."""
    before: dict[str, Stat] = {}
    folders: list[str] = []
    top = os.path.abspath(directory)
    if os.path.isdir(top):
        for entry in os.listdir(top):
            if entry.startswith("."):
                continue
            path = os.path.join(top, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                for root, _dirs, names in os.walk(path):
                    folders.append(root)
                    for name in names:
                        found = _stat(os.path.join(root, name))
                        if found is not None:
                            before[os.path.join(root, name)] = found
            elif (found := _stat(path)) is not None:
                before[path] = found
    STATE.before, STATE.folders = before, folders
    STATE.kept = set()
    STATE.changed = []  # what this build changes (nobody may ask: serve --dirty keeps no list)


def write_file(content: bytes, output_path: str) -> None:
    """mkdocs.utils.write_file, skipped when the file on disk already holds these bytes."""
    write(output_path, content)


def write(path: str | Path, content: bytes, identity: str = "") -> None:
    """Write a file of the site (parents made), skipped under serve when the file on disk is still
    the one written last time with the same bytes; this build keeps it either way. `identity`, when
    given, stands for the bytes (a hash of everything that made them), saving hashing them."""
    path = os.path.abspath(path)
    if not STATE.installed:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        return
    digest = identity.encode() if identity else _digest(content)
    last = STATE.written.get(path)
    if last is None or last[0] != digest or _stat(path) != last[1]:
        _replace(path, content)
        found = _stat(path)
        if found is not None:
            STATE.written[path] = (digest, found)
        STATE.changed.append(path)
    STATE.kept.add(path)


def _replace(path: str, content: bytes) -> None:
    """Write by renaming a finished file over the old one: serve answers requests while it
    rebuilds (kernelnotes.serve_preview), and a reader must never get half a page."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.kn-writing"
    with open(temporary, "wb") as f:
        f.write(content)
    os.replace(temporary, path)


def track_changes() -> list[str]:
    """The files written or copied with new bytes since the last call (serve: did a build change
    a page the browser shows?)."""
    changed, STATE.changed = STATE.changed, []
    return changed


def copy_file(source_path: str, output_path: str) -> None:
    """mkdocs.utils.copy_file, skipped when neither the source nor our last copy has changed."""
    if os.path.isdir(output_path):
        output_path = os.path.join(output_path, os.path.basename(source_path))
    path = os.path.abspath(output_path)
    source = os.path.abspath(source_path)
    last = STATE.copied.get(path)
    if last is None or last[0] != source or _stat(source) != last[1] or _stat(path) != last[2]:
        STATE.originals["copy_file"](source_path, output_path)
        copied, original = _stat(path), _stat(source)
        if copied is not None and original is not None:
            STATE.copied[path] = (source, original, copied)
        STATE.changed.append(path)
    STATE.kept.add(path)


def sweep() -> int:
    """Remove what the build began with and neither wrote, kept nor saw rewritten, and the folders
    left empty; returns the number of files removed (0 when the folder was not noted)."""
    before, STATE.before = STATE.before, None
    if before is None:
        return 0
    removed = 0
    for path, found in before.items():
        if path not in STATE.kept and _stat(path) == found:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
            STATE.written.pop(path, None)
            STATE.copied.pop(path, None)
    for folder in sorted(STATE.folders, key=len, reverse=True):  # the deepest first
        try:
            os.rmdir(folder)  # only when empty
        except OSError:
            pass
    STATE.folders = []
    return removed
