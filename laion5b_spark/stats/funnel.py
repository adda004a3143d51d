"""The funnel: how many rows each stage kept, and why the others left.

pairs -> pairs_unique -> downloaded -> passed CLIP -> release. Row counts come from the manifests (and, where a
table mixes outcomes, a scan of one or two columns); reasons come from the ledgers the jobs committed: per unit
in the manifest entries where a job keeps them (extract, download, clip), else from the run records of the runs
a table's manifest lists (dedup's batches). So the funnel describes the committed tables, whatever reruns,
resumes or crashed runs happened on the way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..accounting import REASONS, Ledger, ledgers_from_dict, sum_ledgers
from ..lake import Lake, Table
from ..notebook import to_duckdb


@dataclass
class Stage:
    name: str  # pairs | pairs_unique | downloaded | passed_clip | release
    label: str
    table: str
    rows: int | None = None  # rows this stage holds; None: its table does not exist yet
    rows_in: int | None = None  # rows its step read (None: no ledger says)
    dropped: dict[str, int] = field(default_factory=dict)  # a decision (a filter said no)
    failed: dict[str, int] = field(default_factory=dict)  # bad input or an unreachable image
    pending: int = 0  # rows of the stage before that this step has not processed yet
    source: str = ""  # where the numbers come from
    notes: list[str] = field(default_factory=list)

    @property
    def built(self) -> bool:
        return self.rows is not None

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "table": self.table, "rows": self.rows,
                "rows_in": self.rows_in, "dropped": self.dropped, "failed": self.failed, "pending": self.pending,
                "source": self.source, "notes": self.notes}


@dataclass
class Funnel:
    lake: str
    stages: list[Stage]
    notes: list[str] = field(default_factory=list)  # lake-wide remarks (e.g. no dedup_images table)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def frame(self):
        """One row per stage: rows, share of the stage before and of pairs, rows in, dropped, failed, pending."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["stage", "table", "rows", "of_previous", "of_pairs", "rows_in",
                                                  "dropped", "failed", "pending"])

    def rows(self) -> list[dict]:
        out, prev = [], None
        first = self.stages[0].rows
        for s in self.stages:
            out.append({"stage": s.label, "table": s.table, "rows": s.rows,
                        "of_previous": _share(s.rows, prev), "of_pairs": _share(s.rows, first),
                        "rows_in": s.rows_in, "dropped": sum(s.dropped.values()), "failed": sum(s.failed.values()),
                        "pending": s.pending})
            prev = s.rows if s.built else prev
        return out

    def reasons(self) -> list[dict]:
        """Every drop and fail reason per stage, with its share of the stage's input and what it means."""
        out = []
        for s in self.stages:
            for kind, counts in (("dropped", s.dropped), ("failed", s.failed)):
                for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                    out.append({"stage": s.label, "kind": kind, "reason": reason, "rows": n,
                                "share": _share(n, s.rows_in), "meaning": REASONS.get(reason, "(not a known reason)")})
        return out

    def reasons_frame(self):
        import pandas as pd

        return pd.DataFrame(self.reasons(), columns=["stage", "kind", "reason", "rows", "share", "meaning"])

    def text(self) -> str:
        """The funnel as a fixed-width table, then the reasons and notes (what the stats job prints)."""
        head = f"{'stage':<26}{'rows':>12}{'of prev':>9}{'of pairs':>9}{'in':>12}{'dropped':>10}{'failed':>9}{'pending':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows():
            lines.append(f"{r['stage']:<26}{_n(r['rows']):>12}{_pct(r['of_previous']):>9}{_pct(r['of_pairs']):>9}"
                         f"{_n(r['rows_in']):>12}{_n(r['dropped']):>10}{_n(r['failed']):>9}{_n(r['pending']):>9}")
        reasons = self.reasons()
        if reasons:
            lines += ["", "reasons:"]
            for r in reasons:
                lines.append(f"  {r['stage']:<28}{r['kind']:<8}{r['reason']:<20}{r['rows']:>10,}{_pct(r['share']):>8}"
                             f"  {r['meaning']}")
        notes = self.notes + [f"{s.label}: {n}" for s in self.stages for n in s.notes]
        if notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"lake": self.lake, "stages": [s.to_dict() for s in self.stages], "notes": self.notes}


