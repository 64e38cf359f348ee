"""`kn`, the command line: each command is a thin wrapper over a core function.

Exit codes: 0 success / something found, 1 nothing found, 2 usage error or unusable input.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from kernelnotes.app import App
from kernelnotes.index import (
    MARK_CLOSE,
    MARK_OPEN,
    Index,
    IndexBusy,
    IndexReport,
    file_identity,
    is_corruption,
    recover,
)
from kernelnotes.safetext import terminal_json, terminal_text
from kernelnotes.settings import Settings, SettingsError
from kernelnotes.slug import slugify

NOTHING_FOUND = 1
USAGE = 2


class Context:
    """What every command needs, built lazily so `kn --help` stays instant."""

    def __init__(self, config: Path | None, notes: Path | None, db: Path | None) -> None:
        self._args = (config, notes, db)
        self._app: App | None = None
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, soft_wrap=True, highlight=False)

    @property
    def app(self) -> App:
        """The application object (settings, plugins, index, results) this command works on."""
        if self._app is None:
            try:
                self._app = App.load(*self._args)
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from exc
        return self._app

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def index(self, refresh: bool = False) -> Index:
        """Open the index; build it first when it has never been built (or when asked to refresh).

        "Never built" is read from the database, not from the file's existence: a `kn search` that
        races the first `kn index` waits for its update and then finds its notes.
        """
        index = self.open_index(verify=refresh)
        if refresh or index.empty():
            self.report(self.update(index), quiet=not refresh)
        return index

    def open_index(self, verify: bool = True) -> Index:
        """Open the index; a corrupt file is moved aside (one line says so) and rebuilt.

        `verify` reads the whole file first (`PRAGMA quick_check`, ~0.5 s for 10,000 notes): commands
        that write do; read-only ones rely on SQLite reporting damage a query meets (see `main`).
        """
        index = self.app.open_index(verify=verify)
        _OPENED.append((self.settings.db_path, file_identity(self.settings.db_path)))
        for line in index.notices:
            self.err.print(f"[red]{escape(line)}[/]")
        return index

    def update(self, index: Index) -> IndexReport:
        settings = self.settings
        if not settings.notes_dir.is_dir():
            raise click.UsageError(
                f"notes folder not found: {settings.notes_dir} (use --notes DIR or --config FILE)"
            )
        return index.update(
            settings.notes_dir, self.app.resolver, max_note_bytes=int(settings.max_note_mb * 1e6)
        )

    def report(self, report: IndexReport, quiet: bool = False) -> None:
        for problem in report.problems:
            style = "yellow" if problem.severity == "warning" else "red"
            self.err.print(f"[{style}]{escape(str(problem))}[/]")
        if not quiet:
            self.err.print(
                f"indexed {report.scanned} files: {len(report.added)} added, {len(report.updated)} updated, "
                f"{len(report.renamed)} renamed, {len(report.deleted)} deleted, {report.unchanged} unchanged; "
                f"{sum(p.severity == 'error' for p in report.problems)} problems"
            )


pass_ctx = click.make_pass_decorator(Context)


def escape(value: object) -> str:
    """Untrusted text (titles, paths, messages) for Rich: no markup, no terminal control sequences."""
    return markup_escape(terminal_text(value))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="mkdocs.yml to read settings from (default: ./mkdocs.yml).",
)
@click.option(
    "--notes", type=click.Path(path_type=Path), help="Folder of notes (default: the config's docs_dir)."
)
@click.option(
    "--db", type=click.Path(path_type=Path), help="Index database (default: .kernelnotes/index.db)."
)
@click.version_option(package_name="kernelnotes")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, notes: Path | None, db: Path | None) -> None:
    """KernelNotes: index, search and run the code of machine-learning notes."""
    ctx.obj = Context(config, notes, db)


@cli.command("index")
@pass_ctx
def index_cmd(ctx: Context) -> None:
    """Index the notes incrementally (only changed files are parsed) and report problems."""
    index = ctx.open_index()
    ctx.report(ctx.update(index))
    counts = index.counts()
    ctx.err.print(
        f"{escape(ctx.settings.db_path)}: {counts['notes']} notes, {counts['tags']} tags, {counts['snippets']} snippets"
    )


@cli.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--tag", help="Only notes with this tag.")
@click.option("--category", help="Only notes in this category.")
@click.option(
    "--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Most results to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print results as a JSON array.")
@pass_ctx
def search(
    ctx: Context, query: tuple[str, ...], tag: str | None, category: str | None, limit: int, as_json: bool
) -> None:
    """Search notes by words in Chinese or English; best matches first."""
    text = " ".join(query)
    hits = ctx.index().search(text, tag=tag, category=category, limit=limit)
    if as_json:
        click.echo(terminal_json([_hit_json(h) for h in hits]))
    else:
        for hit in hits:
            labels = " ".join(f"#{t}" for t in hit.tags)
            ctx.out.print(
                f"[bold]{escape(hit.title)}[/]  [dim]{escape(hit.date or 'undated')}[/]  [cyan]{escape(labels)}[/]"
            )
            ctx.out.print(f"  [dim]{escape(hit.path)}[/]")
            # escape the text between the highlight marks (themselves control characters), then style
            fragment = "".join(
                escape(part) if i % 2 == 0 else f"[bold yellow]{escape(part)}[/]"
                for i, part in enumerate(re.split(f"{MARK_OPEN}(.*?){MARK_CLOSE}", hit.fragment))
            )
            ctx.out.print(f"  {fragment}\n")
    if not hits:
        ctx.err.print(
            escape(
                f"no notes match {text!r}"
                + (f" with tag {tag!r}" if tag else "")
                + (f" in category {category!r}" if category else "")
            )
        )
        sys.exit(NOTHING_FOUND)


def _hit_json(hit: Any) -> dict[str, Any]:
    data = asdict(hit)
    fragment = data.pop("fragment")
    data["highlights"] = sorted({part.split(MARK_CLOSE)[0] for part in fragment.split(MARK_OPEN)[1:]})
    data["fragment"] = fragment.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")
    return data


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print tags as JSON.")
@pass_ctx
def tags(ctx: Context, as_json: bool) -> None:
    """List every tag with the number of notes that carry it."""
    rows = ctx.index().tags()
    if as_json:
        click.echo(terminal_json([{"tag": t, "notes": n} for t, n in rows]))
    else:
        table = Table("tag", "notes")
        for name, count in rows:
            table.add_row(escape(name), str(count))
        ctx.out.print(table)
    if not rows:
        sys.exit(NOTHING_FOUND)


@cli.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the note as JSON (body left out).")
@pass_ctx
def show(ctx: Context, key: str, as_json: bool) -> None:
    """Show one note's metadata and snippets, by slug or by path under the notes folder."""
    index = ctx.index()
    path = Path(key)
    if path.exists() and path.resolve().is_relative_to(ctx.settings.notes_dir):
        key = path.resolve().relative_to(ctx.settings.notes_dir).as_posix()
    note = index.note(key)
    if note is None:
        ctx.err.print(escape(f"no note with slug or path {key!r} (see `kn search` or `kn tags`)"))
        sys.exit(NOTHING_FOUND)
    note.pop("body")
    if as_json:
        click.echo(terminal_json(note))
        return
    ctx.out.print(f"[bold]{escape(note['title'])}[/]")
    for field in ("path", "slug", "date", "updated", "categories", "tags", "authors", "description", "draft"):
        value = note[field]
        if value not in (None, "", [], 0):
            ctx.out.print(
                f"  [dim]{field}:[/] {escape(', '.join(value) if isinstance(value, list) else str(value))}"
            )
    table = Table(
        "#", "lines", "language", "attributes", "includes", title=f"{len(note['snippets'])} snippets"
    )
    for s in note["snippets"]:
        attrs = " ".join(k if v is True else f'{k}="{v}"' for k, v in s["attrs"].items())
        table.add_row(
            str(s["idx"]),
            f"{s['start_line']}-{s['end_line']}",
            escape(s["language"] or "-"),
            escape(attrs),
            escape(", ".join(s["includes"])),
        )
    ctx.out.print(table)


