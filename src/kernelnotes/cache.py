"""Cache keys: a hash of everything a snippet's result depends on.

The key covers the snippet's code with its includes resolved, its attributes and language, the key
of the block before it in its session (so a change to an earlier block re-runs the later ones), the
source of the project modules it imports (files under snippets/; kernels/, plugins/ and the worker
modules for `import kernelnotes...` or a `check=`), torch and triton versions and the
device class. Peers that hash only the cell's text serve stale results after an included or
imported file changes (Quarto #6793, MyST-NB #299/#621); this is the fix.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from kernelnotes.note import Snippet

# Core modules whose code shapes a result; the rest (CLI, index, site glue) cannot change one.
_RESULT_MODULES = ("worker_main.py", "results.py", "kernelspec.py", "registry.py")


def result_sources() -> list[Path]:
    """Project files a result can depend on: kernels/, plugins/ and the worker-side core modules.

    Found without importing `kernelnotes.kernels` (which would import torch).
    """
    files: list[Path] = []
    for name in ("kernelnotes.plugins", "kernelnotes.kernels"):
        spec = importlib.util.find_spec(name)
        for folder in spec.submodule_search_locations or [] if spec else []:
            files += [p for p in Path(folder).rglob("*.py") if "__pycache__" not in p.parts]
    core = importlib.util.find_spec("kernelnotes")
    for folder in core.submodule_search_locations or [] if core else []:
        files += [Path(folder, m) for m in _RESULT_MODULES if Path(folder, m).is_file()]
    return sorted(files)


def cuda_present() -> bool:
    """Whether a CUDA device is likely present, decided without importing torch."""
    return os.path.exists("/dev/nvidiactl") or bool(os.environ.get("KERNELNOTES_ASSUME_CUDA"))


def resolve_device_class(requested: str) -> str:
    return ("cuda" if cuda_present() else "cpu") if requested == "auto" else requested


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


class KeyMaker:
    """Computes snippet keys; file hashes are cached for the lifetime of one build."""

    def __init__(self, snippets_dir: Path, device: str = "auto") -> None:
        self.snippets_dir = snippets_dir
        self.device = device
        self._file_hashes: dict[Path, str] = {}
        self._project: str | None = None
        self.environment = {"torch": package_version("torch"), "triton": package_version("triton")}

    def keys(self, snippets: list[Snippet]) -> list[str]:
        """One key per snippet, chained through the blocks of each session in page order."""
        previous: dict[str, str] = {}
        keys = []
        for snippet in snippets:
            session = str(snippet.attrs.get("session") or "")
            key = self.key(snippet, previous.get(session, "") if session else "")
            if session:
                previous[session] = key
            keys.append(key)
        return keys

    def key(self, snippet: Snippet, previous: str = "") -> str:
        attrs = {k: v for k, v in snippet.attrs.items() if k not in {"title", "hl_lines", "linenums"}}
        device = resolve_device_class(str(attrs.get("device", self.device)))
        parts = {
            "code": snippet.code,
            "language": snippet.language,
            "attrs": attrs,
            "previous": previous,
            "imports": self.import_hashes(snippet.code, bool(attrs.get("check"))),
            "environment": self.environment,
            "device": device,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def import_hashes(self, code: str, checks: bool) -> dict[str, str]:
        hashes: dict[str, str] = {}
        for name in sorted(_imported_modules(code)):
            if name == "kernelnotes":
                hashes[name] = self.project_hash()
                continue
            files = self._snippet_module_files(name)
            if files:
                hashes[name] = self._hash_files(files)
        if checks:
            hashes["kernelnotes"] = self.project_hash()
        return hashes

    def project_hash(self) -> str:
        """Hash of the project code results depend on: kernels, plugins (the checker) and the worker."""
        if self._project is None:
            self._project = self._hash_files(result_sources())
        return self._project

    def _snippet_module_files(self, name: str) -> list[Path]:
        single = self.snippets_dir / f"{name}.py"
        if single.is_file():
            return [single]
        package = self.snippets_dir / name
        return sorted(package.rglob("*.py")) if package.is_dir() else []

    def _hash_files(self, files: Iterable[Path]) -> str:
        digest = hashlib.sha256()
        for path in files:
            if path not in self._file_hashes:
                self._file_hashes[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"{path.name}:{self._file_hashes[path]}\n".encode())
        return digest.hexdigest()


def _imported_modules(code: str) -> set[str]:
    """Top-level names of the modules a piece of code imports (nothing when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names
