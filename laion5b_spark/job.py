"""The base of every job: arguments, config, lake, units, the Spark run, commits, progress and the summary.

A job lists its units and says how one unit becomes rows (``process_unit``, plain Python that runs on an
executor). Everything else lives here, once:

* units already committed to the output table are skipped, so a rerun resumes;
* each Spark task writes its unit's parquet file whole, then a small receipt in the table's staging area;
* the driver polls receipts while the Spark job runs and adds finished units to the manifest every few
  seconds (no barrier at the end of a batch, no lost work when the driver dies);
* progress (rate, ETA) while running, a summary and a run record (``LAKE/_runs/<job>/<run>.json``) at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata

import pyarrow as pa

from .accounting import ErrorSamples, Ledger, ledgers_from_dict, ledgers_to_dict, sum_ledgers
from .config import ConfigError, load_config
from .lake import Lake, LakeError, LakeRef, new_run_id, utcnow
from .resources import TaskResources, check_fits, stage_profile_ids, supports_task_profiles, task_profile
from .spark import EnvironmentProblem, get_session


@dataclass(frozen=True)
class Unit:
    """One deterministic piece of work: its output is committed whole or not at all."""

    key: str  # stable identity, e.g. a Common Crawl path relative to the base URL
    source: str  # where to read it from
    size: int | None = None
    meta: tuple = ()  # (name, value) pairs a job wants to carry (e.g. crawl id)
    # ("replaces", (unit id, key, path)) in meta: this unit rewrites a committed unit's file (Table.commit)

    @property
    def id(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    def get(self, name: str, default=None):
        return dict(self.meta).get(name, default)


@dataclass
class UnitResult:
    rows: pa.Table | None
    ledgers: dict[str, Ledger]
    errors: ErrorSamples
    info: dict = field(default_factory=dict)
    failed_reason: str | None = None  # set when the whole unit could not be processed (e.g. unreachable input)
    failed_message: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # ext -> a finished local file to commit beside the rows
    side: dict[str, pa.Table] = field(default_factory=dict)  # rows for the job's side_tables (e.g. clip's dataset)


class Job:
    """What every job shares: arguments, configuration, the lake, the run record and the summary.

    ``UnitJob`` runs one Spark task per unit (extract, download); a job whose output is one batch over a
    whole table (dedup) subclasses this directly and implements ``run``.
    """

    name = "job"
    output_table = "table"
    description = ""
    epilog = ""
    dry_run_help = "show what would run, then stop"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def describe_info(self, info: dict) -> list[str]:
        """Extra summary lines from the run's summed ``info`` (e.g. rows per language)."""
        return []

    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        raise NotImplementedError

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            prog=f"jobs/{self.name}.py",
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--lake", required=True, help="lake root: a local path or an fsspec URL such as s3://bucket/lake")
        p.add_argument("--config", help="pipeline profile, e.g. conf/pipeline/laion400m.toml (defaults: built in)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. --set extract.min_alt_length=3 (repeatable)")
        p.add_argument("--spark-profile", default="local",
                       help="conf/spark profile used when run with plain python (ignored under spark-submit, "
                            "which takes --properties-file); default: local")
        p.add_argument("--dry-run", action="store_true", help=self.dry_run_help)
        self.add_arguments(p)
        return p

    def main(self, argv: list[str] | None = None) -> int:
        args = self.parser().parse_args(argv)
        try:
            return self.run(args, argv if argv is not None else sys.argv[1:])
        except (ConfigError, LakeError, EnvironmentProblem) as exc:
            print(f"[{self.name}] error: {exc}", file=sys.stderr)
            return 2

    def new_record(self, run_id: str, argv: list[str], lake: Lake, cfg: dict) -> dict:
        return {"job": self.name, "run_id": run_id, "status": "running", "started": utcnow(), "argv": argv,
                "lake": lake.url, "table": self.output_table, "config": cfg, "versions": _versions()}

    def print_outcome(self, log, record: dict, totals: dict[str, Ledger], table, lake: Lake) -> None:
        """The end of every summary: ledgers, the job's own lines, the table and where the record is."""
        for ledger in totals.values():
            print(ledger.describe())
        for line in self.describe_info(record.get("info", {})):
            log(line)
        log(f"table {self.output_table}: {record['table_rows']:,} rows in {table.root}")
        log(f"run record: {lake.run_path(self.name, record['run_id'])}")


