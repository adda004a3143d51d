"""The lake's commit protocol without Spark: staged files are invisible, a unit is listed once, replacements and
whole-table rewrites, and a commit killed at any step is finished by the next writer (plain readers then agree)."""

import glob
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laion5b_spark.lake import Lake, LakeError


def table(n, start=0):
    return pa.table({"uid": list(range(start, start + n))})


def plain_reader_rows(t) -> list[int]:
    """What DuckDB/polars/pandas see when they glob data/*.parquet."""
    files = sorted(glob.glob(os.path.join(t.root, "data", "*.parquet")))
    return sorted(x for f in files for x in pq.read_table(f).column("uid").to_pylist())


def api_rows(t) -> list[int]:
    return sorted(t.read_arrow().column("uid").to_pylist()) if t.files() else []


def test_staged_files_are_invisible_and_a_unit_is_listed_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    t = lake.table("things")
    e1 = t.write_unit("run1", "u1", "k1", table(3))
    t.write_unit("run1", "u2", "k2", table(5, 100))  # staged, never committed: invisible
    assert plain_reader_rows(t) == [] and not os.path.exists(os.path.join(t.root, "data"))
    assert t.commit([e1], "run1") == 1
    assert e1.path.startswith("data/") and plain_reader_rows(t) == api_rows(t) == [0, 1, 2]
    # the same unit again (a retried task, a rerun) is not listed twice
    assert t.commit([t.write_unit("run2", "u1", "k1", table(3, 50))], "run2") == 0
    assert api_rows(t) == [0, 1, 2] and t.committed_units() == {"u1"} and t.num_rows() == 3
    # an empty unit is committed with no file
    t.commit([t.write_unit("run2", "u3", "k3", None)], "run2")
    assert t.committed_units() == {"u1", "u3"} and t.read_arrow().num_rows == 3
    t.clean_staging("run1")
    t.clean_staging("run2")
    assert plain_reader_rows(t) == [0, 1, 2] and lake.tables() == ["things"]
    assert not [p for p in t.stored_files() if ".tmp-" in p]


def test_side_files_have_their_own_folder(tmp_path):
    t = Lake(str(tmp_path)).table("images")
    side = tmp_path / "x.tar"
    side.write_bytes(b"tar bytes")
    e = t.write_unit("r", "u1", "k1", table(2), side_files={"tar": str(side)})
    t.commit([e], "r")
    assert e.extra["tar"].startswith("tar/") and t.extra_files("tar") == [t.path(e.extra["tar"])]
    assert os.listdir(os.path.join(t.root, "data")) == [os.path.basename(e.path)]  # parquet only


def test_a_replacing_commit_swaps_the_units_file_once(tmp_path):
    t = Lake(str(tmp_path / "lake")).table("things")
    first = t.write_unit("run1", "u1", "k1", table(2), counts={"a": 1})
    t.commit([first], "run1")
    second = t.write_unit("run2", "u1", "k1", table(2, 10), counts={"a": 2})
    assert t.commit([second], "run2", replaces={"u1": first.path}) == 1
    # a second replacement of the file already replaced (a duplicate attempt) changes nothing
    third = t.write_unit("run3", "u1", "k1", table(2, 20))
    assert t.commit([third], "run3", replaces={"u1": first.path}) == 0
    (entry,) = t.all_entries()
    assert entry.path == second.path and entry.counts == {"a": 2} and entry.retried_by == ["run2"]
    assert entry.run_id == "run1" and not os.path.exists(t.path(first.path))
    assert plain_reader_rows(t) == api_rows(t) == [10, 11]


def test_replace_all_leaves_exactly_the_new_files(tmp_path):
    t = Lake(str(tmp_path)).table("dups")
    t.add_units("r1", [("a", "a", table(2)), ("b", "b", table(2, 10))])
    t.commit([t.write_unit("r2", "c", "c", table(1, 99))], "r2", replace_all=True)
    assert t.committed_units() == {"c"} and plain_reader_rows(t) == api_rows(t) == [99]


def test_recorded_settings_refuse_a_different_value_in_one_line(tmp_path):
    t = Lake(str(tmp_path)).table("images")
    t.commit([t.write_unit("r", "u", "k", table(1))], "r", meta={"download.image_size": 256})
    t.check_meta({"download.image_size": 256})
    with pytest.raises(Exception, match=r"download.image_size = 256, this run has 384.*--set download.image_size=256"):
        t.check_meta({"download.image_size": 384})


def test_empty_table_reads_with_schema(tmp_path):
    t = Lake(str(tmp_path)).table("nothing")
    schema = pa.schema([("x", pa.int64())])
    assert t.read_arrow(schema=schema).num_rows == 0
    with pytest.raises(LakeError, match="no committed files"):
        t.read_arrow()


@pytest.mark.parametrize("text,match", [('{"something": "else"}', "not a laion5b-spark manifest"),
                                        ('{"format": 1, "files": [', "not valid JSON")])
def test_corrupt_manifest_is_a_lake_error(tmp_path, text, match):
    os.makedirs(tmp_path / "t")
    (tmp_path / "t" / "_manifest.json").write_text(text)
    with pytest.raises(LakeError, match=match):
        Lake(str(tmp_path)).table("t").manifest()


