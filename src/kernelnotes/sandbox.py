"""Process hardening for the snippet processes, through Linux system calls (ctypes, no dependency).

- `WriteGuard`: a Landlock ruleset that lets a note's process write anywhere except the index
  (and its SQLite side files), the recorded results folder and the package's code. Landlock (Linux >= 5.13, on by default in Ubuntu, Debian, Fedora) is an
  unprivileged, per-process sandbox: once a process restricts itself it cannot undo it, and every
  process it starts inherits it, so neither `sqlite3.connect(index)` nor a shell `sqlite3` child
  can open the file for writing, create its journal, or replace it. The kernel checks the real path,
  so symlinks, `..` and `/proc/<pid>/fd` reopenings do not get around it; hard links from the
  protected folder elsewhere are refused too (Landlock's REFER rule).

  Landlock only grants, it cannot deny: the ruleset grants the write rights on every entry of the
  folders on the way from `/` to the index except the next step of that way. So the limit of this
  choice: a block cannot create or delete entries *directly* in those folders (the index's folder,
  the project root, and the folders above them; it can write files that already exist there, and
  anything in their other subfolders, its TMPDIR and home). Entries that appear in those folders
  after the worker started are not writable either. Where Landlock is missing the guard is off and
  `available()` says why; a private mount namespace would need user namespaces, which hosted CI
  (Ubuntu 24.04's AppArmor rule) and most containers refuse.
- `set_parent_death_signal`, `set_dumpable`: a forked helper dies with its parent; a process marked
  not dumpable cannot be ptraced or have its memory read through /proc by same-user processes (the
  checker holds the verdict; a note's process must not reach into it).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every arch
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1

# Landlock filesystem rights (linux/landlock.h)
_WRITE_FILE = 1 << 1
_REMOVE_DIR, _REMOVE_FILE = 1 << 4, 1 << 5
_MAKE = (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is not available."""
    if not sys.platform.startswith("linux"):
        return 0  # the system call numbers below are Linux's
    version = _libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(0, int(version))


def prctl(option: int, value: int) -> int:
    """prctl(2) where there is one (Linux); -1 elsewhere."""
    if not sys.platform.startswith("linux"):
        return -1
    return int(_libc.prctl(option, value, 0, 0, 0))


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    prctl(_PR_SET_PDEATHSIG, sig)


def set_dumpable(dumpable: bool) -> None:
    prctl(_PR_SET_DUMPABLE, int(dumpable))


def set_child_subreaper() -> None:
    prctl(_PR_SET_CHILD_SUBREAPER, 1)


class WriteGuard:
    """Built once in the zygote (it walks folders); `apply()` in each note's process is one system call.

    `protected` are files (the index: its SQLite side files are protected with it) or folders
    (a results folder, the package's code), which become read-only as a whole."""

    def __init__(self, protected: Iterable[Path], writable: Iterable[Path] = ()) -> None:
        self.fd = -1
        self.reason = ""
        files = {Path(os.path.realpath(p)) for p in protected}
        if not files:
            self.reason = "nothing to protect"
            return
        abi = landlock_abi()
        if abi < 1:
            self.reason = "Landlock is not available in this kernel"
            return
        self.dir_rights = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE
        self.dir_rights |= _REFER if abi >= 2 else 0
        self.file_rights = _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
        self.dir_rights |= self.file_rights
        handled = ctypes.c_uint64(self.dir_rights)
        fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(handled), ctypes.c_size_t(8), ctypes.c_uint32(0))
        if fd < 0:
            self.reason = f"Landlock refused a ruleset: {os.strerror(ctypes.get_errno())}"
            return
        self.fd = int(fd)
        try:
            self._grant_all_but(files)
            for folder in writable:  # e.g. a TMPDIR: writable even where it sits in a guarded folder
                self._add(str(folder), self.dir_rights)
        except OSError as exc:
            os.close(self.fd)
            self.fd, self.reason = -1, f"could not build the Landlock rules: {exc}"

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def _grant_all_but(self, files: set[Path]) -> None:
        """Grant writes on every entry of each folder from / down to the protected files, except the
        entries leading to them (and the protected files themselves, with their SQLite side files)."""
        keep: dict[Path, set[str]] = {}
        for path in files:
            sidecars = () if path.is_dir() else ("-journal", "-wal", "-shm")
            for name in (path.name, *(path.name + s for s in sidecars)):
                keep.setdefault(path.parent, set()).add(name)
            for parent in path.parent.parents:
                below = path.parent.relative_to(parent).parts[0]
                keep.setdefault(parent, set()).add(below)
        for folder, skip in keep.items():
            if folder in files:
                continue  # a protected folder: no rule inside it at all
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name in skip or entry.is_symlink() or Path(entry.path) in files:
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    self._add(entry.path, self.dir_rights if is_dir else self.file_rights)
                except OSError:
                    continue  # vanished, or a special file Landlock does not take a rule for

    def _add(self, path: str, rights: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            rule = _PathBeneath(rights, fd)
            if _libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) < 0:
                err = ctypes.get_errno()
                if err != errno.EINVAL:  # EINVAL: a kind of file that takes no rule; skip it
                    raise OSError(err, os.strerror(err), path)
        finally:
            os.close(fd)

    def apply(self) -> None:
        """Restrict the calling process (and everything it starts) for good."""
        if self.fd < 0:
            return
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _libc.syscall(_SYS_RESTRICT_SELF, self.fd, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self failed: {os.strerror(err)}")
        os.close(self.fd)
        self.fd = -1
