import os

import pyarrow as pa
import pytest

from laion5b_spark.lake import Lake, LakeError


def table(n, start=0):
    return pa.table({"x": list(range(start, start + n))})


def test_commit_lists_each_unit_once_and_readers_see_only_listed_files(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    t = lake.table("things")
    f1 = t.data_file("u1", "run1", 0)
    t.write_parquet(f1, table(3))
    t.write_parquet(t.data_file("u2", "run1", 0), table(5, 100))  # written, never committed: invisible
    assert t.commit([{"unit": "u1", "key": "k1", "path": f1, "rows": 3, "bytes": 1, "counts": {}}], "run1") == 1
    # the same unit again (a retried task, a rerun) is not listed twice
    f1b = t.data_file("u1", "run2", 0)
    t.write_parquet(f1b, table(3, 50))
    assert t.commit([{"unit": "u1", "key": "k1", "path": f1b, "rows": 3, "bytes": 1, "counts": {}}], "run2") == 0
    assert t.read_arrow().column("x").to_pylist() == [0, 1, 2]
    assert t.committed_units() == {"u1"} and t.num_rows() == 3
    # an empty unit is committed with no file
    t.commit([{"unit": "u3", "key": "k3", "path": None, "rows": 0, "bytes": 0, "counts": {}}], "run2")
    assert t.committed_units() == {"u1", "u3"} and t.read_arrow().num_rows == 3
    assert lake.tables() == ["things"]
    assert not [p for p in os.listdir(t.root) if ".tmp-" in p]


def test_a_replacing_commit_swaps_the_units_file_once(tmp_path):
    t = Lake(str(tmp_path / "lake")).table("things")
    f1, f2, f3 = (t.data_file("u1", r, 0) for r in ("run1", "run2", "run3"))
    for f, start in ((f1, 0), (f2, 10), (f3, 20)):
        t.write_parquet(f, table(2, start))
    t.commit([{"unit": "u1", "key": "k1", "path": f1, "rows": 2, "bytes": 1, "counts": {"a": 1}}], "run1")
    assert t.commit([{"unit": "u1", "key": "k1", "path": f2, "rows": 2, "bytes": 1, "counts": {"a": 2},
                      "replaces": f1}], "run2") == 1
    assert t.replaced_files == [f1]
    # a second replacement of the file already replaced (a duplicate attempt) changes nothing
    assert t.commit([{"unit": "u1", "key": "k1", "path": f3, "rows": 2, "bytes": 1, "counts": {}, "replaces": f1}],
                    "run3") == 0
    assert t.replaced_files == []
    t.remove_files([f1, f1])
    (entry,) = t.manifest()["files"]
    assert entry["path"] == f2 and entry["counts"] == {"a": 2} and entry["retried_by"] == ["run2"]
    assert entry["run_id"] == "run1" and "replaces" not in entry
    assert t.read_arrow().column("x").to_pylist() == [10, 11] and not os.path.exists(t.path(f1))


def test_empty_table_reads_with_schema(tmp_path):
    t = Lake(str(tmp_path)).table("nothing")
    schema = pa.schema([("x", pa.int64())])
    assert t.read_arrow(schema=schema).num_rows == 0
    with pytest.raises(LakeError, match="no committed files"):
        t.read_arrow()


def test_corrupt_manifest_is_a_lake_error(tmp_path):
    lake = Lake(str(tmp_path))
    os.makedirs(tmp_path / "t")
    (tmp_path / "t" / "_manifest.json").write_text('{"something": "else"}')
    with pytest.raises(LakeError, match="not a laion5b-spark manifest"):
        lake.table("t").manifest()


def test_unwritable_lake_says_what_to_do(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "_runs").write_text("a file where a folder must be")
    with pytest.raises(LakeError, match="cannot write to the lake"):
        Lake(str(ro)).check_writable()


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


def test_s3_lake_on_local_moto(moto_s3):
    lake = Lake("s3://l5s-test/unit-lake", moto_s3)
    lake.check_writable()
    t = lake.table("things")
    f = t.data_file("u1", "r", 0)
    t.write_parquet(f, table(4))
    t.write_receipt("r", "u1", 0, {"unit": "u1"})
    assert [r["unit"] for r in t.receipts("r")] == ["u1"]
    t.write_receipt("r", "u2", 0, {"unit": "u2"})  # listing caches must not hide new receipts
    assert [r["unit"] for r in t.receipts("r")] == ["u1", "u2"]
    t.commit([{"unit": "u1", "key": "k", "path": f, "rows": 4, "bytes": 1, "counts": {}}], "r")
    assert Lake("s3://l5s-test/unit-lake", moto_s3).table("things").read_arrow().num_rows == 4
