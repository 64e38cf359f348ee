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


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    root: Path  # project root: includes resolve against it
    notes_dir: Path
    snippets_dir: Path
    db_path: Path
    plugins_dir: Path | None = None
    # defaults of `kn run`, shared with the site (the plugin's device, jobs, timeout options)
    device: str = "auto"
    jobs: int = 1
    timeout: float = 60.0
    memory_limit_mb: int = 0  # address-space limit of a CPU block's process (0: none)


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
    docs_dir = "notes"
    root = cwd
    if config is not None:
        config = config.resolve()
        if not config.is_file():
            raise SettingsError(f"{config}: config file not found")
        data = read_mkdocs_config(config)
        options = plugin_section(data)
        docs_dir = str(data.get("docs_dir") or "docs")
        root = config.parent
    if notes is not None:
        notes_dir = notes.resolve()
        if config is None:
            root = notes_dir.parent
    else:
        notes_dir = (root / docs_dir).resolve()
    db_path = db.resolve() if db is not None else (root / str(options.get("db", DEFAULT_DB))).resolve()
    plugins_dir = options.get("plugins_dir")
    return Settings(
        root=root,
        notes_dir=notes_dir,
        snippets_dir=(root / str(options.get("snippets_dir", "snippets"))).resolve(),
        db_path=db_path,
        plugins_dir=(root / str(plugins_dir)).resolve() if plugins_dir else None,
        device=str(options.get("device", "auto")),
        jobs=int(options.get("jobs", 1)),
        timeout=float(options.get("timeout", 60)),
        memory_limit_mb=int(options.get("memory_limit_mb", 0) or 0),
    )
