"""Honest outcomes, through the base lifecycle every unit job shares: exit codes, run record states, the summary's
advice, short error lines with the whole text in _errors/, and resume that skips what is committed."""

import sys

import duckdb
import pyarrow as pa
import pytest
from pyspark import cloudpickle

from laion5b_spark.accounting import Ledger
from laion5b_spark.job import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Unit, UnitJob, UnitResult
from laion5b_spark.lake import Lake


class Numbers(UnitJob):
    """Unit i writes rows i*10 .. i*10+9; units named in ``fail`` raise (a bug), ``gone`` are unreachable inputs."""

    name = "numbers"
    output_table = "numbers"

    def __init__(self, units=4, fail=(), gone=()):
        self.n, self.fail, self.gone = units, set(fail), set(gone)

    def settings(self, args, cfg, lake):
        return (frozenset(self.fail), frozenset(self.gone))

    def list_units(self, args, settings, lake):
        return [Unit(key=f"u{i}", source=str(i), rows=10) for i in range(self.n)]

    def process_unit(self, unit, ctx):
        fail, gone = ctx.settings
        if unit.key in fail:
            raise ValueError("a bug in this unit: " + "detail " * 200)
        if unit.key in gone:
            return UnitResult(None, {}, ctx.errors, failed_reason="input_unreachable", failed_message="404 from host")
        i = int(unit.source)
        ctx.progress(5)
        ledger = Ledger("numbers", rows_in=10, rows_out=10)
        return UnitResult(pa.table({"uid": list(range(i * 10, i * 10 + 10))}), {"numbers": ledger}, ctx.errors)


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Spark's workers cannot import this test module


def run(job, lake, *extra):
    return job.main(["--lake", str(lake), "--set", "run.commit_interval_s=0.2", *extra])


def test_every_unit_done_is_success(spark, tmp_path):
    assert run(Numbers(), tmp_path) == EXIT_OK
    rec = Lake(str(tmp_path)).runs("numbers")[-1]
    assert rec["status"] == "succeeded" and rec["units"]["done"] == 4 and rec["heartbeat"]
    assert run(Numbers(), tmp_path) == EXIT_OK  # nothing left: a rerun does nothing and says so
    assert Lake(str(tmp_path)).runs("numbers")[-1]["units"]["to_run"] == 0


def test_some_units_failed_is_partial_and_the_rerun_runs_just_them(spark, tmp_path, capsys):
    assert run(Numbers(fail={"u1"}, gone={"u2"}), tmp_path) == EXIT_PARTIAL
    lake = Lake(str(tmp_path))
    rec = lake.runs("numbers")[-1]
    assert rec["status"] == "partial" and rec["units"]["done"] == 2 and rec["units"]["failed"] == 2
    assert all(len(f["message"]) <= 300 for f in rec["failed_units"])
    out = capsys.readouterr().out
    assert "2 units failed" in out and "a rerun fails the same way until the cause is fixed" in out
    [sample] = [s for s in lake.table("numbers").error_samples() if s["reason"] == "unit_error"]
    assert "detail " * 150 in sample["message"] and "Traceback" in sample["message"]  # the whole text
    assert run(Numbers(), tmp_path) == EXIT_OK
    rec = lake.runs("numbers")[-1]
    assert rec["units"]["to_run"] == 2 and rec["status"] == "succeeded"
    uids = duckdb.sql(f"select uid from read_parquet('{tmp_path}/numbers/data/*.parquet')").fetchall()
    assert sorted(u for (u,) in uids) == list(range(40))


def test_only_transient_failures_say_a_rerun_may_help(spark, tmp_path, capsys):
    assert run(Numbers(gone={"u3"}), tmp_path) == EXIT_PARTIAL
    assert "rerun the same command to retry just them" in capsys.readouterr().out


def test_every_unit_failed_is_failure_not_success(spark, tmp_path, capsys):
    assert run(Numbers(fail={"u0", "u1", "u2", "u3"}), tmp_path) == EXIT_FAILED
    rec = Lake(str(tmp_path)).runs("numbers")[-1]
    assert rec["status"] == "failed" and rec["units"]["done"] == 0
    assert "succeeded" not in capsys.readouterr().out


def test_progress_counts_rows_of_running_units(tmp_path):
    from laion5b_spark.job import _RunState

    units = [Unit(key=f"u{i}", source=str(i), rows=100) for i in range(4)]
    state = _RunState(units)
    t = Lake(str(tmp_path)).table("numbers")
    assert "starting" in state.progress(t, "r1")  # no '0 rows, ETA ?' before anything is known
    Lake(str(tmp_path)).write_bytes(t.progress_path("r1", units[0].id), b'{"rows": 50, "bytes": 1000}')
    line = state.progress(t, "r1")
    assert "50/400 rows" in line and "1 running" in line and "ETA" in line


@pytest.mark.parametrize("bad", ["--set", "--lake"])
def test_usage_errors_exit_2(spark, tmp_path, bad, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    args = ["--lake", str(f)] if bad == "--lake" else ["--lake", str(tmp_path), "--set", "run.typo=1"]
    assert Numbers().main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