def funnel(lake: Lake) -> Funnel:
    tables = set(lake.tables())
    f = Funnel(lake.url, [])
    pairs = _pairs(lake, tables)
    unique = _pairs_unique(lake, tables, pairs)
    downloaded, images_rows = _downloaded(lake, tables, unique)
    passed = _passed_clip(lake, tables, downloaded, images_rows)
    release = _release(lake, tables, f)
    f.stages = [pairs, unique, downloaded, passed, release]
    if not tables:
        f.notes.append(f"the lake at {lake.url} holds no tables yet (run jobs/extract.py first)")
    return f


def table_ledgers(lake: Lake, table: Table, job: str) -> tuple[dict[str, Ledger], str]:
    """The ledgers behind a table's committed rows: summed over its manifest entries when they carry counts,
    else over the run records of the runs its manifest lists."""
    per_unit = [ledgers_from_dict(e.counts) for e in table.all_entries() if e.counts]
    if per_unit:
        return sum_ledgers(per_unit), f"{table.name} manifest (per-unit counts)"
    listed = set(table.runs())
    records = [r for r in lake.runs(job) if r.get("run_id") in listed and r.get("counts")]
    if records:
        return sum_ledgers([ledgers_from_dict(r["counts"]) for r in records]), f"{job} run records ({len(records)})"
    return {}, "manifest rows only (no counts recorded)"


def _pairs(lake: Lake, tables: set[str]) -> Stage:
    s = Stage("pairs", "pairs (extract)", "pairs")
    if "pairs" not in tables:
        return s
    t = lake.table("pairs")
    s.rows = t.num_rows()
    ledgers, s.source = table_ledgers(lake, t, "extract")
    if "img_tags" in ledgers:  # the pairs ledger: img tags seen -> pairs
        _take(s, ledgers["img_tags"])
    records = ledgers.get("records")
    if records and records.failed:
        s.notes.append("input records that failed: " + ", ".join(f"{r} {n:,}" for r, n in records.failed.most_common()))
    return s


def _pairs_unique(lake: Lake, tables: set[str], pairs: Stage) -> Stage:
    s = Stage("pairs_unique", "pairs_unique (dedup)", "pairs_unique")
    if "pairs_unique" not in tables:
        return s
    t = lake.table("pairs_unique")
    s.rows = t.num_rows()
    ledgers, s.source = table_ledgers(lake, t, "dedup")
    if "pairs" in ledgers:
        _take(s, ledgers["pairs"])
    if pairs.built:
        consumed = t.consumed("pairs")
        # pairs files no dedup batch has read yet (the incremental dedup's next input)
        s.pending = sum(e.rows for e in lake.table("pairs").entries() if e.path not in consumed) if consumed else 0
    return s


def _downloaded(lake: Lake, tables: set[str], unique: Stage) -> tuple[Stage, int | None]:
    s = Stage("downloaded", "downloaded (images)", "images")
    if "images" not in tables:
        return s, None
    t = lake.table("images")
    # DuckDB streams the two columns (out of core on a big table); the scan counts what the table holds now
    got = _sql(t, "select status = 'success' as ok, coalesce(reason, 'unknown') as reason, count(*) as n "
                  "from t group by all")
    reasons = Counter({r: n for ok, r, n in got if not ok})
    s.rows = sum(n for ok, _, n in got if ok)
    s.rows_in = s.rows + sum(reasons.values())
    ledgers, source = table_ledgers(lake, t, "download")
    ledger = ledgers.get("images")
    if ledger and ledger.rows_in == s.rows_in and Counter(ledger.dropped) + Counter(ledger.failed) == reasons:
        # the ledger agrees with the rows; it also says which reasons are decisions (dropped) and which failures
        s.dropped, s.failed, s.source = dict(ledger.dropped), dict(ledger.failed), f"images rows; {source}"
    else:
        s.failed, s.source = dict(reasons), "images rows (status, reason)"
        if ledger:
            s.notes.append("the download ledger does not match the images rows; reasons are from the rows")
    if unique.built:
        s.pending = max(0, unique.rows - s.rows_in)
        if s.pending:
            s.notes.append(f"{s.pending:,} pairs_unique rows are not downloaded yet (run jobs/download.py)")
    return s, s.rows_in


