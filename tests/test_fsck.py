"""fsck.check / fsck.vacuum and their CLIs (describe --check, vacuum) on local and s3 lakes; no Spark."""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from unittest import mock

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laion5b_spark import describe as describe_cli
from laion5b_spark import fsck
from laion5b_spark import vacuum as vacuum_cli
from laion5b_spark.lake import MANIFEST, Lake, Table, utcnow

OLD = "2000-01-01T00:00:00Z"


def rows(uids, **more):
    return pa.table({"uid": pa.array(uids, pa.int64()), "x": [str(u) for u in uids], **more})


def counts(n, dropped=1, name="things"):
    return {name: {"rows_in": n + dropped, "rows_out": n, "dropped": {"duplicate": dropped} if dropped else {},
                   "failed": {}}}


def commit_unit(t: Table, run, unit, table, **kw):
    e = t.write_unit(run, unit, unit, table, counts=counts(table.num_rows if table is not None else 0), **kw)
    return t.commit([e], run), e


def make_lake(root) -> Lake:
    """Every kind of content the lake holds, all consistent: pairs (a uid on two pages), images with tars, an
    empty unit, a run record, an error sample, an index with one committed build."""
    lake = Lake(str(root))
    pairs = lake.table("pairs")
    page = lambda uids, f: rows(uids, source_file=[f] * len(uids),  # noqa: E731
                                source_offset=pa.array(range(len(uids)), pa.int64()))
    commit_unit(pairs, "r1", "p1", page([1, 2, 3], "a.wat.gz"))
    commit_unit(pairs, "r1", "p2", page([1, 2, 4], "b.wat.gz"))  # the same (url, text) on other pages: fine
    images = lake.table("images")
    for i, uids in enumerate([[1, 2], [3, 4, 5]]):
        tar = root.parent / f"shard{i}.tar"
        tar.write_bytes(os.urandom(100 + i))
        commit_unit(images, "r2", f"s{i}", rows(uids), side_files={"tar": str(tar)})
    commit_unit(images, "r2", "s9", None)  # a unit with no rows: no file
    images.write_errors("r2", "s0", [{"reason": "http_404", "message": "x"}])
    lake.write_run("download", "r2", {"run_id": "r2", "status": "succeeded", "started": OLD, "heartbeat": OLD,
                                      "ended": OLD})
    lake.write_bytes(lake.index_path("image", "b1", "knn-r3.index"), b"index")
    lake.write_json(lake.index_path("image", "_index.json"), {"format": 1, "build": "b1", "index": "b1/knn-r3.index"})
    for t, run in ((pairs, "r1"), (images, "r2")):
        t.clean_staging(run)  # as a job does when it ends
    return lake


def problems(lake, **kw):
    return fsck.check(lake, **kw).problems


def one(lake, needle):
    found = [p for p in problems(lake) if needle in p]
    assert len(found) == 1, problems(lake)
    return found[0]


def manifest(t):
    return orjson.loads(open(t.path(MANIFEST), "rb").read())


def write_manifest(t, m):
    with open(t.path(MANIFEST), "wb") as f:
        f.write(orjson.dumps(m))


def age(path, seconds=7200):
    """Make every file under path look written ``seconds`` ago."""
    old = time.time() - seconds
    for dirpath, _, names in os.walk(path):
        for n in names:
            os.utime(os.path.join(dirpath, n), (old, old))


def duckdb_rows(t):
    return duckdb.sql(f"select count(*) from read_parquet('{t.root}/data/*.parquet')").fetchall()[0][0]


@pytest.fixture
def lake(tmp_path):
    return make_lake(tmp_path / "lake")


# -- check -----------------------------------------------------------------------------------------------------
def test_a_clean_lake_passes(lake):
    report = fsck.check(lake)
    assert report.ok, report.lines()
    assert report.problems == [] and report.lines()[-1] == "check: clean"
    s = report.tables["images"]
    assert (s.units, s.files, s.side_files, s.rows) == (3, 2, 2, 5)
    assert report.tables["pairs"].rows == 6
    assert "images: ok - 3 units, 2 files + 2 side files, 5 rows" in "\n".join(report.lines())


