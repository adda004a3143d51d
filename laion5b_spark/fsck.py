"""``check`` (an fsck of the lake contract) and ``vacuum`` (remove what no manifest lists).

``check(lake)`` reads every table's manifest and its folder and reports, one line each, where the lake breaks
the contract of ``docs/LAKE.md``: a listed file missing or of another size, a unit or file listed twice, a ledger
that does not balance, a parquet file whose row count is not the listed one, a file a plain reader globbing
``data/*.parquet`` (or a side-file folder) sees that the manifest does not list, a commit left half done, a
``uid`` listed twice. It never changes the lake. ``python -m laion5b_spark.describe LAKE --check`` prints it.

``vacuum(lake)`` lists what no manifest lists - orphan files under ``data/`` and the side folders, staging
folders of dead runs, index builds no pointer names - and with ``apply=True`` finishes pending commits first,
then deletes them. Error samples (``_errors/``) and run records are kept: they document what happened.
``python -m laion5b_spark.vacuum LAKE [--apply]`` runs it.

Both read the table's folder first, then the commit intents, then the manifest: a file a concurrent commit moved
into ``data/`` is then either named by a pending intent or listed by the manifest, never taken for an orphan.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as _dt
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .accounting import ledgers_from_dict
from .compact.rule import OFFERS
from .lake import COMMIT_PREFIX, DATA, ERRORS, MANIFEST, RUNS, STAGING, FileEntry, Lake, LakeError, Table

DIED_AFTER_S = 600  # a "running" record whose heartbeat is older than this is reported as died
INDEX = "index"
INDEX_POINTER = "_index.json"  # laion5b_spark.index.layout.POINTER (not imported: the index package loads faiss)
# tables where a uid legitimately repeats, and the key that must not: the same (url, text) on many pages
ROW_KEYS: dict[str, tuple[str, ...]] = {"pairs": ("uid", "source_file", "source_offset")}
# files a job writes at a table's root from its manifest after each run: part of the layout, listed nowhere
ROOT_FILES: dict[str, frozenset[str]] = {"release": frozenset({"README.md", "webdataset.json"})}  # export's card, lists
_TMP = re.compile(r"\.tmp-[0-9a-f]{32}$")  # Lake.write_bytes / upload temporaries of a killed write
_BUCKET_ROWS = 1 << 25  # uid keys held in memory at once (x 12-28 bytes); bigger tables spill to local buckets


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# -- run records ----------------------------------------------------------------------------------------
def _parse_time(value) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


@dataclass
class RunInfo:
    job: str
    run_id: str
    record: dict

    @property
    def status(self) -> str:
        return str(self.record.get("status", "?"))

    def heartbeat_age(self, now: float) -> float | None:
        beat = _parse_time(self.record.get("heartbeat") or self.record.get("started"))
        return None if beat is None else now - beat

    def live(self, now: float, max_age_s: float) -> bool:
        """Running with a heartbeat younger than ``max_age_s`` (an unreadable heartbeat counts as live: the safe
        side for vacuum)."""
        if self.status != "running" or self.record.get("ended"):
            return False
        age = self.heartbeat_age(now)
        return age is None or age <= max_age_s


def _read_json(lake: Lake, path: str, rel: str, problems: list[str]):
    """A JSON file of the lake, or None: unreadable ones become a problem line instead of stopping the check."""
    try:
        return lake.read_json(path)
    except LakeError as exc:
        problems.append(f"{rel}: {exc}")
        return None


def _run_records(lake: Lake) -> tuple[dict[str, RunInfo], list[str]]:
    """Every run record by run id, and a problem line for each one that does not parse."""
    runs, problems = {}, []
    for job in lake.jobs():
        for p in lake.glob(lake.path(RUNS, job, "*.json")):
            rel = f"{RUNS}/{job}/{posixpath.basename(p)}"
            run_id = posixpath.basename(p)[:-5]
            rec = _read_json(lake, p, rel, problems)
            if rec is None:  # unreadable (a problem), or removed while we listed
                continue
            if not isinstance(rec, dict) or "status" not in rec:
                problems.append(f"{rel}: not a run record (no status)")
                continue
            runs[run_id] = RunInfo(job, run_id, rec)
    return runs, problems


# -- listing -----------------------------------------------------------------------------------------------
def _mtime(info: dict) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        v = info.get(key)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return v.timestamp() if v.tzinfo else calendar.timegm(v.timetuple())
    return None


def _listing(lake: Lake, root: str) -> dict[str, dict]:
    """Every file under ``root`` (fresh, not from a listing cache): path relative to root -> fsspec info."""
    lake.fs.invalidate_cache(root)
    try:
        found = lake.fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    prefix = root.rstrip("/") + "/"
    return {p[len(prefix):]: info for p, info in found.items()
            if p.startswith(prefix) and info.get("type", "file") != "directory"}


def _size(info: dict) -> int:
    return int(info.get("size") or info.get("Size") or 0)


def _top(rel: str) -> str:
    return rel.split("/", 1)[0]


def _is_side_folder(top: str) -> bool:
    return top != DATA and not top.startswith("_") and not top.startswith(".")


@dataclass
class _Intent:
    rel: str  # relative to the table
    run_id: str
    files: set[str]  # what it moves in and what it removes, relative to the table
    moves: list[str]


def _intents(lake: Lake, t: Table) -> tuple[list[_Intent], list[str]]:
    """Pending commit intents of a table, read fresh; problem lines for unreadable ones."""
    lake.fs.invalidate_cache(t.path(STAGING))
    out, problems = [], []
    for p in lake.glob(t.path(f"{STAGING}/*/{COMMIT_PREFIX}*.json")):
        rel = p[len(t.root.rstrip("/")) + 1:]
        d = _read_json(lake, p, rel, problems)
        if d is None:  # unreadable (a problem), or finished while we listed
            continue
        moves = []
        try:
            for e in d.get("entries", []):
                moves += FileEntry.from_dict(e).files()
            removes = list(d.get("remove", []))
        except (TypeError, AttributeError):
            problems.append(f"{rel}: not a commit intent")
            continue
        out.append(_Intent(rel, str(d.get("run_id") or rel.split("/")[1]), set(moves) | set(removes), moves))
    return out, problems


# -- duplicate keys -----------------------------------------------------------------------------------------
class KeyDuplicates:
    """Exact duplicates of an integer key (uid, or uid + more integer columns) over many files, with numpy.

    Small inputs are sorted in memory; more than ``bucket_rows`` expected rows are spread over local bucket files
    by a hash of the first column, and each bucket is sorted on its own (bounded memory at any table size)."""

    def __init__(self, fields: tuple[str, ...], expected_rows: int, bucket_rows: int = _BUCKET_ROWS):
        self.fields = tuple(fields)
        self.dtype = np.dtype([("file", "<i4")] + [(f, "<i8") for f in self.fields])
        self.buckets = 1
        while expected_rows > self.buckets * bucket_rows:
            self.buckets *= 2
        self.bits = self.buckets.bit_length() - 1
        self.chunks: list[np.ndarray] = []
        self.dir = tempfile.mkdtemp(prefix="l5s-fsck-") if self.buckets > 1 else None

    def add(self, file_index: int, columns: list[np.ndarray]) -> None:
        rec = np.empty(len(columns[0]), self.dtype)
        rec["file"] = file_index
        for name, col in zip(self.fields, columns):
            rec[name] = col
        if self.dir is None:
            self.chunks.append(rec)
            return
        mixed = rec[self.fields[0]].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps: a cheap mix
        bucket = (mixed >> np.uint64(64 - self.bits)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        rec, bucket = rec[order], bucket[order]
        bounds = np.searchsorted(bucket, np.arange(self.buckets + 1))
        for b in range(self.buckets):
            if bounds[b] < bounds[b + 1]:
                with open(os.path.join(self.dir, f"{b}.bin"), "ab") as f:
                    f.write(rec[bounds[b]:bounds[b + 1]].tobytes())

    def _parts(self):
        if self.dir is None:
            yield np.concatenate(self.chunks) if self.chunks else np.empty(0, self.dtype)
            return
        for b in range(self.buckets):
            p = os.path.join(self.dir, f"{b}.bin")
            if os.path.exists(p):
                yield np.fromfile(p, dtype=self.dtype)

    def result(self) -> tuple[int, int, tuple | None, list[int]]:
        """(keys seen more than once, rows beyond the first of each, the smallest such key, its files)."""
        keys = extra = 0
        example, example_files = None, []
        try:
            for a in self._parts():
                if len(a) < 2:
                    continue
                a = a[np.lexsort([a[f] for f in reversed(self.fields)])]
                same = np.ones(len(a) - 1, dtype=bool)
                for f in self.fields:
                    same &= a[f][1:] == a[f][:-1]
                n = int(same.sum())
                if not n:
                    continue
                extra += n
                starts = np.flatnonzero(same & ~np.concatenate([[False], same[:-1]]))
                keys += len(starts)
                i = int(starts[0])  # sorted: the smallest duplicated key of this part
                key = tuple(int(a[f][i]) for f in self.fields)
                if example is None or key < example:
                    j = i
                    while j + 1 < len(a) and same[j]:
                        j += 1
                    example, example_files = key, sorted({int(x) for x in a["file"][i:j + 1]})
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
        return keys, extra, example, example_files


# -- check --------------------------------------------------------------------------------------------------
@dataclass
class TableSummary:
    name: str
    units: int = 0
    files: int = 0  # parquet files listed
    side_files: int = 0
    rows: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        side = f" + {self.side_files:,} side files" if self.side_files else ""
        return (f"{self.name}: {state} - {self.units:,} units, {self.files:,} files{side}, {self.rows:,} rows, "
                f"{_mb(self.bytes)}")


@dataclass
class CheckReport:
    lake: str
    tables: dict[str, TableSummary] = field(default_factory=dict)
    lake_problems: list[str] = field(default_factory=list)  # run records, indices
    lake_notes: list[str] = field(default_factory=list)
    runs: int = 0

    @property
    def problems(self) -> list[str]:
        """Every problem, one line each, prefixed with where it is (``table: ...``)."""
        return [p for t in self.tables.values() for p in t.problems] + list(self.lake_problems)

    @property
    def notes(self) -> list[str]:
        return [n for t in self.tables.values() for n in t.notes] + list(self.lake_notes)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"check of {self.lake}: {len(self.tables)} table(s), {self.runs} run record(s)"]
        for t in self.tables.values():
            out.append("  " + t.line())
            out += [f"    PROBLEM {p}" for p in t.problems] + [f"    note    {n}" for n in t.notes]
        out += [f"  PROBLEM {p}" for p in self.lake_problems] + [f"  note    {n}" for n in self.lake_notes]
        n = len(self.problems)
        out.append(f"check: {n} problem(s)" if n else "check: clean")
        return out


def _read_file(t: Table, rel: str, key: tuple[str, ...]):
    """(row count from the footer, the key columns if the file has them, an error line)."""
    lake = t.lake
    f = None
    try:
        f = lake.fs.open(t.path(rel), "rb") if not lake.is_local else None
        pf = pq.ParquetFile(f if f is not None else t.path(rel))
        names = pf.schema_arrow.names
        cols = None
        if key[0] in names:
            cols = pf.read(columns=[c for c in key if c in names]) if all(c in names for c in key) else \
                pf.read(columns=[key[0]])
        return pf.metadata.num_rows, cols, None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is the finding, not a crash
        text = str(exc).strip().splitlines()
        return None, None, f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
    finally:
        if f is not None:
            f.close()


def check_table(lake: Lake, name: str, runs: dict[str, RunInfo] | None = None, now: float | None = None,
                bucket_rows: int = _BUCKET_ROWS) -> TableSummary:
    now = time.time() if now is None else now
    runs = _run_records(lake)[0] if runs is None else runs
    t = lake.table(name)
    s = TableSummary(name)
    problem = lambda msg: s.problems.append(f"{name}: {msg}")  # noqa: E731
    note = lambda msg: s.notes.append(f"{name}: {msg}")  # noqa: E731

    stored = _listing(lake, t.root)  # folder first, then intents, then the manifest (see the module doc)
    intents, bad = _intents(lake, t)
    for b in bad:
        problem(b)
    try:
        m = t.manifest()
    except LakeError as exc:
        problem(f"manifest unreadable: {exc}")
        return s
    committed = t.exists()
    if not committed:
        note(f"nothing committed yet (no {MANIFEST}), only staged files")
    entries: list[FileEntry] = []
    for i, d in enumerate(m.get("files") or []):
        try:
            entries.append(FileEntry.from_dict(d))
        except (TypeError, AttributeError):
            problem(f"manifest entry #{i} is not a file entry: {orjson.dumps(d).decode()[:120]}")
    s.units = len(entries)

    # pending commits
    in_flight: set[str] = set()
    for it in intents:
        in_flight |= it.files
        placed = sum(1 for rel in it.moves if rel in stored)
        info = runs.get(it.run_id)
        if info is not None and info.live(now, DIED_AFTER_S):
            note(f"commit in progress: {it.rel} (run {it.run_id} of {info.job} is running)")
        else:
            problem(f"pending commit intent {it.rel} ({len(it.moves)} files, {placed} already placed): a commit "
                    "was killed half done; run any writing job or vacuum to finish it")

    # units and files listed once, where they belong, with their sizes
    for unit, n in Counter(e.unit for e in entries).items():
        if n > 1:
            problem(f"unit {unit!r} is listed {n} times")
    listed = Counter(rel for e in entries for rel in e.files())
    for rel, n in sorted(listed.items()):
        if n > 1:
            problem(f"{rel} is listed {n} times")
    parquet_files: list[tuple[FileEntry, str]] = []
    for e in entries:
        s.rows += e.rows or 0
        s.bytes += e.bytes or 0
        s.side_files += len(e.extra)
        if e.path:
            s.files += 1
            if not (isinstance(e.path, str) and e.path.startswith(f"{DATA}/") and e.path.endswith(".parquet")
                    and ".." not in e.path.split("/")):
                problem(f"unit {e.unit!r}: its file {e.path!r} is not a parquet file under {DATA}/")
                continue
        elif e.rows:
            problem(f"unit {e.unit!r} lists {e.rows:,} rows but no file")
        for kind, rel in e.extra.items():
            if not (isinstance(rel, str) and _is_side_folder(_top(rel)) and "/" in rel
                    and ".." not in rel.split("/")):
                problem(f"unit {e.unit!r}: side file {kind}={rel!r} is not under a side-file folder (e.g. tar/)")
        sizes, missing = 0, []
        for rel in e.files():
            info = stored.get(rel)
            if info is None:  # maybe committed after we listed: look again
                try:
                    lake.fs.invalidate_cache(posixpath.dirname(t.path(rel)))
                    info = lake.fs.info(t.path(rel))
                except FileNotFoundError:
                    missing.append(rel)
                    continue
            sizes += _size(info)
        for rel in missing:
            problem(f"{rel} (unit {e.unit!r}) is listed but missing")
        if not missing and sizes != e.bytes:
            problem(f"unit {e.unit!r}: its files are {sizes:,} bytes, the manifest lists {e.bytes:,} "
                    f"({', '.join(e.files())})")
        if e.path and e.path not in missing:
            parquet_files.append((e, e.path))
        # ledgers: each one balances (rows of which kind they count is the stage's business)
        try:
            if not isinstance(e.counts, dict):
                raise TypeError("counts is not a mapping")
            ledgers = ledgers_from_dict(e.counts)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            problem(f"unit {e.unit!r}: ledgers unreadable ({type(exc).__name__}: {exc})")
            continue
        for lg in ledgers.values():
            if not lg.balanced():
                problem(f"unit {e.unit!r}: ledger {lg.name!r} does not balance: {lg.rows_in:,} in != "
                        f"{lg.rows_out:,} out + {sum(lg.dropped.values()):,} dropped + "
                        f"{sum(lg.failed.values()):,} failed ({lg.unaccounted:+,} unaccounted)")

    # what a plain reader sees: exactly the listed files under data/ and the side folders
    listed_set = set(listed)
    staging_runs: dict[str, list[str]] = {}
    for rel in sorted(stored):
        top = _top(rel)
        if rel == MANIFEST or top == ERRORS:
            continue
        if top == STAGING:
            parts = rel.split("/")
            if len(parts) > 2:
                staging_runs.setdefault(parts[1], []).append(rel)
            continue
        if rel in ROOT_FILES.get(name, ()):
            continue
        if "/" not in rel:
            if _TMP.search(rel):
                note(f"{rel} is a temporary file of a killed write; vacuum removes it")
            else:
                note(f"{rel} is not part of the lake layout; left alone")
            continue
        if top == DATA or _is_side_folder(top):
            if rel in listed_set or rel in in_flight:
                continue
            if not committed:
                problem(f"{rel} is in a table with no {MANIFEST} yet: plain readers see it; remove it (vacuum "
                        "leaves the data of a folder it has no manifest for alone)")
            elif top == DATA and not rel.endswith(".parquet"):
                problem(f"{rel} is not committed: readers opening {DATA}/ as a folder see it; run vacuum --apply")
            else:
                problem(f"{rel} is not committed: plain readers see it; run vacuum --apply")
    for run_id, rels in sorted(staging_runs.items()):
        info = runs.get(run_id)
        size = sum(_size(stored[r]) for r in rels)
        if info is not None and info.live(now, DIED_AFTER_S):
            continue
        state = "no run record" if info is None else f"run {info.status}" if info.status != "running" else "run died"
        if name == "images" and all(r.startswith(f"{STAGING}/{run_id}/{OFFERS}/") for r in rels):
            note(f"{STAGING}/{run_id}/{OFFERS}/: {len(rels) // 2} files' compactions written by clip ({_mb(size)}, "
                 f"{state}); jobs/compact.py takes them (vacuum removes them: compact then reads those files)")
            continue
        note(f"{STAGING}/{run_id}/: {len(rels)} uncommitted files ({_mb(size)}, {state}); vacuum removes it "
             "once the run is over")

    # row counts from the footers, and the row key listed once
    key = ROW_KEYS.get(name, ("uid",))
    total = sum(e.rows or 0 for e, _ in parquet_files)
    dups = KeyDuplicates(key, total, bucket_rows)
    nulls = 0
    coded: set[str] = set()
    workers = 8 if lake.is_local else 16
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda item: _read_file(t, item[1], key), parquet_files)
        codes: dict = {}
        for i, ((e, rel), (n, cols, err)) in enumerate(zip(parquet_files, results)):
            if err is not None:
                problem(f"{rel} (unit {e.unit!r}) is not a readable parquet file: {err}")
                continue
            if n != e.rows:
                problem(f"{rel} has {n:,} rows (parquet footer), the manifest lists {e.rows:,}")
            if cols is None:
                continue
            if cols.num_columns < len(key):
                problem(f"{rel} has {key[0]} but not {', '.join(key[1:])}: cannot check its row keys")
                continue
            first = cols.column(key[0])
            if not pa.types.is_integer(first.type):
                note(f"{rel}: {key[0]} is {first.type}, not an integer; its uniqueness is not checked")
                continue
            nulls += first.null_count
            valid = cols.filter(pc.is_valid(first)) if first.null_count else cols
            arrays = []
            for c in key:
                col = valid.column(c)
                if pa.types.is_integer(col.type):
                    arrays.append(col.fill_null(-1).cast(pa.int64()).to_numpy())
                else:  # e.g. source_file: a code per distinct value, the same across files
                    coded.add(c)
                    values = col.cast(pa.string()).fill_null("").to_pylist()
                    arrays.append(np.fromiter((codes.setdefault(v, len(codes)) for v in values),
                                              dtype=np.int64, count=len(values)))
            dups.add(i, arrays)
    n_keys, extra, example, ex_files = dups.result()
    if nulls:
        problem(f"{nulls:,} rows have a null {key[0]}")
    if n_keys:
        where = ", ".join(parquet_files[j][1] for j in ex_files[:3]) + (" ..." if len(ex_files) > 3 else "")
        if len(key) == 1:
            problem(f"{n_keys:,} {key[0]}{' appears' if n_keys == 1 else 's appear'} more than once ({extra:,} "
                    f"extra rows), e.g. {key[0]} {example[0]} in {where}")
        else:
            names = {v: k for k, v in codes.items()}
            shown = ", ".join(f"{c} {names[v]!r}" if c in coded else f"{c} {v}" for c, v in zip(key, example))
            problem(f"{n_keys:,} ({', '.join(key)}) keys appear more than once ({extra:,} extra rows), e.g. "
                    f"{shown} in {where}")
    return s


def _check_indices(lake: Lake, report: CheckReport) -> None:
    for name, builds, pointer, err in _indices(lake):
        if err:
            report.lake_problems.append(f"{INDEX}/{name}/{INDEX_POINTER}: {err}")
            continue
        build = (pointer or {}).get("build")
        if pointer is not None:
            if build not in builds:
                report.lake_problems.append(f"{INDEX}/{name}/{INDEX_POINTER} names build {build!r}, which is "
                                            "missing: rerun jobs/index.py")
            elif isinstance(pointer.get("index"), str) and not lake.fs.exists(lake.index_path(name, pointer["index"])):
                report.lake_problems.append(f"{INDEX}/{name}/{INDEX_POINTER} names {pointer['index']}, which is "
                                            "missing: rerun jobs/index.py")
        for b in sorted(set(builds) - {build}):
            report.lake_notes.append(f"{INDEX}/{name}/{b}/ is a build no pointer names; vacuum removes it")


def _indices(lake: Lake):
    """(name, build folders, pointer or None, error) for each ``LAKE/index/<name>/``."""
    for p in lake.listdir(lake.path(INDEX), fresh=True):
        name = posixpath.basename(p.rstrip("/"))
        if name.startswith(("_", ".")) or not lake.fs.isdir(p):
            continue
        builds = [posixpath.basename(b.rstrip("/")) for b in lake.listdir(p, fresh=True) if lake.fs.isdir(b)]
        builds = [b for b in builds if not b.startswith(("_", "."))]
        try:
            pointer = lake.read_json(lake.index_path(name, INDEX_POINTER))
            err = None if pointer is None or isinstance(pointer, dict) else "not an index pointer"
        except LakeError as exc:
            pointer, err = None, str(exc)
        yield name, builds, pointer, err


def _table_names(lake: Lake) -> list[str]:
    """The tables, and folders that hold only a ``_staging/`` so far (a first run killed before its first commit)."""
    names = set(lake.tables())
    for p in lake.listdir(lake.root):
        top = posixpath.basename(p.rstrip("/"))
        if top.startswith(("_", ".")) or top == INDEX or top in names:
            continue
        if lake.fs.isdir(p) and lake.listdir(posixpath.join(p, STAGING)):
            names.add(top)
    return sorted(names)


def check(lake: Lake, now: float | None = None, bucket_rows: int = _BUCKET_ROWS) -> CheckReport:
    """Verify the lake contract for every table, the run records and the index pointers; changes nothing."""
    now = time.time() if now is None else now
    report = CheckReport(lake.url)
    runs, bad = _run_records(lake)
    report.runs = len(runs) + len(bad)
    report.lake_problems += bad
    for name in _table_names(lake):
        report.tables[name] = check_table(lake, name, runs, now, bucket_rows)
    for r in sorted(runs.values(), key=lambda r: r.run_id):
        age = r.heartbeat_age(now)
        if r.status == "running" and not r.record.get("ended") and age is not None and age > DIED_AFTER_S:
            report.lake_notes.append(f"run {r.run_id} of {r.job} died: status running, last heartbeat "
                                     f"{r.record.get('heartbeat')} ({age / 60:,.0f} min ago); rerun the same "
                                     "command to resume it")
    _check_indices(lake, report)
    for p in lake.listdir(lake.root):
        top = posixpath.basename(p.rstrip("/"))
        if top.startswith(("_", ".")) or top == INDEX or top in report.tables or not lake.fs.isdir(p):
            continue
        report.lake_notes.append(f"{top}/ has no {MANIFEST}: not a table; left alone")
    return report


# -- vacuum -------------------------------------------------------------------------------------------------
@dataclass
class VacuumItem:
    what: str  # orphan | staging | temporary | index build
    where: str  # table name or index/<name>
    path: str  # relative to the table (or the index folder); a folder ends with /
    bytes: int
    files: int
    why: str = ""


_LABELS = {"orphan": "orphan file", "staging": "staging folder", "temporary": "temporary file"}


@dataclass
class VacuumReport:
    lake: str
    apply: bool
    items: list[VacuumItem] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # what looks removable but stays, and why
    finished: dict[str, int] = field(default_factory=dict)  # table -> pending commits finished (apply)
    pending: list[str] = field(default_factory=list)  # pending commits left for later
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items)

    @property
    def files(self) -> int:
        return sum(i.files for i in self.items)

    def paths(self, where: str | None = None) -> list[str]:
        return [i.path for i in self.items if where is None or i.where == where]

    def lines(self, limit: int = 20) -> list[str]:
        verb = "deleted" if self.apply else "would delete"
        out = [f"vacuum of {self.lake}" + ("" if self.apply else " (dry run)")]
        for table, n in sorted(self.finished.items()):
            if n:
                out.append(f"  {table}: finished {n} pending commit(s) first")
        out += [f"  pending: {p}" for p in self.pending]
        by_where: dict[str, list[VacuumItem]] = {}
        for i in self.items:
            by_where.setdefault(i.where, []).append(i)
        for where, items in sorted(by_where.items()):
            kinds = Counter(i.what for i in items)
            sizes, files = Counter(), Counter()
            for i in items:
                sizes[i.what] += i.bytes
                files[i.what] += i.files
            summary = ", ".join(f"{n} {_LABELS.get(k, k)}{'s' if n > 1 else ''} ({_mb(sizes[k])}"
                                + (f", {files[k]:,} files)" if k in ("staging", "index build") else ")")
                                for k, n in sorted(kinds.items()))
            out.append(f"  {where}: {verb} {summary}")
            for i in items[:limit]:
                out.append(f"    {i.path}  {_mb(i.bytes)}" + (f"  ({i.why})" if i.why else ""))
            if len(items) > limit:
                out.append(f"    ... and {len(items) - limit} more")
        out += [f"  kept: {k}" for k in self.kept]
        out += [f"  ERROR {e}" for e in self.errors]
        total = f"{len(self.items):,} item(s): {self.files:,} files, {_mb(self.bytes)}"
        if not self.items:
            out.append("vacuum: nothing to delete")
        elif self.apply:
            out.append(f"vacuum: deleted {total}")
        else:
            out.append(f"vacuum: would delete {total}; rerun with --apply to delete")
        return out


def _staging_age(lake: Lake, t: Table, run_id: str, stored: dict[str, dict], now: float) -> float | None:
    times = [_mtime(info) for rel, info in stored.items() if rel.startswith(f"{STAGING}/{run_id}/")]
    times = [x for x in times if x is not None]
    if not times and lake.is_local:
        try:
            times = [os.path.getmtime(t.path(f"{STAGING}/{run_id}"))]
        except OSError:
            return None
    return now - max(times) if times else None


def _vacuum_table(lake: Lake, name: str, runs: dict[str, RunInfo], report: VacuumReport, apply: bool,
                  min_age_s: float, now: float) -> None:
    t = lake.table(name)
    intents, bad = _intents(lake, t)
    if bad:
        report.errors += [f"{name}: {b}; nothing removed from this table" for b in bad]
        return

    def live_intent(it: _Intent) -> bool:
        info = runs.get(it.run_id)
        if info is not None:
            return info.live(now, min_age_s)
        try:
            age = now - (_mtime(lake.fs.info(t.path(it.rel))) or now)
        except FileNotFoundError:
            return False
        return age < min_age_s  # no record (a single-process writer): a young intent may be in flight

    writers = [r for r in runs.values() if r.record.get("table") == name and r.live(now, min_age_s)]
    if apply and intents:
        if writers:  # it finishes them itself (every writer recovers first); two committers must not race
            report.pending += [f"{name}: {it.rel} (left to run {writers[0].run_id} of {writers[0].job}, which is "
                               "writing this table)" for it in intents]
        elif any(live_intent(it) for it in intents):
            report.pending += [f"{name}: {it.rel} (a live run's commit in progress)" for it in intents
                               if live_intent(it)]
        else:
            try:
                report.finished[name] = t.recover()
            except Exception as exc:  # noqa: BLE001 - leave this table alone, say why
                report.errors.append(f"{name}: finishing pending commits failed ({type(exc).__name__}: {exc}); "
                                     "nothing removed from this table")
                return
    now = max(now, time.time())  # finishing commits took time and touched the staging folders
    stored = _listing(lake, t.root)  # folder, then intents, then the manifest (see the module doc)
    intents, bad = _intents(lake, t)
    try:
        m = t.manifest()
        listed = {rel for e in t.all_entries(m) for rel in e.files()}
    except (LakeError, TypeError) as exc:
        report.errors.append(f"{name}: manifest unreadable ({exc}); nothing removed from this table")
        return
    committed = t.exists()  # a folder with only staged files: its data/ is not ours to judge
    in_flight = {rel for it in intents for rel in it.files}
    intent_runs = {it.run_id for it in intents}
    if not apply:
        report.pending += [f"{name}: {it.rel} ({len(it.moves)} files): --apply finishes it first" for it in intents]

    todo: list[VacuumItem] = []
    for rel, info in sorted(stored.items()):
        top = _top(rel)
        if "/" not in rel:
            if _TMP.search(rel):
                age = now - (_mtime(info) or now)
                if age >= min_age_s:
                    todo.append(VacuumItem("temporary", name, rel, _size(info), 1, "a killed write"))
            continue
        if (top == DATA or _is_side_folder(top)) and rel not in listed and rel not in in_flight and committed:
            todo.append(VacuumItem("orphan", name, rel, _size(info), 1, "not listed"))
    for run_id in t.staging_runs():
        rels = [r for r in stored if r.startswith(f"{STAGING}/{run_id}/")]
        size = sum(_size(stored[r]) for r in rels if r not in {f"{STAGING}/{run_id}/{x}" for x in in_flight})
        info = runs.get(run_id)
        if info is not None:
            if info.live(now, min_age_s):
                report.kept.append(f"{name}/{STAGING}/{run_id}/ (run {run_id} of {info.job} is running)")
                continue
            why = f"run {info.status}" if info.status != "running" else "run died (no heartbeat)"
        else:
            age = _staging_age(lake, t, run_id, stored, now)
            if age is None:
                report.kept.append(f"{name}/{STAGING}/{run_id}/ (no run record and no file times)")
                continue
            if age < min_age_s:
                if rels:  # an empty folder left by a finished single-process writer is not worth a line
                    report.kept.append(f"{name}/{STAGING}/{run_id}/ (no run record, written {age:,.0f}s ago)")
                continue
            why = f"no run record, {age / 3600:,.1f} h old"
        if run_id in intent_runs:
            if apply:  # its commit is in flight (kept above) or could not be finished
                report.kept.append(f"{name}/{STAGING}/{run_id}/ (holds a pending commit)")
                continue
            why += "; its pending commit is finished first"
        todo.append(VacuumItem("staging", name, f"{STAGING}/{run_id}/", size, len(rels), why))
    report.items += todo
    if apply:
        for item in todo:
            try:
                if item.what == "staging":
                    t.clean_staging(item.path.split("/")[1])
                else:
                    t.remove_files([item.path])
            except Exception as exc:  # noqa: BLE001 - report it, go on with the rest
                report.errors.append(f"{name}: cannot delete {item.path}: {type(exc).__name__}: {exc}")


def _vacuum_indices(lake: Lake, runs: dict[str, RunInfo], report: VacuumReport, apply: bool, min_age_s: float,
                    now: float) -> None:
    live = [r for r in runs.values() if r.live(now, min_age_s)]
    protected = {str(r.record["build"]) for r in live if r.record.get("build")}
    every = any(r.job == INDEX and not r.record.get("build") for r in live)
    for name, builds, pointer, err in _indices(lake):
        where = f"{INDEX}/{name}"
        if err:
            report.errors.append(f"{where}/{INDEX_POINTER}: {err}; no build removed")
            continue
        named = (pointer or {}).get("build")
        for b in sorted(builds):
            if b == named:
                continue
            if b in protected or every:
                report.kept.append(f"{where}/{b}/ (an index run in progress)")
                continue
            found = _listing(lake, lake.index_path(name, b))
            times = [x for x in (_mtime(i) for i in found.values()) if x is not None]
            if times and now - max(times) < min_age_s:
                report.kept.append(f"{where}/{b}/ (written {now - max(times):,.0f}s ago)")
                continue
            item = VacuumItem("index build", where, f"{b}/", sum(_size(i) for i in found.values()), len(found),
                              "no pointer names it" if pointer is None else f"the pointer names {named}")
            report.items.append(item)
            if apply:
                try:
                    lake.rm(lake.index_path(name, b), recursive=True)
                except Exception as exc:  # noqa: BLE001
                    report.errors.append(f"{where}: cannot delete {b}/: {type(exc).__name__}: {exc}")


def vacuum(lake: Lake, apply: bool = False, min_age_s: float = 3600, now: float | None = None) -> VacuumReport:
    """What no manifest or pointer lists: orphan files under tables' ``data/`` and side folders, staging folders of
    runs that are over (ended, or ``running`` without a heartbeat for ``min_age_s``, or with no record and no write
    for ``min_age_s``), stray temporaries, unreferenced index builds. ``apply``: finish pending commits, then delete
    them. A live run's staging and commit are never touched; ``_errors/`` and ``_runs/`` are kept."""
    now = time.time() if now is None else now
    report = VacuumReport(lake.url, apply)
    runs, bad = _run_records(lake)
    report.kept += [f"{b} (its run's staging folders are judged by their age)" for b in bad]
    for name in _table_names(lake):
        _vacuum_table(lake, name, runs, report, apply, min_age_s, now)
    _vacuum_indices(lake, runs, report, apply, min_age_s, now)
    return report