def _passed_clip(lake: Lake, tables: set[str], downloaded: Stage, images_rows: int | None) -> Stage:
    s = Stage("passed_clip", "passed CLIP (dataset)", "dataset")
    if "dataset" not in tables and "scored" not in tables:
        return s
    s.rows = lake.table("dataset").num_rows() if "dataset" in tables else 0
    if "scored" not in tables:
        s.notes.append("no scored table: the dataset's input is unknown")
        return s
    scored = lake.table("scored")
    ledgers, s.source = table_ledgers(lake, scored, "clip")
    ledger = ledgers.get("clip")
    if ledger:
        _take(s, ledger)
        # rows without an image are the failed downloads, already counted at the download stage
        no_image = s.failed.pop("no_image", 0)
        s.rows_in -= no_image
        if no_image:
            s.notes.append(f"{no_image:,} scored rows had no image (failed downloads, counted above)")
    if images_rows is not None:
        s.pending = max(0, images_rows - scored.num_rows())
        if s.pending:
            s.notes.append(f"{s.pending:,} images rows are not scored yet (run jobs/clip.py)")
    return s


def _release(lake: Lake, tables: set[str], f: Funnel) -> Stage:
    s = Stage("release", "release (minus duplicates)", "dataset")
    if "dataset" not in tables:
        return s
    dataset = lake.table("dataset")
    s.rows_in = dataset.num_rows()
    if "dedup_images" not in tables:
        s.rows, s.source = s.rows_in, "dataset manifest"
        f.notes.append("no dedup_images table: near-duplicate images are not removed from the release yet "
                       "(jobs/index.py writes it); release = dataset")
        return s
    # a join on uid (DuckDB: out of core when the release is big); a row is an exact duplicate when its
    # exact-copy representative is another row, else a near duplicate
    (exact, near, unchecked), = _sql(dataset, """
        select count(*) filter (where x.duplicate and x.exact_dup_of is not null and x.exact_dup_of <> t.uid),
               count(*) filter (where x.duplicate and (x.exact_dup_of is null or x.exact_dup_of = t.uid)),
               count(*) filter (where x.uid is null)
        from t left join x using (uid)""", x=lake.table("dedup_images"))
    s.dropped = {k: int(v) for k, v in (("exact_duplicate", exact), ("near_duplicate", near)) if v}
    s.rows, s.source = s.rows_in - exact - near, "dataset joined with dedup_images on uid"
    if unchecked:
        s.notes.append(f"{unchecked:,} dataset rows are not in dedup_images (not indexed yet): kept, unchecked")
    return s


def _sql(table: Table, query: str, **others: Table) -> list[tuple]:
    """Run ``query`` with ``t`` = table (and each keyword a view of that name) over the listed files."""
    import duckdb

    con = duckdb.connect()
    try:
        views = {"t": to_duckdb(table, con), **{n: to_duckdb(o, con) for n, o in others.items()}}
        for name, rel in views.items():  # the relations stay referenced while the query runs (arrow scans)
            rel.create_view(name)
        return con.sql(query).fetchall()
    finally:
        con.close()


def _take(s: Stage, ledger: Ledger) -> None:
    s.rows_in, s.dropped, s.failed = ledger.rows_in, dict(ledger.dropped), dict(ledger.failed)


def _share(n, of) -> float | None:
    return None if n is None or not of else n / of


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}%"
