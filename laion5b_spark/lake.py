"""The lake: one fsspec root holding tables, run records and error samples.

This module is the only place that knows lake paths. A table is ``LAKE/<table>/`` with parquet files and
``_manifest.json``; only files listed in the manifest exist for readers. Data files are written whole and
moved (local) or uploaded in one PUT (object stores); the manifest is rewritten last, by the driver alone.
"""

from __future__ import annotations

import datetime as _dt
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import fsspec
import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1


class LakeError(RuntimeError):
    """The lake cannot be used (unreachable, unwritable, corrupt manifest): the job stops with this message."""


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """Sorts in start order (to the microsecond), unique across drivers."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class LakeRef:
    """What a Spark task needs to reopen the lake: picklable, no open connections."""

    url: str
    storage_options: tuple = ()

    def open(self) -> "Lake":
        return Lake(self.url, dict(self.storage_options))


class Lake:
    def __init__(self, url: str, storage_options: dict | None = None):
        if "://" not in url:
            url = os.path.abspath(url)
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.is_local = "file" in _protocols(self.fs)

    @property
    def ref(self) -> LakeRef:
        return LakeRef(self.url, tuple(sorted(self.storage_options.items())))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def check_writable(self) -> None:
        """Fail early, with what to do, when the lake root cannot be written."""
        probe = self.path("_runs", f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.path("_runs"), exist_ok=True)
            self.write_bytes(probe, b"ok")
            self.fs.rm(probe)
        except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
            raise LakeError(
                f"cannot write to the lake at {self.url}: {type(exc).__name__}: {exc}. "
                "Check the path exists and is writable (for s3://, the bucket, credentials and AWS_ENDPOINT_URL)."
            ) from exc

    # -- whole-file I/O, atomic per file ------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)  # one PUT: atomic on object stores

    def upload(self, local_path: str, path: str) -> None:
        """Move a finished local file into the lake in one step."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            shutil.move(local_path, tmp)  # a rename on one device, else a copy: either way not yet visible
            os.replace(tmp, path)
        else:
            self.fs.put_file(local_path, path)

    def write_parquet(self, path: str, table: pa.Table, row_group_size: int = 128 * 1024) -> int:
        """A whole parquet file, written locally then moved/uploaded in one step. Returns its size in bytes."""
        fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix="l5s-")
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
            size = os.path.getsize(tmp)
            self.upload(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return size

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pa.Table:
        if self.is_local:
            return pq.read_table(path, columns=columns)
        with self.fs.open(path, "rb") as f:
            return pq.read_table(f, columns=columns)

    def local_copy(self, path: str, suffix: str = "") -> tuple[str, bool]:
        """A local file with ``path``'s bytes: the file itself on a local lake, else a temporary download.
        Returns (local path, whether it is a temporary the caller removes)."""
        if self.is_local:
            return path, False
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="l5s-")
        os.close(fd)
        self.fs.get_file(path, tmp)
        return tmp, True

    def read_json(self, path: str) -> dict | None:
        try:
            with self.fs.open(path, "rb") as f:
                return orjson.loads(f.read())
        except FileNotFoundError:
            return None

    def write_json(self, path: str, obj) -> None:
        self.write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    # -- tables and runs ------------------------------------------------------------------------------
    def table(self, name: str) -> "Table":
        return Table(self, name)

    def tables(self) -> list[str]:
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []
        names = []
        for e in entries:
            name = posixpath.basename(e.rstrip("/"))
            if not name.startswith("_") and self.fs.exists(posixpath.join(e, MANIFEST)):
                names.append(name)
        return sorted(names)

    # -- artifacts beside the tables: knn indices and reports --------------------------------------------
    def index_path(self, name: str, *parts: str) -> str:
        """``LAKE/index/<name>/...``: one knn index (``image``, ``text``): its pointer file and its builds."""
        return self.path("index", name, *parts)

    def report_path(self, *parts: str) -> str:
        """``LAKE/_reports/...``: the stats job's plots and HTML report."""
        return self.path("_reports", *parts)

    def run_path(self, job: str, run_id: str) -> str:
        return self.path("_runs", job, f"{run_id}.json")

    def write_run(self, job: str, run_id: str, record: dict) -> None:
        self.write_json(self.run_path(job, run_id), record)

    def runs(self, job: str) -> list[dict]:
        try:
            paths = sorted(self.fs.glob(self.path("_runs", job, "*.json")))
        except FileNotFoundError:
            return []
        return [r for r in (self.read_json(p) for p in paths) if r]

    def jobs(self) -> list[str]:
        """Jobs with a folder of run records under ``LAKE/_runs/``."""
        try:
            entries = self.fs.ls(self.path("_runs"), detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    def url_of(self, path: str) -> str:
        """A lake path as a URL a user can open (``s3://bucket/...``; plain paths stay plain)."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    # -- for notebooks: the pandas views live in notebook.py (imported only when asked for) ---------------
    def summary(self):
        """A pandas DataFrame, one row per table: rows, files, MB, runs, last updated (from the manifests)."""
        from . import notebook

        return notebook.summary_frame(self)

    def run_history(self, job: str | None = None):
        """A pandas DataFrame of run records (all jobs, or one): status, times, rows in/out per ledger."""
        from . import notebook

        return notebook.run_history_frame(self, job)


class Table:
    def __init__(self, lake: Lake, name: str):
        self.lake = lake
        self.name = name
        self.root = lake.path(name)
        self.replaced_files: list[str] = []  # files the last commit unlisted (see commit)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    # -- manifest -----------------------------------------------------------------------------------
    def manifest(self) -> dict:
        m = self.lake.read_json(self.path(MANIFEST))
        if m is None:
            return {"table": self.name, "format": MANIFEST_FORMAT, "files": [], "runs": []}
        if m.get("format") != MANIFEST_FORMAT or "files" not in m:
            raise LakeError(f"{self.path(MANIFEST)} is not a laion5b-spark manifest (format {m.get('format')!r})")
        return m

    def committed_units(self) -> set[str]:
        return {f["unit"] for f in self.manifest()["files"]}

    def commit(self, entries: list[dict], run_id: str, manifest: dict | None = None, *,
               consumed: dict[str, list[str]] | None = None, meta: dict | None = None) -> int:
        """Add entries (one per finished unit) to the manifest; a unit already listed is never listed twice.

        Returns how many entries were added or replaced. An entry with ``replaces`` (the listed path of its
        unit) takes that entry's place, once: ``replaced_files`` then names the unlisted files, for
        ``remove_files`` after this write. Data files must already be in place. ``manifest``: the driver's
        copy, kept across commits of one run (the driver is the only writer), updated in place - saves re-reading
        a manifest of 10^5 units at every commit. ``consumed``: input table -> files of it this commit used up
        (a derived table's lineage, so an incremental run knows what is new), written in the same manifest
        write as the entries. ``meta``: table-level settings fixed at the first commit (e.g. the dedup key).
        """
        m = manifest if manifest is not None else self.manifest()
        listed = {f["unit"]: f for f in m["files"]}
        added, replaced = 0, []
        for e in sorted(entries, key=lambda e: e["unit"]):
            old = listed.get(e["unit"])
            if old is None:
                listed[e["unit"]] = dict(e, run_id=run_id)
                m["files"].append(listed[e["unit"]])
                added += 1
            elif e.get("replaces") is not None and old.get("path") == e["replaces"]:
                # a unit's file rewritten (download --retry-failed): same unit, new file, the old one unlisted
                fields = {k: v for k, v in e.items() if k not in ("unit", "replaces")}
                replaced += [e["replaces"], *(old.get("extra") or {}).values()]
                old.pop("extra", None)
                old.update(fields, retried_by=old.get("retried_by", []) + [run_id])
                added += 1
        self.replaced_files = replaced
        new_inputs = 0
        for source, paths in (consumed or {}).items():
            done = m.setdefault("consumed", {}).setdefault(source, [])
            known = set(done)
            fresh = sorted(p for p in set(paths) if p not in known)
            done.extend(fresh)
            new_inputs += len(fresh)
        if meta:
            m.setdefault("meta", {}).update(meta)
        if added or new_inputs or meta:
            if run_id not in m["runs"]:
                m["runs"].append(run_id)
            m["updated"] = utcnow()
            self.lake.write_bytes(self.path(MANIFEST), orjson.dumps(m))
        return added

    def remove_files(self, rels: list[str]) -> None:
        """Delete data files no manifest lists any more (after a replacing commit); a missing one is fine."""
        for rel in rels:
            try:
                self.lake.fs.rm(self.path(rel))
            except FileNotFoundError:
                pass

    def consumed(self, source: str) -> set[str]:
        """Files of table ``source`` already used up by commits to this table."""
        return set(self.manifest().get("consumed", {}).get(source, []))

    def meta(self) -> dict:
        return dict(self.manifest().get("meta", {}))

    def read_rows(self, rel: str, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
        """Rows [start, stop) of one data file, reading only the row groups that hold them."""
        f = self.lake.fs.open(self.path(rel), "rb") if not self.lake.is_local else None
        try:
            pf = pq.ParquetFile(f if f is not None else self.path(rel))
            groups, first, at = [], None, 0
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if at < stop and at + n > start:
                    groups.append(g)
                    first = at if first is None else first
                at += n
            if not groups:
                return pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
            t = pf.read_row_groups(groups, columns=columns)
            return t.slice(start - first, stop - start)
        finally:
            if f is not None:
                f.close()

    def read_file(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """One data file of this table (path relative to the table, as the manifest lists it)."""
        return self.lake.read_parquet(self.path(rel), columns)

    # -- data files -----------------------------------------------------------------------------------
    def data_file(self, unit_id: str, run_id: str, attempt: int, ext: str = "parquet") -> str:
        """Relative path of a unit's data file; run and attempt make retried or re-run tasks never collide.
        ``ext``: a file beside the parquet one (e.g. ``tar``: webdataset), listed under the entry's ``extra``."""
        return f"data/part-{unit_id}-{run_id}-a{attempt}.{ext}"

    def write_parquet(self, rel: str, table: pa.Table, row_group_size: int = 128 * 1024) -> int:
        """Write a whole parquet file locally, then move/upload it in one step. Returns its size in bytes."""
        return self.lake.write_parquet(self.path(rel), table, row_group_size)

    def entries(self) -> list[dict]:
        """Manifest entries that have a data file (units with no rows have none)."""
        return [f for f in self.manifest()["files"] if f.get("path")]

    def files(self) -> list[str]:
        return [self.path(f["path"]) for f in self.manifest()["files"] if f.get("path")]

    def extra_files(self, ext: str) -> list[str]:
        """The committed files of one kind written beside the parquet ones (e.g. ``tar``), in manifest order."""
        return [self.path(f["extra"][ext]) for f in self.manifest()["files"] if (f.get("extra") or {}).get(ext)]

    def num_rows(self) -> int:
        return sum(f["rows"] for f in self.manifest()["files"])

    def dataset(self, schema: pa.Schema | None = None) -> pads.Dataset:
        fs = self.lake.fs if not self.lake.is_local else None
        return pads.dataset(self.files(), schema=schema, format="parquet", filesystem=fs)

    def read_arrow(self, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        files = self.files()
        if not files:
            if schema is None:
                raise LakeError(f"table {self.name!r} has no committed files in {self.lake.url}")
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        return self.dataset(schema).to_table(columns=columns)

    # -- for notebooks: every view reads exactly the listed files (files() / dataset()) -------------------
    def to_arrow(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The table (or the rows matching a pyarrow compute expression, e.g. ``pc.field("similarity") > 0.3``).
        An empty known table gives its schema's empty table."""
        if not self.files():  # read_arrow says what to do when the table is unknown too
            empty = self.read_arrow(columns, schema=_declared_schema(self.name))
            return empty if filter is None else empty.filter(filter)
        return self.dataset().to_table(columns=columns, filter=filter)

    def to_pandas(self, columns: list[str] | None = None, filter=None):
        return self.to_arrow(columns, filter).to_pandas()

    def to_duckdb(self, con=None):
        """A DuckDB relation over the listed files. Local lakes: DuckDB reads the parquet files itself; other
        lakes: DuckDB scans the pyarrow dataset (its fsspec filesystem), with projection and filter pushdown."""
        from . import notebook

        return notebook.duckdb_relation(self, con)

    def to_spark(self, spark):
        """A Spark DataFrame of the listed files only (``spark.read.parquet`` on a local lake, fsspec reads in
        ``mapInArrow`` tasks on other lakes, as Spark has no s3a here)."""
        from . import notebook

        return notebook.spark_frame(self, spark)

    # -- staging: receipts from tasks, read by the driver's committer ------------------------------------
    def receipt_path(self, run_id: str, unit_id: str, attempt: int) -> str:
        return self.path(f"_staging/{run_id}/{unit_id}-a{attempt}.json")

    def write_receipt(self, run_id: str, unit_id: str, attempt: int, receipt: dict) -> None:
        self.lake.write_bytes(self.receipt_path(run_id, unit_id, attempt), orjson.dumps(receipt))

    def receipts(self, run_id: str, skip: set[str] = frozenset()) -> list[dict]:
        """Receipts written so far in this run, except the paths in ``skip`` (already read)."""
        folder = self.path(f"_staging/{run_id}")
        self.lake.fs.invalidate_cache(folder)  # object-store listings are cached; receipts arrive all the time
        try:
            paths = self.lake.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        out = []
        for p in sorted(paths):
            if not p.endswith(".json") or p in skip:
                continue
            r = self.lake.read_json(p)
            if r is not None:
                r["_receipt_path"] = p
                out.append(r)
        return out

    def drop_receipts(self, paths: list[str]) -> None:
        """Receipts already committed: removed so that each poll lists only what is new."""
        if paths:
            self.lake.fs.rm(paths)

    def clean_staging(self, run_id: str) -> None:
        try:
            self.lake.fs.rm(self.path(f"_staging/{run_id}"), recursive=True)
        except FileNotFoundError:
            pass

    # -- error samples -----------------------------------------------------------------------------------
    def write_errors(self, run_id: str, unit_id: str, samples: list[dict]) -> str | None:
        if not samples:
            return None
        rel = f"_errors/{run_id}/{unit_id}.jsonl"
        self.lake.write_bytes(self.path(rel), b"".join(orjson.dumps(s) + b"\n" for s in samples))
        return rel

    def error_samples(self) -> list[dict]:
        out = []
        for p in sorted(self.lake.fs.glob(self.path("_errors/*/*.jsonl"))):
            with self.lake.fs.open(p, "rb") as f:
                out.extend(orjson.loads(line) for line in f.read().splitlines() if line)
        return out


def show_images(source, n: int = 16, where=None, columns: list[str] | None = None, *,
                uids: list[int] | None = None, lake: "Lake | None" = None, thumb: int = 160):
    """An inline HTML grid of images with captions and scores (IPython's ``HTML``; outside IPython an object
    with ``.data`` and ``_repr_html_``). ``source``: a Lake (its ``dataset``), a Table, or a DataFrame with a
    ``uid`` column (e.g. knn search results; give ``lake``). ``where``: a pandas query string
    (``"similarity > 0.3"``) or a pyarrow expression. ``uids``: show these rows, in this order.
    Image bytes come from ``images``, joined on ``uid``. Details: ``laion5b_spark.notebook.show_images``."""
    from . import notebook

    return notebook.show_images(source, n=n, where=where, columns=columns, uids=uids, lake=lake, thumb=thumb)


def _declared_schema(name: str) -> pa.Schema | None:
    from .schemas import TABLES

    return TABLES.get(name)


def _protocols(fs) -> tuple:
    p = fs.protocol
    return p if isinstance(p, tuple) else (p,)

