"""benchmarks/kernels.py must keep working: run its main() in dry-run mode on the scan/resampling ops."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"
OPS = ("selective_scan", "pixel_shuffle", "upsample_bilinear", "ddim_step")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # Loaded from its path under a private name: the script is not a package module, and the bare
    # name `kernels` must never be imported.
    spec = importlib.util.spec_from_file_location("kernelnotes_bench_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_dry_run_reports_every_op(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = bench.main(["--dry-run", "--ops", ",".join(OPS), "--out", str(tmp_path)])
    printed = capsys.readouterr().out

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    device = "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    assert files[0].name == f"{bench._slug(device)}-{payload['date']}.json"
    saved = json.loads(files[0].read_text())
    assert saved["device"] == device and saved["dry_run"] is True
    assert saved["results"] == payload["results"]

    rows = {r["op"]: r for r in saved["results"]}
    assert set(rows) == set(OPS)  # one dtype (float32), one smallest example each
    for op, row in rows.items():
        assert row["error"] is None, row["error"]
        assert row["dtype"] == "float32"
        for contender in ("triton", "eager", "compile"):
            assert row[f"{contender}_ms"] > 0, (op, contender)
        assert row["unit"] == "GB/s" and row["throughput"] > 0
        assert op in printed
    assert "triton ms" in printed and "compile ms" in printed
    if not torch.cuda.is_available():
        assert saved["peaks"] is None and all(r["triton_peak_mib"] is None for r in saved["results"])
        assert "n/a" in printed


def test_unknown_op_is_an_error(bench: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown ops"):
        bench.main(["--dry-run", "--ops", "no_such_op", "--out", str(tmp_path)])


def test_dry_run_defaults_to_a_temp_dir(bench: ModuleType) -> None:
    payload = bench.main(["--dry-run", "--ops", "pixel_shuffle", "--compile-backend", "none"])
    path = Path(payload["path"])
    try:
        assert not path.is_relative_to(SCRIPT.parents[1])  # CI must not dirty the repository
        row = payload["results"][0]
        assert row["compile_ms"] is None and row["triton_ms"] > 0
    finally:
        path.unlink()
        path.parent.rmdir()


def test_sweeps_name_registered_ops(bench: ModuleType) -> None:
    from kernelnotes.plugins.manager import get_plugin_manager
    from kernelnotes.registry import load_kernels

    registered = load_kernels(get_plugin_manager(load_entry_points=False))
    assert set(bench.SIZE_SWEEPS) <= set(registered)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_run_gpu(bench: ModuleType, tmp_path: Path) -> None:
    payload = bench.main(["--ops", "ddim_step,pixel_shuffle", "--out", str(tmp_path)])
    assert payload["dry_run"] is False and payload["peaks"]["bandwidth_gbps"] > 0
    for row in payload["results"]:
        assert row["error"] is None, row["error"]
        assert row["triton_ms"] > 0 and row["compile_ms"] > 0
        assert 0 < row["fraction_of_peak"] < 1.5
        assert row["triton_peak_mib"] is not None
