"""The lake: one fsspec root holding tables, run records, error samples, knn indices and reports.

This module owns the lake's paths, its manifest entries and its commits. A table is ``LAKE/<table>/`` with
``_manifest.json`` (the commit) and ``data/`` (committed parquet only: a plain reader globbing ``data/*.parquet``
sees exactly the table). Tasks write into ``_staging/<run>/``; the driver's commit writes an intent, moves the
staged files into place, then rewrites the manifest; a killed commit is finished by the next writer (``recover``).
"""

from __future__ import annotations

import datetime as _dt
import os
import posixpath
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator

import fsspec
import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .config import ConfigError

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = 1
DATA = "data"  # committed parquet files of a table; side files have a folder per kind (tar/)
STAGING = "_staging"  # per run: staged files, receipts, progress notes and commit intents
ERRORS = "_errors"
COMMIT_PREFIX = "_commit-"
RUNS = "_runs"


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

    def check_usable(self) -> None:
        """Fail early, in one line with what to do, when the lake cannot be used: a file where the folder should
        be, a bucket that does not exist (a lake never creates one), an endpoint that does not answer, no write
        permission. Every writing job calls this on the driver before Spark starts."""
        self.check_readable()
        probe = self.path(RUNS, f".probe-{uuid.uuid4().hex}")
        try:
            self.write_bytes(probe, b"ok")
            self.fs.rm(probe)
        except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
            raise LakeError(f"cannot write to the lake at {self.url}: {_first_line(exc)}. Check the path is a "
                            "writable folder (for s3://, the bucket's permissions and credentials)") from None

    def check_readable(self) -> None:
        """``check_usable`` without the write probe: for readers and dry runs."""
        if self.is_local:
            at = self.root
            while at and not os.path.exists(at):
                at = os.path.dirname(at)
            if at and not os.path.isdir(at):
                raise LakeError(f"the lake {self.url}: {at} is a file, not a folder; give a folder (it is "
                                "created if missing)")
        else:
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.invalidate_cache(bucket)
                self.fs.info(bucket)  # exists() would say False for an endpoint that does not answer
            except FileNotFoundError:
                raise LakeError(f"bucket {bucket!r} of the lake {self.url} does not exist (or these credentials cannot "
                                "see it); create it first: a lake never creates buckets") from None
            except Exception as exc:  # noqa: BLE001 - botocore's many errors all mean "cannot reach it"
                raise LakeError(f"cannot reach the lake at {self.url}: {_first_line(exc)}. Check the endpoint "
                                "(lake.storage_options endpoint_url, AWS_ENDPOINT_URL) and credentials") from None

    # -- listing and removing: a missing folder is an empty one -----------------------------------------
    def listdir(self, path: str, fresh: bool = False) -> list[str]:
        if fresh:
            self.fs.invalidate_cache(path)  # object-store listings are cached; receipts arrive all the time
        try:
            return self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []

    def glob(self, pattern: str) -> list[str]:
        try:
            return sorted(self.fs.glob(pattern))
        except FileNotFoundError:
            return []

    def find(self, path: str) -> list[str]:
        self.fs.invalidate_cache(path)
        try:
            return sorted(self.fs.find(path))
        except FileNotFoundError:
            return []

    def rm(self, path: str, recursive: bool = False) -> None:
        try:
            self.fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

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
        """A JSON file, or None when it does not exist. Unreadable or corrupt: a LakeError saying which."""
        try:
            with self.fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - an endpoint that does not answer, permissions
            raise LakeError(f"cannot read {self.url_of(path)}: {_first_line(exc)}") from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LakeError(f"{self.url_of(path)} is not valid JSON ({exc}); a torn write from another tool? "
                            "Restore it or remove the table") from None

    def write_json(self, path: str, obj) -> None:
        self.write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    # -- tables and runs ------------------------------------------------------------------------------
    def table(self, name: str) -> "Table":
        return Table(self, name)

    def tables(self) -> list[str]:
        names = []
        for e in self.listdir(self.root):
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
        return self.path(RUNS, job, f"{run_id}.json")

    def write_run(self, job: str, run_id: str, record: dict) -> None:
        self.write_json(self.run_path(job, run_id), record)

    def runs(self, job: str) -> list[dict]:
        return [r for r in (self.read_json(p) for p in self.glob(self.path(RUNS, job, "*.json"))) if r]

    def jobs(self) -> list[str]:
        """Jobs with a folder of run records under ``LAKE/_runs/``."""
        try:
            entries = self.fs.ls(self.path(RUNS), detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    def url_of(self, path: str) -> str:
        """A lake path as a URL a user can open (``s3://bucket/...``; plain paths stay plain)."""
        return path if self.is_local else self.fs.unstrip_protocol(path)


@dataclass
class FileEntry:
    """One committed unit of a table, as its manifest lists it. Paths are relative to the table."""

    unit: str  # the unit's stable id: listed at most once
    key: str  # what the unit is, for people (an input path, a shard's row range)
    path: str | None = None  # its parquet file under data/ (a unit with no rows has none)
    rows: int = 0
    bytes: int = 0
    counts: dict = field(default_factory=dict)  # the unit's ledgers (accounting.ledgers_to_dict)
    extra: dict = field(default_factory=dict)  # side files: kind (e.g. "tar") -> path under <kind>/
    covers: dict = field(default_factory=dict)  # the input content the unit covers (what resume is keyed by)
    run_id: str = ""
    retried_by: list = field(default_factory=list)  # runs that rewrote the unit's files (Table.commit replaces)
    # set when this file is an earlier file of the unit minus the image bytes compaction dropped (same rows, same
    # order, every other column as it was): {"from": that file, "rows": rows whose bytes it dropped, ...}
    compacted: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "FileEntry":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in ({}, []) or k == "counts"}

    def files(self) -> list[str]:
        """Every file of the entry: the parquet one and its side files."""
        return ([self.path] if self.path else []) + list(self.extra.values())


