"""The board as Markdown: a table per record (newest run of each name), best value per column in bold."""

from __future__ import annotations

from .board import Board
from .tables import build_table, provenance_line


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_md(board: Board) -> str:
    lines = [
        "# sci-fm benchmark leaderboard",
        "",
        f"{board.n_records} result record(s) from `benchmarks/results/`. "
        "Best value per column in **bold** "
        "(↓ lower is better, ↑ higher is better). Regenerate with `uv run sci-fm bench board`; "
        "`index.html` next to this file has sortable tables.",
        "",
    ]
    if not board.suites:
        lines += ["_No results yet._", ""]
    if board.suites:
        lines += ["Suites: " + " · ".join(f"[{s}](#{s})" for s in board.suites), ""]
    for suite, groups in board.suites.items():
        lines += [f"## {suite}", ""]
        for g in groups:
            rec = g.latest
            title = rec.data.get("title") or g.name
            lines += [
                f"### {title} (`{g.name}`)",
                "",
                f"_{provenance_line(rec.data)}_ — [record]({board.record_link(rec)})",
                "",
            ]
            table = build_table(rec.data)
            lines.append("| " + " | ".join(_cell(c.header) for c in table.columns) + " |")
            lines.append("|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|")
            for row in table.rows:
                cells = (f"**{_cell(x.text)}**" if x.best else _cell(x.text) for x in row)
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            for fig in board.figures.get(rec.path, []):
                lines += [f"![{fig.caption}]({fig.src})", ""]
            if len(g.runs) > 1:
                lines.append(f"Earlier runs of `{g.name}`:")
                for old in g.runs[1:]:
                    link = f"[{old.path.name}]({board.record_link(old)})"
                    lines.append(f"- {link} — {provenance_line(old.data)}")
                lines.append("")
        for fig in board.summaries.get(suite, []):
            lines += [f"![{fig.caption}]({fig.src})", "", f"_{fig.caption}_", ""]
    if board.warnings:
        lines += ["## Skipped files", ""] + [f"- {_cell(w)}" for w in board.warnings] + [""]
    return "\n".join(lines).rstrip() + "\n"
