"""Hooks of the demo plugin, written only against `kernelnotes.api`."""

from __future__ import annotations

import click

from kernelnotes.api import Example, KernelSpec, RunResult, Tolerance, current_app, hookimpl

from . import kernels

LANGUAGE = "upper"


@hookimpl
def register_kernels():  # type: ignore[no-untyped-def]
    import torch

    return [
        KernelSpec(
            name="triple",
            reference=kernels.reference,
            implementation=kernels.implementation,
            examples=lambda device, dtype, seed: [Example((torch.arange(5, dtype=dtype),), label="ramp")],
            tolerances={"float32": Tolerance(1e-6, 1e-6)},
            dtypes=("float32",),
            devices=("cpu",),
            description="x * 3 (demo plugin)",
        )
    ]


class UpperRunner:
    """Runs `upper` blocks: the output is the block's text in capitals."""

    def run_session(self, note, snippets, context):  # type: ignore[no-untyped-def]
        return [
            RunResult(
                status="passed",
                stdout=s.code.upper(),
                device="demo",
                device_class="cpu",
                created_at="2026-01-01T00:00:00",
            )
            for s in snippets
        ]

    def close(self) -> None:
        pass


@hookimpl
def exec_languages():  # type: ignore[no-untyped-def]
    return [LANGUAGE]


@hookimpl
def choose_runner(snippet, context):  # type: ignore[no-untyped-def]
    if snippet.language != LANGUAGE:
        return None
    return context.stash.setdefault("demo-upper", UpperRunner())


@hookimpl
def render_result(outcome, figure_link):  # type: ignore[no-untyped-def]
    if outcome.snippet.language != LANGUAGE or outcome.result is None:
        return None
    return f"**UPPER RESULT:** `{outcome.result.stdout.strip()}`\n"


@hookimpl
def register_commands(cli):  # type: ignore[no-untyped-def]
    @cli.command("demo-kernels")
    def demo_kernels() -> None:
        """Print the kernels this project sees (demo plugin)."""
        click.echo(" ".join(sorted(current_app().kernels())))
