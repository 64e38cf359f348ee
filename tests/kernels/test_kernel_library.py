"""`kn kernels`: each registered op with its dtypes, devices, backward and caps."""

from __future__ import annotations

import json

from click.testing import CliRunner

from kernelnotes.cli import build_cli


def _run(*args: str) -> str:
    runner = CliRunner(env={"COLUMNS": "240"})  # wide enough that rich does not wrap cells
    result = runner.invoke(build_cli(), ["kernels", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_json_lists_dtypes_devices_backward_and_caps() -> None:
    rows = {r["name"]: r for r in json.loads(_run("--json"))}
    assert {"log_softmax", "sigmoid", "matmul", "layer_norm"} <= set(rows)
    assert rows["layer_norm"]["caps"] == {"row width": 65536}
    assert rows["rms_norm"]["caps"] == {"row width": 65536}
    assert rows["flash_attention"]["caps"] == {"head dim": 256}
    assert rows["softmax"]["caps"] == {}
    assert "float64" in rows["log_softmax"]["dtypes"] and rows["log_softmax"]["backward"] is True
    assert rows["matmul"]["backward"] is True and "float64" in rows["matmul"]["dtypes"]
    assert "float64" in rows["flash_attention"]["dtypes"]
    assert "float64" not in rows["linear_attention"]["dtypes"]  # TypeError instead
    assert rows["sigmoid"]["devices"] == ["cpu", "cuda"]


def test_table_has_a_caps_column() -> None:
    out = _run()
    header = next(line for line in out.splitlines() if "kernel" in line and "dtypes" in line)
    for column in ("devices", "backward", "caps"):
        assert column in header
    assert "row width <= 65,536" in out and "head dim <= 256" in out