def test_a_deleted_listed_file(lake):
    t = lake.table("images")
    e = t.entries()[0]
    os.remove(t.path(e.path))
    assert one(lake, "listed but missing") == f"images: {e.path} (unit 's0') is listed but missing"
    os.remove(t.path(t.entries()[1].extra["tar"]))
    assert len([p for p in problems(lake) if "listed but missing" in p]) == 2


def test_a_truncated_file(lake):
    t = lake.table("pairs")
    e = t.entries()[1]
    with open(t.path(e.path), "r+b") as f:
        f.truncate(os.path.getsize(t.path(e.path)) - 10)
    assert "the manifest lists" in one(lake, "its files are")
    assert one(lake, "not a readable parquet file").startswith(f"pairs: {e.path} (unit 'p2')")
    tar = lake.table("images").entries()[0].extra["tar"]
    with open(lake.table("images").path(tar), "ab") as f:
        f.write(b"more")
    assert tar in one(lake, "images: unit 's0': its files are")


def test_an_unlisted_parquet_file_in_data_and_an_unlisted_tar(lake):
    t = lake.table("pairs")
    shutil.copy(t.path(t.entries()[0].path), t.path("data/x.parquet"))
    assert problems(lake) == ["pairs: data/x.parquet is not committed: plain readers see it; run vacuum --apply"]
    assert duckdb_rows(t) == t.num_rows() + 3  # what the check warns about: a plain reader sees 3 more rows
    with open(lake.table("images").path("tar/stray.tar"), "wb") as f:
        f.write(b"t")
    assert "images: tar/stray.tar is not committed: plain readers see it; run vacuum --apply" in problems(lake)


def test_a_uid_in_two_files(lake):
    t = lake.table("images")
    commit_unit(t, "r5", "s2", rows([5, 7, 2]))
    p = one(lake, "more than once")
    assert p.startswith("images: 2 uids appear more than once (2 extra rows), e.g. uid 2 in "
                        "data/part-s0-r2-a0.parquet,")
    assert "data/part-s2-r5-a0.parquet" in p


def test_pairs_key_is_uid_source_file_and_offset(lake):
    t = lake.table("pairs")
    assert fsck.check(lake).ok  # uid 1 and 2 are on two pages each
    dup = rows([9, 1], source_file=["a.wat.gz", "a.wat.gz"], source_offset=pa.array([7, 0], pa.int64()))
    commit_unit(t, "r5", "p3", dup)  # (1, a.wat.gz, 0) is in p1 already
    p = one(lake, "more than once")
    assert p == ("pairs: 1 (uid, source_file, source_offset) keys appear more than once (1 extra rows), e.g. uid 1, "
                 "source_file 'a.wat.gz', source_offset 0 in data/part-p1-r1-a0.parquet, data/part-p3-r5-a0.parquet")


def test_a_null_uid(lake):
    commit_unit(lake.table("images"), "r5", "s3", rows([None, 8]))
    assert one(lake, "null uid") == "images: 1 rows have a null uid"


def test_a_corrupt_manifest_is_a_problem_not_a_crash(lake, capsys):
    with open(lake.table("images").path(MANIFEST), "wb") as f:
        f.write(b'{"format": 1, "files": [')
    report = fsck.check(lake)
    (p,) = report.problems
    assert p.startswith("images: manifest unreadable:") and "not valid JSON" in p
    assert report.tables["pairs"].ok
    assert describe_cli.main([lake.url, "--check", "--rows", "0"]) == 1
    out = capsys.readouterr().out
    assert "images: manifest unreadable" in out and "pairs: 6 rows in 2 files" in out
    assert out.rstrip().endswith("check: 1 problem(s)")
    write_manifest(lake.table("images"), {"format": 7, "files": []})
    assert "is not a laion5b-spark manifest" in one(lake, "manifest unreadable")


def test_an_unbalanced_ledger(lake):
    t = lake.table("images")
    m = manifest(t)
    m["files"][1]["counts"]["things"]["rows_out"] += 2
    write_manifest(t, m)
    assert one(lake, "does not balance") == ("images: unit 's1': ledger 'things' does not balance: 4 in != 5 out + 1 "
                                             "dropped + 0 failed (-2 unaccounted)")
    m["files"][1]["counts"] = {"things": {"rows_out": 3}}
    write_manifest(t, m)
    assert "ledgers unreadable" in one(lake, "unit 's1'")


