"""Notes cannot reach each other, the checker or the index (issue 13): the hostile-notes corpus.

Each note in tests/hostile/ reproduces an attack from the issue; on the old persistent worker each
of these tests failed (a note's torch default leaked into the next, a patched `compare` passed a
zero kernel and the pass was cached, a forged reply or a rewritten runs table turned a failure
into a pass).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from kernelnotes.index import Index
from kernelnotes.pipeline import RunOptions
from kernelnotes.running import load_notes, make_pipeline
from kernelnotes.sandbox import landlock_abi
from kernelnotes.settings import load_settings

HOSTILE = Path(__file__).parent / "hostile"


def hostile_project(root: Path, *names: str) -> Path:
    notes = root / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    (root / "snippets").mkdir(exist_ok=True)
    for name in names:
        shutil.copy(HOSTILE / name, notes / name)
    return root


def run(root: Path, paths: list[Path] | None = None, **options):  # type: ignore[no-untyped-def]
    # the default index path, .kernelnotes/index.db under the project root, as a block would guess it
    settings = load_settings(notes=root / "notes", cwd=root)
    pipeline = make_pipeline(settings, Index(settings.db_path), RunOptions(**{"timeout": 120, **options}))
    try:
        outcomes = pipeline.run(load_notes(settings, paths)[0])
    finally:
        pipeline.close()
    return outcomes, pipeline


def by_note(outcomes):  # type: ignore[no-untyped-def]
    found: dict[str, list] = {}
    for o in outcomes:
        found.setdefault(o.note_path, []).append(o)
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = hostile_project(
        tmp_path_factory.mktemp("hostile"),
        "a_leaks_state.md",
        "b_reads_state.md",
        "c_patch_in_block.md",
        "d_forge_reply.md",
        "e_steal_nonce.md",
    )
    outcomes, pipeline = run(root)
    return root, by_note(outcomes), pipeline


def test_a_note_does_not_see_what_another_did_to_process_state(corpus):
    root, notes, _ = corpus
    (patcher,) = notes["a_leaks_state.md"]
    assert patcher.result.ok and patcher.result.stdout == "patched\n"
    reader = notes["b_reads_state.md"][0].result
    *state, randoms = reader.stdout.strip().split("\n")
    assert state == ["torch.float32", "clean", "True", "True"]
    import torch

    torch.manual_seed(1234)  # the seed the other note set: its random numbers are not this note's
    assert randoms != str(torch.randn(2).tolist())
    # and what it printed is what it prints alone: its result is stored under its own code's key
    alone, _ = run(root, [root / "notes" / "b_reads_state.md"], force=True)
    assert alone[0].result.stdout.split("\n")[:4] == reader.stdout.split("\n")[:4]


def test_another_notes_patched_compare_cannot_pass_a_zero_kernel(corpus):
    zero = corpus[1]["b_reads_state.md"][1].result
    assert not zero.ok and zero.check and not any(c.ok for c in zero.check)


@pytest.mark.parametrize("note", ["c_patch_in_block.md", "d_forge_reply.md", "e_steal_nonce.md"])
def test_a_checked_block_cannot_turn_a_zero_kernel_into_a_pass(corpus, note):
    (outcome,) = corpus[1][note]
    assert outcome.failed and not outcome.result.ok
    failed_cases = [c for c in outcome.result.check if not c.ok]
    # either the checker compared the zeros (and says what it compared), or the forged reply ended it
    assert failed_cases or "broke the worker protocol" in outcome.result.error
    assert all("compared the output" in c.message for c in failed_cases)
    assert not any(c.ok for c in outcome.result.check)


def test_a_forged_reply_is_caught_as_a_protocol_violation(corpus):
    for note in ("d_forge_reply.md", "e_steal_nonce.md"):
        (outcome,) = corpus[1][note]
        assert "broke the worker protocol" in outcome.result.error and outcome.result.retry


def test_cached_results_are_the_checkers_verdicts(corpus):
    root = corpus[0]
    again, pipeline = run(root)
    # only the blocks ended for a protocol violation run again: they were not cached
    assert pipeline.executed == 2
    again_by_note = by_note(again)
    for outcome in (again_by_note["b_reads_state.md"][1], again_by_note["c_patch_in_block.md"][0]):
        assert outcome.cached and not outcome.result.ok


@pytest.mark.skipif(landlock_abi() < 1, reason="Landlock is not available in this kernel")
def test_a_block_cannot_rewrite_the_index(tmp_path):
    root = hostile_project(tmp_path, "b_reads_state.md", "f_rewrite_index.md")
    db_path = root / ".kernelnotes" / "index.db"
    run(root, [root / "notes" / "b_reads_state.md"])
    before = sqlite3.connect(db_path).execute("SELECT key, status, error FROM runs ORDER BY key").fetchall()
    assert [status for _, status, _ in before].count("failed") == 1
    outcomes, _ = run(root, [root / "notes" / "f_rewrite_index.md"])
    (attack,) = outcomes
    assert attack.failed and "readonly database" in attack.result.error
    db = sqlite3.connect(db_path)
    after = db.execute(
        "SELECT key, status, error FROM runs WHERE note_path != 'f_rewrite_index.md' ORDER BY key"
    )
    assert after.fetchall() == before
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.skipif(landlock_abi() < 1, reason="Landlock is not available in this kernel")
def test_blocks_still_write_files_elsewhere(project):
    project.note(
        "w.md",
        '# W\n\n```python exec="on"\nimport os, tempfile\n'
        'with tempfile.NamedTemporaryFile("w", delete=False) as f:\n    f.write("ok")\n'
        'os.makedirs("notes/out", exist_ok=True)\nopen("notes/out/x.txt", "w").write("ok")\n'
        "print(open(f.name).read())\n```\n",
    )
    outcomes, _ = run(project.root)
    assert outcomes[0].result.ok, outcomes[0].result.error
    assert (project.notes / "out" / "x.txt").read_text() == "ok"


@pytest.mark.skipif(landlock_abi() < 1, reason="Landlock is not available in this kernel")
def test_a_block_cannot_write_recorded_results_or_the_checking_code(tmp_path):
    import kernelnotes.kernels.testing as testing

    root = hostile_project(tmp_path, "g_overwrite_code.md")
    (root / "results").mkdir()
    source = Path(testing.__file__).read_bytes()
    (outcome,) = run(root)[0]
    assert outcome.result.stdout == "refused PermissionError\nrefused PermissionError\n"
    assert list((root / "results").iterdir()) == [] and Path(testing.__file__).read_bytes() == source