class UnitJob(Job):
    dry_run_help = "list the units that would run, then stop"
    row_group_size = 128 * 1024  # rows per parquet row group of a unit's file (image tables want fewer)
    side_tables: tuple[str, ...] = ()  # tables a unit also writes to, committed just before the output table
    arrow_udf = False  # run units in an iterator Arrow UDF (mapInArrow) instead of an RDD foreach

    # -- what a job overrides --------------------------------------------------------------------------
    def list_units(self, args: argparse.Namespace, cfg: dict, lake: Lake) -> list[Unit]:
        raise NotImplementedError

    def process_unit(self, unit: Unit, cfg: dict, errors: ErrorSamples) -> UnitResult:
        raise NotImplementedError

    def task_resources(self, cfg: dict) -> TaskResources | None:
        """What each of this job's tasks asks for instead of the cluster's spark.task.* defaults (Arrow UDF jobs:
        applied as a stage-level task resource profile where Spark supports one); None = the defaults."""
        return None

    # -- the rest ----------------------------------------------------------------------------------------
    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        cfg = load_config(args.config, args.set)
        lake = Lake(args.lake, cfg["lake"]["storage_options"])
        units = self.list_units(args, cfg, lake)
        table = lake.table(self.output_table)
        committed = table.committed_units()
        todo = [u for u in units if u.id not in committed]
        log = Log(self.name)
        log(f"{len(units)} units, {len(units) - len(todo)} already committed, {len(todo)} to run -> {table.root}")
        if args.dry_run:
            for u in todo:
                print(u.key)
            return 0
        lake.check_writable()

        run_id = new_run_id()
        record = self.new_record(run_id, argv, lake, cfg)
        record["units"] = {"total": len(units), "already_committed": len(units) - len(todo), "to_run": len(todo)}
        lake.write_run(self.name, run_id, record)
        state = _RunState(todo, self.side_tables)
        if todo:
            spark = get_session(f"laion5b-spark {self.name}", args.spark_profile)
            record["spark"] = {"master": spark.sparkContext.master, "app_id": spark.sparkContext.applicationId}
            self._run_spark(spark, todo, cfg, lake, table, run_id, state, log)
            record["spark"].update(state.spark_info)
        totals = sum_ledgers([ledgers_from_dict(r["counts"]) for r in state.done.values()])
        record["info"] = sum_info([r.get("info", {}) for r in state.done.values()])
        record.update(
            status="succeeded" if state.error is None else "failed",
            ended=utcnow(),
            units=dict(record["units"], done=len(state.done), failed=len(state.failed)),
            counts=ledgers_to_dict(totals),
            failed_units=[{"key": r["key"], "reason": r["reason"], "message": r["message"]}
                          for r in state.failed.values()],
            table_rows=table.num_rows(),
            seconds=round(time.time() - state.t0, 1),
        )
        if state.error:
            record["error"] = state.error
        lake.write_run(self.name, run_id, record)
        self._print_summary(log, record, totals, state, table, lake)
        return 1 if state.error else 0

    def _run_spark(self, spark, todo, cfg, lake, table, run_id, state, log) -> None:
        sc = spark.sparkContext
        job, lake_ref = self, lake.ref
        group = f"{self.name}-{run_id}"
        profile = self._stage_profile(sc, cfg, state, log) if self.arrow_udf else None

        def task(unit: Unit) -> None:
            _run_unit(job, unit, cfg, lake_ref, run_id)

        def spark_job() -> None:
            try:
                sc.setJobGroup(group, f"{self.name} {len(todo)} units", interruptOnCancel=True)
                if self.arrow_udf:
                    _run_in_arrow_udf(spark, todo, task, profile)
                else:
                    sc.parallelize(todo, len(todo)).foreach(task)
            except BaseException as exc:  # noqa: BLE001 - reported by the driver below
                state.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                state.error_trace = traceback.format_exc()

        runner = threading.Thread(target=spark_job, name="spark-job", daemon=True)
        runner.start()
        interval = float(cfg["run"]["commit_interval_s"])
        progress_every = float(cfg["run"]["progress_interval_s"])
        last_progress = last_commit = time.time()
        try:
            while runner.is_alive():
                runner.join(timeout=min(interval, 1.0))
                if time.time() - last_commit >= interval:
                    state.collect(table, run_id)
                    last_commit = time.time()
                if time.time() - last_progress >= progress_every and runner.is_alive():
                    log(state.progress())
                    last_progress = time.time()
        except KeyboardInterrupt:
            log("interrupted: cancelling the Spark job; finished units stay committed")
            sc.cancelJobGroup(group)
            runner.join(timeout=30)
            state.error = state.error or "interrupted"
        state.collect(table, run_id)  # the last receipts
        if profile is not None:  # what Spark applied, not only what was asked for
            state.spark_info["stage_resource_profiles"] = stage_profile_ids(sc, group)
        if state.error and state.error_trace:
            print(state.error_trace, file=sys.stderr)
        if state.error is None and not (set(state.done) | set(state.failed)) >= {u.id for u in todo}:
            state.error = "the Spark job ended but some units wrote no receipt"
        if state.error is None:
            table.clean_staging(run_id)

    def _stage_profile(self, sc, cfg, state, log):
        res = self.task_resources(cfg)
        if not res:
            return None
        asked = {"cpus": res.cpus, "gpus": res.gpus}
        if not supports_task_profiles(sc.master):
            cpus = sc.getConf().get("spark.task.cpus", "1")
            log(f"task resources ({res.describe()}) not applied: Spark runs task resource profiles on standalone, "
                f"YARN and Kubernetes, not {sc.master}; tasks get spark.task.cpus={cpus}")
            state.spark_info["task_resources"] = dict(asked, applied=False)
            return None
        check_fits(res, sc.getConf())
        profile = task_profile(res)
        log(f"task resources: {res.describe()} (stage-level resource profile {profile.id})")
        state.spark_info["task_resources"] = dict(asked, applied=True, profile_id=profile.id)
        return profile

    def _print_summary(self, log, record, totals, state, table, lake) -> None:
        u = record["units"]
        log(f"run {record['run_id']} {record['status']} in {record['seconds']}s: "
            f"{u['done']} units done, {u['failed']} failed, {u['already_committed']} were already committed")
        for f in record["failed_units"][:10]:
            log(f"unit failed ({f['reason']}): {f['key']}: {f['message']}")
        if u["failed"]:
            log(f"{u['failed']} units failed; rerun the same command to retry them (committed units are skipped)")
        if state.error:
            log(f"the run stopped early: {state.error}; rerun the same command to resume")
        self.print_outcome(log, record, totals, table, lake)