def test_rows_that_are_not_the_files_and_units_or_files_listed_twice(lake):
    t = lake.table("images")
    m = manifest(t)
    m["files"][0]["rows"] = 3
    write_manifest(t, m)
    assert one(lake, "footer") == "images: data/part-s0-r2-a0.parquet has 2 rows (parquet footer), the manifest lists 3"
    m["files"][0]["rows"] = 2
    m["files"].append(dict(m["files"][0]))
    write_manifest(t, m)
    found = problems(lake)
    assert "images: unit 's0' is listed 2 times" in found
    assert "images: data/part-s0-r2-a0.parquet is listed 2 times" in found
    assert "images: tar/part-s0-r2-a0.tar is listed 2 times" in found


def test_run_records_parse_and_a_dead_run_is_a_note(lake):
    lake.write_run("clip", "r7", {"run_id": "r7", "status": "running", "started": OLD, "heartbeat": OLD})
    lake.write_run("clip", "r8", {"run_id": "r8", "status": "running", "started": utcnow(), "heartbeat": utcnow()})
    report = fsck.check(lake)
    assert report.ok and report.runs == 3
    (died,) = [n for n in report.notes if "died" in n]
    assert died.startswith("run r7 of clip died: status running, last heartbeat 2000-01-01T00:00:00Z")
    with open(lake.run_path("clip", "r9"), "wb") as f:
        f.write(b"{not json")
    assert one(lake, "_runs/clip/r9.json").startswith("_runs/clip/r9.json: ")


def test_index_pointer_names_a_missing_build(lake):
    assert fsck.check(lake).ok
    lake.write_bytes(lake.index_path("image", "b0", "knn-r0.index"), b"old")
    assert any("index/image/b0/ is a build no pointer names" in n for n in fsck.check(lake).notes)
    lake.write_json(lake.index_path("image", "_index.json"), {"format": 1, "build": "b2", "index": "b2/knn.index"})
    assert one(lake, "index/image") == "index/image/_index.json names build 'b2', which is missing: rerun jobs/index.py"


class Boom(RuntimeError):
    pass


def crash(point: str, after: int = 0):
    """A commit killed at one step: ``place`` (after `after` files moved), ``manifest`` (files moved, manifest not
    written) or ``remove`` (manifest written, replaced files not yet deleted)."""
    if point == "place":
        real, calls = Table._place, []

        def place(self, staged, final):
            calls.append(final)
            if len(calls) > after:
                raise Boom("killed")
            return real(self, staged, final)

        return mock.patch.object(Table, "_place", place)
    if point == "manifest":
        real_w = Lake.write_bytes

        def write_bytes(self, path, data):
            if path.endswith("/" + MANIFEST):
                raise Boom("killed")
            return real_w(self, path, data)

        return mock.patch.object(Lake, "write_bytes", write_bytes)
    return mock.patch.object(Table, "remove_files", mock.Mock(side_effect=Boom("killed")))


def test_a_pending_intent_then_vacuum_finishes_it(lake):
    t = lake.table("images")
    a = t.write_unit("r6", "s5", "s5", rows([50, 51]), counts=counts(2))
    b = t.write_unit("r6", "s6", "s6", rows([60]), counts=counts(1))
    with crash("place", after=1), pytest.raises(Boom):
        t.commit([a, b], "r6")
    found = problems(lake)
    assert len(found) == 1, found  # the moved file is the intent's, not an orphan
    assert found[0] == ("images: pending commit intent _staging/r6/_commit-00000004.json (2 files, 1 already placed): "
                        "a commit was killed half done; run any writing job or vacuum to finish it")
    lake.write_run("download", "r7", {"run_id": "r7", "status": "running", "heartbeat": utcnow(), "table": "images"})
    held = fsck.vacuum(lake, apply=True, min_age_s=60)  # a live writer of the table finishes it itself
    assert held.finished == {} and "left to run r7 of download" in held.pending[0] and "pending" in one(lake, "pend")
    lake.write_run("download", "r7", {"run_id": "r7", "status": "succeeded", "heartbeat": utcnow(), "ended": utcnow()})
    dry = fsck.vacuum(lake, min_age_s=0)
    assert dry.paths("images") == ["_staging/r6/"] and "its pending commit is finished first" in dry.items[0].why
    assert dry.pending == ["images: _staging/r6/_commit-00000004.json (2 files): --apply finishes it first"]
    assert os.path.exists(t.path(a.path)) and t.num_rows() == 5
    done = fsck.vacuum(lake, apply=True, min_age_s=0)
    assert done.finished == {"images": 1} and not done.errors
    assert fsck.check(lake).ok and t.num_rows() == 8 == duckdb_rows(t)
    assert not os.path.exists(t.path("_staging/r6"))


