"""`pytest notes/` collects the notes' exec blocks as test items (a real pytest session)."""

from __future__ import annotations


def test_pytest_collects_and_runs_note_blocks(pytester):
    pytester.makefile(
        ".yml", mkdocs="site_name: t\ndocs_dir: notes\nplugins:\n  - kernelnotes:\n      db: kn.db\n"
    )
    notes = pytester.mkdir("notes")
    (notes / "a.md").write_text(
        '# A\n\n```python exec="on"\nprint("fine")\n```\n\n```python exec="on"\nraise ValueError("broken")\n```\n\n'
        '```python\nprint("not executed")\n```\n',
        encoding="utf-8",
    )
    (pytester.path / "README.md").write_text('```python exec="on"\nraise SystemExit\n```\n', encoding="utf-8")
    result = pytester.runpytest_subprocess("-v")  # the whole folder
    result.assert_outcomes(passed=1, failed=1)  # README.md is outside notes/: not collected
    result.stdout.fnmatch_lines(["*a.md::line 3 PASSED*", "*a.md::line 7 FAILED*", "*ValueError: broken*"])
    # the same cache: a second session executes nothing new and reports the same
    again = pytester.runpytest_subprocess("notes")
    again.assert_outcomes(passed=1, failed=1)