@cli.command()
@click.argument("title")
@click.option("--tags", default="", help="Comma-separated tags, e.g. 'attention,softmax'.")
@click.option("--category", "categories", multiple=True, help="Category (repeatable).")
@click.option("--slug", help="URL slug (default: from the title, Chinese spelled in pinyin).")
@click.option("--dir", "subdir", default="posts", show_default=True, help="Folder under the notes folder.")
@pass_ctx
def new(
    ctx: Context, title: str, tags: str, categories: tuple[str, ...], slug: str | None, subdir: str
) -> None:
    """Write a new note skeleton in the blog format with today's date."""
    slug = slug or slugify(title)
    if not slug:
        raise click.UsageError("cannot make a slug from the title; pass --slug")
    target = ctx.settings.notes_dir / subdir / f"{slug}.md"
    if target.exists():
        ctx.err.print(f"{escape(target)} already exists; pick another --slug")
        sys.exit(USAGE)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_skeleton(title, slug, tag_list, list(categories)), encoding="utf-8")
    click.echo(terminal_text(target))


def render_skeleton(
    title: str, slug: str, tags: list[str], categories: list[str], today: dt.date | None = None
) -> str:
    """The front matter and outline of a new note (YAML written by hand to keep it readable)."""

    def block(name: str, items: list[str]) -> str:
        return (
            f"{name}:\n" + "".join(f"  - {json.dumps(i, ensure_ascii=False)}\n" for i in items)
            if items
            else ""
        )

    return (
        "---\n"
        f"title: {json.dumps(title, ensure_ascii=False)}\n"
        f"date:\n  created: {(today or dt.date.today()).isoformat()}\n"
        f"{block('categories', categories)}{block('tags', tags)}"
        f"slug: {slug}\n"
        "---\n\n"
        f"# {title}\n\n"
        "用两三句话说明这篇笔记讲什么（首页摘要）。\n\n"
        "<!-- more -->\n\n"
        "## 正文\n\n"
        '```python exec="on"\nprint("hello")\n```\n'
    )


