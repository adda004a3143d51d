"""Everything the stats job computes, and the files it writes to ``LAKE/_reports/stats/``.

``report.html`` stands alone: the plots are embedded (base64 PNG) and also written beside it, linked, so it
can be mailed, opened from an object store's console, or read next to its PNGs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import orjson

from ..lake import Lake, utcnow
from . import columns, plots
from .funnel import Funnel, funnel

REPORT_DIR = "stats"


@dataclass
class Stats:
    funnel: Funnel
    similarity: columns.Similarity | None
    sizes: columns.Sizes | None
    languages: tuple | None
    domains: tuple | None
    plots: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    captions: dict[str, str] = field(default_factory=dict)  # file name -> what it shows
    generated: str = ""


def compute(lake: Lake, top_domains: int = 20, bins: int = 50, with_plots: bool = True) -> Stats:
    if not with_plots:  # the funnel alone: manifests, run records and the images status column
        return Stats(funnel(lake), None, None, None, None, generated=utcnow())
    s = Stats(funnel(lake), columns.similarity(lake, bins), columns.sizes(lake), columns.languages(lake),
              columns.domains(lake, top_domains), generated=utcnow())
    if s.similarity is not None and s.similarity.hist.total:
        s.plots["similarity.png"] = plots.similarity_histogram(s.similarity)
        where = ", ".join(f"{k} = {v:g}" for k, v in s.similarity.thresholds.items()) or "no clip run record"
        s.captions["similarity.png"] = f"CLIP similarity of the {s.similarity.table} rows; threshold: {where}"
    else:
        s.funnel.notes.append("no scored rows: no similarity histogram")
    if s.sizes is not None and s.sizes.original_width.total + len(s.sizes.stored):
        s.plots["image_sizes.png"] = plots.size_histogram(s.sizes)
        s.captions["image_sizes.png"] = "downloaded images: width as downloaded, and size as stored"
    if s.languages:
        table, ranked = s.languages
        s.plots["languages.png"] = plots.bar_chart(ranked, f"languages of {table} ({len(ranked)} in all)")
        s.captions["languages.png"] = f"rows per language in {table}"
    if s.domains:
        table, ranked, distinct = s.domains
        s.plots["domains.png"] = plots.bar_chart(ranked, f"top image hosts of {table} ({distinct:,} in all)")
        s.captions["domains.png"] = f"rows per image host in {table} (www. dropped)"
    return s


def write_report(lake: Lake, s: Stats) -> dict:
    """Write the PNGs, ``stats.json`` and ``report.html``; return their URLs (``report``, ``json``, ``plots``)."""
    out = {"plots": {}}
    for name, png in s.plots.items():
        path = lake.report_path(REPORT_DIR, name)
        lake.write_bytes(path, png)
        out["plots"][name] = lake.url_of(path)
    data = {"generated": s.generated, "funnel": s.funnel.to_dict(), "reasons": s.funnel.reasons(),
            "thresholds": s.similarity.thresholds if s.similarity else {},
            "languages": s.languages[1] if s.languages else [], "domains": s.domains[1] if s.domains else [],
            "plots": sorted(s.plots)}
    path = lake.report_path(REPORT_DIR, "stats.json")
    lake.write_bytes(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
    out["json"] = lake.url_of(path)
    path = lake.report_path(REPORT_DIR, "report.html")
    lake.write_bytes(path, render_html(lake, s).encode())
    out["report"] = lake.url_of(path)
    return out


def render_html(lake: Lake, s: Stats) -> str:
    e = html.escape
    f = s.funnel
    head = ["stage", "table", "rows", "of previous", "of pairs", "rows in", "dropped", "failed", "pending"]
    rows = [[r["stage"], r["table"], _n(r["rows"]), _pct(r["of_previous"]), _pct(r["of_pairs"]), _n(r["rows_in"]),
             _n(r["dropped"]), _n(r["failed"]), _n(r["pending"])] for r in f.rows()]
    reasons = [[r["stage"], r["kind"], r["reason"], _n(r["rows"]), _pct(r["share"]), r["meaning"]] for r in f.reasons()]
    notes = f.notes + [f"{st.label}: {n}" for st in f.stages for n in st.notes]
    sources = [[st.label, st.source or "-"] for st in f.stages if st.built]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>laion5b-spark lake report</title><style>",
        "body{font:14px/1.4 sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}",
        "figure{margin:1.5em 0}img{max-width:100%}.meaning{text-align:left;color:#555}</style></head><body>",
        f"<h1>Lake report</h1><p>{e(lake.url)}<br>generated {e(s.generated)} by jobs/stats.py</p>",
        "<h2>Funnel</h2>", _table(head, rows),
        "<h2>Why rows left</h2>",
        _table(["stage", "kind", "reason", "rows", "of stage input", "meaning"], reasons) if reasons
        else "<p>no drop or fail reasons recorded</p>",
    ]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Plots</h2>")
    for name, png in s.plots.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        parts.append(f"<figure><img src='{uri}' alt='{e(name)}'><figcaption>{e(s.captions.get(name, ''))} "
                     f"(<a href='{e(name)}'>{e(name)}</a>)</figcaption></figure>")
    if not s.plots:
        parts.append("<p>nothing to plot yet</p>")
    parts += ["<h2>Where the numbers come from</h2>", _table(["stage", "source"], sources), "</body></html>"]
    return "\n".join(parts)


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=meaning' if j == 5 and len(r) == 6 else ''}>{html.escape(str(c))}"
                                    f"</td>" for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}%"
