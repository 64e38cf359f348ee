"""`kn`, the command line: each command is a thin wrapper over a core function.

Exit codes: 0 success / something found, 1 nothing found, 2 usage error or unusable input.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kernelnotes.index import MARK_CLOSE, MARK_OPEN, Index, IndexReport
from kernelnotes.parse import IncludeResolver
from kernelnotes.settings import Settings, SettingsError, load_settings
from kernelnotes.slug import slugify

NOTHING_FOUND = 1
USAGE = 2


class Context:
    """What every command needs, built lazily so `kn --help` stays instant."""

    def __init__(self, config: Path | None, notes: Path | None, db: Path | None) -> None:
        self._args = (config, notes, db)
        self._settings: Settings | None = None
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, soft_wrap=True, highlight=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(*self._args)
            except SettingsError as exc:
                raise click.UsageError(str(exc)) from exc
        return self._settings

    def index(self, refresh: bool = False) -> Index:
        """Open the index; build it first when it does not exist yet (or when asked to refresh)."""
        settings = self.settings
        fresh = not settings.db_path.exists()
        index = Index(settings.db_path)
        if fresh or refresh:
            self.report(self.update(index), quiet=not refresh)
        return index

    def update(self, index: Index) -> IndexReport:
        settings = self.settings
        if not settings.notes_dir.is_dir():
            raise click.UsageError(
                f"notes folder not found: {settings.notes_dir} (use --notes DIR or --config FILE)"
            )
        return index.update(settings.notes_dir, IncludeResolver(settings.root, settings.snippets_dir))

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
    index = Index(ctx.settings.db_path)
    ctx.report(ctx.update(index))
    counts = index.counts()
    ctx.err.print(
        f"{ctx.settings.db_path}: {counts['notes']} notes, {counts['tags']} tags, {counts['snippets']} snippets"
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
        click.echo(json.dumps([_hit_json(h) for h in hits], ensure_ascii=False, indent=2))
    else:
        for hit in hits:
            labels = " ".join(f"#{t}" for t in hit.tags)
            ctx.out.print(
                f"[bold]{escape(hit.title)}[/]  [dim]{hit.date or 'undated'}[/]  [cyan]{escape(labels)}[/]"
            )
            ctx.out.print(f"  [dim]{escape(hit.path)}[/]")
            fragment = escape(hit.fragment).replace(MARK_OPEN, "[bold yellow]").replace(MARK_CLOSE, "[/]")
            ctx.out.print(f"  {fragment}\n")
    if not hits:
        ctx.err.print(
            f"no notes match {text!r}"
            + (f" with tag {tag!r}" if tag else "")
            + (f" in category {category!r}" if category else "")
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
        click.echo(json.dumps([{"tag": t, "notes": n} for t, n in rows], ensure_ascii=False, indent=2))
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
        ctx.err.print(f"no note with slug or path {key!r} (see `kn search` or `kn tags`)")
        sys.exit(NOTHING_FOUND)
    note.pop("body")
    if as_json:
        click.echo(json.dumps(note, ensure_ascii=False, indent=2))
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
            s["language"] or "-",
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
        ctx.err.print(f"{target} already exists; pick another --slug")
        sys.exit(USAGE)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_skeleton(title, slug, tag_list, list(categories)), encoding="utf-8")
    click.echo(str(target))


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
    from kernelnotes.pipeline import RunOptions
    from kernelnotes.report import summary_markdown, write_junit
    from kernelnotes.running import changed_paths, load_notes, make_pipeline, select_shard

    settings = ctx.settings
    device = device or settings.device
    if device == "cuda" and not cuda_present():
        raise click.UsageError("--device cuda: no CUDA device on this machine (use --device cpu or auto)")
    index = ctx.index(refresh=True)
    files = list(paths)
    if changed:
        files = changed_paths(settings.root, settings.notes_dir)
        if not files:
            ctx.err.print("no changed notes")
            return
    notes, problems = load_notes(settings, files)
    for problem in problems:
        ctx.err.print(f"[yellow]{escape(str(problem))}[/]")
    options = RunOptions(
        device=device,
        timeout=timeout or settings.timeout,
        jobs=jobs or settings.jobs,
        force=force,
        memory_limit_mb=settings.memory_limit_mb,
    )
    pipeline = make_pipeline(settings, index, options)
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
    ctx.err.print(f"exported {count} results to {folder}")


@results_group.command("import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_ctx
def results_import(ctx: Context, folder: Path) -> None:
    """Merge results exported elsewhere (e.g. by a GPU runner) into the index."""
    from kernelnotes.runs import RunStore

    count = RunStore(ctx.index().db).import_(folder)
    ctx.err.print(f"imported {count} results from {folder}")


@cli.command("plugins")
@pass_ctx
def plugins_cmd(ctx: Context) -> None:
    """List the registered plugins and the hooks each implements."""
    from kernelnotes.plugins.manager import get_plugin_manager, plugin_names

    table = Table("plugin", "hooks")
    for name, hooks in plugin_names(get_plugin_manager(ctx.settings.plugins_dir)):
        table.add_row(escape(name), ", ".join(hooks))
    ctx.out.print(table)


def build_cli() -> click.Group:
    """The `kn` group with commands added by plugins (register_commands hook)."""
    from kernelnotes.plugins.manager import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)
    return cli


def main() -> None:
    try:
        build_cli()(prog_name="kn")
    except SettingsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(USAGE)
