"""bench/lake: the lake's commit path vs Delta Lake (delta-rs, the `deltalake` package), same units, one run.

    python bench/lake/commit.py [--units 400] [--rows 2000] [--batch 20] [--json bench/lake/last.json]
    python bench/lake/commit.py --quick          # smoke run: 40 units of 200 rows, small probes

Generates N units of R rows of a LAION-like schema (uid int64, url, text, similarity float32) once, then commits
them, one unit per commit (what the driver does every few seconds as units finish) and in batches, on a local
lake and on an s3 lake served by a moto server on 127.0.0.1, with three writers:

  ours          Table.write_unit (stage under _staging/<run>/) per unit, then Table.commit(entries, run,
                manifest=m) per batch, the driver's manifest copy kept across commits (as job.py does)
  delta txn     the same split the Spark-on-Delta pattern has: each unit's parquet written by a "task" straight
                into the table folder (same writer: Lake.write_parquet, zstd), then the driver commits their
                AddActions with DeltaTable.create_write_transaction and refreshes its snapshot
                (update_incremental); delta-rs's post-commit hook checkpoints every 100 versions (its default)
  delta write   write_deltalake(dt, rows, mode="append", zstd) per batch: file and log entry in one call (a batch
                of 20 units becomes one file)

Per-commit latency is the driver's commit (ours: commit(); delta txn: create_write_transaction + snapshot
refresh; delta write: the whole call), reported as median and p95, the median of the first and the last 50
commits (our manifest is rewritten whole at each commit, so its cost grows with the units it lists), and total
wall time (staging/file writes + commits). Then:

  growth probe  one-unit commits on a table that already lists K units (synthetic entries shaped like extract's,
                ~550 bytes each in our manifest; K AddActions in Delta's log, checkpointed), to extrapolate to a
                5B build (~500k units): a + b*K per commit, and where it passes 1 s
  readers       the plain-reader property: rows DuckDB's read_parquet('TABLE/data/*.parquet') (ours) /
                read_parquet('TABLE/*.parquet') (Delta) sees vs the API (Lake(...).table(...).to_arrow(),
                DeltaTable(...).to_pyarrow_table()) after (a) replacing one unit's file and (b) a commit killed
                after the files are in place but before the manifest/log write, then after the next writer
                (ours: recover(); Delta: a normal commit, then VACUUM with retention 0)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from laion5b_spark.lake import Lake, new_run_id  # noqa: E402

SCHEMA = pa.schema([("uid", pa.int64()), ("url", pa.string()), ("text", pa.string()),
                    ("similarity", pa.float32())])
WORDS = ("a photo of the red blue small large old new dog cat house car tree beach city night vintage poster "
         "wooden table chair woman man child garden flower mountain river sunset portrait logo icon vector "
         "illustration watercolor kitchen bedroom wedding dress shoes bag watch phone laptop").split()
BUCKET = "bench-lake"


# -- input ------------------------------------------------------------------------------------------------------
class Unit:
    def __init__(self, i: int, rows: pa.Table):
        self.i = i
        self.key = f"crawl-data/CC-MAIN-2024-10/segments/1707947470000.{i // 100:02d}/wat/" \
                   f"CC-MAIN-20240301000000-20240301030000-{i:05d}.warc.wat.gz"
        self.id = hashlib.sha256(self.key.encode()).hexdigest()[:16]
        self.rows = rows
        self.lo, self.hi = i * rows.num_rows, (i + 1) * rows.num_rows  # its uid range
        n = rows.num_rows
        # ledgers as extract records them: the manifest entry's real size (~550 bytes)
        self.counts = {"records": {"rows_in": n // 4, "rows_out": n // 8, "dropped": {"not_html": n // 8},
                                   "failed": {}},
                       "img_tags": {"rows_in": 2 * n, "rows_out": n,
                                    "dropped": {"alt_too_short": n // 10, "bad_scheme": n // 50,
                                                "duplicate_in_page": n // 50, "no_alt": n // 2,
                                                "url_too_long": n // 20}, "failed": {}}}


def make_units(n_units: int, n_rows: int, seed: int = 0) -> list[Unit]:
    rng = np.random.default_rng(seed)
    words = np.array(WORDS, dtype=object)
    units = []
    for i in range(n_units):
        uid = np.arange(i * n_rows, (i + 1) * n_rows, dtype=np.int64)
        hosts = rng.integers(0, 5000, n_rows)
        lens = rng.integers(3, 12, n_rows)
        picks = rng.integers(0, len(words), (n_rows, 12))
        url = [f"https://cdn{h}.example-images.com/uploads/2023/{u % 12 + 1:02d}/{u:x}-{h}.jpg"
               for h, u in zip(hosts.tolist(), uid.tolist())]
        text = [" ".join(words[p[:k]]) for p, k in zip(picks, lens.tolist())]
        sim = rng.uniform(0.28, 0.45, n_rows).astype(np.float32)
        units.append(Unit(i, pa.table([uid, url, text, sim], schema=SCHEMA)))
    return units


# -- storage: a local folder and a moto s3 -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server():
    """A moto server on 127.0.0.1 with one bucket; yields (fsspec storage options, delta-rs storage options)."""
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    exe = exe if os.path.exists(exe) else shutil.which("moto_server")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        fs_opts = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        import s3fs

        s3fs.S3FileSystem(**fs_opts).mkdir(BUCKET)
        # delta-rs 1.x commits a log entry with S3's put-if-absent (If-None-Match: *), which moto honours: no
        # locking provider and no AWS_S3_ALLOW_UNSAFE_RENAME needed (checked in check_put_if_absent)
        delta_opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "testing",
                      "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
        yield fs_opts, delta_opts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_put_if_absent(fs_opts: dict) -> bool:
    """Does this S3 refuse a second PUT with If-None-Match: * (what makes Delta's log commit safe on S3)?"""
    import boto3

    s3 = boto3.client("s3", endpoint_url=fs_opts["endpoint_url"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    key = f"probe/{uuid.uuid4().hex}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"1", IfNoneMatch="*")
    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"2", IfNoneMatch="*")
        return False
    except s3.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] in ("PreconditionFailed", "412")


class Place:
    """One place tables go: a local folder or s3://bucket/prefix, with the options each library needs."""

    def __init__(self, name: str, url: str, fs_opts: dict | None = None, delta_opts: dict | None = None):
        self.name, self.url = name, url.rstrip("/")
        self.fs_opts, self.delta_opts = fs_opts or {}, delta_opts or None

    def lake(self, sub: str) -> Lake:
        return Lake(f"{self.url}/{sub}", self.fs_opts)

    def delta_uri(self, sub: str) -> str:
        return f"{self.url}/{sub}"


# -- the three writers --------------------------------------------------------------------------------------------
def _batches(units, batch):
    return [units[i:i + batch] for i in range(0, len(units), batch)]


def run_ours(place: Place, sub: str, units: list[Unit], batch: int) -> dict:
    lake = place.lake(sub)
    table = lake.table("pairs")
    run_id = new_run_id()
    t_start = time.perf_counter()
    m = table.manifest()
    commit_s, step_s = [], []
    for b in _batches(units, batch):
        t0 = time.perf_counter()
        entries = [table.write_unit(run_id, u.id, u.key, u.rows, counts=u.counts) for u in b]
        t1 = time.perf_counter()
        table.commit(entries, run_id, manifest=m)
        t2 = time.perf_counter()
        commit_s.append(t2 - t1)
        step_s.append(t2 - t0)
    table.clean_staging(run_id)
    wall = time.perf_counter() - t_start
    rows = Lake(lake.url, place.fs_opts).table("pairs").num_rows()
    size = len(lake.fs.cat_file(table.path("_manifest.json")))
    return {"commit_s": commit_s, "step_s": step_s, "wall_s": wall, "rows": rows, "manifest_bytes": size}


def _delta_writer_properties():
    from deltalake import WriterProperties

    return WriterProperties(compression="ZSTD")


def _add_action(rel: str, size: int, rows: int):
    from deltalake.transaction import AddAction

    return AddAction(rel, size, {}, int(time.time() * 1000), True, json.dumps({"numRecords": rows}))


def run_delta_txn(place: Place, sub: str, units: list[Unit], batch: int) -> dict:
    from deltalake import DeltaTable

    uri = place.delta_uri(sub)
    dt = DeltaTable.create(uri, schema=SCHEMA, storage_options=place.delta_opts)  # setup, not timed
    files = Lake(uri, place.fs_opts)  # the same parquet writer as ours (local tmp, then move / one upload)
    t_start = time.perf_counter()
    commit_s, step_s = [], []
    for b in _batches(units, batch):
        t0 = time.perf_counter()
        actions = []
        for u in b:  # the tasks: each writes its file straight into the table folder
            rel = f"part-{u.id}-{uuid.uuid4().hex[:12]}.zstd.parquet"
            size = files.write_parquet(files.path(rel), u.rows)
            actions.append(_add_action(rel, size, u.rows.num_rows))
        t1 = time.perf_counter()
        dt.create_write_transaction(actions, mode="append", schema=SCHEMA)
        dt.update_incremental()
        t2 = time.perf_counter()
        commit_s.append(t2 - t1)
        step_s.append(t2 - t0)
    wall = time.perf_counter() - t_start
    rows = DeltaTable(uri, storage_options=place.delta_opts).count()
    return {"commit_s": commit_s, "step_s": step_s, "wall_s": wall, "rows": rows, "version": dt.version()}


def run_delta_write(place: Place, sub: str, units: list[Unit], batch: int) -> dict:
    from deltalake import DeltaTable, write_deltalake

    uri = place.delta_uri(sub)
    dt = DeltaTable.create(uri, schema=SCHEMA, storage_options=place.delta_opts)
    wp = _delta_writer_properties()
    t_start = time.perf_counter()
    step_s = []
    for b in _batches(units, batch):
        t0 = time.perf_counter()
        data = b[0].rows if len(b) == 1 else pa.concat_tables([u.rows for u in b])
        write_deltalake(dt, data, mode="append", writer_properties=wp)
        step_s.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    rows = DeltaTable(uri, storage_options=place.delta_opts).count()
    return {"commit_s": step_s, "step_s": step_s, "wall_s": wall, "rows": rows, "version": dt.version()}


WRITERS = {"ours": run_ours, "delta txn": run_delta_txn, "delta write": run_delta_write}


# -- growth probe: one-unit commits on a table that already lists K units ------------------------------------------
_COUNTS_TEMPLATE = {"records": {"rows_in": 500, "rows_out": 250, "dropped": {"not_html": 250}, "failed": {}},
                    "img_tags": {"rows_in": 4000, "rows_out": 2000,
                                 "dropped": {"alt_too_short": 200, "bad_scheme": 40, "duplicate_in_page": 40,
                                             "no_alt": 1000, "url_too_long": 100}, "failed": {}}}


def _synthetic_entry(i: int, run_id: str, rows: int) -> dict:
    """A manifest entry shaped like extract's (key, path, ledgers): ~550 bytes."""
    key = (f"crawl-data/CC-MAIN-2024-10/segments/1707947470000.{i // 100:02d}/wat/"
           f"CC-MAIN-20240301000000-20240301030000-{i:05d}.warc.wat.gz")
    return {"unit": hashlib.sha256(f"synthetic-{i}".encode()).hexdigest()[:16], "key": key,
            "path": f"data/part-{i:016x}-{run_id}-a0.parquet", "rows": rows, "bytes": 1_000_000 + i,
            "counts": _COUNTS_TEMPLATE, "run_id": run_id}


def probe_ours(place: Place, sub: str, k: int, units: list[Unit]) -> dict:
    """A manifest listing k synthetic units (written once, untimed), then len(units) one-unit commits."""
    lake = place.lake(sub)
    table = lake.table("pairs")
    old_run = new_run_id()
    m = {"table": "pairs", "format": 1, "files": [_synthetic_entry(i, old_run, 2000) for i in range(k)],
         "runs": [old_run], "version": 1}
    import orjson

    lake.write_bytes(table.path("_manifest.json"), orjson.dumps(m))
    run_id = new_run_id()
    times = []
    for u in units:
        e = table.write_unit(run_id, u.id, u.key, u.rows, counts=u.counts)
        t0 = time.perf_counter()
        table.commit([e], run_id, manifest=m)
        times.append(time.perf_counter() - t0)
    return {"k": k, "commit_s": times, "manifest_bytes": len(orjson.dumps(m))}


def probe_delta(place: Place, sub: str, k: int, units: list[Unit]) -> dict:
    """A Delta table whose log adds k files (one commit of k AddActions, then a checkpoint: its steady state),
    then len(units) one-unit commits, and one more checkpoint timed alone (delta-rs writes one every 100
    versions: its amortized cost is checkpoint_s / 100 per commit)."""
    from deltalake import DeltaTable
    from deltalake.transaction import PostCommitHookProperties

    uri = place.delta_uri(sub)
    dt = DeltaTable.create(uri, schema=SCHEMA, storage_options=place.delta_opts)
    for lo in range(0, k, 50_000):
        acts = [_add_action(f"part-{i:016x}-synthetic.zstd.parquet", 1_000_000 + i, 2000)
                for i in range(lo, min(k, lo + 50_000))]
        dt.create_write_transaction(acts, mode="append", schema=SCHEMA,
                                    post_commithook_properties=PostCommitHookProperties(create_checkpoint=False))
    dt.update_incremental()
    dt.create_checkpoint()
    files = Lake(uri, place.fs_opts)
    times = []
    no_ckpt = PostCommitHookProperties(create_checkpoint=False)
    for u in units:
        rel = f"part-{u.id}-{uuid.uuid4().hex[:12]}.zstd.parquet"
        size = files.write_parquet(files.path(rel), u.rows)
        t0 = time.perf_counter()
        dt.create_write_transaction([_add_action(rel, size, u.rows.num_rows)], mode="append", schema=SCHEMA,
                                    post_commithook_properties=no_ckpt)
        dt.update_incremental()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    dt.create_checkpoint()
    ckpt = time.perf_counter() - t0
    return {"k": k, "commit_s": times, "checkpoint_s": ckpt}


# -- plain readers vs the API ---------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def _duck(place: Place):
    import duckdb

    con = duckdb.connect()
    if place.fs_opts:
        import s3fs

        # DuckDB reads s3:// through fsspec; a filesystem of its own, without cached listings (fsspec shares one
        # instance per set of options, and its listing of a folder would miss files written since)
        con.register_filesystem(s3fs.S3FileSystem(**place.fs_opts, skip_instance_cache=True,
                                                  use_listings_cache=False))
    return con


def _plain(con, glob: str) -> tuple[int, int]:
    return con.execute(f"SELECT count(*), count(DISTINCT uid) FROM read_parquet('{glob}')").fetchone()


def readers_ours(place: Place, sub: str, units: list[Unit], replacement: pa.Table, extra: Unit) -> list[dict]:
    url = f"{place.url}/{sub}"
    glob = f"{url}/pairs/data/*.parquet"
    out = []

    def look(state):
        rows, distinct = _plain(_duck(place), glob)  # a fresh connection and filesystem: no cached listing
        api = Lake(url, place.fs_opts).table("pairs").to_arrow().num_rows
        out.append({"tool": "ours", "state": state, "plain_rows": rows, "plain_distinct_uid": distinct,
                    "api_rows": api})

    table = Lake(url, place.fs_opts).table("pairs")
    table.add_units("base", [(u.id, u.key, u.rows) for u in units])
    look("committed")
    # (a) replace one unit's file: a new attempt of units[0] (same uids, new rows), committed with replaces=
    run2 = new_run_id()
    old = {x.unit: x for x in table.entries()}[units[0].id]
    r = table.write_unit(run2, units[0].id, units[0].key, replacement, attempt=1)
    table.commit([r], run2, replaces={units[0].id: old.path})
    look("(a) one unit's file replaced")
    # a task's output written, no commit yet (ours: staged under _staging/<run>/)
    e = table.write_unit(run2, extra.id, extra.key, extra.rows)
    look("a task's file written, not committed")
    # (b) a commit killed after the moves, before the manifest write
    lake = Lake(url, place.fs_opts)
    real = lake.write_bytes

    def dying(path, data):
        if path.endswith("/_manifest.json"):
            raise Killed()
        return real(path, data)

    lake.write_bytes = dying
    try:
        lake.table("pairs").commit([e], run2)
        raise AssertionError("the commit was not killed")
    except Killed:
        pass
    look("(b) commit killed after the files are in place")
    Lake(url, place.fs_opts).table("pairs").recover()
    look("(b) then the next writer starts: recover()")
    return out


def readers_delta(place: Place, sub: str, units: list[Unit], replacement: pa.Table, extra: Unit) -> list[dict]:
    from deltalake import DeltaTable, write_deltalake

    uri = place.delta_uri(sub)
    glob = f"{uri}/*.parquet"
    out = []

    def look(state):
        rows, distinct = _plain(_duck(place), glob)
        api = DeltaTable(uri, storage_options=place.delta_opts).to_pyarrow_table().num_rows
        out.append({"tool": "delta", "state": state, "plain_rows": rows, "plain_distinct_uid": distinct,
                    "api_rows": api})

    wp = _delta_writer_properties()
    dt = DeltaTable.create(uri, schema=SCHEMA, storage_options=place.delta_opts)
    for u in units:
        write_deltalake(dt, u.rows, mode="append", writer_properties=wp)
    look("committed")
    # (a) replace one unit's rows: overwrite with a predicate (one atomic commit: remove old file, add new one)
    u0 = units[0]
    write_deltalake(dt, replacement, mode="overwrite", predicate=f"uid >= {u0.lo} AND uid < {u0.hi}",
                    writer_properties=wp)
    look("(a) one unit's file replaced")
    # a task's file in the table folder with no log entry: also what a commit killed before its log write leaves
    files = Lake(uri, place.fs_opts)
    files.write_parquet(files.path(f"part-{extra.id}-{uuid.uuid4().hex[:12]}.zstd.parquet"), extra.rows)
    look("a task's file written, not committed")
    look("(b) commit killed after the files are in place")
    later = make_units(1, 10, seed=9)[0].rows
    later = later.set_column(0, "uid", pa.array(np.arange(10**9, 10**9 + later.num_rows), pa.int64()))
    write_deltalake(dt, later, mode="append", writer_properties=wp)
    look("(b) then the next writer commits")
    dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
    look("VACUUM, retention 0 (default: removes files the log removed)")
    dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
    look("VACUUM full=True, retention 0 (also files the log never listed)")
    return out


# -- report ---------------------------------------------------------------------------------------------------
def _ms(x: float) -> float:
    return round(1000 * x, 2)


def _p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def summarize(r: dict, window: int) -> dict:
    c = r["commit_s"]
    w = min(window, max(1, len(c) // 4))
    first, last = statistics.median(c[:w]), statistics.median(c[-w:])
    return {"commits": len(c), "commit_median_ms": _ms(statistics.median(c)), "commit_p95_ms": _ms(_p95(c)),
            "commit_mean_ms": _ms(statistics.fmean(c)), "window": w, "first_median_ms": _ms(first),
            "last_median_ms": _ms(last), "growth": round(last / first, 2) if first else None,
            "step_median_ms": _ms(statistics.median(r["step_s"])), "commit_total_s": round(sum(c), 3),
            "wall_s": round(r["wall_s"], 3), "rows": r["rows"]}


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares a + b*k over (k, seconds)."""
    ks = np.array([p[0] for p in points], float)
    ts = np.array([p[1] for p in points], float)
    if len(ks) < 2:
        return float(ts[0]), 0.0
    b, a = np.polyfit(ks, ts, 1)
    return float(a), float(b)


def _bytes_per_entry(probe: list[dict], place: str) -> float:
    big = max((p for p in probe if p["place"] == place), key=lambda p: p["k"])
    return big["ours_manifest_mb"] * 1e6 / big["k"]


def driver_model(a: float, b: float, n_units: int, build_s: float, interval_s: float, entry_bytes: float,
                 steps: int = 20_000) -> dict:
    """Units finish at a steady rate over the build; the driver commits what finished every interval_s, or back
    to back once a commit takes longer (c(n) = a + b*n with n units listed). Integrated in small time steps."""
    rate = n_units / build_s
    dt = build_s / steps
    commits = manifest_bytes = 0.0
    busy = c = period = 0.0
    for i in range(steps):
        listed = rate * (i + 0.5) * dt
        c = a + b * listed
        period = max(interval_s, c)
        commits += dt / period
        manifest_bytes += dt / period * listed * entry_bytes
        busy = c / period
    return {"model_commits": int(commits), "model_busy_end": round(busy, 3), "model_commit_end_s": round(c, 2),
            "model_units_per_commit_end": round(rate * period, 1),
            "model_manifest_tb": round(manifest_bytes / 1e12, 2),
            "model_manifest_mb_end": round(n_units * entry_bytes / 1e6, 1)}


def machine() -> dict:
    import deltalake
    import duckdb
    import fsspec
    import moto
    import orjson
    import s3fs

    cpu = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "deltalake": deltalake.__version__, "pyarrow": pa.__version__,
            "numpy": np.__version__, "duckdb": duckdb.__version__, "fsspec": fsspec.__version__,
            "s3fs": s3fs.__version__, "moto": moto.__version__, "orjson": orjson.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=400)
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=20, help="units per commit in the batched mode")
    ap.add_argument("--window", type=int, default=50, help="first/last N commits compared for growth")
    ap.add_argument("--probe", default="1000,10000,50000", help="K units already listed, for the growth probe")
    ap.add_argument("--probe-s3", default="1000,10000", help="the same on s3 (moto is slow on big PUTs)")
    ap.add_argument("--probe-commits", type=int, default=10)
    ap.add_argument("--s3-units", type=int, default=200, help="units committed on s3 (the first of the same "
                    "input; moto serves one request at a time, so s3 runs cost most of the time)")
    ap.add_argument("--target-units", type=int, default=500_000, help="units of the build to extrapolate to")
    ap.add_argument("--build-days", type=float, default=5.0, help="build length for the driver model")
    ap.add_argument("--interval-s", type=float, default=5.0, help="the driver's commit interval for the model")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 units of 200 rows, batch 5, small probes")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.units, a.rows, a.batch, a.window = 40, 200, 5, 10
        a.probe, a.probe_s3, a.probe_commits, a.s3_units = "200,2000", "200,1000", 3, 40
    probe_local = [int(x) for x in a.probe.split(",") if x]
    probe_s3 = [int(x) for x in a.probe_s3.split(",") if x]

    info = machine()
    print(f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, deltalake {info['deltalake']}, "
          f"pyarrow {info['pyarrow']}, duckdb {info['duckdb']}, s3fs {info['s3fs']}, moto {info['moto']}", flush=True)
    t0 = time.perf_counter()
    units = make_units(a.units, a.rows)
    probe_units = make_units(a.probe_commits, a.rows, seed=1)
    for j, u in enumerate(probe_units):  # uids and unit ids apart from the probe's synthetic ones
        u.id = hashlib.sha256(f"probe-{j}".encode()).hexdigest()[:16]
    print(f"input: {a.units} units x {a.rows:,} rows ({a.units * a.rows:,} rows) generated in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    work = a.work or tempfile.mkdtemp(prefix="l5s-bench-lake-")
    os.makedirs(work, exist_ok=True)
    result = {"args": vars(a), "machine": info, "runs": [], "probe": [], "readers": []}
    stack = contextlib.ExitStack()
    try:
        places = [Place("local", os.path.join(work, "local"))]
        if not a.no_s3:
            fs_opts, delta_opts = stack.enter_context(moto_server())
            result["s3_put_if_absent"] = check_put_if_absent(fs_opts)
            places.append(Place("s3", f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", fs_opts, delta_opts))
            print(f"s3: moto at {fs_opts['endpoint_url']}; put-if-absent honoured: {result['s3_put_if_absent']}",
                  flush=True)

        # 1. the same units, one per commit and in batches, every writer, every place
        for place in places:
            these = units if place.name == "local" else units[:a.s3_units]
            for batch in (1, a.batch):
                for tool, fn in WRITERS.items():
                    sub = f"{tool.replace(' ', '_')}-b{batch}"
                    r = fn(place, sub, these, batch)
                    s = summarize(r, a.window)
                    assert s["rows"] == len(these) * a.rows, (tool, place.name, s["rows"])
                    row = {"place": place.name, "units": len(these), "batch": batch, "tool": tool, **s,
                           **{k: r[k] for k in ("manifest_bytes", "version") if k in r},
                           "commit_series_ms": [_ms(x) for x in r["commit_s"]]}
                    result["runs"].append(row)
                    print(f"  {place.name:5} batch {batch:>3} {tool:11} commits {s['commits']:4}  commit median "
                          f"{s['commit_median_ms']:8.2f} ms  p95 {s['commit_p95_ms']:8.2f}  first/last "
                          f"{s['window']} {s['first_median_ms']:7.2f}/{s['last_median_ms']:7.2f} ms  "
                          f"wall {s['wall_s']:6.2f} s", flush=True)

        # 2. growth probe
        for place in places:
            ks = probe_local if place.name == "local" else probe_s3
            for k in ks:
                o = probe_ours(place, f"probe-ours-{k}", k, probe_units)
                d = probe_delta(place, f"probe-delta-{k}", k, probe_units)
                row = {"place": place.name, "k": k, "ours_median_ms": _ms(statistics.median(o["commit_s"])),
                       "ours_manifest_mb": round(o["manifest_bytes"] / 1e6, 2),
                       "delta_median_ms": _ms(statistics.median(d["commit_s"])),
                       "delta_checkpoint_ms": _ms(d["checkpoint_s"]),
                       "delta_amortized_ms": _ms(statistics.median(d["commit_s"]) + d["checkpoint_s"] / 100)}
                result["probe"].append(row)
                print(f"  probe {place.name:5} K={k:>7,}: ours {row['ours_median_ms']:9.2f} ms/commit (manifest "
                      f"{row['ours_manifest_mb']} MB); delta {row['delta_median_ms']:7.2f} ms/commit + checkpoint "
                      f"{row['delta_checkpoint_ms']:.0f} ms every 100 = {row['delta_amortized_ms']:.2f} ms", flush=True)

        # 3. plain readers vs the API
        n_read = min(10, a.units)
        replacement = make_units(1, a.rows, seed=7)[0].rows  # same uids as units[0], new content
        extra = Unit(a.units + 5, make_units(1, a.rows, seed=8)[0].rows.set_column(
            0, "uid", pa.array(np.arange(10**8, 10**8 + a.rows), pa.int64())))
        for place in places:
            try:
                rows = readers_ours(place, "readers-ours", units[:n_read], replacement, extra) + \
                       readers_delta(place, "readers-delta", units[:n_read], replacement, extra)
            except Exception as exc:  # noqa: BLE001 - e.g. DuckDB without a way to read s3
                print(f"  readers on {place.name}: skipped ({type(exc).__name__}: {str(exc)[:200]})")
                continue
            for x in rows:
                x["place"] = place.name
            result["readers"] += rows
    finally:
        stack.close()
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    # -- summary --------------------------------------------------------------------------------------------------
    print("\nper-commit latency and wall time (same units, same run)")
    print(f"| place | units/commit | writer | commits | commit median ms | p95 ms | first {a.window} / last {a.window}"
          f" median ms | growth | wall s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result["runs"]:
        print(f"| {r['place']} | {r['batch']} | {r['tool']} | {r['commits']} | {r['commit_median_ms']:.2f} | "
              f"{r['commit_p95_ms']:.2f} | {r['first_median_ms']:.2f} / {r['last_median_ms']:.2f} | "
              f"{r['growth']}x | {r['wall_s']:.2f} |")
    ratios = []
    for place in {r["place"] for r in result["runs"]}:
        for batch in {r["batch"] for r in result["runs"]}:
            by = {r["tool"]: r for r in result["runs"] if r["place"] == place and r["batch"] == batch}
            ours, txn, wr = by["ours"], by["delta txn"], by["delta write"]
            ratios.append({"place": place, "batch": batch,
                           "commit_median_ours_over_delta_txn": round(ours["commit_median_ms"] /
                                                                      txn["commit_median_ms"], 2),
                           "commit_total_ours_over_delta_txn": round(ours["commit_total_s"] /
                                                                     txn["commit_total_s"], 2),
                           "wall_ours_over_delta_txn": round(ours["wall_s"] / txn["wall_s"], 2),
                           "wall_ours_over_delta_write": round(ours["wall_s"] / wr["wall_s"], 2)})
    ratios.sort(key=lambda x: (x["place"], x["batch"]))
    result["ratios"] = ratios
    print("\nratios (ours / delta; < 1 = ours faster)")
    print("| place | units/commit | commit median vs delta txn | all commits vs delta txn | wall vs delta txn |"
          " wall vs delta write |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for x in ratios:
        print(f"| {x['place']} | {x['batch']} | {x['commit_median_ours_over_delta_txn']}x | "
              f"{x['commit_total_ours_over_delta_txn']}x | {x['wall_ours_over_delta_txn']}x | "
              f"{x['wall_ours_over_delta_write']}x |")

    print("\ngrowth probe: one-unit commit on a table already listing K units")
    print("| place | K | ours ms/commit | our manifest MB | delta ms/commit | delta checkpoint ms (every 100) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for p in result["probe"]:
        print(f"| {p['place']} | {p['k']:,} | {p['ours_median_ms']:.2f} | {p['ours_manifest_mb']} | "
              f"{p['delta_median_ms']:.2f} | {p['delta_checkpoint_ms']:.0f} |")
    extrap = {}
    for place in sorted({p["place"] for p in result["probe"]}):
        pts = [p for p in result["probe"] if p["place"] == place]
        if len(pts) < 2:
            continue  # one size: no slope to extrapolate with
        if fit([(p["k"], p["ours_median_ms"] / 1000) for p in pts])[1] <= 0:
            print(f"  {place}: no growth measured across K (noise); no extrapolation")
            continue
        ao, bo = fit([(p["k"], p["ours_median_ms"] / 1000) for p in pts])
        ad, bd = fit([(p["k"], p["delta_amortized_ms"] / 1000) for p in pts])
        n = a.target_units
        e = {"ours_a_ms": round(ao * 1000, 3), "ours_b_us_per_unit": round(bo * 1e6, 4),
             "ours_at_target_s": round(ao + bo * n, 2),
             "ours_passes_1s_at_units": int((1 - ao) / bo) if bo > 0 else None,
             # one unit per commit over the whole build: sum of a + b*k for k < n
             "ours_all_commits_one_per_commit_h": round((n * ao + bo * n * n / 2) / 3600, 1),
             "ours_all_commits_batch_h": round((n / a.batch * ao + bo * n * n / 2 / a.batch) / 3600, 2),
             "delta_a_ms": round(ad * 1000, 3), "delta_b_us_per_unit": round(bd * 1e6, 4),
             "delta_at_target_s": round(ad + bd * n, 3),
             "delta_all_commits_one_per_commit_h": round((n * ad + bd * n * n / 2) / 3600, 2)}
        e.update(driver_model(ao, bo, n, a.build_days * 86400, a.interval_s,
                              _bytes_per_entry(result["probe"], place)))
        extrap[place] = e
        delta_slope = (f"{e['delta_b_us_per_unit']:.4f} us x units -> {e['delta_at_target_s']} s at {n:,}; all "
                       f"commits {e['delta_all_commits_one_per_commit_h']} h" if bd > 0 else "no growth measured")
        print(f"  {place}: ours ~ {e['ours_a_ms']:.2f} ms + {e['ours_b_us_per_unit']:.3f} us x units listed -> "
              f"{e['ours_at_target_s']} s per commit at {n:,} units, passes 1 s at "
              f"~{e['ours_passes_1s_at_units'] or 0:,} units; all {n:,} commits one unit each: "
              f"{e['ours_all_commits_one_per_commit_h']} h, in batches of {a.batch}: {e['ours_all_commits_batch_h']} h."
              f" delta (checkpoint amortized) ~ {e['delta_a_ms']:.2f} ms + {delta_slope}")
    result["extrapolation"] = extrap
    for place, e in extrap.items():
        print(f"  driver model, {place}: {a.target_units:,} units over {a.build_days:g} days, a commit every "
              f"{a.interval_s:g} s or back to back once a commit takes longer: {e['model_commits']:,} commits, "
              f"the driver committing {e['model_busy_end']:.0%} of the time at the end "
              f"({e['model_commit_end_s']} s per commit, {e['model_units_per_commit_end']:.1f} units each), "
              f"{e['model_manifest_tb']} TB of manifest written in all ({e['model_manifest_mb_end']:.0f} MB per "
              "write at the end)")

    print("\nplain readers vs the API (ours: DuckDB read_parquet('TABLE/data/*.parquet'); "
          "delta: read_parquet('TABLE/*.parquet'))")
    print("| place | writer | state | plain reader rows (distinct uid) | API rows | same? |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for x in result["readers"]:
        same = x["plain_rows"] == x["api_rows"] and x["plain_distinct_uid"] == x["plain_rows"]
        x["same"] = same
        print(f"| {x['place']} | {x['tool']} | {x['state']} | {x['plain_rows']:,} ({x['plain_distinct_uid']:,}) | "
              f"{x['api_rows']:,} | {'yes' if same else '**no**'} |")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
