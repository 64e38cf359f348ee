"""Built-in plugin: registers the reference kernels of `kernelnotes.kernels` and `kn kernels`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from kernelnotes.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from kernelnotes.kernelspec import KernelSpec


@hookimpl
def register_kernels() -> list[KernelSpec]:
    # Imported here, not at module level: torch and triton cost ~2 s and only kernel users pay it.
    from kernelnotes.kernels import all_specs

    return all_specs()


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command("kernels")
    @click.option("--json", "as_json", is_flag=True, help="Print the kernels as JSON.")
    def kernels_cmd(as_json: bool) -> None:
        """List the reference kernels notes can check against (check="NAME")."""
        from kernelnotes.api import current_app

        specs = current_app().kernels().values()
        rows: list[dict[str, Any]] = [
            {
                "name": s.name,
                "dtypes": list(s.dtypes),
                "devices": list(s.devices),
                "backward": s.backward,
                "caps": dict(s.caps),
                "module": s.module,
                "description": s.description,
            }
            for s in sorted(specs, key=lambda s: s.name)
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        table = Table("kernel", "dtypes", "devices", "backward", "caps", "description")
        for r in rows:
            table.add_row(
                r["name"],
                ", ".join(r["dtypes"]),
                ", ".join(r["devices"]),
                "yes" if r["backward"] else "no",
                ", ".join(f"{k} <= {v:,}" for k, v in r["caps"].items()) or "-",
                r["description"],
            )
        Console(soft_wrap=True).print(table)
