"""Problems found in notes: one clear line each (file:line, what is wrong, what to do)."""

from __future__ import annotations

from dataclasses import dataclass

from kernelnotes.safetext import terminal_text


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str
    hint: str = ""
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        hint = f" ({self.hint})" if self.hint else ""
        # file names and messages quote the note: printed to terminals, so never raw control characters
        return terminal_text(f"{where}: {self.severity}: {self.message}{hint}")