@cli.command("init")
@pass_ctx
def init_cmd(ctx: Context) -> None:
    """Add KernelNotes to the existing mkdocs-material blog here (its mkdocs.yml), then index it."""
    from kernelnotes.adopt import init_blog

    config = ctx._args[0] or Path("mkdocs.yml")
    try:
        report = init_blog(config)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    if not report.changed:
        ctx.err.print(f"{escape(str(report.config))}: KernelNotes is already set up")
        return
    ctx.err.print(f"{escape(str(report.config))}: added to plugins:")
    for line in report.lines:
        ctx.out.print(escape(line))
    if report.gitignore:
        ctx.err.print(".gitignore: added .kernelnotes/ (the index is a cache)")
    ctx.index(refresh=True)
    ctx.err.print(
        'next: `mkdocs serve`; mark a code block ```python exec="on"``` to run it (README: "Executable snippets")'
    )


@cli.command("run")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--changed", is_flag=True, help="Only notes changed in git (modified, staged or untracked).")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "auto"]),
    help="Device for blocks without device= (default: mkdocs.yml's, else auto = cuda when present).",
)
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), help="Worker processes (default: mkdocs.yml's, else 1)."
)
@click.option("--report", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("--force", is_flag=True, help="Run every block, even those with a fresh cached result.")
@click.option(
    "--timeout",
    type=float,
    help="Seconds per block unless it sets timeout= (default: mkdocs.yml's, else 60).",
)
@click.option("--shard", help="Run only shard K of N (K/N, 1-based), split by recorded duration.")
@pass_ctx
def run_cmd(
    ctx: Context,
    paths: tuple[Path, ...],
    changed: bool,
    device: str | None,
    jobs: int | None,
    report: Path | None,
    summary: Path | None,
    force: bool,
    timeout: float | None,
    shard: str | None,
) -> None:
    """Run the notes' exec="on" blocks, check them against the kernels, record the results."""
    from rich.progress import Progress

    from kernelnotes.cache import cuda_present
    from kernelnotes.report import summary_markdown, write_junit
    from kernelnotes.running import changed_paths, notes_to_run, select_shard

    app = ctx.app
    settings = app.settings
    options = app.run_options(device=device, timeout=timeout, jobs=jobs, force=force or None)
    if options.device == "cuda" and not cuda_present():
        raise click.UsageError("--device cuda: no CUDA device on this machine (use --device cpu or auto)")
    ctx.index(refresh=True)  # reports every note problem, once
    files = list(paths)
    if changed:
        files = changed_paths(settings.root, settings.notes_dir)
        if not files:
            ctx.err.print("no changed notes")
            return
    notes, problems = notes_to_run(app, files)
    for problem in problems:  # notes outside the notes folder, which the index does not hold
        ctx.err.print(f"[yellow]{escape(str(problem))}[/]")
    pipeline = app.pipeline(options)
    try:
        if shard:
            notes = select_shard(pipeline, notes, shard)
        total = sum(len(pipeline.snippets(n)) for n in notes)
        with Progress(console=ctx.err, transient=True, disable=not ctx.err.is_terminal) as progress:
            task = progress.add_task("running snippets", total=total)
            outcomes = pipeline.run(notes, progress=lambda o: progress.advance(task))
    finally:
        pipeline.close()
    prefix = _notes_prefix(settings)
    for o in outcomes:
        if o.failed:
            first = o.failure_line()
            ctx.err.print(
                f"[red]FAILED[/] {escape(prefix + o.note_path)}:{o.snippet.start_line}: {escape(first)}"
            )
    if report:
        write_junit(outcomes, report, prefix)
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(summary_markdown(outcomes, prefix), encoding="utf-8")
    failed = sum(o.failed for o in outcomes)
    ctx.err.print(
        f"{len(outcomes)} blocks: {len(outcomes) - failed} passed, {failed} failed, "
        f"{pipeline.executed} executed, {sum(o.cached for o in outcomes)} cached"
    )
    if failed:
        sys.exit(1)


def _notes_prefix(settings: Settings) -> str:
    try:
        return settings.notes_dir.relative_to(settings.root).as_posix() + "/"
    except ValueError:
        return ""


@cli.group("results")
def results_group() -> None:
    """Export or import recorded snippet results (a folder of JSON files)."""


@results_group.command("export")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def results_export(ctx: Context, folder: Path) -> None:
    """Write the recorded results, one JSON file per note, into FOLDER."""
    from kernelnotes.runs import RunStore

    count = RunStore(ctx.index().db).export(folder)
    ctx.err.print(f"exported {count} results to {escape(folder)}")


@results_group.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_ctx
def results_import(ctx: Context, folder: Path) -> None:
    """Merge results exported elsewhere (e.g. by a GPU runner) into the index."""
    from kernelnotes.runs import RunStore

    report = RunStore(ctx.index().db).import_(folder)
    for problem in report.problems:
        ctx.err.print(f"[red]{escape(str(problem))}[/]")
    ctx.err.print(f"imported {report.imported} results from {escape(folder)}")


@cli.command("export")
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["ipynb", "py"]),
    default="ipynb",
    show_default=True,
    help="ipynb: a Jupyter notebook with the recorded outputs; py: a percent-format script.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), help="Folder to write to."
)
@click.option("--run", is_flag=True, help="First run the blocks that have no result for their current code.")
@pass_ctx
def export_cmd(ctx: Context, paths: tuple[Path, ...], fmt: str, out: Path, run: bool) -> None:
    """Write each note as a Jupyter notebook or a percent-format Python script with its recorded outputs.

    Exits 1 when a block failed (its cell carries the recorded error; the file is still written).
    """
    from kernelnotes.export import export_note, export_path
    from kernelnotes.running import note_name, notes_to_run

    app = ctx.app
    settings = app.settings
    report = app.update_index()  # the notes and the recorded results the site shows, as `kn index`
    notes, problems = notes_to_run(app, list(paths))
    names = {n.path for n in notes}
    problems += [p for p in report.problems if p.path in names]  # only the exported notes' problems
    targets = {export_path(out, n.path, fmt): n for n in notes}
    if len(targets) < len(notes):
        raise click.UsageError(
            "two of the notes have the same file name; export them to different --out folders"
        )
    pipeline = app.pipeline(app.run_options(execute=run))
    try:
        outcomes = pipeline.run(notes)  # without --run: the pipeline's lookup of recorded results only
    finally:
        pipeline.close()
    prefix = _notes_prefix(settings)
    out.mkdir(parents=True, exist_ok=True)
    files = {note_name(settings, p): p.resolve() for p in paths}
    for target, note in targets.items():
        path = files[note.path]
        mine = [o for o in outcomes if o.note_path == note.path]
        inside = path.is_relative_to(settings.notes_dir.resolve())
        export = export_note(
            note,
            path.read_text(encoding="utf-8"),
            mine,
            (prefix if inside else "") + note.path,
            settings.snippets_dir,
        )
        target.write_text(export.text(fmt), encoding="utf-8")
        problems += export.problems
        click.echo(str(target))
    for problem in problems:
        style = "yellow" if problem.severity == "warning" else "red"
        ctx.err.print(f"[{style}]{escape(str(problem))}[/]")
    if any(p.severity == "error" for p in problems):
        sys.exit(1)


