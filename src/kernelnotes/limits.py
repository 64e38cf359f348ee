"""Execution limits: one rule for what a block runs under, shared by the runner and the cache key.

Every front end (`kn run`, the site, `pytest notes/`) builds its options from the same settings, and
a result is only served to a run under the same limits: a block that passed without a memory limit
is run again under one (it may fail there), and so is a block whose timeout changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernelnotes.note import Snippet


@dataclass(frozen=True)
class Limits:
    timeout: float = 60.0  # seconds per block unless its timeout= says otherwise
    memory_limit_mb: int = 0  # address-space limit of a CPU block's process (0: none)


def run_limits(settings: Any, options: Any) -> Limits:
    """The limits of a run: the options', with the settings' memory limit when the options set none."""
    memory = int(options.memory_limit_mb or getattr(settings, "memory_limit_mb", 0) or 0)
    return Limits(timeout=float(options.timeout), memory_limit_mb=max(0, memory))


def block_limits(snippet: Snippet, limits: Limits) -> dict[str, Any]:
    """What one block runs under (its own timeout= wins over the run's; typed by kernelnotes.blockattrs)."""
    timeout = snippet.options.timeout or limits.timeout
    return {"timeout": timeout, "memory_limit_mb": limits.memory_limit_mb}