# -- shared CLI pieces ----------------------------------------------------------------------------------------
def add_lake_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("lake", help="the lake root: a folder or s3://bucket/prefix")
    ap.add_argument("--storage-options", metavar="JSON", default=None,
                    help='fsspec options for the lake, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'')
    ap.add_argument("--config", default=None,
                    help="a pipeline profile (conf/pipeline/*.toml): its lake.storage_options")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="lake.storage_options={...}",
                    help="a setting, as for the jobs (only lake.storage_options matters here)")


def lake_from_args(ap: argparse.ArgumentParser, args) -> Lake:
    """The lake the arguments name, checked readable. Usage errors exit through ``ap.error``; an unusable lake
    raises LakeError, a broken profile ConfigError."""
    from .config import load_config

    opts = dict(load_config(args.config, args.overrides)["lake"]["storage_options"])
    if args.storage_options:
        try:
            given = orjson.loads(args.storage_options)
        except orjson.JSONDecodeError as exc:
            ap.error(f"--storage-options: not valid JSON ({exc})")
        if not isinstance(given, dict):
            ap.error("--storage-options: give a JSON object, e.g. '{\"anon\": true}'")
        opts.update(given)
    try:
        lake = Lake(args.lake, opts)
    except LakeError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unknown protocol, a bad option: one line
        raise LakeError(f"cannot open the lake {args.lake}: {type(exc).__name__}: {exc}") from None
    lake.check_readable()
    if lake.is_local and not os.path.isdir(lake.root):
        raise LakeError(f"no lake at {lake.root}: the folder does not exist")
    return lake