class Table:
    """``LAKE/<name>/``: ``_manifest.json`` (the commit), ``data/`` (committed parquet only), ``<kind>/`` (committed
    side files, e.g. ``tar/``), ``_staging/<run>/`` (what tasks wrote, not yet committed), ``_errors/<run>/``."""

    def __init__(self, lake: Lake, name: str):
        self.lake = lake
        self.name = name
        self.root = lake.path(name)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    # -- manifest -----------------------------------------------------------------------------------
    def manifest(self) -> dict:
        """The raw manifest (for the lake module and fsck); stages use entries(), meta(), consumed()."""
        m = self.lake.read_json(self.path(MANIFEST))
        if m is None:
            return {"table": self.name, "format": MANIFEST_FORMAT, "files": [], "runs": [], "version": 0}
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or "files" not in m:
            fmt = m.get("format") if isinstance(m, dict) else None
            raise LakeError(f"{self.path(MANIFEST)} is not a laion5b-spark manifest (format {fmt!r})")
        return m

    def exists(self) -> bool:
        return self.lake.read_json(self.path(MANIFEST)) is not None

    def all_entries(self, manifest: dict | None = None) -> list[FileEntry]:
        """Every listed unit, those without rows too."""
        return [FileEntry.from_dict(f) for f in (manifest or self.manifest())["files"]]

    def entries(self, manifest: dict | None = None) -> list[FileEntry]:
        """Listed units that have a data file (units with no rows have none)."""
        return [e for e in self.all_entries(manifest) if e.path]

    def committed_units(self) -> set[str]:
        return {e.unit for e in self.all_entries()}

    def current_files(self, manifest: dict | None = None) -> dict[str, str]:
        """Listed file -> itself, and a file compaction replaced -> its compacted file: where the rows a reader
        recorded by path are now (a path absent here was rewritten with other rows, e.g. by download --retry-failed)."""
        out = {}
        for e in self.entries(manifest):
            out[e.path] = e.path
            if e.compacted.get("from"):
                out[e.compacted["from"]] = e.path
        return out

    def runs(self) -> list[str]:
        """Runs that committed to this table, in commit order."""
        return list(self.manifest()["runs"])

    def updated(self) -> str | None:
        return self.manifest().get("updated")

    def consumed(self, source: str) -> set[str]:
        """Files of table ``source`` already used up by commits to this table."""
        return set(self.manifest().get("consumed", {}).get(source, []))

    def meta(self) -> dict:
        """Table-level settings recorded at commits (unit-defining settings, lineage of a replaced table)."""
        return dict(self.manifest().get("meta", {}))

    def check_meta(self, given: dict, what: str = "") -> None:
        """Stop before any work when a recorded setting differs from the given one: one line naming both."""
        recorded = self.meta()
        if "dedup_key" in recorded:  # lakes written before meta keys were setting names
            recorded.setdefault("dedup.key", recorded["dedup_key"])
        for key, value in given.items():
            if key in recorded and recorded[key] != value:
                raise ConfigError(f"{self.root} was built with {key} = {recorded[key]!r}, this run has {value!r}"
                                  f"{what}. Use {recorded[key]!r} (e.g. --set {key}={_toml(recorded[key])}), "
                                  "or write to a new lake")

    # -- writing: tasks stage, the driver commits -------------------------------------------------------
    def _file_name(self, unit_id: str, run_id: str, attempt: int, kind: str = "parquet") -> str:
        folder = DATA if kind == "parquet" else kind
        return f"{folder}/part-{unit_id}-{run_id}-a{attempt}.{kind}"

    def staged(self, run_id: str, rel: str) -> str:
        """Where a file that the commit places at ``rel`` waits: the run's staging folder, never data/."""
        return self.path(f"{STAGING}/{run_id}/{rel}")

    def write_unit(self, run_id: str, unit: str, key: str, rows: pa.Table | None, *, attempt: int = 0,
                   side_files: dict[str, str] | None = None, counts: dict | None = None, covers: dict | None = None,
                   row_group_size: int = 128 * 1024) -> FileEntry:
        """Stage one unit's files (its rows as one parquet file, side files moved in from local paths) and return
        its entry. Nothing is visible to readers until ``commit`` places the files and lists the entry."""
        entry = FileEntry(unit=unit, key=key, counts=dict(counts or {}), covers=dict(covers or {}), run_id=run_id)
        for kind, local in (side_files or {}).items():  # moved in before the parquet: never listed half-written
            rel = self._file_name(unit, run_id, attempt, kind)
            entry.bytes += os.path.getsize(local)
            self.lake.upload(local, self.staged(run_id, rel))
            if os.path.exists(local):  # an object-store upload copies
                os.remove(local)
            entry.extra[kind] = rel
        if rows is not None and rows.num_rows:
            entry.path = self._file_name(unit, run_id, attempt)
            entry.rows = rows.num_rows
            entry.bytes += self.lake.write_parquet(self.staged(run_id, entry.path), rows, row_group_size)
        return entry

    def add_units(self, run_id: str, units: list[tuple[str, str, pa.Table]], **commit_kw) -> int:
        """For single-process writers (sample data, benchmarks, fixtures): stage (unit, key, rows) and commit."""
        entries = [self.write_unit(run_id, u, k, rows) for u, k, rows in units]
        added = self.commit(entries, run_id, **commit_kw)
        self.clean_staging(run_id)
        return added

    def commit(self, entries: list[FileEntry], run_id: str, manifest: dict | None = None, *,
               replaces: dict[str, str] | None = None, replace_all: bool = False,
               consumed: dict[str, list[str]] | None = None, meta: dict | None = None) -> int:
        """Place staged files in data/ (and their side folders), then list them: the manifest write is the commit.

        A unit already listed is never listed twice. ``replaces``: unit -> the listed path its new entry takes the
        place of (download --retry-failed), once; the old files are deleted after the write. ``replace_all``: the
        table becomes exactly ``entries`` (a table rebuilt whole). ``consumed``: input table -> its files this commit
        used up (lineage for incremental runs). ``meta``: table-level settings. ``manifest``: the driver's copy, kept
        across the commits of one run and updated in place. A commit killed at any step is finished by the next
        writer's ``recover`` (its intent file names every move). Returns how many entries were added or replaced.
        """
        m = manifest if manifest is not None else self.manifest()
        listed = {f["unit"]: f for f in m["files"]}
        take, removed = [], []
        for e in sorted(entries, key=lambda e: e.unit):
            old = listed.get(e.unit)
            if replace_all or old is None:
                take.append(e)
            elif e.unit in (replaces or {}) and (old.get("path") or "") == (replaces[e.unit] or ""):
                take.append(e)
                removed += FileEntry.from_dict(old).files()
        if replace_all:
            removed = sorted(_listed_files(m) - {f for e in take for f in e.files()})
        fresh = {s: sorted(set(p) - set(m.get("consumed", {}).get(s, []))) for s, p in (consumed or {}).items()}
        if not take and not any(fresh.values()) and not meta and not replace_all:
            return 0
        intent = {"run_id": run_id, "base_version": m.get("version", 0), "entries": [e.to_dict() for e in take],
                  "replace_all": replace_all, "consumed": fresh, "meta": meta or {}, "remove": removed}
        intent_path = self.path(f"{STAGING}/{run_id}/{COMMIT_PREFIX}{m.get('version', 0) + 1:08d}.json")
        self.lake.write_json(intent_path, intent)
        self._finish(intent, intent_path, m)
        return len(take)

    def _finish(self, intent: dict, intent_path: str, m: dict) -> None:
        """Do what an intent says: move staged files in, write the manifest (if not written yet), delete what
        it unlists, then the intent. Every step can be repeated, so a crash at any point is finished later."""
        if m.get("version", 0) == intent["base_version"]:
            entries = [FileEntry.from_dict(d) for d in intent["entries"]]
            moves = [(self.staged(e.run_id, rel), self.path(rel)) for e in entries for rel in e.files()]
            if self.lake.is_local or len(moves) < 2:
                placed = [self._place(a, b) for a, b in moves]
            else:  # an object store copies each file server-side: one request at a time would dominate
                with ThreadPoolExecutor(min(16, len(moves))) as pool:
                    placed = list(pool.map(lambda ab: self._place(*ab), moves))
            done = dict(zip((b for _, b in moves), placed))
            # a staged file that is gone (vacuumed) drops its entry: the unit reruns
            entries = [e for e in entries if all(done[self.path(rel)] for rel in e.files())]
            self._apply(m, entries, intent)
            self.lake.write_bytes(self.path(MANIFEST), orjson.dumps(m))
        if intent["remove"]:  # never a file the manifest lists (an intent finished twice, a unit listed again)
            listed = _listed_files(m)
            self.remove_files([f for f in intent["remove"] if f not in listed])
        self.lake.rm(intent_path)

    def _apply(self, m: dict, entries: list[FileEntry], intent: dict) -> None:
        run_id = intent["run_id"]
        if intent["replace_all"]:
            m["files"] = []
        listed = {f["unit"]: i for i, f in enumerate(m["files"])}
        for e in entries:
            if e.unit in listed:  # a rewrite of a committed unit: same unit, new files, the first run kept
                old = FileEntry.from_dict(m["files"][listed[e.unit]])
                e.run_id, e.retried_by = old.run_id, old.retried_by + [run_id]
                m["files"][listed[e.unit]] = e.to_dict()
            else:
                listed[e.unit] = len(m["files"])
                m["files"].append(e.to_dict())
        for source, paths in intent["consumed"].items():
            m.setdefault("consumed", {}).setdefault(source, []).extend(paths)
        if intent["meta"]:
            m.setdefault("meta", {}).update(intent["meta"])
        if run_id not in m["runs"]:
            m["runs"].append(run_id)
        m["updated"] = utcnow()
        m["version"] = m.get("version", 0) + 1

    def _place(self, staged: str, final: str) -> bool:
        """Move one staged file to its place: a rename on a local lake, a copy then delete on object stores (a
        reader sees the whole file or none). True when the file is in place (also when an earlier try moved it)."""
        fs = self.lake.fs
        if self.lake.is_local:
            try:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.replace(staged, final)
                return True
            except FileNotFoundError:
                return os.path.exists(final)
        if fs.exists(staged):
            fs.copy(staged, final)
            fs.rm(staged)
            return True
        return fs.exists(final)

    def recover(self) -> int:
        """Finish the commits a killed driver left half done (their intent files); the first thing every writer
        does. Returns how many it finished."""
        self.lake.fs.invalidate_cache(self.path(STAGING))  # an object store's cached listing could miss one
        intents = sorted(self.lake.glob(self.path(f"{STAGING}/*/{COMMIT_PREFIX}*.json")),
                         key=lambda p: (posixpath.basename(p), p))  # by manifest version, then run
        for p in intents:
            intent = self.lake.read_json(p)
            if intent is not None:
                self._finish(intent, p, self.manifest())
        return len(intents)

    def remove_files(self, rels: list[str]) -> None:
        """Delete files no manifest lists any more; a missing one is fine."""
        for rel in rels:
            self.lake.rm(self.path(rel))

    # -- reading --------------------------------------------------------------------------------------
    def read_rows(self, rel: str, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
        """Rows [start, stop) of one data file, reading only the row groups that hold them."""
        f = self.lake.fs.open(self.path(rel), "rb") if not self.lake.is_local else None
        try:
            pf = pq.ParquetFile(f if f is not None else self.path(rel))
            groups, first = row_groups_for(pf.metadata, start, stop)
            if not groups:
                return pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
            t = pf.read_row_groups(groups, columns=columns)
            return t.slice(start - first, stop - start)
        finally:
            if f is not None:
                f.close()

    def iter_row_chunks(self, rel: str, rows: int, columns: list[str] | None = None, start: int = 0,
                        read_ahead: bool = False) -> Iterator[pa.Table]:
        """One data file's rows from ``start`` in order, as chunks of whole row groups of at most ``rows`` rows (or
        one group, when a group is bigger): no row group is read twice, and the file is opened once. ``read_ahead``: the next
        chunk is read in a thread while the caller works on the current one."""
        chunks = self._row_chunks(rel, rows, columns, start)
        if not read_ahead:
            yield from chunks
            return
        with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
            nxt = pool.submit(next, chunks, None)
            while True:
                table = nxt.result()
                if table is None:
                    return
                nxt = pool.submit(next, chunks, None)
                yield table

    def _row_chunks(self, rel: str, rows: int, columns: list[str] | None, start: int) -> Iterator[pa.Table]:
        f = self.lake.fs.open(self.path(rel), "rb") if not self.lake.is_local else None
        try:
            pf = pq.ParquetFile(f if f is not None else self.path(rel))
            groups, at, chunk, first = [], 0, [], None
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if at + n > start:
                    groups.append((g, at, n))
                at += n
            pending = 0
            for g, at, n in groups:
                if chunk and pending + n > rows:
                    yield pf.read_row_groups(chunk, columns=columns).slice(max(0, start - first))
                    chunk, first, pending = [], None, 0
                chunk.append(g)
                first = at if first is None else first
                pending += n
            if chunk:
                yield pf.read_row_groups(chunk, columns=columns).slice(max(0, start - first))
        finally:
            if f is not None:
                f.close()

    def read_file(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """One data file of this table (path relative to the table, as the manifest lists it)."""
        return self.lake.read_parquet(self.path(rel), columns)

    def files(self) -> list[str]:
        return [self.path(e.path) for e in self.entries()]

    def extra_files(self, kind: str) -> list[str]:
        """The committed side files of one kind (e.g. ``tar``), in manifest order."""
        return [self.path(e.extra[kind]) for e in self.all_entries() if kind in e.extra]

    def num_rows(self) -> int:
        return sum(e.rows for e in self.all_entries())

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

    # -- views: every one reads exactly the listed files (files() / dataset()); pandas, DuckDB, Spark and image
    #    grids are in laion5b_spark.notebook, which imports this module (never the reverse)
    def to_arrow(self, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The table (or the rows matching a pyarrow compute expression, e.g. ``pc.field("similarity") > 0.3``).
        An empty known table gives its schema's empty table."""
        if not self.files():  # read_arrow says what to do when the table is unknown too
            empty = self.read_arrow(columns, schema=_declared_schema(self.name))
            return empty if filter is None else empty.filter(filter)
        return self.dataset().to_table(columns=columns, filter=filter)

    def to_pandas(self, columns: list[str] | None = None, filter=None):
        return self.to_arrow(columns, filter).to_pandas()

    # -- staging: receipts from tasks, read by the driver's committer ------------------------------------
    def receipt_path(self, run_id: str, unit_id: str, attempt: int) -> str:
        return self.path(f"{STAGING}/{run_id}/receipts/{unit_id}-a{attempt}.json")

    def write_receipt(self, run_id: str, unit_id: str, attempt: int, receipt: dict) -> None:
        self.lake.write_bytes(self.receipt_path(run_id, unit_id, attempt), orjson.dumps(receipt))

    def receipts(self, run_id: str, skip: set[str] = frozenset()) -> list[dict]:
        """Receipts written so far in this run, except the paths in ``skip`` (already read)."""
        out = []
        for p in sorted(self.lake.listdir(self.path(f"{STAGING}/{run_id}/receipts"), fresh=True)):
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

    def progress_path(self, run_id: str, unit_id: str) -> str:
        return self.path(f"{STAGING}/{run_id}/progress/{unit_id}.json")

    def unit_progress(self, run_id: str) -> dict[str, dict]:
        """What running units last said of their progress (rows done, bytes read), by unit id."""
        out = {}
        for p in self.lake.listdir(self.path(f"{STAGING}/{run_id}/progress"), fresh=True):
            r = self.lake.read_json(p) if p.endswith(".json") else None
            if r is not None:
                out[posixpath.basename(p)[:-5]] = r
        return out

    def staging_runs(self) -> list[str]:
        """Runs with a staging folder in this table (running, or killed before cleaning up)."""
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.lake.listdir(self.path(STAGING)))

    def clean_staging(self, run_id: str) -> None:
        """Drop a run's staging folder: what it still holds was never committed (a losing attempt)."""
        self.lake.rm(self.path(f"{STAGING}/{run_id}"), recursive=True)

    # -- error samples -----------------------------------------------------------------------------------
    def write_errors(self, run_id: str, unit_id: str, samples: list[dict]) -> str | None:
        if not samples:
            return None
        rel = f"{ERRORS}/{run_id}/{unit_id}.jsonl"
        self.lake.write_bytes(self.path(rel), b"".join(orjson.dumps(s) + b"\n" for s in samples))
        return rel

    def error_samples(self) -> list[dict]:
        out = []
        for p in sorted(self.lake.glob(self.path(f"{ERRORS}/*/*.jsonl"))):
            with self.lake.fs.open(p, "rb") as f:
                out.extend(orjson.loads(line) for line in f.read().splitlines() if line)
        return out

    # -- what fsck and vacuum walk -------------------------------------------------------------------------
    def stored_files(self) -> list[str]:
        """Every file under the table's folder, relative to it (data, side files, staging, errors, manifest)."""
        root = self.root.rstrip("/") + "/"
        return sorted(p[len(root):] for p in self.lake.find(self.root) if p.startswith(root))

    # -- side files users find by name ---------------------------------------------------------------------
    def add_named_files(self, run_id: str, entry: FileEntry, named: dict[str, str]) -> FileEntry:
        """Stage side files under names the job chose (export's ``webdataset/english/00003.tar``: a brace pattern
        must match them) instead of ``part-<unit>-<run>``, and list them in ``entry`` (kind = the name). The names
        must be stable for the unit: every attempt and every rerun that rewrites it stages the same bytes under
        the same name, and the commit places them as it places any staged file. ``named``: name -> local file."""
        for rel, local in sorted(named.items()):
            parts = rel.split("/")
            if len(parts) < 2 or parts[0] == DATA or parts[0].startswith(("_", ".")) or \
                    any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"{rel!r} is not a side file name (a folder of its own other than {DATA}/, then "
                                 "a name)")
            entry.bytes += os.path.getsize(local)
            self.lake.upload(local, self.staged(run_id, rel))
            if os.path.exists(local):  # an object-store upload copies
                os.remove(local)
            entry.extra[rel] = rel
        return entry


def row_groups_for(metadata, start: int, stop: int) -> tuple[list[int], int | None]:
    """The row groups of a parquet file (its ``metadata``) that hold rows [start, stop), and the first one's row."""
    groups, first, at = [], None, 0
    for g in range(metadata.num_row_groups):
        n = metadata.row_group(g).num_rows
        if at < stop and at + n > start:
            groups.append(g)
            first = at if first is None else first
        at += n
    return groups, first


def _declared_schema(name: str) -> pa.Schema | None:
    from .schemas import TABLES

    return TABLES.get(name)


def _listed_files(manifest: dict) -> set[str]:
    """Every file (parquet and side files) a raw manifest lists."""
    return {f for d in manifest["files"] for f in FileEntry.from_dict(d).files()}


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}"
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _toml(value) -> str:
    return orjson.dumps(value).decode() if not isinstance(value, str) else value


def _protocols(fs) -> tuple:
    p = fs.protocol
    return p if isinstance(p, tuple) else (p,)

