"""Cache keys: a hash of everything a snippet's result depends on.

The key covers the snippet's code with its includes resolved, its attributes and language, the key
of the block before it in its session (so a change to an earlier block re-runs the later ones), the
source of the project modules it imports (files under snippets/; kernels/, plugins/ and the worker
modules for `import kernelnotes...` or a `check=`), torch and triton versions, the
device class and the execution limits (timeout, memory limit). Peers that hash only the cell's text serve stale results after an included or
imported file changes (Quarto #6793, MyST-NB #299/#621); this is the fix.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from kernelnotes.blockattrs import AttributeSpec, key_attrs
from kernelnotes.limits import Limits, block_limits
from kernelnotes.note import Snippet

# Core modules whose code shapes a result; the rest (CLI, index, site glue) cannot change one.
_RESULT_MODULES = (
    "worker_main.py",
    "timing.py",
    "note_process.py",
    "checker_process.py",
    "protocol.py",
    "sandbox.py",
    "results.py",
    "kernelspec.py",
    "registry.py",
)


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
    """Computes snippet keys; file hashes are cached for the lifetime of one build.

    `sources` are the files of the project's own code a result can depend on: every registered
    plugin's package (built-in, installed, plugins_dir), the kernels and the worker modules
    (`App.plugin_sources()`); by default the built-ins only.
    """

    def __init__(
        self,
        snippets_dir: Path,
        device: str = "auto",
        sources: Sequence[Path] | None = None,
        declared: Iterable[AttributeSpec] = (),
        limits: Limits | None = None,
    ) -> None:
        self.snippets_dir = snippets_dir
        self.device = device
        self.sources = list(sources) if sources is not None else result_sources()
        self.declared = tuple(declared)
        self.limits = limits or Limits()
        self._file_hashes: dict[Path, str] = {}
        self._modules: dict[frozenset[str], list[Path]] = {}  # imported names -> snippets/ files
        self._project: str | None = None
        self.environment = {"torch": package_version("torch"), "triton": package_version("triton")}

    def keys(self, snippets: list[Snippet]) -> list[tuple[str, str]]:
        """(key, code key) per snippet, chained through the blocks of each session in page order.

        The code key is everything but the device class: a result recorded on another device is
        current exactly when its code key matches.
        """
        previous: dict[str, str] = {}
        out = []
        for snippet in snippets:
            code_key = self.code_key(snippet, previous.get(snippet.session, ""))
            previous[snippet.session] = code_key
            device = resolve_device_class(snippet.options.device or self.device)
            # the limits it ran under: a pass without a memory limit says nothing about a run with one
            limits = block_limits(snippet, self.limits)
            out.append((_digest({"code": code_key, "device": device, "limits": limits}), code_key))
        return out

    def code_key(self, snippet: Snippet, previous: str = "") -> str:
        attrs = key_attrs(snippet.attrs, self.declared)
        return _digest(
            {
                "code": snippet.code,
                "language": snippet.language,
                "attrs": attrs,
                "previous": previous,
                "imports": self.import_hashes(snippet.code, bool(attrs.get("check"))),
                "environment": self.environment,
            }
        )

    def import_hashes(self, code: str, checks: bool) -> dict[str, str]:
        hashes: dict[str, str] = {}
        names = _imported_modules(code)
        if "kernelnotes" in names or checks:
            hashes["kernelnotes"] = self.project_hash()
        if names not in self._modules:  # most blocks import the same few modules
            self._modules[names] = self._snippet_modules(names)
        for path in self._modules[names]:
            hashes[path.relative_to(self.snippets_dir).as_posix()] = self._hash_files([path])
        return hashes

    def _snippet_modules(self, names: frozenset[str]) -> list[Path]:
        """Files under snippets/ that these imports load, following their own imports too."""
        seen: dict[Path, None] = {}
        todo = sorted(names)
        while todo:
            path = self._module_file(todo.pop())
            if path is None or path in seen:
                continue
            seen[path] = None
            try:
                todo += sorted(_imported_modules(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                pass
        return sorted(seen)

    def _module_file(self, name: str) -> Path | None:
        for candidate in (self.snippets_dir / f"{name}.py", self.snippets_dir / name / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def project_hash(self) -> str:
        """Hash of the project code results depend on: kernels, plugins (the checker) and the worker."""
        if self._project is None:
            self._project = self._hash_files(self.sources)
        return self._project

    def _hash_files(self, files: Iterable[Path]) -> str:
        """Content hash of a set of files, independent of where the project is checked out."""
        entries = []
        for path in files:
            if path not in self._file_hashes:
                self._file_hashes[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append(f"{path.name}:{self._file_hashes[path]}\n")
        return hashlib.sha256("".join(sorted(entries)).encode()).hexdigest()


def _digest(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=16384)  # every build keys every block: parse each distinct code once
def _imported_modules(code: str) -> frozenset[str]:
    """Top-level names of the modules a piece of code imports (nothing when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return frozenset(names)
