"""Settings shared by the CLI and the site: the `kernelnotes` plugin section of mkdocs.yml.

One source of truth: `kn` reads the same section that configures the mkdocs plugin; command-line
options override it, so `kn` can be pointed at any folder of notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PLUGIN_NAME = "kernelnotes"
DEFAULT_DB = ".kernelnotes/index.db"
DEFAULT_MAX_NOTE_MB = 4.0  # a larger note is indexed by its head, with a warning


class SettingsError(ValueError):
    pass


# The kernelnotes section of mkdocs.yml: every option with its type and default, in one place. The
# CLI, the mkdocs plugin (whose typed Config is generated from this table), the pytest plugin and the
# worker all resolve options through `load_settings`.
SECTION: dict[str, tuple[type, Any]] = {
    "enabled": (bool, True),
    "db": (str, DEFAULT_DB),  # relative to mkdocs.yml
    "snippets_dir": (str, "snippets"),
    "plugins_dir": (str, None),  # a folder of local plugin files (*.py)
    "execute": (bool, True),  # run blocks during builds (False: show recorded results only)
    "strict": (bool, False),  # fail the build on any failed block, even without --strict
    "device": (str, "auto"),  # cpu | cuda | auto
    "jobs": (int, 1),  # worker processes
    "timeout": (float, 60.0),  # seconds per block unless timeout= says otherwise
    "memory_limit_mb": (int, 0),  # address-space limit of CPU workers (0: none)
    "report_page": (str, "execution.md"),
    "results_dir": (str, None),  # recorded results (kn results export) merged into every build
    "categories": (list, None),  # known post categories: others are reported, not dropped
    "max_note_mb": (float, DEFAULT_MAX_NOTE_MB),
    "site_cache": (
        bool,
        True,
    ),  # memoise page renders, excerpts, search entries (site_cache.py)  # a larger note is indexed by its head, with a warning
}
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Settings:
    root: Path  # project root: includes resolve against it
    notes_dir: Path
    snippets_dir: Path
    db_path: Path
    plugins_dir: Path | None = None
    # execution defaults shared by `kn run`, the site and pytest (a block's attributes override them)
    device: str = SECTION["device"][1]
    jobs: int = SECTION["jobs"][1]
    timeout: float = SECTION["timeout"][1]
    memory_limit_mb: int = SECTION["memory_limit_mb"][1]
    execute: bool = SECTION["execute"][1]
    strict: bool = SECTION["strict"][1]
    enabled: bool = SECTION["enabled"][1]
    report_page: str = SECTION["report_page"][1]
    results_dir: Path | None = None
    max_note_mb: float = DEFAULT_MAX_NOTE_MB  # a larger note is indexed by its head, with a warning
    config_path: Path | None = None  # the mkdocs.yml read, if any
    language: str = "en"  # the site's language (theme.language): page text KernelNotes writes


def section_options(raw: dict[str, Any], where: str = "mkdocs.yml") -> dict[str, Any]:
    """Type-check the plugin section; a wrong value is one SettingsError naming the option."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTION:
            raise SettingsError(
                f"{where}: unknown kernelnotes option {name!r} (known: {', '.join(sorted(SECTION))})"
            )
        kind, default = SECTION[name]
        if value is None and default is None:
            out[name] = None
            continue
        try:
            if kind is bool and not isinstance(value, bool):
                raise TypeError
            if kind is int and (isinstance(value, bool) or int(value) != value):
                raise TypeError
            out[name] = kind(value)
        except (TypeError, ValueError):
            raise SettingsError(
                f"{where}: kernelnotes option {name}={value!r} must be {kind.__name__} (default: {default!r})"
            ) from None
    if out.get("device", "auto") not in DEVICE_CHOICES:
        raise SettingsError(
            f"{where}: kernelnotes option device={out['device']!r}: use one of {DEVICE_CHOICES}"
        )
    if out.get("jobs", 1) < 1 or out.get("timeout", 1) <= 0 or out.get("memory_limit_mb", 0) < 0:
        raise SettingsError(
            f"{where}: kernelnotes options jobs, timeout must be positive, memory_limit_mb >= 0"
        )
    return out


class _ConfigLoader(yaml.SafeLoader):
    """Reads mkdocs.yml without executing it: `!!python/name:` and `!ENV` tags become plain values."""


def _construct_any(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_any)
_ConfigLoader.add_multi_constructor("!", _construct_any)


def read_mkdocs_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: not a mapping")
    return data


def plugin_section(config: dict[str, Any]) -> dict[str, Any]:
    """The options given to the kernelnotes plugin (mkdocs allows a list of names or of mappings)."""
    plugins = config.get("plugins") or []
    items = (
        plugins.items()
        if isinstance(plugins, dict)
        else (next(iter(p.items())) if isinstance(p, dict) else (p, {}) for p in plugins)
    )
    for name, options in items:
        if name == PLUGIN_NAME:
            return dict(options or {})
    return {}


def load_settings(
    config: Path | None = None,
    notes: Path | None = None,
    db: Path | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings: explicit options, then mkdocs.yml (given or in `cwd`), then defaults."""
    cwd = (cwd or Path.cwd()).resolve()
    if config is None and (cwd / "mkdocs.yml").is_file():
        config = cwd / "mkdocs.yml"
    options: dict[str, Any] = {}
    language = "en"
    docs_dir = "notes"
    root = cwd
    if config is not None:
        config = config.resolve()
        if not config.is_file():
            raise SettingsError(f"{config}: config file not found")
        data = read_mkdocs_config(config)
        options = plugin_section(data)
        docs_dir = str(data.get("docs_dir") or "docs")
        theme = data.get("theme")
        language = str(theme.get("language") or "en") if isinstance(theme, dict) else "en"
        root = config.parent
    if notes is not None:
        notes_dir = notes.resolve()
        if config is None:
            root = notes_dir.parent
    else:
        notes_dir = (root / docs_dir).resolve()
    options = section_options(options, str(config) if config else "mkdocs.yml")
    get = lambda name: options.get(name, SECTION[name][1])
    db_path = db.resolve() if db is not None else (root / str(get("db"))).resolve()
    plugins_dir, results_dir = get("plugins_dir"), get("results_dir")
    return Settings(
        root=root,
        notes_dir=notes_dir,
        snippets_dir=(root / str(get("snippets_dir"))).resolve(),
        db_path=db_path,
        plugins_dir=(root / str(plugins_dir)).resolve() if plugins_dir else None,
        device=get("device"),
        jobs=get("jobs"),
        timeout=get("timeout"),
        memory_limit_mb=get("memory_limit_mb"),
        execute=get("execute"),
        strict=get("strict"),
        enabled=get("enabled"),
        report_page=get("report_page"),
        results_dir=(root / str(results_dir)).resolve() if results_dir else None,
        config_path=config,
        language=language,
        max_note_mb=get("max_note_mb"),
    )
