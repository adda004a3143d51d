"""Acceptance tests of the lake contract (ARCHITECTURE.md "The lake", "Resume"), one per stage, on a local and
an s3:// lake: each stage's job is killed with SIGKILL at a random moment once it works, then the same command is
run again to completion. Then every plain reader of ``TABLE/data/`` (DuckDB, pyarrow, polars, pandas, HF datasets)
sees exactly the API's rows, each row once, and the table equals an uninterrupted run's on the same inputs.

The stages are chained on one lake per module (extract -> dedup -> download -> clip -> index), each killed once.
What an uninterrupted run gives is checked two ways: download, clip and index must give one row per input row
(images per pairs_unique row, scored per images row, dataset = the scored rows that passed, dedup_images per
dataset row), on every lake; the uninterrupted runs themselves (in-process, on copies of the same inputs) go with
extract and dedup by default, and with every stage in the slow tests (they cost minutes on two cores).
The kill moments come from a seeded random: the seed is printed (``-s``) and is in every failure message;
``L5S_CONTRACT_SEED=<seed>`` replays it.

Also: reruns with a unit-defining setting changed, and the wrong ``--lake`` arguments every job must refuse in one
line (a regular file, a bucket that does not exist, an endpoint that does not answer).
"""

import os
import random
import sys

import pytest

from conftest import free_port
from contract_fixtures import (OUTPUTS, READERS, UID, Chain, World, api_keys, duckdb_repeated, job_class,
                               lake_option, listed_and_stored)
from laion5b_spark.lake import Lake

pytestmark = pytest.mark.spark
SEED = int(os.environ.get("L5S_CONTRACT_SEED") or random.SystemRandom().randrange(1_000_000))
print(f"lake contract kill seed: {SEED} (replay with L5S_CONTRACT_SEED={SEED})", file=sys.stderr)


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark):
    w = World(tmp_path_factory.mktemp("contract"), SEED)
    yield w
    w.close()


@pytest.fixture(scope="module")
def local(world):
    work = world.work / "local"
    work.mkdir()
    return Chain("local", str(work / "lake"), None, work, world, references=("extract", "dedup"))


@pytest.fixture(scope="module")
def s3(world, moto_s3):
    work = world.work / "s3"
    work.mkdir()
    return Chain("s3", f"s3://l5s-test/contract-{SEED}", moto_s3, work, world)


# -- what every stage's test checks --------------------------------------------------------------------------
def check_contract(result) -> None:
    """The kill landed mid-run; data/ (and tar/) hold exactly the listed files; every reader sees the API's rows;
    every row once; the rows equal the uninterrupted run's."""
    k = result.kill
    where = f"{result.stage} on {result.url}, seed {SEED}: {k.describe()}"
    assert k.landed, f"the kill did not land while the job was running ({where})"
    lake = Lake(result.url, result.storage_options)
    for table, key in OUTPUTS[result.stage].items():
        listed, stored = listed_and_stored(lake, table, "data")
        assert stored == listed, (f"{table}/data/ holds unlisted files {sorted(stored - listed)[:5]} or misses "
                                  f"listed ones {sorted(listed - stored)[:5]} ({where})")
        api = api_keys(result.url, result.storage_options, table, key)
        assert api, f"{table} is empty ({where})"
        assert len(set(api)) == len(api), f"{table}: {len(api) - len(set(api))} rows twice ({where})"
        for name, read in READERS.items():
            seen = read(result.url, result.storage_options, table, key)
            assert seen == api, (f"{name} reads {len(seen)} rows of {table}/data/, the API {len(api)} "
                                 f"({len(set(seen) - set(api))} not in the API, {len(set(api) - set(seen))} "
                                 f"missing) ({where})")
        expected = {"uninterrupted run": api_keys(result.reference, {}, table, key)} if result.reference else {}
        if table in DERIVED:
            expected["its input"] = DERIVED[table](result.url, result.storage_options)
        assert expected, f"nothing to compare {table} with"
        for what, ref in expected.items():
            assert api == ref, (f"{table} after kill + rerun has {len(api)} rows, the {what} {len(ref)} "
                                f"({len(set(api) - set(ref))} extra, {len(set(ref) - set(api))} missing) ({where})")
    print(f"{result.stage} on {result.url}: {result.seconds}", flush=True)


def _passed(url: str, so: dict) -> list[tuple]:
    import pyarrow.compute as pc

    t = Lake(url, so).table("scored").to_arrow(columns=["uid", "passed"])
    return sorted((u,) for u in t.filter(pc.fill_null(t.column("passed"), False)).column("uid").to_pylist())