class _RunState:
    """Driver-side view of a run: receipts read so far, what is committed, progress."""

    def __init__(self, todo: list[Unit], side_tables: tuple[str, ...] = ()):
        self.todo = {u.id: u for u in todo}
        self.side_tables = side_tables
        self.side_manifests: dict[str, dict] = {}
        self.total_bytes = sum(u.size or 0 for u in todo)
        self.seen: set[str] = set()
        self.done: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}
        self.error: str | None = None
        self.error_trace: str | None = None
        self.manifest: dict | None = None  # the output table's manifest, read once per run
        self.spark_info: dict = {}  # for the run record's "spark" (task resources asked for and applied)
        self.t0 = time.time()

    def collect(self, table, run_id: str) -> None:
        if self.manifest is None:
            self.manifest = table.manifest()
        entries, paths, fresh = [], [], []
        for r in table.receipts(run_id, skip=self.seen):
            paths.append(r.pop("_receipt_path"))
            self.seen.add(paths[-1])
            unit = r["unit"]
            if unit in self.done:
                continue  # a second attempt of a unit (retry, speculation): the first receipt wins
            if r["status"] == "done":
                self.failed.pop(unit, None)
                self.done[unit] = r
                fresh.append(r)
                entry = {k: r[k] for k in ("unit", "key", "path", "rows", "bytes", "counts")}
                if r.get("extra"):
                    entry["extra"] = r["extra"]
                if r.get("replaces"):  # a rewrite of a committed unit's file: listed in its place
                    entry["unit"], entry["key"], entry["replaces"] = r["replaces"]
                entries.append(entry)
            else:
                self.failed[unit] = r
        if entries:
            for name in self.side_tables:  # first: a unit listed in the output table has its side rows listed
                side = table.lake.table(name)
                manifest = self.side_manifests.setdefault(name, side.manifest())
                side.commit([dict(r["side"][name], unit=r["unit"], key=r["key"], counts={}) for r in fresh],
                            run_id, manifest)
            table.commit(entries, run_id, self.manifest)
            table.remove_files(table.replaced_files)
        table.drop_receipts(paths)

    def progress(self) -> str:
        elapsed = max(time.time() - self.t0, 1e-6)
        n, total = len(self.done) + len(self.failed), len(self.todo)
        rows = sum(r["rows"] for r in self.done.values())
        done_bytes = sum(self.todo[u].size or 0 for u in list(self.done) + list(self.failed) if u in self.todo)
        if self.total_bytes and done_bytes:
            frac = done_bytes / self.total_bytes
        else:
            frac = n / total if total else 1.0
        eta_s = _duration(elapsed / frac - elapsed) if frac > 0 else "?"
        mb = f"{done_bytes / elapsed / 1e6:.1f} MB/s | " if self.total_bytes else ""  # units of unknown size
        return (f"{n}/{total} units ({100 * frac:.0f}%) | {rows:,} rows | {rows / elapsed:,.0f} rows/s | "
                f"{mb}{len(self.failed)} failed | ETA {eta_s}")