@pytest.mark.parametrize("point", ["manifest", "remove"])
def test_a_commit_killed_later_is_finished_too(lake, point):
    t = lake.table("images")
    old = t.entries()[0]
    new = t.write_unit("r6", "s0", "s0", rows([1, 2, 70]), counts=counts(3))
    with crash(point), pytest.raises(Boom):
        t.commit([new], "r6", replaces={"s0": old.path})
    assert "pending commit intent" in one(lake, "pending")
    fsck.vacuum(lake, apply=True, min_age_s=0)
    assert fsck.check(lake).ok
    assert t.entries()[0].path == new.path and not os.path.exists(t.path(old.path)) and duckdb_rows(t) == 6


def test_vacuum_keeps_a_live_runs_staging_and_removes_what_is_over(lake, tmp_path):
    t = lake.table("images")
    now = utcnow()
    for run, status, beat in [("live", "running", now), ("dead", "running", OLD), ("over", "failed", OLD)]:
        lake.write_run("download", run, {"run_id": run, "status": status, "started": OLD, "heartbeat": beat})
        t.write_unit(run, "s7", "s7", rows([70, 71]))
        t.write_receipt(run, "s7", 0, {"status": "done"})
    t.write_unit("norecord", "s8", "s8", rows([80]))  # a single-process writer killed before its commit
    age(t.path("_staging/norecord"))
    orphan = t.path("data/part-s1-r0-a0.parquet")
    shutil.copy(t.path(t.entries()[0].path), orphan)  # e.g. a file a later commit replaced
    errors = sorted(os.listdir(t.path("_errors/r2")))

    dry = fsck.vacuum(lake)  # the default min age: one hour
    assert sorted(dry.paths("images")) == ["_staging/dead/", "_staging/norecord/", "_staging/over/",
                                           "data/part-s1-r0-a0.parquet"]
    assert any("_staging/live/" in k and "is running" in k for k in dry.kept)
    text = "\n".join(dry.lines())
    assert "images: would delete 1 orphan file (0.0 MB), 3 staging folders (0.0 MB, 5 files)" in text
    assert text.endswith("; rerun with --apply to delete") and os.path.exists(orphan)
    assert os.path.exists(t.path("_staging/dead")) and duckdb_rows(t) == t.num_rows() + 2

    patient = fsck.vacuum(lake, min_age_s=10 ** 9)  # only what is certainly over: the orphan, the ended run
    assert [i.path for i in patient.items] == ["data/part-s1-r0-a0.parquet", "_staging/over/"]

    done = fsck.vacuum(lake, apply=True)
    assert sorted(done.paths("images")) == sorted(dry.paths("images")) and not done.errors
    assert fsck.check(lake).ok, fsck.check(lake).lines()
    assert not os.path.exists(orphan) and t.staging_runs() == ["live"]
    assert sorted(os.listdir(t.path("_errors/r2"))) == errors  # error samples are documentation: kept
    assert duckdb_rows(t) == t.num_rows() == 5
    assert fsck.vacuum(lake).items == []