# what an uninterrupted run gives, from the table's input: one row per input row (failures included)
DERIVED = {
    "images": lambda url, so: api_keys(url, so, "pairs_unique"),
    "scored": lambda url, so: api_keys(url, so, "images"),
    "dataset": _passed,
    "dedup_images": lambda url, so: api_keys(url, so, "dataset"),
}


def check_webdataset(result) -> None:
    """download.webdataset=true: tar/ holds exactly the tars the manifest lists, one per shard with images."""
    lake = Lake(result.url, result.storage_options)
    listed, stored = listed_and_stored(lake, "images", "tar")
    assert stored == listed and len(lake.table("images").extra_files("tar")) == len(listed) > 1, (
        f"images/tar/ holds {len(stored)} tars, the manifest lists {len(listed)} (seed {SEED})")
    tars = [p for p in lake.glob(lake.table("images").path("tar/*.tar"))]
    assert len(tars) == len(listed)


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def no_row_twice(url: str, so: dict, table: str, key=UID) -> list[tuple]:
    api = api_keys(url, so, table, key)
    assert len(set(api)) == len(api), f"{table}: {len(api) - len(set(api))} rows twice through the API"
    assert duckdb_repeated(url, so, table, key) == [], f"{table}: rows twice through DuckDB"
    return api


# -- each stage killed once, then rerun: a local lake ----------------------------------------------------------
def test_extract_killed_then_rerun(local):
    r = local.stage("extract")
    check_contract(r)
    # the whole rows too (not only their keys): an uninterrupted run's
    a = Lake(r.url).table("pairs").to_arrow().sort_by([("uid", "ascending"), ("source_offset", "ascending")])
    b = Lake(r.reference).table("pairs").to_arrow().sort_by([("uid", "ascending"), ("source_offset", "ascending")])
    assert a.equals(b)


def test_dedup_killed_then_rerun(local):
    r = local.stage("dedup")
    check_contract(r)
    a = Lake(r.url).table("pairs_unique").to_arrow().sort_by("uid")
    b = Lake(r.reference).table("pairs_unique").to_arrow().sort_by("uid")
    assert a.equals(b)


def test_dedup_with_another_key_stops_naming_it(local, capsys):
    local.stage("dedup")
    t = Lake(local.url).table("pairs_unique")
    before = t.manifest()
    capsys.readouterr()
    code = job_class("dedup")().main(["--lake", local.url, "--key", "url", *local.args("dedup")])
    assert code == 2
    line = one_line_error(capsys, "'url_text'", "'url'")
    assert "dedup_key" in line or "dedup.key" in line, line
    assert t.manifest() == before
    no_row_twice(local.url, {}, "pairs_unique")


def test_download_killed_then_rerun(local):
    r = local.stage("download")
    check_contract(r)
    check_webdataset(r)


def test_download_with_other_shard_rows_after_a_kill_fetches_only_the_rest(local):
    """Resume is keyed by content: shards of another size are cut from the rows no committed shard covers."""
    r = local.stage("download")
    lake = Lake(r.snapshot)  # the lake as the kill left it
    images = lake.table("images")
    images.recover()  # the killed run's half-done commit, if any, as any writer would finish it first
    kept = {e.unit: e.path for e in images.all_entries()}
    assert kept, "the kill left no committed shard"
    args = [a for a in local.args("download")] + ["--set", "download.shard_rows=60"]
    assert job_class("download")().main(["--lake", r.snapshot, *args]) == 0
    uids = no_row_twice(r.snapshot, {}, "images")
    assert len(uids) == lake.table("pairs_unique").num_rows()
    assert sorted(uids) == sorted(api_keys(r.snapshot, {}, "pairs_unique"))
    now = {e.unit: e.path for e in images.all_entries()}
    assert all(now[u] == p for u, p in kept.items())  # committed shards are not fetched again
    listed, stored = listed_and_stored(lake, "images", "data")
    assert listed == stored


def test_download_with_another_image_size_stops_naming_it(local, capsys):
    local.stage("download")
    t = Lake(local.url).table("images")
    before = t.manifest()
    capsys.readouterr()
    code = job_class("download")().main(["--lake", local.url, *local.args("download"),
                                         "--set", "download.image_size=128"])
    assert code == 2
    one_line_error(capsys, "download.image_size")
    assert t.manifest() == before
    no_row_twice(local.url, {}, "images")


def test_clip_killed_then_rerun(local):
    check_contract(local.stage("clip"))