def language_line(what: str, languages: dict[str, int], top: int = 12) -> list[str]:
    """The summary line "<what> by language (N languages): en 47.7%, ru 13.4%, ..." (nothing when empty)."""
    if not languages:
        return []
    total = sum(languages.values()) or 1
    ranked = sorted(languages.items(), key=lambda kv: -kv[1])
    shares = ", ".join(f"{lang} {100 * n / total:.1f}%" for lang, n in ranked[:top])
    return [f"{what} by language ({len(ranked)} languages): {shares}"]


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return (f"{d}d " if d else "") + f"{h:d}:{m:02d}:{s:02d}"


def sum_info(infos: list[dict]) -> dict:
    """Sum the numbers (and dicts of numbers) units report in ``info``; other values are left out."""
    out: dict = {}
    for info in infos:
        for k, v in info.items():
            if isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                out[k] = round(out.get(k, 0) + v, 3)
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                        d[kk] = d.get(kk, 0) + vv
    return out


def _run_unit(job: UnitJob, unit: Unit, cfg: dict, lake_ref: LakeRef, run_id: str) -> None:
    """Executor side: process one unit, write its file whole, then its receipt."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    attempt = ctx.attemptNumber() if ctx else 0
    table = lake_ref.open().table(job.output_table)
    t0 = time.time()
    errors = ErrorSamples(per_reason=int(cfg["run"]["error_samples_per_reason"]))
    try:
        result = job.process_unit(unit, cfg, errors)
    except Exception as exc:  # noqa: BLE001 - a bug must cost one unit (reported, retried), not the run
        message = f"{type(exc).__name__}: {exc}"
        errors.add("unit_error", f"{message}\n{traceback.format_exc()}", source=unit.source)
        result = UnitResult(None, {}, errors, failed_reason="unit_error", failed_message=message)
    receipt = {"unit": unit.id, "key": unit.key, "attempt": attempt, "seconds": round(time.time() - t0, 3),
               "info": result.info, "counts": ledgers_to_dict(result.ledgers), "replaces": unit.get("replaces")}
    receipt["errors"] = table.write_errors(run_id, unit.id, errors.samples)
    if result.failed_reason:
        receipt.update(status="failed", reason=result.failed_reason, message=result.failed_message)
    else:
        rows = result.rows.num_rows if result.rows is not None else 0
        path, size = None, 0
        extra = {}
        for ext, local in result.extra.items():  # moved in before the receipt: never listed half-written
            extra[ext] = table.data_file(unit.id, run_id, attempt, ext)
            size += os.path.getsize(local)
            table.lake.upload(local, table.path(extra[ext]))
            if os.path.exists(local):  # an object-store upload copies
                os.remove(local)
        if rows:
            path = table.data_file(unit.id, run_id, attempt)
            size += table.write_parquet(path, result.rows, job.row_group_size)
        side = {}
        for name in job.side_tables:
            t, srows = table.lake.table(name), result.side.get(name)
            n = srows.num_rows if srows is not None else 0
            spath = t.data_file(unit.id, run_id, attempt) if n else None
            side[name] = {"path": spath, "rows": n, "bytes": t.write_parquet(spath, srows, job.row_group_size) if n else 0}
        receipt.update(status="done", path=path, rows=rows, bytes=size, extra=extra, side=side)
    table.write_receipt(run_id, unit.id, attempt, receipt)


def _run_in_arrow_udf(spark, todo: list[Unit], task, profile=None) -> None:
    """One partition per unit, run by an iterator Arrow UDF: what GPU stages use, so that Spark's task resources
    (``spark.task.resource.gpu.amount``, or the stage's own ``profile``) and Arrow batching apply. Units travel
    pickled, one per row."""
    import pickle

    rows = [(pickle.dumps(u),) for u in todo]
    df = spark.createDataFrame(spark.sparkContext.parallelize(rows, len(rows)), "unit binary")

    def run(batches):
        for batch in batches:
            for blob in batch.column(0).to_pylist():
                unit = pickle.loads(blob)
                task(unit)
                yield pa.record_batch([pa.array([unit.id])], names=["unit"])

    df.mapInArrow(run, "unit string", profile=profile).write.format("noop").mode("overwrite").save()


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("laion5b_spark", "pyspark", "pyarrow", "fastwarc", "selectolax", "pycld2", "ftfy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class SparkProgress:
    """For batch jobs: logs the running Spark stages' tasks done, with ETA, every few seconds."""

    def __init__(self, sc, log, every_s: float):
        self.sc, self.log, self.every = sc, log, every_s
        self.label = "starting"
        self._first_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> "SparkProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def step(self, label: str) -> None:
        self.label = label
        self.log(label)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.log(self.line())
            except Exception:  # noqa: BLE001 - progress must never break a run
                pass

    def line(self) -> str:
        tracker, now, parts = self.sc.statusTracker(), time.time(), []
        for sid in sorted(tracker.getActiveStageIds()):
            info = tracker.getStageInfo(sid)
            if info is None:
                continue
            t0 = self._first_seen.setdefault(sid, now)
            done, total = info.numCompletedTasks, info.numTasks
            rate = done / (now - t0) if now > t0 else 0.0
            eta = _duration((total - done) / rate) if rate > 0 else "?"
            parts.append(f"stage {sid} {done}/{total} tasks ({info.numActiveTasks} running, "
                         f"{info.numFailedTasks} failed) ETA {eta}")
        return f"{self.label}: " + ("; ".join(parts) or "between stages")


class Log:
    def __init__(self, name: str):
        self.name = name

    def __call__(self, msg: str) -> None:
        print(f"[{self.name} {time.strftime('%H:%M:%S')}] {msg}", flush=True)