def test_unusable_lakes_say_what_to_do(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    for url in (str(f), str(f / "lake")):
        with pytest.raises(LakeError, match="is a file, not a folder"):
            Lake(url).check_usable()
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "_runs").write_text("a file where a folder must be")
    with pytest.raises(LakeError, match="cannot write to the lake"):
        Lake(str(ro)).check_usable()


def test_receipts_and_runs(tmp_path):
    lake = Lake(str(tmp_path))
    t = lake.table("t")
    t.write_receipt("r1", "u1", 0, {"unit": "u1"})
    t.write_receipt("r1", "u2", 1, {"unit": "u2"})
    got = t.receipts("r1")
    assert [r["unit"] for r in got] == ["u1", "u2"]
    assert t.receipts("r1", skip={got[0]["_receipt_path"]})[0]["unit"] == "u2"
    t.clean_staging("r1")
    assert t.receipts("r1") == []
    lake.write_run("extract", "r1", {"status": "succeeded"})
    assert lake.runs("extract") == [{"status": "succeeded"}]


class _Crash(BaseException):
    """kill -9 at one step of a commit: nothing after it runs."""


def _crash_after(monkeypatch, steps: int):
    """Make the ``steps``-th file operation of the lake (write, rename, delete) die."""
    count = [0]

    def tick():
        count[0] += 1
        if count[0] == steps:
            raise _Crash()

    real_write, real_replace, real_rm = Lake.write_bytes, os.replace, Lake.rm
    monkeypatch.setattr(Lake, "write_bytes", lambda self, p, d: (tick(), real_write(self, p, d))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (tick(), real_replace(a, b))[1])
    monkeypatch.setattr(Lake, "rm", lambda self, p, recursive=False: (tick(), real_rm(self, p, recursive))[1])


commit_ops = st.lists(st.tuples(st.sampled_from(["add", "replace", "replace_all"]), st.integers(0, 3),
                                st.integers(1, 4)), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=commit_ops, crash_at=st.integers(1, 40))
def test_a_commit_killed_at_any_step_is_finished_by_the_next_writer(tmp_path_factory, monkeypatch, ops, crash_at):
    root = str(tmp_path_factory.mktemp("lake"))
    t = Lake(root).table("t")
    uid = [0]
    with monkeypatch.context() as m:
        _crash_after(m, crash_at)
        try:
            for i, (op, unit, n) in enumerate(ops):
                run = f"run{i}"
                rows = table(n, uid[0])
                uid[0] += n
                e = t.write_unit(run, f"u{unit}", f"k{unit}", rows)
                if op == "replace":
                    listed = {x.unit: x.path for x in t.all_entries()}
                    t.commit([e], run, replaces={e.unit: listed.get(e.unit)})
                else:
                    t.commit([e], run, replace_all=op == "replace_all")
        except _Crash:
            pass
    fresh = Lake(root).table("t")
    fresh.recover()  # what every writing job does first
    for run in fresh.staging_runs():
        fresh.clean_staging(run)
    assert plain_reader_rows(fresh) == api_rows(fresh)  # readers of data/ see exactly the committed table
    assert len(set(api_rows(fresh))) == len(api_rows(fresh))
    assert len({e.unit for e in fresh.all_entries()}) == len(fresh.all_entries())
    assert all(os.path.getsize(fresh.path(e.path)) == e.bytes for e in fresh.entries())
    assert not glob.glob(os.path.join(root, "t", "_staging", "*", "_commit-*"))


def test_s3_lake_on_local_moto(moto_s3):
    lake = Lake("s3://l5s-test/unit-lake", moto_s3)
    lake.check_usable()
    t = lake.table("things")
    e = t.write_unit("r", "u1", "k", table(4))
    t.write_receipt("r", "u1", 0, {"unit": "u1"})
    assert [r["unit"] for r in t.receipts("r")] == ["u1"]
    t.write_receipt("r", "u2", 0, {"unit": "u2"})  # listing caches must not hide new receipts
    assert [r["unit"] for r in t.receipts("r")] == ["u1", "u2"]
    assert not lake.fs.exists(t.path("data"))
    t.commit([e], "r")
    again = Lake("s3://l5s-test/unit-lake", moto_s3).table("things")
    assert again.read_arrow().num_rows == 4
    assert [p.rsplit("/", 1)[-1] for p in lake.fs.glob(t.path("data/*.parquet"))] == [e.path.rsplit("/", 1)[-1]]


def test_s3_lake_never_creates_a_bucket(moto_s3):
    import s3fs

    with pytest.raises(LakeError, match="bucket 'no-such-bucket' .* does not exist.*never creates buckets"):
        Lake("s3://no-such-bucket/lake", moto_s3).check_usable()
    assert not s3fs.S3FileSystem(**moto_s3).exists("no-such-bucket")


def test_unreachable_endpoint_is_one_line(moto_s3):
    from conftest import free_port

    opts = dict(moto_s3, endpoint_url=f"http://127.0.0.1:{free_port()}", config_kwargs={"retries": {"max_attempts": 1}})
    with pytest.raises(LakeError, match="cannot reach the lake") as info:
        Lake("s3://l5s-test/lake", opts).check_usable()
    assert "\n" not in str(info.value) and len(str(info.value)) < 500
