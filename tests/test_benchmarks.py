"""The index benchmark runs end to end in a quick mode, so it cannot rot."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from .conftest import REPO


def test_index_search_benchmark_quick_mode(capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_index_search", REPO / "benchmarks" / "index_search.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--notes", "60", "--queries", "20", "--big-mb", "5"])
    names = [r[0] for r in rows]
    assert names[0].startswith("full index of 60 notes") and all(r[1] > 0 for r in rows)
    found = int(rows[3][3].split("/")[0])
    assert found >= 15  # topic queries find notes (a few of the 24 topics may have no note among 60)
    assert "KernelNotes index and search" in capsys.readouterr().out
    assert rows[-1][0] == "search p95 with a 5 MB note (16 queries)" and rows[-1][2] == "≤ 50 ms"


def test_pipeline_benchmark_quick_mode():
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {name: (seconds, note) for name, seconds, note in module.main(["--quick"])}
    assert 0 < rows["per-block overhead, warm worker"][0] < 1.0
    assert rows["cold build (nothing cached)"][1] == "12 of 12 blocks executed"
    assert rows["rebuild, nothing changed"][1] == "0 of 12 blocks executed"
    assert rows["rebuild after editing one block of n2.md"][1] == "4 of 12 blocks executed"  # its session
    assert rows["cold build (nothing cached)"][0] > 0 and "markdown-exec build" in rows


@pytest.mark.slow
def test_site_benchmark_builds_generated_notes():
    spec = importlib.util.spec_from_file_location("bench_site", REPO / "benchmarks" / "site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_site"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    rows = {name: value for name, value, _, _ in module.main(["--notes", "4", "--no-serve", "--no-zensical"])}
    assert re.fullmatch(r"[\d.]+ s \(\d+ of \d+ blocks executed\)", rows["4 notes: full mkdocs build"])
    assert float(rows["4 notes: peak RSS, full build"].split()[0]) > 50
    assert rows["4 notes: rebuild, nothing changed"].endswith(" s")
