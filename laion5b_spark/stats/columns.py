"""Column scans behind the plots: a few narrow columns of the tables, read from the listed files only.

Every scan is a DuckDB aggregate over views of the listed files (``Views``): one to four columns (never image
bytes or embeddings), grouped into histogram bins or value counts inside DuckDB, which spills to disk when a
join or a group-by outgrows memory. So a driver's memory does not grow with the table.

What the plots count is the release: ``dataset`` minus the rows ``dedup_images`` marks duplicate (``RELEASE``,
the funnel's last stage). Before a dataset exists they count the furthest table built, and say which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..config import DEFAULTS
from ..lake import Lake

# scheme://[user@]host[:port]/... -> host (group 1); hosts are lowercased and a leading "www." dropped
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.\-]*://(?:[^/@?#]*@)?([^/:?#]+)"
# the release: what funnel._release counts (a row marked duplicate is exact or near, both leave the release)
RELEASE = "select d.* from dataset d anti join (select uid from dedup_images where duplicate) x using (uid)"
RELEASE_LABEL = "release"
BUCKETS = ("english", "multilingual", "nolang")  # LAION-5B's three parts (laion2B-en, -multi, 1B-nolang)
ASPECT_LIMIT = 8.0  # aspect ratios beyond 1/8 .. 8 fall in the end bins


@dataclass
class Histogram:
    edges: np.ndarray  # bins + 1 edges
    counts: dict[str, np.ndarray]  # series label -> rows per bin

    @property
    def total(self) -> int:
        return int(sum(c.sum() for c in self.counts.values()))


@dataclass
class Similarity:
    hist: Histogram  # release / duplicates / below threshold (scored), or "release" when only the dataset exists
    table: str  # where the values come from: scored, or dataset when scored is absent
    thresholds: dict[str, float]  # label -> threshold of the clip run that scored them


@dataclass
class Sizes:
    of: str  # whose images: "release" or "downloaded" (images rows with status success, before a dataset exists)
    original_width: Histogram  # as downloaded
    original_height: Histogram
    aspect: Histogram  # original width / height, log-spaced edges
    stored: list[tuple[str, int]]  # "WxH" of the stored (resized) images -> images, most first


@dataclass
class Safety:
    """punsafe and pwatermark of the release: a histogram per column, or None where every value is null."""
    rows: int
    hists: dict[str, Histogram | None] = field(default_factory=dict)


class Views:
    """DuckDB views of the lake's tables (their listed files, ``notebook.to_duckdb``) and ``release``, on one
    connection; ``close()`` when done. A view is made the first time a query names its table."""

    def __init__(self, lake: Lake):
        import duckdb

        self.lake = lake
        self.tables = set(lake.tables())
        self.con = duckdb.connect()
        self._rels: dict = {}  # the relations stay referenced while queries run (arrow scans of s3 lakes)

    def has(self, name: str) -> bool:
        if name == RELEASE_LABEL:
            return "dataset" in self.tables
        return name in self.tables

    def view(self, name: str) -> str:
        """The view's name, made on first use (``release``: its dataset and dedup_images views too)."""
        if name not in self._rels:
            from ..notebook import to_duckdb

            if name == RELEASE_LABEL:
                self.view("dataset")
                if "dedup_images" in self.tables:
                    self.view("dedup_images")
                    self.con.execute(f"create view release as {RELEASE}")
                else:
                    self.con.execute("create view release as select * from dataset")
                self._rels[name] = None
            else:
                t = self.lake.table(name)
                if self.lake.is_local or not t.files():
                    rel = to_duckdb(t, self.con)
                else:  # an arrow scan: DuckDB binds no float16, so the embeddings (never scanned here) are left out
                    schema = t.dataset().schema
                    keep = [f for f in schema if "halffloat" not in str(f.type)]
                    rel = self.con.from_arrow(t.dataset(pa.schema(keep)))
                rel.create_view(name)
                self._rels[name] = rel
        return name

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def furthest(self, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` that has rows (``release`` when a dataset exists)."""
        for n in names:
            if n == RELEASE_LABEL and self.has(n):
                return n
            if n != RELEASE_LABEL and n in self.tables and self.lake.table(n).num_rows():
                return n
        return None

    def close(self) -> None:
        self.con.close()
        self._rels.clear()


def similarity(v: Views, bins: int = 50) -> Similarity | None:
    """Scored rows split three ways: in the release, passed but a duplicate, below the threshold."""
    marks = thresholds(v.lake)
    if v.has("scored"):
        dups = ("(select distinct uid from dedup_images where duplicate)" if v.has("dedup_images")
                else "(select null::bigint as uid where false)")
        if v.has("dedup_images"):
            v.view("dedup_images")
        source = (f"(select s.similarity as x, case when not coalesce(s.passed, false) then 'below threshold' "
                  f"when d.uid is not null then 'duplicate (not released)' else '{RELEASE_LABEL}' end as k "
                  f"from {v.view('scored')} s left join {dups} d using (uid) "
                  f"where s.status = 'scored' and s.similarity is not null)")
        table = "scored"
    elif v.has("dataset"):
        source, table = f"(select similarity as x, '{RELEASE_LABEL}' as k from {v.view(RELEASE_LABEL)})", "dataset"
    else:
        return None
    (lo, hi), = v.rows(f"select min(x), max(x) from {source}")
    if lo is None:
        return Similarity(Histogram(np.linspace(0, 1, bins + 1), {}), table, marks)
    lo, hi = min([lo, *marks.values()]), max([hi, *marks.values()])
    edges = np.linspace(lo, hi + 1e-6, bins + 1)
    counts = _histogram(v, source, "x", edges, by="k")
    order = [RELEASE_LABEL, "duplicate (not released)", "below threshold"]  # stacked bottom-up
    return Similarity(Histogram(edges, {k: counts[k] for k in order if k in counts}), table, marks)


def thresholds(lake: Lake) -> dict[str, float]:
    """The thresholds of the latest clip run that recorded its config (the multilingual one only when used)."""
    for r in reversed(lake.runs("clip")):
        c = (r.get("config") or {}).get("clip")
        if c and "threshold" in c:
            out = {f"threshold ({c.get('model', 'clip')})": float(c["threshold"])}
            if c.get("multilingual_model") and "multilingual_threshold" in c:
                out[f"multilingual ({c['multilingual_model']})"] = float(c["multilingual_threshold"])
                if "nolang_threshold" in c and float(c["nolang_threshold"]) != float(c["multilingual_threshold"]):
                    out[f"nolang ({c['multilingual_model']})"] = float(c["nolang_threshold"])
            return out
    return {}


def sizes(v: Views, bins: int = 40) -> Sizes | None:
    """Original width, height and aspect ratio, and stored size, of the release's images (images rows joined on
    uid; before a dataset exists: every downloaded image)."""
    if not v.has("images"):
        return None
    of = RELEASE_LABEL if v.has(RELEASE_LABEL) else "downloaded"
    keep = f"uid in (select uid from {v.view(RELEASE_LABEL)})" if of == RELEASE_LABEL else "true"
    source = (f"(select original_width as w, original_height as h, width as sw, height as sh "
              f"from {v.view('images')} where status = 'success' and {keep})")
    (wlo, whi, hlo, hhi), = v.rows(f"select min(w), max(w), min(h), max(h) from {source}")
    width = _edges(wlo, whi, bins)
    height = _edges(hlo, hhi, bins)
    lim = math.log(ASPECT_LIMIT)
    aspect = np.linspace(-lim, lim, 33)  # in ln(w/h): 16 bins per factor of 8 either side
    stored = v.rows(f"select sw || 'x' || sh as k, count(*) as n from {source} where sw is not null "
                    f"group by k order by n desc, k")
    ratio = f"(select ln(w::double / h) as r from {source} where w > 0 and h > 0)"
    return Sizes(of, Histogram(width, {"original width": _histogram(v, source, "w", width).get("", _zeros(width))}),
                 Histogram(height, {"original height": _histogram(v, source, "h", height).get("", _zeros(height))}),
                 Histogram(np.exp(aspect), {"aspect ratio": _histogram(v, ratio, "r", aspect).get("", _zeros(aspect))}),
                 [(k, int(n)) for k, n in stored])


def safety(v: Views, bins: int = 20) -> Safety | None:
    """punsafe and pwatermark of the release, as histograms over [0, 1]; None for a column with no values (no
    NSFW head / watermark model configured when the rows were scored)."""
    if not v.has(RELEASE_LABEL):
        return None
    release = v.view(RELEASE_LABEL)
    (rows, unsafe, watermark), = v.rows(f"select count(*), count(punsafe), count(pwatermark) from {release}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = Safety(int(rows))
    for column, present in (("punsafe", unsafe), ("pwatermark", watermark)):
        out.hists[column] = (Histogram(edges, {column: _histogram(v, release, column, edges).get("", _zeros(edges))})
                             if present else None)
    return out


def languages(v: Views) -> tuple[str, list[tuple[str, int]]] | None:
    """(what was counted, [(language, rows)] most first): the release when a dataset exists."""
    name = v.furthest((RELEASE_LABEL, "images", "pairs_unique", "pairs"))
    if name is None:
        return None
    got = v.rows(f"select coalesce(language, '(null)') as k, count(*) as n from {v.view(name)} "
                 f"group by k order by n desc, k")
    return name, [(k, int(n)) for k, n in got]


def domains(v: Views, top: int = 20) -> tuple[str, list[tuple[str, int]], int] | None:
    """(what was counted, the top image hosts [(host, rows)], how many distinct hosts) of the release's urls."""
    name = v.furthest((RELEASE_LABEL, "images", "pairs_unique"))
    if name is None:
        return None
    hosts = (f"(select coalesce(nullif(regexp_replace(lower(regexp_extract(url, ?, 1)), '^www\\.', ''), ''), "
             f"'(no host)') as host from {v.view(name)})")
    counts = f"(select host, count(*) as n from {hosts} group by host)"
    ranked = v.rows(f"select host, n from {counts} order by n desc, host limit ?", [_HOST, top])
    (distinct,), = v.rows(f"select count(*) from {counts}", [_HOST])
    return name, [(k, int(n)) for k, n in ranked], int(distinct)


def english_languages(lake: Lake) -> tuple[str, ...]:
    """The languages of the English bucket (clip.english) as scored was built with: its table settings, else the
    latest clip run record, else the default."""
    if "scored" in lake.tables():
        recorded = lake.table("scored").meta().get("clip.english")
        if recorded:
            return tuple(recorded)
    for r in reversed(lake.runs("clip")):
        english = ((r.get("config") or {}).get("clip") or {}).get("english")
        if english:
            return tuple(english)
    return tuple(DEFAULTS["clip"]["english"])


def bucket_of(english: tuple[str, ...]) -> str:
    """SQL for a row's bucket by its language, as clip.score places rows."""
    listed = ", ".join("'" + e.replace("'", "''") + "'" for e in english) or "null"
    return (f"case when language in ({listed}) then 'english' when language = 'nolang' then 'nolang' "
            f"else 'multilingual' end")


def _histogram(v: Views, source: str, value: str, edges: np.ndarray, by: str | None = None) -> dict[str, np.ndarray]:
    """Rows per bin of uniform ``edges`` (the last bin closed, values outside clamped to the end bins), per value
    of ``by`` ("" without), counted in DuckDB."""
    n, lo, width = len(edges) - 1, float(edges[0]), float(edges[1] - edges[0])
    got = v.rows(f"select {by or chr(39) * 2} as k, least(greatest(floor(({value} - ?) / ?), 0), ?)::int as b, "
                 f"count(*) as c from {source} where {value} is not null group by all", [lo, width, n - 1])
    out: dict[str, np.ndarray] = {}
    for k, b, c in got:
        out.setdefault(k, np.zeros(n, np.int64))[b] += c
    return out


def _edges(lo, hi, bins: int) -> np.ndarray:
    return np.linspace(lo, hi + 1, bins + 1) if lo is not None else np.linspace(0, 1, bins + 1)


def _zeros(edges: np.ndarray) -> np.ndarray:
    return np.zeros(len(edges) - 1, np.int64)
