"""The base of every job: arguments, configuration, the lake, one run lifecycle, and for unit jobs the Spark run.

``Job.main`` owns the lifecycle of every job: parse, load the configuration, open and check the lake on the driver
(one line and exit 2 for usage or configuration errors, before Spark starts), then ``run`` inside a ``RunContext``
that keeps the run record (running -> succeeded / partial / failed, a heartbeat, Spark facts, the error) and
turns the outcome into the exit code.

``UnitJob`` adds units: a job lists them and says how one becomes rows (``process_unit(unit, ctx)``, plain
Python on an executor, with the stage's settings typed once on the driver). Committed units are skipped; each
task stages its files and a receipt; the driver commits finished units every few seconds while Spark runs (no
barrier at the end of a batch), and logs progress from what running units report.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata

import orjson
import pyarrow as pa

from .accounting import ErrorSamples, Ledger, ledgers_from_dict, ledgers_to_dict, sum_ledgers
from .config import ConfigError, format_config, load_config
from .lake import FileEntry, Lake, LakeError, LakeRef, new_run_id, utcnow
from .resources import TaskResources, check_fits, stage_profile_ids, supports_task_profiles, task_profile
from .spark import EnvironmentProblem, get_session, profile_path, read_properties, under_spark_submit

# exit codes (README "Exit codes")
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
MESSAGE_CHARS = 300  # a unit's error line in summaries and run records; the whole text goes to _errors/
# unit failure reasons a rerun of the same command may fix (the others fail the same way until the cause is fixed)
TRANSIENT_REASONS = frozenset({"input_unreachable"})


@dataclass(frozen=True)
class Unit:
    """One deterministic piece of work: its output is committed whole or not at all."""

    key: str  # stable identity, e.g. a Common Crawl path relative to the base URL
    source: str  # where to read it from
    size: int | None = None  # bytes it reads, when known (progress)
    rows: int | None = None  # rows it reads, when known (progress, ETA)
    meta: tuple = ()  # (name, value) pairs a job wants to carry (e.g. crawl id, a shard's row range)
    covers: tuple = ()  # (name, value) pairs of the input content it covers, recorded in its manifest entry
    replaces: str | None = None  # the listed file of the committed unit ``ident`` this unit rewrites, in its place
    ident: str | None = None  # the unit id, when it is not derived from the key (a unit that replaces another)

    @property
    def id(self) -> str:
        """The unit id the manifest lists."""
        return self.ident or hashlib.sha1(self.key.encode()).hexdigest()[:16]

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
    extra: dict[str, str] = field(default_factory=dict)  # kind -> a finished local file committed beside the rows
    side: dict[str, pa.Table] = field(default_factory=dict)  # rows for the job's side_tables (e.g. clip's dataset)
    named: dict[str, str] = field(default_factory=dict)  # side files the job names (add_named_files) -> local file
    # manifest entry fields other than the run's own (e.g. compact keeps the images ledger under ``counts`` and
    # records ``compacted``); the run's ledgers stay ``ledgers``
    entry_fields: dict = field(default_factory=dict)


@dataclass
class UnitContext:
    """What a unit's work gets on the executor: the lake, the stage's settings (typed once on the driver), the
    error sink, and a way to say how far it is."""

    lake_ref: LakeRef
    settings: object
    errors: ErrorSamples
    run_id: str = ""
    table: str = ""
    unit_id: str = ""  # names the unit's progress note (a run holds each unit id once)
    progress_every_s: float = 5.0
    _last_progress: float = 0.0

    @cached_property
    def lake(self) -> Lake:
        return self.lake_ref.open()

    def progress(self, rows: int, bytes_read: int = 0) -> None:
        """Rows (and input bytes) done so far in this unit, for the driver's progress line; throttled."""
        now = time.time()
        if not self.table or now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        try:
            t = self.lake.table(self.table)
            self.lake.write_bytes(t.progress_path(self.run_id, self.unit_id),
                                  orjson.dumps({"rows": int(rows), "bytes": int(bytes_read)}))
        except Exception:  # noqa: BLE001 - progress must never cost a unit
            pass


