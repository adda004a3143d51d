"""Helpers of tests/test_lake_contract.py: a chain of stage runs, each killed with SIGKILL at a random moment and
rerun, and the plain readers (DuckDB, pyarrow, polars, pandas, HF datasets) that must see exactly the API's rows.

A ``Chain`` is one lake (local or s3://) built stage by stage: extract -> dedup -> download -> clip -> index. Each
stage starts ``jobs/<stage>.py`` as a subprocess in its own process group, kills the group when its trigger fires
(a first commit, or a phase line in its output) plus a random delay, then reruns the same arguments to completion.
While the killed run works, the uninterrupted reference run of the same stage can run in-process on a local copy
of the stage's input tables (the same inputs: the comparison does not depend on what earlier stages did);
``reference_run`` does the same later, for the stages a chain left out (they cost minutes on two cores).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from laion5b_spark.lake import Lake

ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "laion5b_spark" / "sample" / "assets" / "l5s-tiny-shapes"

STAGES = ("extract", "dedup", "download", "clip", "index")
INPUTS = {"extract": (), "dedup": ("pairs",), "download": ("pairs_unique",), "clip": ("images",),
          "index": ("images", "scored", "dataset")}
PAIR_KEY = ("uid", "source_file", "source_offset")  # a uid may be on many pages; a pair is on one
UID = ("uid",)
OUTPUTS = {"extract": {"pairs": PAIR_KEY}, "dedup": {"pairs_unique": UID}, "download": {"images": UID},
           "clip": {"scored": UID, "dataset": UID}, "index": {"dedup_images": UID}}
FAST = ["--set", "run.commit_interval_s=0.3", "--set", "run.progress_interval_s=1"]


def job_class(stage: str):
    if stage == "extract":
        from laion5b_spark.extract.job import ExtractJob as J
    elif stage == "dedup":
        from laion5b_spark.dedup.job import DedupJob as J
    elif stage == "download":
        from laion5b_spark.download.job import DownloadJob as J
    elif stage == "clip":
        from laion5b_spark.clip.job import ClipJob as J
    elif stage == "index":
        from laion5b_spark.index.job import IndexJob as J
    elif stage == "stats":
        from laion5b_spark.stats.job import StatsJob as J
    elif stage == "compact":
        from laion5b_spark.compact.job import CompactJob as J
    else:
        raise KeyError(stage)
    return J


def toml_table(value) -> str:
    """A TOML inline value (tables nest) for ``--set key=VALUE``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_table(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(str(value)).decode()


def lake_option(storage_options: dict | None) -> list[str]:
    return ["--set", f"lake.storage_options={toml_table(storage_options)}"] if storage_options else []


# -- servers ---------------------------------------------------------------------------------------------
class SlowFiles:
    """Serves a folder on 127.0.0.1, each GET after ``delay_s``: extract units (one input file each) then take a
    while without needing a big crawl, so a kill after the first commit lands mid-run."""

    def __init__(self, root: str, delay_s: float):
        delay = delay_s

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=root, **kw)

            def do_GET(self):
                time.sleep(delay)
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ImageServer:
    """The sample image server as its own process (it draws every picture: kept off the test process's GIL)."""

    def __init__(self, work: Path):
        port_file = work / "image-server.port"
        self.proc = subprocess.Popen([sys.executable, "-m", "laion5b_spark.sample.image_server", "--port-file",
                                      str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not port_file.exists() and time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        if not port_file.exists():
            self.proc.kill()
            raise RuntimeError("the sample image server did not start")
        self.port = int(port_file.read_text())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- a run killed at a random moment -----------------------------------------------------------------------
class KilledRun:
    """``cmd`` in its own process group; when ``trigger()`` first holds, wait ``delay`` s, then SIGKILL the group.
    Runs in the background (a watcher thread) so that the caller can do other work meanwhile."""

    def __init__(self, cmd: list[str], env: dict, trigger, delay: float, what: str, timeout: float = 300):
        self.cmd, self.delay, self.what = cmd, delay, what
        self.trigger_label = getattr(trigger, "label", "trigger")
        self.lines: list[str] = []
        self.landed = False  # killed while still running
        self.triggered_after: float | None = None
        self.killed_after: float | None = None
        self.rc: int | None = None
        self.at_kill: dict = {}  # units each output table listed once the kill was done
        self.t0 = time.time()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, text=True, errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, args=(trigger, timeout), daemon=True)
        self._watcher.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _watch(self, trigger, timeout: float) -> None:
        deadline = self.t0 + timeout
        while self.proc.poll() is None and time.time() < deadline:
            try:
                if trigger(self):
                    self.triggered_after = time.time() - self.t0
                    break
            except Exception:  # noqa: BLE001 - a manifest being replaced, a listing racing a write
                pass
            time.sleep(0.05)
        if self.triggered_after is not None:
            time.sleep(self.delay)
        if self.proc.poll() is None:
            self.landed = self.triggered_after is not None
            self.killed_after = time.time() - self.t0
            os.killpg(self.proc.pid, signal.SIGKILL)  # driver, JVM and Python workers: nothing cleans up
        self.rc = self.proc.wait()

    def wait(self, timeout: float = 400) -> "KilledRun":
        self._watcher.join(timeout)
        if self._watcher.is_alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self._watcher.join(30)
        self._reader.join(10)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def describe(self) -> str:
        tail = "\n".join(self.lines[-15:])
        t = f"{self.triggered_after:.1f}" if self.triggered_after is not None else None
        k = f"{self.killed_after:.1f}" if self.killed_after is not None else None
        return (f"{self.what}: {self.trigger_label} after {t}s, +{self.delay:.2f}s, killed after {k}s, "
                f"landed mid-run: {self.landed}, rc {self.rc}, units listed then: {self.at_kill}\n"
                f"--- output tail ---\n{tail}")


def first_commit(lake: Lake, table: str):
    def trigger(run: KilledRun) -> bool:
        return len(lake.table(table).manifest()["files"]) >= 1

    trigger.label = f"first commit to {table}"
    return trigger


def output_line(*patterns: str):
    def trigger(run: KilledRun) -> bool:
        return any(p in line for line in list(run.lines) for p in patterns)

    trigger.label = "output line " + " or ".join(map(repr, patterns))
    return trigger


# -- the chain ----------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    stage: str
    url: str
    storage_options: dict
    reference: str | None  # a local lake: the uninterrupted run on the same inputs (None: not run with the chain)
    kill: KilledRun
    seconds: dict = field(default_factory=dict)
    snapshot: str | None = None  # download on a local lake: a copy of the lake right after the kill


class Chain:
    """One lake built stage by stage, each stage killed once then rerun (see the module docstring)."""

    def __init__(self, name: str, url: str, storage_options: dict | None, work: Path, world: "World",
                 references=STAGES):
        self.name, self.url, self.so = name, url, dict(storage_options or {})
        self.references = tuple(references)  # stages whose uninterrupted run goes along with the killed one
        self.work, self.world = work, world
        self.lake = Lake(url, self.so)
        self.results: dict[str, StageResult] = {}
        self.failed: dict[str, BaseException] = {}

    def args(self, stage: str) -> list[str]:
        return self.world.stage_args(stage) + lake_option(self.so)

    def stage(self, stage: str) -> StageResult:
        if stage in self.failed:
            raise RuntimeError(f"{self.name}: stage {stage} already failed: {self.failed[stage]!r}")
        if stage not in self.results:
            i = STAGES.index(stage)
            if i:
                self.stage(STAGES[i - 1])
            try:
                self.results[stage] = self._run(stage)
            except BaseException as exc:
                self.failed[stage] = exc
                raise
        return self.results[stage]

    def _run(self, stage: str) -> StageResult:
        rng = random.Random(f"{self.world.seed}-{self.name}-{stage}")
        trigger, delay = self._kill_plan(stage, rng)
        args = self.args(stage)
        cmd = [sys.executable, str(ROOT / "jobs" / f"{stage}.py"), "--lake", self.url, *args]
        seconds = {}
        t0 = time.time()
        ref = None
        killed = KilledRun(cmd, self.world.env, trigger, delay, f"{self.name} {stage} (seed {self.world.seed})")
        try:
            if stage in self.references:  # meanwhile: the uninterrupted run on a local copy of the same inputs
                ref, seconds["reference"] = self.reference_run(stage)
            killed.wait()
        finally:
            killed.stop()
        seconds["killed_run"] = round(killed.killed_after or (time.time() - killed.t0), 1)
        killed.at_kill = {t: len(self.lake.table(t).manifest()["files"]) for t in OUTPUTS[stage]}
        print(killed.describe().split("\n--- output tail")[0], flush=True)
        snapshot = None
        if stage == "download" and self.lake.is_local:
            snapshot = str(self.work / "download-killed")
            shutil.copytree(self.url, snapshot)
        t = time.time()
        rc = job_class(stage)().main(["--lake", self.url, *args])  # the same command again
        seconds["rerun"] = round(time.time() - t, 1)
        seconds["stage"] = round(time.time() - t0, 1)
        if rc != 0:
            raise AssertionError(f"the rerun of {stage} after the kill exited {rc}\n{killed.describe()}")
        return StageResult(stage, self.url, self.so, ref, killed, seconds, snapshot)

    def reference_run(self, stage: str) -> tuple[str, float]:
        """The uninterrupted run of ``stage`` on a local copy of this chain's input tables of it: (lake, seconds)."""
        ref = self.work / f"ref-{stage}"
        if ref.exists():
            shutil.rmtree(ref)
        copy_tables(self.lake, INPUTS[stage], ref)
        t = time.time()
        rc = job_class(stage)().main(["--lake", str(ref), *self.world.stage_args(stage)])
        if rc != 0:
            raise AssertionError(f"the uninterrupted {stage} run on {ref} exited {rc}")
        return str(ref), round(time.time() - t, 1)

    def _kill_plan(self, stage: str, rng: random.Random):
        """(trigger, delay): unit stages die at a random moment after their first commit; batch stages (dedup,
        index) at a random moment after a phase of theirs begins, chosen at random."""
        if stage == "extract":
            return first_commit(self.lake, "pairs"), rng.uniform(0.0, 1.0)
        if stage == "download":
            return first_commit(self.lake, "images"), rng.uniform(0.0, 3.0)
        if stage == "clip":
            return first_commit(self.lake, "scored"), rng.uniform(0.0, 1.0)
        if stage == "dedup":
            phase = rng.choice(["1/2 keys", "2/2 rows"])
            return output_line(phase), rng.uniform(0.0, 0.4)
        phase = rng.choice(["export:", "building the image index", "near-duplicates:"])
        return output_line(phase), rng.uniform(0.0, 0.5)


class World:
    """What every chain of a test module shares: the crawl and its slow server, the image server, the seed."""

    def __init__(self, work: Path, seed: int):
        from laion5b_spark.sample.crawl import make_sample_crawl

        self.work, self.seed = work, seed
        self.crawl = make_sample_crawl(str(work / "crawl"), files=10, pages_per_file=12, seed=21)
        self.wat_server = SlowFiles(self.crawl["root"], delay_s=0.5)
        self.images = ImageServer(work)
        self.env = dict(os.environ, L5S_SPARK_LOG_LEVEL="ERROR", PYSPARK_PYTHON=sys.executable,
                        PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
        self.threshold = orjson.loads((Path(f"{ASSET}.json")).read_bytes())["threshold"]

    def stage_args(self, stage: str) -> list[str]:
        port = self.images.port
        return {
            "extract": ["--input", os.path.join(self.crawl["root"], "wat.paths.gz"),
                        "--input-base-url", self.wat_server.base, *FAST],
            "dedup": ["--set", "dedup.file_mb=0.02", *FAST],  # a dozen output files: commits that take a while
            "download": ["--set", f'download.allow=["127.0.0.1:{port}"]',
                         "--set", f'download.connect_to=["*=127.0.0.1:{port}"]',
                         "--set", "download.shard_rows=100", "--set", "download.threads=4",
                         "--set", "download.retries=1", "--set", "download.backoff_base_s=0.05",
                         "--set", "download.webdataset=true", *FAST],
            "clip": ["--set", "clip.model=l5s-tiny", "--set", f"clip.pretrained={ASSET}.safetensors",
                     "--set", f"clip.threshold={self.threshold}", "--set", "clip.batch_size=32",
                     "--set", "clip.read_rows=64", *FAST],
            "index": ["--set", "index.recall_queries=200", "--set", "index.max_index_memory_usage=100M",
                      "--set", "index.current_memory_available=2G", "--set", "index.near_dup_threshold=0.995",
                      "--set", "index.text=false", *FAST],  # the text index is no table: not built here
        }[stage]

    def close(self) -> None:
        self.wat_server.close()
        self.images.close()


def copy_tables(lake: Lake, names, dst: Path) -> None:
    """Committed tables of ``lake`` into the local folder ``dst`` (staging left behind): a table folder is
    self-contained, its manifest names files relative to it."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = lake.table(name).root
        if lake.is_local:
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("_staging"))
        else:
            lake.fs.invalidate_cache()
            lake.fs.get(src.rstrip("/") + "/", str(dst / name) + "/", recursive=True)
            shutil.rmtree(dst / name / "_staging", ignore_errors=True)


# -- readers -------------------------------------------------------------------------------------------------
def data_url(url: str, table: str) -> str:
    return f"{url.rstrip('/')}/{table}/data"


def _rows(cols, columns) -> list[tuple]:
    return sorted(zip(*columns)) if columns else []


def api_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    t = Lake(url, so).table(table).to_arrow(columns=list(key))
    return _rows(key, [t.column(k).to_pylist() for k in key])


def duckdb_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import duckdb

    con = duckdb.connect()
    if so:  # no httpfs extension offline: DuckDB reads s3:// through the fsspec filesystem registered here
        import s3fs

        con.register_filesystem(s3fs.S3FileSystem(**so))
    rows = con.sql(f"SELECT {', '.join(key)} FROM read_parquet('{data_url(url, table)}/*.parquet')").fetchall()
    con.close()
    return sorted(rows)


def duckdb_repeated(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import duckdb

    con = duckdb.connect()
    if so:
        import s3fs

        con.register_filesystem(s3fs.S3FileSystem(**so))
    cols = ", ".join(key)
    rows = con.sql(f"SELECT {cols}, count(*) AS n FROM read_parquet('{data_url(url, table)}/*.parquet') "
                   f"GROUP BY {cols} HAVING count(*) > 1").fetchall()
    con.close()
    return rows


def pyarrow_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import pyarrow.dataset as pads

    path = data_url(url, table) + "/"
    fs = None
    if so:
        from pyarrow.fs import S3FileSystem

        endpoint = so["endpoint_url"]
        fs = S3FileSystem(access_key=so["key"], secret_key=so["secret"], region="us-east-1",
                          endpoint_override=endpoint.split("://", 1)[1], scheme=endpoint.split("://", 1)[0])
        path = path.split("://", 1)[1]
    t = pads.dataset(path, format="parquet", filesystem=fs).to_table(columns=list(key))
    return _rows(key, [t.column(k).to_pylist() for k in key])


def polars_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import polars as pl

    opts = None
    if so:
        opts = {"aws_endpoint_url": so["endpoint_url"], "aws_access_key_id": so["key"],
                "aws_secret_access_key": so["secret"], "aws_region": "us-east-1", "aws_allow_http": "true"}
    df = pl.read_parquet(data_url(url, table) + "/*.parquet", columns=list(key), storage_options=opts)
    return _rows(key, [df[k].to_list() for k in key])


def pandas_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import pandas as pd

    df = pd.read_parquet(data_url(url, table), columns=list(key), storage_options=so or None)
    return _rows(key, [[None if v != v else v for v in df[k].tolist()] for k in key])  # NaN -> None


def hf_keys(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    opts = None
    if so:
        opts = {"key": so["key"], "secret": so["secret"], "client_kwargs": {"endpoint_url": so["endpoint_url"]}}
    cache = tempfile.mkdtemp(prefix="l5s-hf-")
    try:
        d = datasets.load_dataset("parquet", data_files=data_url(url, table) + "/*.parquet", split="train",
                                  columns=list(key), cache_dir=cache, storage_options=opts)
        return _rows(key, [d[k] for k in key])
    finally:
        shutil.rmtree(cache, ignore_errors=True)


READERS = {"duckdb": duckdb_keys, "pyarrow": pyarrow_keys, "polars": polars_keys, "pandas": pandas_keys,
           "datasets": hf_keys}


def listed_and_stored(lake: Lake, table: str, folder: str) -> tuple[set[str], set[str]]:
    """(files the manifest lists under ``folder``/, files stored there)."""
    t = lake.table(table)
    listed = set()
    for e in t.all_entries():
        for rel in e.files():
            if rel.startswith(folder + "/"):
                listed.add(rel)
    stored = {rel for rel in t.stored_files() if rel.startswith(folder + "/")}
    return listed, stored
