"""The job base without Spark: a unit's failure modes and the run state."""

import io

import pytest

from laion5b_spark.config import load_config
from laion5b_spark.extract.archive import iter_records
from laion5b_spark.extract.inputs import InputUnreachable, _GuardedReader
from laion5b_spark.accounting import ErrorSamples
from laion5b_spark.job import Unit, UnitContext, UnitJob, _duration, _run_unit
from laion5b_spark.lake import Lake


class Boom(UnitJob):
    name = "boom"
    output_table = "things"

    def process_unit(self, unit, ctx):
        raise RuntimeError("a bug in process_unit " + "x" * 1000)


def test_a_crashing_unit_becomes_a_failed_receipt(tmp_path):
    lake = Lake(str(tmp_path))
    _run_unit(Boom(), Unit(key="k", source="s"), UnitContext(lake.ref, None, ErrorSamples(), "r1", "things"))
    [receipt] = lake.table("things").receipts("r1")
    assert receipt["status"] == "failed" and receipt["reason"] == "unit_error"
    assert "a bug in process_unit" in receipt["message"] and len(receipt["message"]) <= 300  # one short line
    [sample] = lake.table("things").error_samples()  # the whole text and trace go to _errors/
    assert sample["reason"] == "unit_error" and "Traceback" in sample["message"] and "x" * 1000 in sample["message"]


class _Flaky(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, b):
        raise ConnectionResetError("peer reset")


def test_first_read_failure_is_input_unreachable():
    f = _GuardedReader(io.BufferedReader(_Flaky()))
    with pytest.raises(InputUnreachable, match="peer reset"):
        list(iter_records(f, 1 << 20))


@pytest.mark.parametrize("s,out", [(5, "0:00:05"), (3725, "1:02:05"), (30 * 3600, "1d 6:00:00")])
def test_duration(s, out):
    assert _duration(s) == out