class RunContext:
    """One run's record, the same for every job: ``running`` with a heartbeat while it works, then
    ``succeeded`` (every unit done), ``partial`` (some units failed) or ``failed`` (none done, or the run stopped),
    with Spark's facts, counts, the error and its trace. ``exit_code`` follows the status."""

    def __init__(self, job: "Job", lake: Lake, cfg: dict, argv: list[str], log: "Log"):
        self.job, self.lake, self.log = job, lake, log
        self.run_id = new_run_id()
        self.t0 = time.time()
        self.record = {"job": job.name, "run_id": self.run_id, "status": "running", "started": utcnow(),
                       "heartbeat": utcnow(), "argv": argv, "lake": lake.url, "table": job.output_table,
                       "tables": list(job.output_tables()),
                       "grows": list(job.output_tables()) if job.grows_tables else [],
                       "config": cfg, "versions": _versions()}
        self._last_beat = time.time()

    def write(self) -> None:
        self.lake.write_run(self.job.name, self.run_id, self.record)

    def update(self, **fields) -> None:
        self.record.update(fields)

    def heartbeat(self, every_s: float = 30.0) -> None:
        """Rewrite the record now and then while running: a record whose heartbeat stops is a dead run."""
        if time.time() - self._last_beat >= every_s:
            self._last_beat = time.time()
            self.record["heartbeat"] = utcnow()
            self.write()

    def spark(self, spark) -> None:
        sc = spark.sparkContext
        self.record.setdefault("spark", {}).update(master=sc.master, app_id=sc.applicationId)

    def finish(self, *, done: int, failed: int, error: str | None = None, trace: str | None = None,
               **fields) -> int:
        """Write the final record; the exit code. ``done`` / ``failed``: units (a batch job counts its batch)."""
        if error is None and failed == 0:
            status = "succeeded"
        elif done > 0:
            status = "partial"
        else:
            status = "failed"
        self.record.update(fields, status=status, ended=utcnow(), heartbeat=utcnow(),
                           seconds=round(time.time() - self.t0, 1))
        if error:
            self.record["error"] = short(error)
        if trace:
            self.record["trace"] = trace
        self.write()
        return {"succeeded": EXIT_OK, "partial": EXIT_PARTIAL}.get(status, EXIT_FAILED)

    def fail(self, exc: BaseException) -> int:
        """The run stopped on an exception: recorded with its trace, one line printed, the failed exit code."""
        message = short(f"{type(exc).__name__}: {exc}")
        code = self.finish(done=0, failed=1, error=message, trace=traceback.format_exc())
        self.log(f"run {self.run_id} failed: {message}")
        self.log(f"the whole trace is in {self.lake.url_of(self.lake.run_path(self.job.name, self.run_id))}")
        return code


