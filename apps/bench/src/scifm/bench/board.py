"""``sci-fm bench board``: all result records -> ``leaderboard.md`` + a self-contained ``index.html``.

Both files sit in ``OUT``; every image they show is copied (or drawn) into ``OUT/img/`` and referenced by
a relative path, so the folder works from a file system, a static host or a Git web view, with no network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .records import Group, Record, group_records, load_records
from .summary_plots import summary_plots

MARKER = ".scifm-board"  # marks an OUT folder as ours, so its img/ may be rebuilt


@dataclass
class Figure:
    src: str  # relative to OUT, with '/' separators
    caption: str


@dataclass
class Board:
    suites: dict[str, list[Group]]
    figures: dict[Path, list[Figure]]  # record path -> its copied plots
    summaries: dict[str, list[Figure]]  # suite -> generated plots
    warnings: list[str] = field(default_factory=list)
    results_dir: Path | None = None
    out: Path | None = None

    def record_link(self, record: Record) -> str:
        return Path(os.path.relpath(record.path, self.out)).as_posix()

    @property
    def n_records(self) -> int:
        return sum(len(g.runs) for gs in self.suites.values() for g in gs)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _prepare_out(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    img = out / "img"
    if img.exists():
        if not (out / MARKER).exists():
            from scifm.core.errors import ConfigError

            raise ConfigError(
                f"{out}: has an img/ folder that this command did not make; choose another --out"
            )
        shutil.rmtree(img)  # stale plots of records that are gone
    (out / MARKER).write_text("made by `sci-fm bench board`; img/ is rebuilt on every run\n")
    img.mkdir()
    return img


def _copy_plots(record: Record, img: Path, out: Path, warnings: list[str], results_dir: Path) -> list[Figure]:
    figures = []
    stem = record.path.stem
    dst_dir = img / record.suite / stem
    for rel in record.data.get("plots", []):
        src = (record.path.parent / rel).resolve()
        if not src.is_file():
            warnings.append(f"{record.path.relative_to(results_dir)}: plot {rel} not found; left out")
            continue
        dst_dir.mkdir(parents=True, exist_ok=True)
        dst = dst_dir / src.name
        k = 1
        while dst.exists():  # two plots with one file name from different folders
            dst = dst_dir / f"{src.stem}-{k}{src.suffix}"
            k += 1
        shutil.copyfile(src, dst)
        figures.append(Figure(dst.relative_to(out).as_posix(), src.stem.replace("_", " ").replace("-", " ")))
    return figures


def build_board(results_dir: Path, out: Path) -> Board:
    """Load, group, copy and draw everything the two renderers need."""
    results_dir, out = Path(results_dir).resolve(), Path(out).resolve()
    records, warnings = load_records(results_dir)
    img = _prepare_out(out)
    suites = group_records(records)
    figures = {r.path: _copy_plots(r, img, out, warnings, results_dir) for r in records}
    summaries: dict[str, list[Figure]] = {}
    for suite, groups in suites.items():
        rows = [row for g in groups for row in g.latest.data["rows"]]
        made = summary_plots(suite, rows, img / "summary")
        summaries[suite] = [Figure(p.relative_to(out).as_posix(), caption) for p, caption in made]
    return Board(suites, figures, summaries, warnings, results_dir, out)


def render_board(results_dir: Path, out: Path) -> Board:
    """Write ``OUT/leaderboard.md`` and ``OUT/index.html``; returns the board (with its warnings)."""
    from .render_html import render_html
    from .render_md import render_md

    board = build_board(results_dir, out)
    _atomic_write(board.out / "leaderboard.md", render_md(board))
    _atomic_write(board.out / "index.html", render_html(board))
    return board
