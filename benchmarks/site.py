"""Benchmark: what building and serving the site costs an author, against Zensical, in one run.

    python benchmarks/site.py                  # 300 notes (the issue's targets)
    python benchmarks/site.py --notes 30 --notes 300 --notes 1000
    python benchmarks/site.py --notes 30 --no-serve --no-zensical   # builds only
    /work/main/.venv/bin/python benchmarks/site.py --repo /work/main   # "before": another checkout's code
    python benchmarks/site.py --rebuilds --notes 300          # serve's rebuild in-process, cache on vs off

For each N it writes N notes (the repository's notes copied with distinct titles, slugs, dates, tags
and categories; their code, formulas and exec blocks unchanged, so the committed results are found by
code key) into a temp folder and measures, each in a fresh process as an author sees it:

- a full `mkdocs build` and a rebuild with nothing changed, with each process's peak RSS;
- under a real `mkdocs serve` on 127.0.0.1, the time from saving a file until the served page shows
  the change: (a) a text edit of one note, (b) a code edit of one exec block (the block session's
  own run time, from the index, is reported apart), (c) a title edit, until the home page, the
  archive, the tag page and the note all show the new title;
- `zensical build` of the same notes (cold, then warm), the anchor for the ratios.

It prints a table with the targets and says which are met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "KERNELNOTES_LOAD_PLUGINS": "0", "MPLBACKEND": "Agg"}
TAGS = [
    "attention", "softmax", "FlashAttention", "Triton", "GPU", "激活函数", "归一化", "扩散模型", "采样",
    "SDE", "score matching", "引导", "混合精度", "显存", "梯度", "梯度检查点", "自动微分", "分布式",
    "线性注意力", "SSM", "序列打包", "上采样", "卷积", "Transformer", "强化学习", "优化", "数值稳定", "概率",
    "Python", "算法", "数据结构",
]  # fmt: skip
CATEGORIES = ["深度学习", "生成模型", "强化学习", "工程实践", "算法题"]
FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
# Wraps a child so the parent learns its peak RSS (ru_maxrss of its largest waited descendant, in KiB).
PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


# ---- the generated site -------------------------------------------------------------------------


def make_site(root: Path, n: int, repo: Path = REPO) -> list[str]:
    """N notes under root/notes/posts; returns their slugs, newest (the one edited below) first."""
    global REPO
    REPO = repo
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    for name in ("snippets", "overrides", "results"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name)
    posts = root / "notes" / "posts"
    posts.mkdir(parents=True)
    for item in (REPO / "notes").iterdir():
        if item.name != "posts":
            (shutil.copytree if item.is_dir() else shutil.copy)(item, root / "notes" / item.name)
    for notebook in (REPO / "notes" / "posts").glob("*.ipynb"):  # listed in nav: one copy
        shutil.copy(notebook, posts / notebook.name)
    sources = sorted((REPO / "notes" / "posts").glob("*.md"))
    start = dt.date(2024, 1, 1)
    slugs = []
    for i in range(n):
        src = sources[i % len(sources)]
        copy = i // len(sources)
        text = src.read_text(encoding="utf-8")
        match = FRONT.match(text)
        meta = yaml.safe_load(match[1]) if match else {}
        body = text[match.end() :] if match else text
        title = str(meta.get("title") or src.stem)
        new_title = title if copy == 0 else f"{title}（{copy + 1}）"
        slug = str(meta.get("slug") or src.stem) + ("" if copy == 0 else f"-{copy + 1}")
        created = start + dt.timedelta(days=2 * i)  # distinct; the last note is the newest
        meta["title"], meta["slug"] = new_title, slug
        meta["date"] = {"created": created} | ({"updated": created + dt.timedelta(days=5)} if i % 3 else {})
        meta["tags"] = list(dict.fromkeys([*(meta.get("tags") or [])[:3], TAGS[i % len(TAGS)]]))
        meta["categories"] = [CATEGORIES[(i + copy) % len(CATEGORIES)]]
        meta.pop("draft", None)
        body = re.sub(r"^# .*$", f"# {new_title}", body, count=1, flags=re.M)
        front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)
        (posts / f"{slug}.md").write_text(f"---\n{front}---\n{body}", encoding="utf-8")
        slugs.append(slug)
    return slugs[::-1]


def post_path(root: Path, slug: str) -> Path:
    return root / "notes" / "posts" / f"{slug}.md"


# ---- builds ------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_mib: float
    log: str


def timed(cmd: list[str], cwd: Path) -> Run:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *cmd], cwd=cwd, env=ENV, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr[-3000:]}")
    peak = re.search(r"peak-rss-kib (\d+)", proc.stderr)
    return Run(seconds, int(peak[1]) / 1024 if peak else float("nan"), proc.stderr)


def mkdocs_build(root: Path) -> Run:
    return timed([str(BIN / "mkdocs"), "build", "-f", "mkdocs.yml", "-d", "site"], root)


def executed(log: str) -> str:
    match = re.findall(r"kernelnotes: (\d+) blocks, (\d+) executed", log)
    return f"{match[-1][1]} of {match[-1][0]} blocks executed" if match else ""


# ---- serve -------------------------------------------------------------------------------------


@dataclass
class Server:
    root: Path
    port: int
    proc: subprocess.Popen
    log: Path
    seen_builds: int = 0
    latencies: dict[str, float] = field(default_factory=dict)

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{path}", timeout=10) as r:
                return r.read().decode("utf-8", "replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return ""

    def builds(self) -> int:
        return self.log.read_text(errors="replace").count("Reloading browsers")

    def settle(self, timeout: float = 900) -> None:
        """Wait until the rebuild(s) started by the last edit have finished."""
        deadline = time.monotonic() + timeout
        while self.builds() <= self.seen_builds:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"serve did not rebuild:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # the watcher must see no further change before the next edit
        self.seen_builds = self.builds()

    def until_visible(self, paths: list[str], marker: str, start: float, timeout: float = 900) -> float:
        """Seconds from `start` until every page in `paths` contains `marker`."""
        waiting = list(paths)
        while waiting:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{waiting} never showed {marker!r}")
            waiting = [p for p in waiting if marker not in self.get(p)]
            if waiting:
                time.sleep(0.05)
        return time.monotonic() - start


def start_serve(root: Path) -> Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mkdocs"), "serve", "-a", f"127.0.0.1:{port}"],  # livereload on: it watches the files
            cwd=root,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(root, port, proc, log)
    deadline = time.monotonic() + 1800
    while "Serving on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mkdocs serve did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    time.sleep(1.0)
    server.seen_builds = server.builds()
    return server


def stop(server: Server) -> float:
    """Stop serve; return the peak RSS (MiB) of its main process as /proc last reported it."""
    peak = float("nan")
    try:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]
    except (OSError, TypeError):
        pass
    os.killpg(server.proc.pid, 15)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, 9)
    return peak


def block_seconds(root: Path, note: str, since: str) -> float:
    """The own run time of the blocks of `note` recorded after `since` (ISO time)."""
    db = sqlite3.connect(root / ".kernelnotes" / "index.db")
    try:
        rows = db.execute(
            "select duration, created_at from runs where note_path = ? and created_at >= ?", [note, since]
        ).fetchall()
    finally:
        db.close()
    return sum(r[0] or 0.0 for r in rows)


def serve_edits(root: Path, slugs: list[str]) -> dict[str, float]:
    """Latencies of the three edits under a real `mkdocs serve`."""
    newest = slugs[0]
    note = post_path(root, newest)
    meta = yaml.safe_load(FRONT.match(note.read_text("utf-8"))[1])  # type: ignore[index]
    created = meta["date"]["created"]
    tag = meta["tags"][0]
    server = start_serve(root)
    out: dict[str, float] = {}
    try:
        # (a) a sentence added to the text
        marker = f"serve-text-{time.time_ns()}"
        text = note.read_text("utf-8")
        start = time.monotonic()
        note.write_text(text.replace("\n<!-- more -->", f"\n\n{marker}\n\n<!-- more -->", 1), "utf-8")
        out["text"] = server.until_visible([f"{newest}/"], marker, start)
        server.settle()
        # (b) one exec block prints something new: the block and its session run again
        code_note = next(
            (post_path(root, s) for s in slugs if 'exec="on"' in post_path(root, s).read_text("utf-8")),
        )
        code_slug = code_note.stem
        lines = code_note.read_text("utf-8").split("\n")
        first = next(i for i, line in enumerate(lines) if 'exec="on"' in line)
        end = next(i for i in range(first + 1, len(lines)) if lines[i].startswith("```"))
        marker = f"serve-code-{time.time_ns()}"
        lines.insert(end, f"print({marker!r})")
        since = dt.datetime.now(dt.timezone.utc).isoformat()[:19]
        start = time.monotonic()
        code_note.write_text("\n".join(lines), "utf-8")
        out["code"] = server.until_visible([f"{code_slug}/"], marker, start)
        out["code_blocks"] = block_seconds(root, f"posts/{code_slug}.md", since)
        server.settle()
        # (c) a new title: the note, the home page, its archive month and the tag page
        text = note.read_text("utf-8")
        title = meta["title"]
        new_title = f"{title}·{time.time_ns() % 100000}"
        start = time.monotonic()
        note.write_text(text.replace(title, new_title), "utf-8")
        pages = [f"{newest}/", "", f"archive/{created:%Y/%m}/", "tags/"]
        out["title"] = server.until_visible(pages, new_title, start)
        out["tag"] = 1.0 if tag else 0.0
        server.settle()
    finally:
        out["serve_rss"] = stop(server)
    return out


# ---- in-process rebuilds: the site cache on and off, side by side ------------------------------

REBUILDS = """
import os, statistics, sys, time, logging
from pathlib import Path
from mkdocs.config import load_config
from mkdocs.commands.build import build
logging.basicConfig(level=logging.ERROR)
root = Path({root!r}); os.chdir(root)
def once():
    global cfg
    cfg = load_config("mkdocs.yml", site_dir=str(root / "site"))
    cfg.plugins.on_startup(command="serve", dirty=False)
    t = time.perf_counter(); build(cfg, serve_url="http://127.0.0.1:8000/"); return time.perf_counter() - t
