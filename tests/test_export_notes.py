"""Every note of notes/, exported by `kn export`, runs top to bottom in a fresh Jupyter kernel.

Each notebook is run by nbclient from the exported file alone, in a folder outside the repository,
on CPU, in a kernel of this interpreter; every cell must run, and the outputs of blocks without
randomness or timing must match the outputs recorded for them (results/, what the site shows).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from kernelnotes.cli import build_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTES = sorted(
    p.relative_to(REPO).as_posix()
    for p in (REPO / "notes").rglob("*")
    if p.suffix == ".ipynb" or (p.suffix == ".md" and 'exec="on"' in p.read_text(encoding="utf-8"))
)
# Blocks whose output legitimately differs between runs: they time themselves, draw unseeded
# random numbers, or probe the machine. (Seeded ones are compared: the same seed gives the same numbers on CPU.)
TIMING = re.compile(r"perf_counter|time\.time\(|timeit|do_bench|benchmark\.Timer")
RANDOM = re.compile(r"rand|random|normal_\(|uniform_\(|multinomial|bernoulli|dropout", re.I)
SEEDED = re.compile(r"manual_seed|\.seed\(|default_rng\(|Generator\(")
# ... or describe the machine they run on (tools installed, ports in use): the Dify note's checks
MACHINE = re.compile(r"shutil\.which|socket\.|subprocess|platform\.")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
FAIL_REASON = re.compile(r"^(.+ (?:float32|float16|bfloat16)): .*$", re.M)  # below a failing check table


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kernelspec for this interpreter in a folder of its own (nothing installed anywhere)."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec = folder / "kernels" / "kn-test-python"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "kn", "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(folder)  # searched before the user's and the system's folders
    return "kn-test-python"


@pytest.fixture(scope="session")
def index_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("index") / "index.db"


def _export(note: str, out: Path, db: Path) -> Path:
    result = CliRunner().invoke(
        build_cli(),
        [
            "--config",
            str(REPO / "mkdocs.yml"),
            "--db",
            str(db),
            "export",
            str(REPO / note),
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out / (Path(note).stem + ".ipynb")


def _same(got: str, want: str) -> bool:
    """Equal text, numbers equal to the printed precision's noise (another CPU rounds differently)."""
    got, want = _verdicts(got), _verdicts(want)
    if NUMBER.sub("#", got) != NUMBER.sub("#", want):
        return False
    pairs = zip(NUMBER.findall(got), NUMBER.findall(want))
    return all(math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-4) for a, b in pairs)


def _verdicts(text: str) -> str:
    """A check table reduced to what a page claims: each case, its tolerance and pass/FAIL.

    Errors near rounding level (a max rel err of 6e-4 against 0) and timings vary between runs.
    """
    lines = []
    for line in FAIL_REASON.sub(r"\1", text).split("\n"):
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 10 and cells[6] in ("pass", "FAIL", "result"):
            line = "  ".join([*cells[:3], cells[5], cells[6]])
        lines.append(line)
    return "\n".join(lines)


def _text(outputs: list) -> str:
    parts = [o.get("text", "") for o in outputs if o["output_type"] == "stream"]
    values = [o["data"].get("text/plain", "") for o in outputs if o["output_type"] == "execute_result"]
    # a page shows no value for a matplotlib object (e.g. `ax.legend()` last): Jupyter shows its repr
    parts += [v for v in values if not v.startswith("<matplotlib.")]
    return "".join(parts)


@pytest.mark.parametrize("note", NOTES)
def test_exported_notebook_runs_and_reproduces_the_page(
    note: str, tmp_path: Path, kernel_name: str, index_db: Path
) -> None:
    out = tmp_path / "reader"
    path = _export(note, out, index_db)
    nb = nbformat.read(path, as_version=4)  # the file alone: nothing else from the repository
    recorded = {i: _text(c.outputs) for i, c in enumerate(nb.cells) if "kernelnotes" in c.metadata}
    assert recorded, f"{note}: no executed blocks exported"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH", "MPLBACKEND")}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=90,
        startup_timeout=60,
        resources={"metadata": {"path": str(out)}},
    )
    client.execute(cwd=str(out), env=env)  # raises CellExecutionError on a cell that fails

    sessions: dict[object, str] = {}
    compared = 0
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("kernelnotes")
        if meta is None:
            continue
        key = meta["session"] or i
        sessions[key] = sessions.get(key, "") + cell.source  # the code this cell's state comes from
        code = sessions[key]
        if TIMING.search(code) or MACHINE.search(code) or (RANDOM.search(code) and not SEEDED.search(code)):
            continue
        if "device" not in meta:  # exported without outputs: nothing recorded to compare with
            continue
        got = _text(cell.outputs)
        assert _same(got, recorded[i]), (
            f"{note}:{meta['line']}: output differs from the recorded one\n--- recorded\n{recorded[i]}\n--- now\n{got}"
        )
        compared += 1
    print(f"{note}: {compared} of {len(recorded)} blocks compared with their recorded output")