@cli.command("plugins")
@pass_ctx
def plugins_cmd(ctx: Context) -> None:
    """List the registered plugins and the hooks each implements."""
    from kernelnotes.plugins.manager import plugin_names

    table = Table("plugin", "hooks")
    for name, hooks in plugin_names(ctx.app.pm):
        table.add_row(escape(name), ", ".join(hooks))
    ctx.out.print(table)


def build_cli(argv: list[str] | None = None) -> click.Group:
    """The `kn` group with the commands plugins add (register_commands hook), those of the project's
    `plugins_dir` included: its settings are read from `--config`/`--notes` (or ./mkdocs.yml) first."""
    app = _early_app(sys.argv[1:] if argv is None else argv)
    app.pm.hook.register_commands(cli=cli)
    return cli


def _early_app(argv: list[str]) -> App:
    """The App the command line names, read before click parses it; on bad settings, the built-ins
    only (the command itself then reports the settings error)."""
    found: dict[str, Path] = {}
    for i, arg in enumerate(argv):
        for name in ("--config", "--notes", "--db"):
            if arg == name and i + 1 < len(argv):
                found[name[2:]] = Path(argv[i + 1])
            elif arg.startswith(name + "="):
                found[name[2:]] = Path(arg.split("=", 1)[1])
    try:
        return App.load(found.get("config"), found.get("notes"), found.get("db"))
    except Exception:
        return App(Settings(Path.cwd(), Path.cwd(), Path.cwd(), Path.cwd()))


# index files opened by this process, for `main` to repair one found corrupt in the middle of a command
_OPENED: list[tuple[Path, tuple[int, int] | None]] = []


def main() -> None:
    try:
        try:
            build_cli()(prog_name="kn")
        except sqlite3.DatabaseError as exc:
            # damage that `PRAGMA quick_check` cannot see (inside full-text index data) shows up only
            # when a query reads it: move the file aside and run the command once more on a new index
            if not (is_corruption(exc) and _OPENED):
                raise
            path, seen = _OPENED[-1]
            click.echo(recover(path, str(exc), seen), err=True)
            _OPENED.clear()
            build_cli()(prog_name="kn")
    except SettingsError as exc:
        click.echo(f"Error: {terminal_text(exc)}", err=True)
        sys.exit(USAGE)
    except IndexBusy as exc:
        click.echo(str(exc), err=True)
        sys.exit(USAGE)