once()
note = root / "notes" / "posts" / "{slug}.md"; times = []
for k in range(3):
    note.write_text(note.read_text().replace("<!-- more -->", f"新的一句 {{k}}。\\n\\n<!-- more -->", 1))
    times.append(once())
print("rebuild-median", statistics.median(times), flush=True)
cfg.plugins.on_shutdown()  # stops the block workers
"""


def inprocess_rebuilds(n: int, cache_off: bool, repo: Path) -> float:
    """Median of 3 text-edit rebuilds in one process, as `mkdocs serve` runs them (no watcher)."""
    with tempfile.TemporaryDirectory(prefix=f"kn-rebuild-{n}-") as tmp:
        root = Path(tmp)
        slugs = make_site(root, n, repo)
        if cache_off:  # "before" on the same code: no site cache, mkdocs-jupyter reads every .md
            text = (root / "mkdocs.yml").read_text("utf-8").replace('      ignore: ["*.md", "*.py"]\n', "")
            text = text.replace("  - kernelnotes:\n", "  - kernelnotes:\n      site_cache: false\n", 1)
            (root / "mkdocs.yml").write_text(text, "utf-8")
        code = REBUILDS.format(root=str(root), slug=slugs[0])
        proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=ENV, capture_output=True, text=True)
        found = re.search(r"rebuild-median ([\d.]+)", proc.stdout)
        if not found:
            raise RuntimeError(f"rebuilds failed:\n{proc.stderr[-3000:]}")
        return float(found[1])


# ---- the table ---------------------------------------------------------------------------------


def zensical(root: Path) -> tuple[Run, Run] | None:
    exe = BIN / "zensical"
    if not exe.exists():
        return None
    # Zensical reads mkdocs.yml; it takes pymdownx's slug callable but no other (an older checkout's
    # `--repo` config: dropped, every note sets its slug anyway). Its own output folder.
    text = (root / "mkdocs.yml").read_text("utf-8")
    text = re.sub(r"\n\s*post_slugify: (?!!!python/object/apply:pymdownx).*", "", text)
    (root / "zensical.yml").write_text(text + "\nsite_dir: zensical-site\n", "utf-8")
    cold = timed([str(exe), "build", "-f", "zensical.yml", "--clean"], root)
    warm = timed([str(exe), "build", "-f", "zensical.yml"], root)
    return cold, warm


def measure(n: int, serve: bool, with_zensical: bool, repo: Path = REPO) -> list[tuple[str, str, str, str]]:
    """Rows (measure, value, target, met) for one site of n notes."""
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix=f"kn-site-{n}-") as tmp:
        root = Path(tmp)
        slugs = make_site(root, n, repo)
        full = mkdocs_build(root)
        again = mkdocs_build(root)
        anchor = zensical(root) if with_zensical else None
        edits = serve_edits(root, slugs) if serve else {}

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        rows.append((f"{n} notes: {name}", value, target, "" if ok is None else ("met" if ok else "NOT MET")))

    z_cold, z_warm = (anchor[0].seconds, anchor[1].seconds) if anchor else (float("nan"), float("nan"))
    row(
        "full mkdocs build",
        f"{full.seconds:.1f} s ({executed(full.log)})",
        "≤ 1.5× zensical cold" if anchor else "",
        full.seconds <= 1.5 * z_cold if anchor and n >= 300 else None,
    )
    row(
        "peak RSS, full build",
        f"{full.peak_mib:.0f} MiB",
        "≤ 6 GB" if n >= 1000 else "",
        full.peak_mib < 6144,
    )
    row(
        "rebuild, nothing changed",
        f"{again.seconds:.1f} s",
        "≤ zensical warm" if anchor else "",
        again.seconds <= z_warm if anchor and n >= 300 else None,
    )
    if anchor:
        row("zensical build, cold", f"{z_cold:.1f} s", f"mkdocs/zensical = {full.seconds / z_cold:.1f}×")
        row("zensical build, warm", f"{z_warm:.1f} s", f"mkdocs/zensical = {again.seconds / z_warm:.1f}×")
    if edits:
        text_target = 2.0 if n >= 1000 else 1.5
        row(
            "serve: text edit → page shows it",
            f"{edits['text']:.2f} s",
            f"≤ {text_target} s",
            edits["text"] <= text_target if n >= 300 else None,
        )
        own = edits["code_blocks"]
        row(
            "serve: code edit → new output shown",
            f"{edits['code']:.2f} s (blocks' own run time {own:.2f} s)",
            "≤ 1.5 s + blocks",
            edits["code"] <= 1.5 + own if n >= 300 else None,
        )
        row(
            "serve: title edit → note, home, archive, tag page",
            f"{edits['title']:.2f} s",
            "≤ 3 s",
            edits["title"] <= 3.0 if n >= 300 else None,
        )
        row("peak RSS, serve process", f"{edits['serve_rss']:.0f} MiB")
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--notes", type=int, action="append", help="number of notes (repeatable; default 300)"
    )
    parser.add_argument("--no-serve", action="store_true", help="skip the mkdocs serve measurements")
    parser.add_argument("--no-zensical", action="store_true", help="skip the zensical anchor")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--rebuilds",
        action="store_true",
        help="only: serve's text-edit rebuild in-process, site cache on vs off",
    )
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="take mkdocs.yml and the notes from this checkout"
    )
    args = parser.parse_args(argv)
    rows = []
    for n in args.notes or [300]:
        if args.rebuilds:
            off = inprocess_rebuilds(n, True, args.repo.resolve())
            on = inprocess_rebuilds(n, False, args.repo.resolve())
            rows.append((f"{n} notes: text-edit rebuild, site cache off", f"{off:.1f} s", "", ""))
            rows.append(
                (f"{n} notes: text-edit rebuild, site cache on", f"{on:.1f} s", f"{off / on:.1f}× faster", "")
            )
        else:
            rows += measure(n, not args.no_serve, not args.no_zensical, args.repo.resolve())
    table = Table("measure", "value", "target", "met", title="KernelNotes site: build and serve")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    missed = [r[0] for r in rows if r[3] == "NOT MET"]
    print("every target met" if not missed else "targets not met: " + "; ".join(missed))
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
