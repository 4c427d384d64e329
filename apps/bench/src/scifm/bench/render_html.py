"""The board as one static ``index.html``: inline CSS and JS, images from ``img/`` next to it, no network.

Tables sort on a click on their header (numbers numerically, empty cells last). When the page has
loaded, a small script writes a self-check onto ``<html>``: ``data-images-total``, ``data-images-loaded``
(images decoded with a non-zero size) and ``data-external-requests`` (resources fetched from anything
but ``file:``/``data:``/``blob:``), which the tests read back from a headless browser.
"""

from __future__ import annotations

import json
from html import escape

from .board import Board, Figure
from .records import Record
from .tables import build_table, provenance_line

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
 padding:1rem 2rem;color:#1d1d1f;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-bottom:.2rem}h3 code{font-size:.8em;color:#555}
nav a{margin-right:1rem}.prov{color:#555;font-size:.85rem;margin:.2rem 0 .6rem}
table.board{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.9rem}
table.board th,table.board td{border:1px solid #ccc;padding:.25rem .6rem}
table.board th{background:#f2f2f5;cursor:pointer;user-select:none;white-space:nowrap}
table.board th[aria-sort=ascending]::after{content:" ▲"}
table.board th[aria-sort=descending]::after{content:" ▼"}
table.board td.num{text-align:right;font-variant-numeric:tabular-nums}
table.board td.best{font-weight:bold;background:#fff6d6}
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots figure{margin:0;max-width:520px}
.plots img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8rem;color:#555;text-align:center}
details{margin:.5rem 0 1rem}.warn{color:#8a4b00}.scroll{overflow-x:auto}
"""

JS = """
(function(){
  function key(td, numeric){
    var v = td.getAttribute('data-value');
    if (v === null || v === '') return null;
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(th){
    var table = th.closest('table'), tbody = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute('data-type') === 'num';
    var asc = th.getAttribute('aria-sort') !== 'ascending';
    Array.prototype.forEach.call(th.parentNode.children, function(h){ h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function(a, b){
      var x = key(a.cells[idx], numeric), y = key(b.cells[idx], numeric);
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return asc ? c : -c;
    });
    rows.forEach(function(r){ tbody.appendChild(r); });
  }
  document.querySelectorAll('table.board th').forEach(function(th){
    th.addEventListener('click', function(){ sortBy(th); });
    th.setAttribute('title', 'click to sort');
  });
  window.addEventListener('load', function(){
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
    var ext = performance.getEntriesByType('resource').filter(function(e){
      return !/^(file|data|blob):/.test(e.name); }).length;
    var root = document.documentElement;
    root.setAttribute('data-images-total', String(imgs.length));
    root.setAttribute('data-images-loaded', String(ok));
    root.setAttribute('data-external-requests', String(ext));
    root.setAttribute('data-ready', '1');
  });
})();
"""


def _figure(fig: Figure) -> str:
    return (
        f'<figure><img src="{escape(fig.src)}" alt="{escape(fig.caption)}" loading="eager">'
        f"<figcaption>{escape(fig.caption)}</figcaption></figure>"
    )


def _th(c) -> str:
    better = f' data-better="{c.better}"' if c.better else ""
    kind = "num" if c.numeric else "text"
    return f'<th data-key="{escape(c.key)}" data-type="{kind}"{better}>{escape(c.header)}</th>'


def _table(record: Record, table_id: str) -> str:
    table = build_table(record.data)
    head = "".join(_th(c) for c in table.columns)
    body = []
    for row in table.rows:
        tds = []
        for c, cell in zip(table.columns, row, strict=True):
            cls = (["num"] if c.numeric else []) + (["best"] if cell.best else [])
            value = "" if cell.value is None else (json.dumps(cell.value) if c.numeric else str(cell.value))
            text = escape(cell.text) + (" ★" if cell.best else "")
            title = ' title="best in this column"' if cell.best else ""
            tds.append(f'<td class="{" ".join(cls)}" data-value="{escape(value)}"{title}>{text}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="scroll"><table class="board" id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _record(board: Board, record: Record, table_id: str) -> list[str]:
    parts = [
        f'<p class="prov">{escape(provenance_line(record.data))} — '
        f'<a href="{escape(board.record_link(record))}">record</a></p>',
        _table(record, table_id),
    ]
    figs = board.figures.get(record.path, [])
    if figs:
        parts.append('<div class="plots">' + "".join(_figure(f) for f in figs) + "</div>")
    return parts


def render_html(board: Board) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sci-fm benchmark leaderboard</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        "<h1>sci-fm benchmark leaderboard</h1>",
        f'<p class="prov">{board.n_records} result record(s). Click a column header to sort; the best '
        "value of each ranked column is bold with a ★ (↓ lower is better, ↑ higher is better).</p>",
    ]
    if board.suites:
        out.append(
            "<nav>"
            + "".join(f'<a href="#suite-{escape(s)}">{escape(s)}</a>' for s in board.suites)
            + "</nav>"
        )
    else:
        out.append("<p>No results yet.</p>")
    for suite, groups in board.suites.items():
        out.append(f'<section id="suite-{escape(suite)}"><h2>{escape(suite)}</h2>')
        for gi, g in enumerate(groups):
            rec = g.latest
            title = rec.data.get("title") or g.name
            out.append(f'<article class="record"><h3>{escape(title)} <code>{escape(g.name)}</code></h3>')
            out += _record(board, rec, f"t-{suite}-{gi}-0")
            if len(g.runs) > 1:
                out.append(f"<details><summary>{len(g.runs) - 1} earlier run(s)</summary>")
                for ri, old in enumerate(g.runs[1:], start=1):
                    out += _record(board, old, f"t-{suite}-{gi}-{ri}")
                out.append("</details>")
            out.append("</article>")
        summaries = board.summaries.get(suite, [])
        if summaries:
            figs = "".join(_figure(f) for f in summaries)
            out.append(f'<h3>Summary</h3><div class="plots">{figs}</div>')
        out.append("</section>")
    if board.warnings:
        out.append(
            '<section id="skipped"><h2>Skipped files</h2><ul class="warn">'
            + "".join(f"<li>{escape(w)}</li>" for w in board.warnings)
            + "</ul></section>"
        )
    out += [f"<script>{JS}</script>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