def test_a_temporary_of_a_killed_manifest_write(lake):
    t = lake.table("pairs")
    tmp = t.path(f"{MANIFEST}.tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        f.write(b'{"format": 1, "fi')
    report = fsck.check(lake)
    assert report.ok and any("is a temporary file of a killed write" in n for n in report.notes)
    assert fsck.vacuum(lake, apply=True).items == []  # young: maybe a write in progress
    age(t.root)
    assert [i.what for i in fsck.vacuum(lake, apply=True).items] == ["temporary"] and not os.path.exists(tmp)
    assert fsck.check(lake).ok and t.num_rows() == 6


def test_vacuum_index_builds(lake):
    lake.write_bytes(lake.index_path("image", "b0", "knn-r0.index"), b"old build")
    age(lake.index_path("image", "b0"))
    lake.write_bytes(lake.index_path("image", "b4", "embeddings", "part-0.npy"), b"building")
    age(lake.index_path("image", "b4"))
    lake.write_run("index", "r9", {"run_id": "r9", "status": "running", "heartbeat": utcnow(), "build": "b4"})
    report = fsck.vacuum(lake, apply=True, min_age_s=60)
    assert [(i.where, i.path) for i in report.items] == [("index/image", "b0/")]
    assert "index/image/b4/ (an index run in progress)" in report.kept
    assert sorted(os.listdir(lake.index_path("image"))) == ["_index.json", "b1", "b4"]
    lake.write_run("index", "r9", {"run_id": "r9", "status": "succeeded", "heartbeat": utcnow(), "ended": utcnow()})
    lake.write_bytes(lake.index_path("image", "b4", "embeddings", "part-1.npy"), b"just written")
    assert fsck.vacuum(lake, min_age_s=3600).items == []  # just written: maybe another writer's, kept for now
    assert [i.path for i in fsck.vacuum(lake, apply=True, min_age_s=0).items] == ["b4/"]
    assert fsck.check(lake).ok and os.path.exists(lake.index_path("image", "b1", "knn-r3.index"))


def test_a_first_run_killed_before_its_first_commit(lake):
    fresh, first = lake.table("fresh"), lake.table("first")
    fresh.write_unit("k1", "u1", "u1", rows([1]))  # staged, never committed: no manifest
    e = first.write_unit("k2", "u1", "u1", rows([2, 3]), counts=counts(2))
    with crash("manifest"), pytest.raises(Boom):
        first.commit([e], "k2")
    os.makedirs(os.path.join(lake.root, "mine", "data"))
    shutil.copy(first.path(e.path), os.path.join(lake.root, "mine", "data", "x.parquet"))  # not ours: no _staging
    report = fsck.check(lake)
    assert [p.split(":")[0] for p in report.problems] == ["first"] and "pending commit intent" in report.problems[0]
    assert "fresh: nothing committed yet (no _manifest.json), only staged files" in report.notes
    assert "mine/ has no _manifest.json: not a table; left alone" in report.notes
    assert sorted(i.where for i in fsck.vacuum(lake, min_age_s=0).items) == ["first", "fresh"]
    done = fsck.vacuum(lake, apply=True, min_age_s=0)
    assert done.finished == {"first": 1} and not done.errors
    assert fsck.check(lake).ok and first.num_rows() == 2 == duckdb_rows(first)
    assert fresh.staging_runs() == [] and os.path.exists(os.path.join(lake.root, "mine", "data", "x.parquet"))


def test_vacuum_leaves_a_table_with_an_unreadable_manifest_alone(lake):
    t = lake.table("images")
    shutil.copy(t.path(t.entries()[0].path), t.path("data/x.parquet"))
    with open(t.path(MANIFEST), "wb") as f:
        f.write(b"{")
    report = fsck.vacuum(lake, apply=True, min_age_s=0)
    assert report.errors[0].startswith("images: manifest unreadable") and os.path.exists(t.path("data/x.parquet"))
    assert vacuum_cli.main([lake.url, "--apply"]) == 1


def test_key_duplicates_spill_to_buckets_like_in_memory():
    rng = np.random.default_rng(1)
    files = [rng.integers(-50, 50, size=n) for n in (40, 0, 70, 5)]
    truth = Counter(int(x) for f in files for x in f)
    want = (sum(1 for n in truth.values() if n > 1), sum(n - 1 for n in truth.values() if n > 1),
            min(k for k, n in truth.items() if n > 1))
    for bucket_rows in (1 << 20, 16, 1):
        d = fsck.KeyDuplicates(("uid",), sum(map(len, files)), bucket_rows)
        assert (d.buckets > 1) == (bucket_rows < 115)
        for i, f in enumerate(files):
            if len(f):
                d.add(i, [f])
        keys, extra, example, where = d.result()
        assert (keys, extra, example[0]) == want
        assert where == sorted(i for i, f in enumerate(files) if want[2] in f)


def test_check_finds_a_duplicate_with_spilled_buckets(lake):
    assert fsck.check(lake, bucket_rows=2).ok
    commit_unit(lake.table("images"), "r5", "s2", rows([5]))
    assert "1 uid appears more than once" in fsck.check(lake, bucket_rows=2).problems[0]


# -- a random history of commits, replacements, crashes and strays; vacuum --apply; then clean -------------------
step = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("replace"), st.integers(0, 2), st.integers(1, 4)),
    st.tuples(st.just("crash"), st.integers(0, 2), st.sampled_from(["place", "manifest", "remove"])),
    st.tuples(st.just("orphan"), st.integers(0, 2), st.just(0)),
    st.tuples(st.just("staged"), st.integers(0, 2), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=10))
