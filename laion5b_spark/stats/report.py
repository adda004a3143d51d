"""Everything the stats job computes, and the files it writes to ``LAKE/_reports/stats/``.

``report.html`` stands alone: the plots are embedded (base64 PNG) and also written beside it, linked, and the
sample thumbnails are embedded (base64 JPEG, 128 px), so it can be mailed, opened from an object store's console,
or read next to its PNGs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import orjson

from ..lake import Lake, utcnow
from ..notebook import _cell
from . import columns, plots
from .funnel import Funnel, funnel
from .runs import StageRuns, stage_runs
from .samples import Bucket, samples

REPORT_DIR = "stats"
THUMB = 128  # thumbnail size (px) of the sample images, embedded as JPEG data: URIs


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
    safety: columns.Safety | None = None
    samples: list[Bucket] = field(default_factory=list)  # per bucket: the release rows shown as thumbnails
    runs: list[StageRuns] = field(default_factory=list)  # durations and throughput per stage
    plot_notes: list[str] = field(default_factory=list)  # what is not plotted, and why


def compute(lake: Lake, top_domains: int = 20, bins: int = 50, with_plots: bool = True,
            samples_per_bucket: int = 16) -> Stats:
    if not with_plots:  # the funnel alone: manifests, run records and the images status column
        return Stats(funnel(lake), None, None, None, None, generated=utcnow())
    v = columns.Views(lake)
    try:
        s = Stats(funnel(lake), columns.similarity(v, bins), columns.sizes(v), columns.languages(v),
                  columns.domains(v, top_domains), generated=utcnow(), safety=columns.safety(v),
                  samples=samples(v, samples_per_bucket), runs=stage_runs(lake))
    finally:
        v.close()
    counted = _counted(lake, s.funnel)
    if s.similarity is not None and s.similarity.hist.total:
        s.plots["similarity.png"] = plots.similarity_histogram(s.similarity)
        where = ", ".join(f"{k} = {v:g}" for k, v in s.similarity.thresholds.items()) or "no clip run record"
        series = " / ".join(s.similarity.hist.counts)
        s.captions["similarity.png"] = (f"CLIP similarity of the {s.similarity.table} rows ({series}; release = "
                                        f"{counted}); threshold: {where}")
    else:
        s.funnel.notes.append("no scored rows: no similarity histogram")
    if s.sizes is not None and s.sizes.original_width.total + len(s.sizes.stored):
        s.plots["image_sizes.png"] = plots.size_histogram(s.sizes)
        whose = f"images of the {counted}" if s.sizes.of == columns.RELEASE_LABEL else "downloaded images"
        s.captions["image_sizes.png"] = f"{whose}: width, height and aspect ratio as downloaded, and size as stored"
    if s.safety is not None:
        png = plots.safety_histogram(s.safety)
        if png:
            s.plots["safety.png"] = png
            s.captions["safety.png"] = f"punsafe and pwatermark of the {counted}"
        for column, why in (("punsafe", "no NSFW head configured: clip.nsfw_head"),
                            ("pwatermark", "no watermark model configured: clip.watermark_model")):
            if s.safety.hists.get(column) is None and s.safety.rows:
                s.plot_notes.append(f"{column} is empty (null in all {s.safety.rows:,} release rows): {why}")
    if s.languages:
        table, ranked = s.languages
        what = counted if table == columns.RELEASE_LABEL else table
        s.plots["languages.png"] = plots.bar_chart(ranked, f"languages ({len(ranked)} in all)\nof the {what}")
        s.captions["languages.png"] = f"rows per language in the {what}"
    if s.domains:
        table, ranked, distinct = s.domains
        what = counted if table == columns.RELEASE_LABEL else table
        s.plots["domains.png"] = plots.bar_chart(ranked, f"top image hosts ({distinct:,} in all)\nof the {what}")
        s.captions["domains.png"] = f"rows per image host in the {what} (www. dropped)"
    return s


def _counted(lake: Lake, f: Funnel) -> str:
    """How the plots name the release: with its row count, and what it is built from."""
    release = f.stage("release")
    if release.rows is None:
        return "release"
    if "dedup_images" not in lake.tables():
        return f"release ({release.rows:,} rows = dataset: no dedup_images yet)"
    return f"release ({release.rows:,} rows: dataset minus {sum(release.dropped.values()):,} duplicates)"


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
            "counted": s.languages[0] if s.languages else None, "plots": sorted(s.plots), "plot_notes": s.plot_notes,
            "runs": [r.to_dict() for r in s.runs],
            "samples": {b.name: {"rows": b.rows, "uids": [r["uid"] for r in b.samples]} for b in s.samples}}
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
        "figure{margin:1.5em 0}img{max-width:100%}.meaning{text-align:left;color:#555}.empty{color:#a15c00}",
        f".grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax({THUMB + 20}px,1fr));gap:8px}}",
        ".grid figure{margin:0}</style></head><body>",
        f"<h1>Lake report</h1><p>{e(lake.url)}<br>generated {e(s.generated)} by jobs/stats.py</p>",
        "<h2>Funnel</h2>", _table(head, rows),
        "<h2>Why rows left</h2>",
        _table(["stage", "kind", "reason", "rows", "of stage input", "meaning"], reasons) if reasons
        else "<p>no drop or fail reasons recorded</p>",
    ]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    if s.runs:
        parts += ["<h2>Runs per stage</h2>", "<p>from the run records in _runs/&lt;job&gt;/: seconds summed over the "
                  "runs, rows its main ledger took in (each unit once, resumes included), and the latest run</p>",
                  _table(["stage", "runs", "seconds", "rows in", "rows out", "rows/s", "last run", "last seconds",
                          "last started"], [_run_row(r) for r in s.runs])]
    parts.append("<h2>Plots</h2>")
    parts += [f"<p class=empty>{e(n)}</p>" for n in s.plot_notes]
    for name, png in s.plots.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode()
        parts.append(f"<figure><img class=plot src='{uri}' alt='{e(name)}'><figcaption>{e(s.captions.get(name, ''))} "
                     f"(<a href='{e(name)}'>{e(name)}</a>)</figcaption></figure>")
    if not s.plots:
        parts.append("<p>nothing to plot yet</p>")
    if s.samples:
        parts.append("<h2>Sample images per bucket</h2><p>release rows of each bucket (LAION-5B's three parts), the "
                     "lowest uids first: the same rows on every run over the same release</p>")
        for b in s.samples:
            parts.append(f"<h3 id='bucket-{e(b.name)}'>{e(b.name)}: {b.rows:,} release rows"
                         f"{f', {len(b.samples)} shown' if b.samples else ''}</h3>")
            cells = [_cell(r, {"jpg": r.get("jpg")}, ["similarity", "punsafe", "pwatermark", "language"], THUMB)
                     for r in b.samples]
            parts.append(f"<div class=grid>{''.join(cells)}</div>" if cells else "<p>no rows in this bucket</p>")
    parts += ["<h2>Where the numbers come from</h2>", _table(["stage", "source"], sources), "</body></html>"]
    return "\n".join(parts)


def _run_row(r: StageRuns) -> list:
    rows_in = "-" if r.rows_in is None else f"{r.rows_in:,} {r.ledger}"
    rate = "-" if r.rows_per_s is None else f"{r.rows_per_s:,.1f}"
    last = "-" if r.last_seconds is None else f"{r.last_seconds:,.1f}"
    return [r.job, r.runs, f"{r.seconds:,.1f}", rows_in, _n(r.rows_out), rate, r.last_status, last,
            r.last_started or "-"]


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td{' class=meaning' if j == 5 and len(r) == 6 else ''}>{html.escape(str(c))}"
                                    f"</td>" for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}%"