def test_clip_with_another_threshold_stops_naming_it(local, capsys):
    local.stage("clip")
    before = {n: Lake(local.url).table(n).manifest() for n in ("scored", "dataset")}
    capsys.readouterr()
    code = job_class("clip")().main(["--lake", local.url, *local.args("clip"), "--set", "clip.threshold=0.5"])
    assert code == 2
    one_line_error(capsys, "clip.threshold")
    for n in ("scored", "dataset"):
        assert Lake(local.url).table(n).manifest() == before[n]
        no_row_twice(local.url, {}, n)


def test_index_killed_then_rerun(local):
    check_contract(local.stage("index"))


@pytest.mark.slow
def test_download_clip_and_index_after_their_kills_equal_uninterrupted_runs(local):
    """The uninterrupted runs of the three stages the local chain checks against their inputs only, each on a
    copy of the same inputs (the chain's tables, which do not change after their stage): the same rows, and for
    the release and dedup_images the same decisions."""
    local.stage("index")
    for stage, tables in OUTPUTS.items():
        if stage in local.references:
            continue
        ref, seconds = local.reference_run(stage)
        print(f"uninterrupted {stage}: {seconds}s", flush=True)
        for table, key in tables.items():
            assert api_keys(local.url, {}, table, key) == api_keys(ref, {}, table, key), (table, SEED)
    cols = {"dataset": ["uid", "similarity"], "dedup_images": ["uid", "duplicate", "near_dup_of"]}
    for table, c in cols.items():
        a = Lake(local.url).table(table).to_arrow(columns=c).sort_by("uid")
        b = Lake(str(local.work / f"ref-{'clip' if table == 'dataset' else 'index'}")).table(table).to_arrow(
            columns=c).sort_by("uid")
        assert a.equals(b), (table, SEED)


@pytest.mark.slow
def test_index_with_another_near_dup_threshold_replaces_the_table_whole(local):
    """dedup_images is replaced whole by the near-duplicate pass: data/ then holds only the new files."""
    local.stage("index")
    t = Lake(local.url).table("dedup_images")
    old = {e.path for e in t.entries()}
    assert job_class("index")().main(["--lake", local.url, *local.args("index"),
                                      "--set", "index.near_dup_threshold=0.9999"]) == 0
    uids = no_row_twice(local.url, {}, "dedup_images")
    listed, stored = listed_and_stored(Lake(local.url), "dedup_images", "data")
    assert listed == stored and not (old & {e.path for e in t.entries()})
    for name, read in READERS.items():
        assert read(local.url, {}, "dedup_images") == uids, name
    assert uids == api_keys(local.url, {}, "dataset")


# -- the same on an s3:// lake (moto) ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["extract", "dedup", "download", "clip", "index"])
def test_killed_then_rerun_on_s3(s3, stage):
    r = s3.stage(stage)
    check_contract(r)
    if stage == "download":
        check_webdataset(r)


# -- wrong --lake arguments: one line, exit 2, before any work ------------------------------------------------------
JOBS = ["extract", "dedup", "download", "clip", "compact", "index", "stats"]


def _extra(job: str, tmp_path) -> list[str]:
    return ["--input", str(tmp_path)] if job == "extract" else []


@pytest.mark.parametrize("job", JOBS)
def test_lake_that_is_a_file_is_refused_in_one_line(job, tmp_path, capsys):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    assert job_class(job)().main(["--lake", str(f), *_extra(job, tmp_path)]) == 2
    one_line_error(capsys, "is a file")
    assert f.read_text() == "x"


@pytest.mark.parametrize("job", JOBS)
def test_lake_in_a_bucket_that_does_not_exist_is_refused_and_not_created(job, tmp_path, moto_s3, capsys):
    import s3fs

    code = job_class(job)().main(["--lake", "s3://nobucket-xyz/lake", *lake_option(moto_s3), *_extra(job, tmp_path)])
    assert code == 2
    one_line_error(capsys, "nobucket-xyz")
    fs = s3fs.S3FileSystem(**moto_s3)
    fs.invalidate_cache()
    assert "nobucket-xyz" not in {b.rstrip("/") for b in fs.ls("")}


@pytest.mark.parametrize("job,retries", [(j, False) for j in JOBS] + [("stats", True)])
def test_lake_behind_an_endpoint_that_does_not_answer_is_refused_in_one_line(job, retries, tmp_path, capsys):
    """botocore's retries are turned down for all but one run (with them, each takes ~7 s of backoff)."""
    so = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "testing", "secret": "testing"}
    if not retries:
        so["config_kwargs"] = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
    code = job_class(job)().main(["--lake", "s3://l5s-test/lake", *lake_option(so), *_extra(job, tmp_path)])
    assert code == 2
    one_line_error(capsys, "cannot reach")