def test_any_history_then_vacuum_apply_is_clean(history):
    with tempfile.TemporaryDirectory() as root:
        lake = Lake(os.path.join(root, "lake"))
        t = lake.table("things")
        expect: dict[str, list[int]] = {}
        gen = 0
        for i, (op, u, arg) in enumerate(history):
            run, unit = f"run{i:02d}", f"u{u}"
            t.recover()  # what every writer does first
            gen += 1
            uids = [gen * 100 + k for k in range(2 if op == "crash" else arg)]
            if op == "add" and unit not in expect:
                e = t.write_unit(run, unit, unit, rows(uids) if uids else None, counts=counts(len(uids)))
                t.commit([e], run)
                expect[unit] = uids
            elif op in ("replace", "crash") and unit in expect:
                old = {x.unit: x for x in t.all_entries()}[unit]
                e = t.write_unit(run, unit, unit, rows(uids), counts=counts(len(uids)), attempt=1)
                try:
                    with crash(arg) if op == "crash" else contextlib.nullcontext():
                        t.commit([e], run, replaces={unit: old.path})
                except Boom:
                    pass  # killed: the next writer's recover (or vacuum) finishes it
                expect[unit] = uids
            elif op == "orphan" and t.entries():
                shutil.copy(t.path(t.entries()[0].path), t.path(f"data/stray-{i}.parquet"))
            elif op == "staged":
                t.write_unit(run, f"never{i}", "x", rows([10 ** 6 + i]))  # a run killed before its commit
        pending = len(lake.glob(t.path("_staging/*/_commit-*.json")))
        report = fsck.vacuum(lake, apply=True, min_age_s=0, now=time.time() + 1)
        assert not report.errors, report.lines()
        assert sum(report.finished.values()) == pending
        assert t.staging_runs() == []  # no run has a record: every staging folder is a dead run's
        result = fsck.check(lake)
        assert result.ok, result.lines()
        assert fsck.vacuum(lake, min_age_s=0, now=time.time() + 1).items == []
        if expect:
            got = sorted(t.to_arrow(["uid"]).column("uid").to_pylist()) if t.entries() else []
            assert got == sorted(x for v in expect.values() for x in v)
            assert sorted(e.unit for e in t.all_entries()) == sorted(expect)
            n = duckdb_rows(t) if t.entries() else 0
            assert n == t.num_rows() == len(got)


# -- CLIs --------------------------------------------------------------------------------------------------
def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