class Job:
    """What every job shares: arguments, configuration, the lake and the run lifecycle.

    ``UnitJob`` runs one Spark task per unit (extract, download, clip); a job whose output is one batch over a
    whole table (dedup, index) or that needs no Spark (stats) implements ``run(args, cfg, lake, log, argv)``
    and uses ``self.start_run`` for its record.
    """

    name = "job"
    output_table = "table"
    description = ""
    epilog = ""
    dry_run_help = "show what would run, then stop"
    writes = True  # whether the job writes to the lake (checked writable before any work)
    grows_tables = True  # adds units to its output tables (False: only rewrites listed files; --follow ignores it)
    uses_spark = True
    prog: str | None = None  # the command its usage lines name ("l5s extract" when started by l5s)
    config_sections: tuple[str, ...] = ()  # the sections --print-config shows besides lake and run (default: its name)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def describe_info(self, info: dict) -> list[str]:
        """Extra summary lines from the run's summed ``info`` (e.g. rows per language)."""
        return []

    def run(self, args: argparse.Namespace, cfg: dict, lake: Lake, log: "Log", argv: list[str]) -> int:
        raise NotImplementedError

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            prog=self.prog or f"jobs/{self.name}.py",
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--lake", required=True,
                       help="lake root: a local path or an fsspec URL such as s3://bucket/lake")
        p.add_argument("--config", help="pipeline profile, e.g. conf/pipeline/laion400m.toml (defaults: built in)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one setting, e.g. --set extract.min_alt_length=3 (repeatable)")
        if self.uses_spark:
            p.add_argument("--spark-profile", default="local",
                           help="conf/spark profile used when run with plain python (ignored under spark-submit, "
                                "which takes --properties-file); default: local")
        p.add_argument("--dry-run", action="store_true", help=self.dry_run_help)
        if getattr(self, "follows", None):
            p.add_argument("--follow", action="store_true",
                           help=f"keep taking newly committed units of {self.follows} while a run that writes it is "
                                "live (e.g. download beside clip), and finish once it has ended and nothing is left")
            p.add_argument("--follow-poll-s", type=float, default=10.0, metavar="S",
                           help="with --follow: seconds between looks at the input table (default 10)")
            p.add_argument("--follow-start-s", type=float, default=300.0, metavar="S",
                           help=f"with --follow: how long to wait for a run that writes {self.follows} to start (it "
                                "may be submitted a moment after this one; default 300)")
            p.add_argument("--follow-stale-s", type=float, default=600.0, metavar="S",
                           help="with --follow: a writing run whose heartbeat is older than this is dead, not "
                                "followed (default 600)")
        p.add_argument("--print-config", action="store_true",
                       help="print the effective configuration, each value with where it came from (default, the "
                            "profile, a --set), then stop (no lake needed)")
        self.add_arguments(p)
        return p

    def main(self, argv: list[str] | None = None) -> int:
        given = sys.argv[1:] if argv is None else argv
        parser = self.parser()
        if "--print-config" in given:  # it needs no lake and no input
            for action in parser._actions:
                action.required = False
        args = parser.parse_args(argv)  # argparse exits 2 with its usage line
        log = Log(self.name)
        try:
            if args.print_config:
                return self.print_config(args)
            cfg = load_config(args.config, args.set)
            lake = Lake(args.lake, cfg["lake"]["storage_options"])
            if self.writes and not args.dry_run:
                lake.check_usable()
            else:
                lake.check_readable()
            return self.run(args, cfg, lake, log, argv if argv is not None else sys.argv[1:])
        except (ConfigError, LakeError, EnvironmentProblem) as exc:
            self._close_run(exc)
            print(f"[{self.name}] error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BaseException as exc:  # a bug or an interrupt: the record says so, the trace is printed as usual
            self._close_run(exc)
            raise

    def print_config(self, args: argparse.Namespace) -> int:
        sources: dict[str, str] = {}
        cfg = load_config(args.config, args.set, sources)
        own = [s for s in (self.config_sections or (self.name,)) if s in cfg]
        spark_props = self.uses_spark and not under_spark_submit()
        path = profile_path(args.spark_profile) if spark_props else None  # a missing profile: exit 2, nothing printed
        print(f"# effective configuration of {self.name} (profile: {args.config or 'built-in defaults'})")
        print("\n".join(format_config(cfg, sources, ["lake", "run", *own])).rstrip())
        if path is not None:
            print(f"\n# Spark properties from {path} (--spark-profile {args.spark_profile}; under spark-submit its "
                  "--properties-file gives them instead)")
            for key, value in read_properties(path).items():
                print(f"{key} {value}")
        return EXIT_OK

    def _close_run(self, exc: BaseException) -> None:
        """A run record left ``running`` by an exception that escaped ``run`` becomes ``failed``."""
        run = getattr(self, "current_run", None)
        if run is not None and run.record["status"] == "running":
            try:
                run.finish(done=0, failed=1, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
            except Exception:  # noqa: BLE001 - the lake itself may be what failed
                pass

    def start_run(self, lake: Lake, cfg: dict, argv: list[str], log: "Log", **fields) -> RunContext:
        """The run record, written as ``running``; every output table's half-done commits finished first.

        A table has one writer at a time (its manifest is read, changed and written by one driver): a live run of
        another job that writes one of these tables stops this run before any work. Two starting at once both see
        the other once their records are written; the later one (by start, then run id) steps back."""
        stale_s = float(cfg["run"]["writer_stale_s"])
        self._refuse_other_writers(lake, stale_s)
        for name in self.output_tables():
            if lake.table(name).recover():
                log(f"finished the commit a killed run left half done in {name}")
        run = RunContext(self, lake, cfg, argv, log)
        run.update(**fields)
        run.write()
        self.current_run = run
        self._refuse_other_writers(lake, stale_s, (run.record["started"], run.run_id))
        return run

    def _refuse_other_writers(self, lake: Lake, stale_s: float, mine: tuple[str, str] | None = None) -> None:
        from .fsck import RunInfo

        mine_tables, now = set(self.output_tables()), time.time()
        for job in lake.jobs():
            if job == self.name:  # a rerun of the same job after a kill must not wait for its own dead record
                continue
            for rec in lake.runs(job):
                info = RunInfo(job, str(rec.get("run_id")), rec)
                shared = mine_tables & set(rec.get("tables") or [rec.get("table")])
                if not shared or not info.live(now, stale_s):
                    continue
                if mine is not None and (str(rec.get("started")), info.run_id) > mine:
                    continue  # it started after this run: it steps back
                age = info.heartbeat_age(now)
                raise LakeError(f"{job} run {info.run_id} is writing {', '.join(sorted(shared))} (heartbeat "
                                f"{'?' if age is None else f'{age:.0f} s'} ago) and a table has one writer at a "
                                f"time: run {self.name} after it ends (if it was killed, its record counts as dead "
                                f"after run.writer_stale_s = {stale_s:.0f} s without a heartbeat)")

    def output_tables(self) -> tuple[str, ...]:
        return (self.output_table,)

    def print_outcome(self, log, record: dict, totals: dict[str, Ledger], lake: Lake) -> None:
        """The end of every summary: ledgers, the job's own lines, the table and where the record is."""
        for ledger in totals.values():
            print(ledger.describe())
        for line in self.describe_info(record.get("info", {})):
            log(line)
        if "table_rows" in record:
            log(f"table {self.output_table}: {record['table_rows']:,} rows in {lake.url_of(lake.table(self.output_table).root)}")
        log(f"run record: {lake.url_of(lake.run_path(self.name, record['run_id']))}")


class UnitJob(Job):
    dry_run_help = "list the units that would run, then stop"
    row_group_size = 128 * 1024  # rows per parquet row group of a unit's file (image tables want fewer)
    side_tables: tuple[str, ...] = ()  # tables a unit also writes to, committed just before the output table
    arrow_udf = False  # run units in an iterator Arrow UDF (mapInArrow) instead of an RDD foreach
    follows: str | None = None  # the input table --follow keeps taking new units of while its writer runs

    # -- what a job overrides --------------------------------------------------------------------------
    def settings(self, args: argparse.Namespace, cfg: dict, lake: Lake) -> object:
        """The stage's settings, typed and checked once on the driver (a bad value stops the run here, in one
        line); shipped to every task in its UnitContext."""
        return None

    def list_units(self, args: argparse.Namespace, settings, lake: Lake) -> list[Unit]:
        raise NotImplementedError

    def recorded_settings(self, settings) -> dict:
        """Settings that make the output one table (image size, CLIP model, thresholds): recorded in its manifest,
        and a rerun with other values stops before any work naming the setting (Table.check_meta). Settings that
        only cut units (download.shard_rows) need no entry here: resume is keyed by what entries cover."""
        return {}

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        raise NotImplementedError

    def task_resources(self, settings) -> TaskResources | None:
        """What each of this job's tasks asks for instead of the cluster's spark.task.* defaults (Arrow UDF jobs:
        applied as a stage-level task resource profile where Spark supports one); None = the defaults."""
        return None

    def output_tables(self) -> tuple[str, ...]:
        return (self.output_table, *self.side_tables)

    # -- the rest ----------------------------------------------------------------------------------------
    def run(self, args, cfg, lake, log, argv) -> int:
        settings = self.settings(args, cfg, lake)
        table = lake.table(self.output_table)
        fixed = self.recorded_settings(settings)
        table.check_meta(fixed)
        follow = bool(getattr(args, "follow", False))
        if follow and not args.dry_run:
            if min(args.follow_poll_s, args.follow_stale_s, args.follow_start_s) <= 0:
                raise ConfigError("--follow-poll-s, --follow-start-s and --follow-stale-s must be > 0")
            self._follow_t0, self._follow_seen = time.time(), False
            self._await_input(args, lake, log)
        units = self._list_units(args, settings, lake, follow)
        committed = table.committed_units()
        todo = [u for u in units if u.replaces or u.id not in committed]
        log(f"{len(units)} units, {len(units) - len(todo)} already committed, {len(todo)} to run -> "
            f"{lake.url_of(table.root)}")
        if args.dry_run:
            for u in todo:
                print(u.key)
            return EXIT_OK
        run = self.start_run(lake, cfg, argv, log,
                             units={"total": len(units), "already_committed": len(units) - len(todo),
                                    "to_run": len(todo)})
        state = _RunState(todo, self.side_tables, fixed)
        spark = ctx = None
        while True:
            if todo:
                if spark is None:
                    spark = get_session(f"laion5b-spark {self.name}", args.spark_profile)
                    run.spark(spark)
                    ctx = UnitContext(lake.ref, settings, ErrorSamples(int(cfg["run"]["error_samples_per_reason"])),
                                      run.run_id, self.output_table,
                                      progress_every_s=max(1.0, float(cfg["run"]["progress_interval_s"]) / 2))
                self._run_spark(spark, todo, ctx, cfg, table, run, state, log)
                run.record["spark"].update(state.spark_info)
            if not follow or state.error:
                break
            todo = self._next_units(args, settings, lake, table, state, run, log)
            if not todo:
                break
            state.add(todo)
            run.update(units=dict(run.record["units"], total=run.record["units"]["total"] + len(todo),
                                  to_run=run.record["units"]["to_run"] + len(todo)))
        totals = sum_ledgers([ledgers_from_dict(r["counts"]) for r in state.done.values()])
        failed_units = [{k: r[k] for k in ("key", "reason", "message")} for r in state.failed.values()]
        failed = len(state.failed) + len(state.missing)
        code = run.finish(
            done=len(state.done), failed=failed, error=state.error, trace=state.error_trace,
            units=dict(run.record["units"], done=len(state.done), failed=failed),
            counts=ledgers_to_dict(totals), info=sum_info([r.get("info", {}) for r in state.done.values()]),
            failed_units=failed_units, table_rows=table.num_rows())
        self._print_summary(log, run.record, totals, state, lake)
        return code

    def _list_units(self, args, settings, lake: Lake, follow: bool) -> list[Unit]:
        try:
            return self.list_units(args, settings, lake)
        except LakeError:
            if follow and not lake.table(self.follows).entries():
                return []  # nothing committed upstream yet: --follow waits for it
            raise

    def _writers(self, lake: Lake, args) -> list[str]:
        """Live runs (a fresh heartbeat) of any job that adds units to the followed table (not one that only rewrites
        its files, as compact does: clip --follow and compact --follow would wait for each other)."""
        from .fsck import RunInfo

        now, live = time.time(), []
        for job in lake.jobs():
            for rec in lake.runs(job):
                tables = rec.get("grows", rec.get("tables") or [rec.get("table")])
                if self.follows in tables and RunInfo(job, str(rec.get("run_id")), rec).live(now, args.follow_stale_s):
                    live.append(f"{job} run {rec.get('run_id')}")
        return sorted(live)

    def _await_input(self, args, lake: Lake, log) -> None:
        """--follow at start: a live writer of the followed table, or committed rows in it, within
        --follow-start-s (the writer may be submitted a moment later); else the run stops before any work."""
        said = False
        while not self._writers(lake, args) and not lake.table(self.follows).entries():
            if time.time() - self._follow_t0 >= args.follow_start_s:
                raise LakeError(f"{self.follows} has no committed rows and no live run writes it: start its job "
                                "first (or beside this one), then follow it")
            if not said:
                log(f"follow: waiting up to {args.follow_start_s:.0f} s for a run that writes {self.follows}")
                said = True
            time.sleep(min(args.follow_poll_s, 1.0))

    def _next_units(self, args, settings, lake: Lake, table, state: "_RunState", run: RunContext, log) -> list[Unit]:
        """--follow: the input's units this run has not taken yet, once there are some; [] once no live run writes
        the input and nothing is left (writers are looked at before listing, so their last commits are seen). Until
        a writer has been seen, one that starts within --follow-start-s is waited for."""
        said = None
        while True:
            writers = self._writers(lake, args)
            self._follow_seen = self._follow_seen or bool(writers)
            committed = table.committed_units()
            listed = self._list_units(args, settings, lake, True)
            units = [u for u in listed
                     if (u.replaces or u.id not in committed) and u.id not in state.done and u.id not in state.failed]
            if units:
                log(f"follow: {len(units)} new units of {self.follows}")
                return units
            starting = not self._follow_seen and time.time() - self._follow_t0 < args.follow_start_s
            if not writers and not starting:
                # a unit rewritten upstream after this run took it (download --retry-failed): taken again by a rerun
                rewritten = [u.key for u in listed if u.id in state.done and u.replaces is not None]
                if rewritten:
                    state.error = (f"{len(rewritten)} units of {self.follows} were rewritten after this run took "
                                   f"them (e.g. {rewritten[0]}): rerun the same command to take them again")
                log(f"follow: no live run writes {self.follows} and every unit is taken: finishing")
                return []
            if said != writers:
                log(f"follow: waiting for {', '.join(writers)} to commit more of {self.follows}" if writers else
                    f"follow: waiting up to {args.follow_start_s:.0f} s for a run that writes {self.follows} to start")
                said = writers
            run.heartbeat()
            time.sleep(args.follow_poll_s)

    def _run_spark(self, spark, todo, ctx: UnitContext, cfg, table, run: RunContext, state, log) -> None:
        sc = spark.sparkContext
        job = self
        group = f"{self.name}-{run.run_id}"
        profile = self._stage_profile(sc, ctx.settings, state, log) if self.arrow_udf else None

        def task(unit: Unit) -> None:
            _run_unit(job, unit, ctx)

        def spark_job() -> None:
            try:
                sc.setJobGroup(group, f"{self.name} {len(todo)} units", interruptOnCancel=True)
                if self.arrow_udf:
                    _run_in_arrow_udf(spark, todo, task, profile)
                else:
                    sc.parallelize(todo, len(todo)).foreach(task)
            except BaseException as exc:  # noqa: BLE001 - reported by the driver below
                state.error = short(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                state.error_trace = traceback.format_exc()

        runner = threading.Thread(target=spark_job, name="spark-job", daemon=True)
        state.t0 = time.time()  # rates and ETA from when the work starts, not from the Spark session's start
        runner.start()
        interval = float(cfg["run"]["commit_interval_s"])
        progress_every = float(cfg["run"]["progress_interval_s"])
        last_commit = time.time()
        last_progress = time.time() - progress_every + min(progress_every, 3.0)  # a first line after ~3 s
        try:
            while runner.is_alive():
                runner.join(timeout=min(interval, 1.0))
                if time.time() - last_commit >= interval:
                    state.collect(table, run.run_id)
                    run.heartbeat()
                    last_commit = time.time()
                if time.time() - last_progress >= progress_every and runner.is_alive():
                    log(state.progress(table, run.run_id, sc))
                    last_progress = time.time()
        except KeyboardInterrupt:
            log("interrupted: cancelling the Spark job; finished units stay committed")
            sc.cancelJobGroup(group)
            runner.join(timeout=30)
            state.error = state.error or "interrupted"
        state.collect(table, run.run_id)  # the last receipts
        if profile is not None:  # what Spark applied, not only what was asked for
            state.spark_info["stage_resource_profiles"] = stage_profile_ids(sc, group)
        state.missing += [u for u in todo if u.id not in state.done and u.id not in state.failed]
        if state.error is None and state.missing:
            state.error = f"the Spark job ended but {len(state.missing)} units wrote no receipt"
        for name in (self.output_table, *self.side_tables):  # what is left there was never committed
            table.lake.table(name).clean_staging(run.run_id)

    def _stage_profile(self, sc, settings, state, log):
        res = self.task_resources(settings)
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

    def _print_summary(self, log, record, totals, state, lake) -> None:
        u = record["units"]
        log(f"run {record['run_id']} {record['status']} in {record['seconds']}s: "
            f"{u['done']} units done, {u['failed']} failed, {u['already_committed']} were already committed")
        for f in record["failed_units"][:10]:
            log(f"unit failed ({f['reason']}): {f['key']}: {f['message']}")
        if u["failed"]:
            reasons = {f["reason"] for f in record["failed_units"]}
            where = lake.url_of(lake.table(self.output_table).path(f"_errors/{record['run_id']}"))
            if reasons <= TRANSIENT_REASONS:
                log(f"{u['failed']} units failed for reasons a later try may not meet; rerun the same command to "
                    "retry just them (committed units are skipped)")
            else:
                log(f"{u['failed']} units failed ({', '.join(sorted(reasons))}): a rerun fails the same way until the "
                    f"cause is fixed; whole messages and traces are in {where}")
        if state.error:
            log(f"the run stopped early: {state.error}; rerun the same command to resume")
        self.print_outcome(log, record, totals, lake)


class _RunState:
    """Driver-side view of a run: receipts read so far, what is committed, progress."""

    def __init__(self, todo: list[Unit], side_tables: tuple[str, ...] = (), fixed: dict | None = None):
        self.todo = {u.id: u for u in todo}  # receipts and progress notes are named by unit id
        self.side_tables = side_tables
        self.fixed = fixed or {}
        self.side_manifests: dict[str, dict] = {}
        self.total_bytes = sum(u.size or 0 for u in todo)
        self.total_rows = sum(u.rows or 0 for u in todo) if all(u.rows is not None for u in todo) else 0
        self.seen: set[str] = set()
        self.done: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}
        self.missing: list[Unit] = []
        self.error: str | None = None
        self.error_trace: str | None = None
        self.manifest: dict | None = None  # the output table's manifest, read once per run
        self.spark_info: dict = {}  # for the run record's "spark" (task resources asked for and applied)
        self.t0 = time.time()

    def add(self, todo: list[Unit]) -> None:
        """More units for the same run (--follow): progress and the ETA count them from now on."""
        self.todo.update((u.id, u) for u in todo)
        self.total_bytes += sum(u.size or 0 for u in todo)
        known = all(u.rows is not None for u in self.todo.values())
        self.total_rows = sum(u.rows or 0 for u in self.todo.values()) if known else 0

    def collect(self, table, run_id: str) -> None:
        if self.manifest is None:
            self.manifest = table.manifest()
        entries, replaces, paths, fresh = [], {}, [], []
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
                entries.append(FileEntry.from_dict(r["entry"]))
                if r.get("replaces"):  # a rewrite of a committed unit's file: listed in its place
                    replaces[unit] = r["replaces"]
            else:
                self.failed[unit] = r
        if entries:
            for name in self.side_tables:  # first: a unit listed in the output table has its side rows listed
                side = table.lake.table(name)
                manifest = self.side_manifests.setdefault(name, side.manifest())
                listed = {f["unit"]: f.get("path") for f in manifest["files"]}
                side.commit([FileEntry.from_dict(r["side"][name]) for r in fresh], run_id, manifest,
                            replaces={r["unit"]: listed.get(r["unit"]) for r in fresh if r.get("replaces")})
            table.commit(entries, run_id, self.manifest, replaces=replaces, meta=self.fixed or None)
        table.drop_receipts(paths)

    def progress(self, table=None, run_id: str = "", sc=None) -> str:
        """Units, rows (those of running units too), success share, MB/s and an ETA from rows when unit sizes
        in rows are known, else from bytes, else from units."""
        elapsed = max(time.time() - self.t0, 1e-6)
        finished = {**self.failed, **self.done}
        n, total = len(finished), len(self.todo)
        running = {}
        if table is not None:
            try:
                running = {u: p for u, p in table.unit_progress(run_id).items() if u not in finished}
            except Exception:  # noqa: BLE001 - progress must never break a run
                running = {}
        rows_in = sum((self.todo[u].rows or 0) for u in finished if u in self.todo) + \
            sum(p.get("rows", 0) for p in running.values())
        rows_out = sum(r["entry"]["rows"] for r in self.done.values())
        read = sum((self.todo[u].size or r.get("entry", {}).get("bytes", 0)) for u, r in finished.items()
                   if u in self.todo) + sum(p.get("bytes", 0) for p in running.values())
        if self.total_rows:
            frac = rows_in / self.total_rows
        elif self.total_bytes:
            frac = read / self.total_bytes
        else:
            frac = n / total if total else 1.0
        if frac <= 0:
            tasks = ""
            if sc is not None:
                try:
                    tracker = sc.statusTracker()
                    active = sum(tracker.getStageInfo(s).numActiveTasks for s in tracker.getActiveStageIds())
                    tasks = f"{active} tasks running, " if active else "waiting for executors, "
                except Exception:  # noqa: BLE001
                    pass
            return f"0/{total} units | starting: {tasks}no rows finished yet ({_duration(elapsed)} in)"
        eta = _duration(elapsed / frac - elapsed)
        ok = f"{100 * len(self.done) / n:.0f}% units ok | " if n else ""
        mb = f"{read / elapsed / 1e6:.1f} MB/s | " if read else ""
        if self.total_rows:  # units say how many of their input rows are done
            rows = f"{rows_in:,}/{self.total_rows:,} rows ({rows_in / elapsed:,.0f}/s), {rows_out:,} committed"
        else:  # units say how many output rows they have so far
            made = rows_out + sum(p.get("rows", 0) for p in running.values())
            rows = f"{made:,} rows ({made / elapsed:,.0f}/s), {rows_out:,} committed"
        return (f"{n}/{total} units ({100 * frac:.0f}%), {len(running)} running | {rows} | {ok}{mb}"
                f"{len(self.failed)} failed | ETA {eta}")


def short(message: str, limit: int = MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters (the whole text belongs in _errors/ or the run record's trace)."""
    line = " ".join(str(message).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


def _run_unit(job: UnitJob, unit: Unit, base: UnitContext) -> None:
    """Executor side: process one unit, stage its files whole, then its receipt."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    attempt = tc.attemptNumber() if tc else 0
    errors = ErrorSamples(base.errors.per_reason, base.errors.excerpt_bytes)
    ctx = UnitContext(base.lake_ref, base.settings, errors, base.run_id, base.table, unit.id, base.progress_every_s)
    lake = ctx.lake
    table = lake.table(job.output_table)
    t0 = time.time()
    try:
        result = job.process_unit(unit, ctx)
    except Exception as exc:  # noqa: BLE001 - a bug must cost one unit (reported, retried), not the run
        message = f"{type(exc).__name__}: {exc}"
        errors.add("unit_error", f"{message}\n{traceback.format_exc()}", source=unit.source, limit=20_000)
        result = UnitResult(None, {}, errors, failed_reason="unit_error", failed_message=message)
    receipt = {"unit": unit.id, "key": unit.key, "attempt": attempt, "seconds": round(time.time() - t0, 3),
               "info": result.info, "counts": ledgers_to_dict(result.ledgers),
               "replaces": unit.replaces}
    receipt["errors"] = table.write_errors(ctx.run_id, unit.id, result.errors.samples)
    if result.failed_reason:
        receipt.update(status="failed", reason=result.failed_reason, message=short(result.failed_message))
    else:
        entry = table.write_unit(ctx.run_id, unit.id, unit.key, result.rows, attempt=attempt, side_files=result.extra,
                                 counts=receipt["counts"], covers=dict(unit.covers),
                                 row_group_size=job.row_group_size)
        for name, value in result.entry_fields.items():
            setattr(entry, name, value)
        table.add_named_files(ctx.run_id, entry, result.named)
        side = {name: lake.table(name).write_unit(ctx.run_id, unit.id, unit.key, result.side.get(name),
                                                  attempt=attempt, covers=dict(unit.covers),
                                                  row_group_size=job.row_group_size).to_dict()
                for name in job.side_tables}
        receipt.update(status="done", entry=entry.to_dict(), side=side)
    table.write_receipt(ctx.run_id, unit.id, attempt, receipt)


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

    def __init__(self, sc, log, every_s: float, run: RunContext | None = None):
        self.sc, self.log, self.every, self.run = sc, log, every_s, run
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
                if self.run is not None:
                    self.run.heartbeat()
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