def test_describe_check_cli(lake):
    r = run_cli("laion5b_spark.describe", lake.url, "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"lake {lake.url}: 2 table(s)") and "images: 5 rows in 2 files" in r.stdout
    assert "last download run r2: succeeded" in r.stdout and r.stdout.rstrip().endswith("check: clean")
    plain = run_cli("laion5b_spark.describe", lake.url)
    assert plain.returncode == 0 and "check:" not in plain.stdout
    os.remove(lake.table("pairs").path(lake.table("pairs").entries()[0].path))
    r = run_cli("laion5b_spark.describe", lake.url, "--check", "--rows", "1")
    assert r.returncode == 1 and "is listed but missing" in r.stdout and "Traceback" not in r.stderr


def test_vacuum_cli(lake):
    t = lake.table("pairs")
    shutil.copy(t.path(t.entries()[0].path), t.path("data/x.parquet"))
    r = run_cli("laion5b_spark.vacuum", lake.url)
    assert r.returncode == 0 and "data/x.parquet" in r.stdout and "rerun with --apply to delete" in r.stdout
    assert os.path.exists(t.path("data/x.parquet"))
    r = run_cli("laion5b_spark.vacuum", lake.url, "--apply", "--min-age-s", "0")
    assert r.returncode == 0 and "vacuum: deleted" in r.stdout and not os.path.exists(t.path("data/x.parquet"))
    assert run_cli("laion5b_spark.vacuum", lake.url).stdout.rstrip().endswith("vacuum: nothing to delete")


@pytest.mark.parametrize("module", ["laion5b_spark.describe", "laion5b_spark.vacuum"])
def test_cli_errors_are_one_line(tmp_path, module, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_cli(module, str(f))  # one real process: exit code and stderr as a user sees them
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: the lake {f}: {f} is a file, not a folder; give a folder (it is created if missing)\n"
    main = {"laion5b_spark.describe": describe_cli.main, "laion5b_spark.vacuum": vacuum_cli.main}[module]
    for args, needle in [([str(tmp_path / "nothing")], "no lake at"), ([str(tmp_path), "--set", "lake.nope=1"],
                                                                        "unknown setting 'lake.nope'")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1
    for args in (["--min-age-s"], [], [str(tmp_path), "--storage-options", "[1"], [str(tmp_path), "--bogus"],
                 [str(tmp_path), "--storage-options", "[1]"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"python -m {module}: error: ")


# -- an s3 lake ---------------------------------------------------------------------------------------------
def test_check_and_vacuum_on_s3(moto_s3, tmp_path):
    url = f"s3://l5s-test/fsck-{uuid.uuid4().hex[:8]}"
    lake = Lake(url, moto_s3)
    t = lake.table("images")
    tar = tmp_path / "a.tar"
    tar.write_bytes(b"tar bytes")
    commit_unit(t, "r1", "s0", rows([1, 2]), side_files={"tar": str(tar)})
    commit_unit(t, "r1", "s1", rows([3]))
    assert fsck.check(lake).ok, fsck.check(lake).lines()
    lake.fs.pipe_file(t.path("data/stray.parquet"), lake.fs.cat_file(t.path(t.entries()[0].path)))
    lake.write_run("download", "r2", {"run_id": "r2", "status": "failed", "heartbeat": OLD, "ended": OLD})
    t.write_unit("r2", "s2", "s2", rows([4]))
    commit_unit(t, "r3", "s3", rows([3]))
    found = fsck.check(lake).problems
    assert found[0] == "images: data/stray.parquet is not committed: plain readers see it; run vacuum --apply"
    assert found[1].startswith("images: 1 uid appears more than once (1 extra rows), e.g. uid 3")
    opts = orjson.dumps(moto_s3).decode()
    r = run_cli("laion5b_spark.describe", url, "--check", "--storage-options", opts)
    assert r.returncode == 1 and "images: 4 rows in 3 files" in r.stdout and "data/stray.parquet" in r.stdout
    r = run_cli("laion5b_spark.vacuum", url, "--storage-options", opts)
    assert r.returncode == 0 and "data/stray.parquet" in r.stdout and "_staging/r2/" in r.stdout
    toml = "{" + ", ".join(f'{k} = "{v}"' for k, v in moto_s3.items()) + "}"
    r = run_cli("laion5b_spark.vacuum", url, "--apply", "--set", f"lake.storage_options={toml}")
    assert r.returncode == 0, r.stdout + r.stderr
    lake.fs.invalidate_cache()
    assert not lake.fs.exists(t.path("data/stray.parquet")) and "r2" not in t.staging_runs()
    assert [p for p in fsck.check(lake).problems if "stray" in p or "not committed" in p] == []
    r = run_cli("laion5b_spark.describe", "s3://l5s-no-such-bucket/lake", "--check", "--storage-options", opts)
    assert r.returncode == 2 and r.stderr.startswith("error: bucket 'l5s-no-such-bucket' of the lake") and not r.stdout
    lake.fs.rm(t.path(t.entries()[-1].path))
    assert "images: data/part-s3-r3-a0.parquet (unit 's3') is listed but missing" in fsck.check(lake).problems
