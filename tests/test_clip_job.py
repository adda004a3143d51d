"""The clip job on Spark (Arrow UDF): every images row scored or counted, the release keeps the fitting pairs,
a failed unit is redone by the rerun and the tables equal an uninterrupted run's."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from laion5b_spark import schemas
from laion5b_spark.clip.job import ClipJob
from laion5b_spark.lake import Lake
from laion5b_spark.sample import shapes
from laion5b_spark.sample.pairs import write_pairs

pytestmark = pytest.mark.spark
ASSET = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes")


def images_rows(n: int, seed: int, start_uid: int) -> tuple[pa.Table, list[bool]]:
    pairs = shapes.pairs(n, seed)
    jpg = [b for b, _, _ in pairs]
    jpg[3], jpg[7] = None, b"\xff\xd8broken"  # a failed download and an image that does not decode
    cols = {name: pa.nulls(n, schemas.IMAGES.field(name).type) for name in schemas.IMAGES.names}
    cols.update(uid=pa.array(range(start_uid, start_uid + n), pa.int64()),
                url=pa.array([f"http://img.test/{start_uid + i}.jpg" for i in range(n)]),
                text=pa.array([c for _, c, _ in pairs]), language=pa.array(["en"] * n),
                key=pa.array([f"{seed:04d}{i:06d}" for i in range(n)]),
                status=pa.array(["failed" if b is None else "success" for b in jpg]),
                width=pa.array([256] * n, pa.int32()), height=pa.array([256] * n, pa.int32()),
                jpg=pa.array(jpg, pa.binary()))
    return pa.table(cols, schema=schemas.IMAGES), [f for _, _, f in pairs]


@pytest.fixture
def images_lake(tmp_path):
    a, fa = images_rows(150, 1, 0)
    b, fb = images_rows(150, 2, 1000)
    lake = tmp_path / "lake"
    write_pairs(Lake(str(lake)), {"shard-a": a, "shard-b": b}, table="images")
    return lake, dict(zip(a.column("uid").to_pylist() + b.column("uid").to_pylist(), fa + fb))


def clip(lake, *extra) -> int:
    threshold = json.load(open(ASSET + ".json"))["threshold"]
    return ClipJob().main(["--lake", str(lake), "--set", "clip.model=l5s-tiny",
                           "--set", f"clip.pretrained={ASSET}.safetensors", "--set", f"clip.threshold={threshold}",
                           "--set", "clip.batch_size=32", "--set", "clip.read_rows=64",
                           "--set", "run.commit_interval_s=0.5", *extra])


def test_clip_job_scores_every_row_and_releases_the_fitting_pairs(spark, images_lake):
    lake, fits = images_lake
    assert clip(lake, "--set", "clip.task_cpus=1") == 0
    scored = Lake(str(lake)).table("scored").read_arrow()
    dataset = Lake(str(lake)).table("dataset").read_arrow()
    schemas.check("scored", scored)
    schemas.check("dataset", dataset)
    assert scored.num_rows == 300 and sorted(scored.column("uid").to_pylist()) == sorted(fits)
    status = dict(zip(scored.column("uid").to_pylist(), scored.column("status").to_pylist()))
    assert status[3] == status[1003] == "no_image" and status[7] == status[1007] == "decode_error"
    kept = set(dataset.column("uid").to_pylist())
    good = [u for u in fits if status[u] == "scored"]
    fitting = [u for u in good if fits[u]]
    assert np.mean([u in kept for u in fitting]) >= 0.95
    assert np.mean([u not in kept for u in good if not fits[u]]) >= 0.95
    passed = scored.filter(pc.fill_null(scored.column("passed"), False))
    assert set(passed.column("uid").to_pylist()) == kept and dataset.column("url")[0].as_py().startswith("http")
    rec = Lake(str(lake)).runs("clip")[-1]
    c = rec["counts"]["clip"]
    assert c["rows_in"] == 300 and c["rows_out"] == len(kept)
    assert c["failed"] == {"no_image": 2, "decode_error": 2} and c["dropped"]["below_threshold"] == 296 - len(kept)
    assert rec["info"]["rows_by_device"] == {"cpu": 300}
    # local mode refuses task resource profiles: the request is recorded as not applied, the run goes on
    assert rec["spark"]["task_resources"] == {"cpus": 1, "gpus": 0.0, "applied": False}


def test_a_failed_unit_is_redone_by_the_rerun_with_the_same_tables(spark, images_lake, tmp_path):
    lake, _ = images_lake
    images = Lake(str(lake)).table("images")
    clean = tmp_path / "clean"  # the same images, for an uninterrupted run
    write_pairs(Lake(str(clean)), {e.key: images.read_file(e.path) for e in images.entries()}, table="images")
    second = images.path(images.entries()[1].path)
    with open(second, "rb") as f:
        good = f.read()
    with open(second, "wb") as f:
        f.write(b"not parquet")  # the unit fails (as a task on a lost GPU would); the other commits
    clip(lake)
    assert len(Lake(str(lake)).table("scored").entries()) == 1 and len(Lake(str(lake)).table("dataset").entries()) == 1
    with open(second, "wb") as f:
        f.write(good)
    assert clip(lake) == 0
    runs = Lake(str(lake)).runs("clip")
    assert runs[-1]["units"]["already_committed"] == 1 and runs[-1]["units"]["done"] == 1
    assert clip(clean) == 0
    for t in ("scored", "dataset"):
        a, b = (Lake(str(x)).table(t).read_arrow().sort_by("uid") for x in (lake, clean))
        assert a.num_rows and a.equals(b)


def test_a_rewritten_images_file_is_scored_again_in_its_units_place(spark, images_lake):
    """download --retry-failed rewrites an images unit's file: the rerun of clip rescores that unit in place,
    so scored and dataset keep one row per uid (no stale copy of the old file's scores)."""
    lake, _ = images_lake
    assert clip(lake) == 0
    images = Lake(str(lake)).table("images")
    old = images.entries()[0]
    rows = images.read_file(old.path)
    fixed = rows.set_column(rows.schema.get_field_index("jpg"), "jpg",
                            pa.array([b if i != 3 else rows.column("jpg")[0].as_py()  # the failed row now stored
                                      for i, b in enumerate(rows.column("jpg").to_pylist())], pa.binary()))
    new = images.write_unit("retry-run", old.unit, old.key, fixed)
    assert images.commit([new], "retry-run", replaces={old.unit: old.path}) == 1
    assert clip(lake) == 0
    rec = Lake(str(lake)).runs("clip")[-1]
    assert rec["units"]["to_run"] == 1 and rec["units"]["done"] == 1
    for name in ("scored", "dataset"):
        t = Lake(str(lake)).table(name)
        uids = t.read_arrow(columns=["uid"]).column("uid").to_pylist()
        assert len(uids) == len(set(uids)), name
        assert len(t.all_entries()) == 2 and any(e.retried_by for e in t.all_entries()), name
    scored = Lake(str(lake)).table("scored").read_arrow(columns=["uid", "status"])
    assert dict(zip(*(scored.column(c).to_pylist() for c in ("uid", "status"))))[3] == "scored"
    assert clip(lake) == 0 and Lake(str(lake)).runs("clip")[-1]["units"]["to_run"] == 0  # nothing left


def test_the_laion5b_profile_scores_all_three_buckets_offline_from_local_folders(spark, tmp_path, monkeypatch):
    """conf/pipeline/laion5b.toml as shipped (mclip for multilingual and nolang rows), with its models pointed at
    local folders: the project's tiny CLIP and a tiny mclip model in the sentence-transformers layout."""
    from tiny_models import build_tiny_mclip

    from laion5b_spark.index.job import _clip_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mclip_dir = build_tiny_mclip(tmp_path / "tiny-mclip", 64)
    rows, _ = images_rows(120, 3, 0)
    langs = (["en", "de", "nolang", "ja"] * 30)[:120]
    rows = rows.set_column(rows.schema.get_field_index("language"), "language", pa.array(langs))
    lake = tmp_path / "lake"
    write_pairs(Lake(str(lake)), {"shard-a": rows}, table="images")
    profile = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conf", "pipeline", "laion5b.toml")
    assert ClipJob().main(["--lake", str(lake), "--config", profile, "--set", "clip.model=l5s-tiny",
                           "--set", f"clip.pretrained={ASSET}.safetensors",
                           "--set", f"clip.multilingual_model={mclip_dir}", "--set", "clip.batch_size=32",
                           "--set", "run.commit_interval_s=0.5"]) == 0
    scored = Lake(str(lake)).table("scored").read_arrow().sort_by("uid")
    model = dict(zip(scored.column("uid").to_pylist(), scored.column("model").to_pylist()))
    status = dict(zip(scored.column("uid").to_pylist(), scored.column("status").to_pylist()))
    for uid, lang in enumerate(langs):
        if status[uid] == "scored":
            assert model[uid] == ("l5s-tiny/l5s-tiny-shapes.safetensors" if lang == "en" else "mclip:tiny-mclip")
    meta = Lake(str(lake)).table("scored").meta()
    assert meta["clip.multilingual_kind"] == "mclip" and meta["clip.nolang_threshold"] == 0.26
    # one image tower: the index of clip.model takes the mclip rows too
    clip_cfg = _clip_model(Lake(str(lake)), {"clip": {}}, "main")
    assert clip_cfg["labels"] == ("l5s-tiny/l5s-tiny-shapes.safetensors", "mclip:tiny-mclip")


def _download_record(lake: Lake, run_id: str, status: str, heartbeat: str) -> None:
    """The run record a download run writes (only what --follow reads: the table it writes, status, heartbeat)."""
    from laion5b_spark.lake import utcnow

    lake.write_run("download", run_id, {"job": "download", "run_id": run_id, "status": status, "started": utcnow(),
                                        "heartbeat": heartbeat, "table": "images", "tables": ["images"],
                                        **({"ended": utcnow()} if status != "running" else {})})


def _scored_view(lake_path) -> tuple[list, list]:
    lake = Lake(str(lake_path))
    scored = lake.table("scored").read_arrow(columns=["uid", "similarity", "status", "passed"]).sort_by("uid")
    dataset = lake.table("dataset").read_arrow(columns=["uid", "similarity"]).sort_by("uid")
    return scored.to_pylist(), dataset.to_pylist()


def test_clip_follow_takes_shards_committed_while_download_runs_and_equals_a_run_after_it(spark, tmp_path):
    import shutil
    import threading
    import time

    from laion5b_spark.lake import new_run_id, utcnow

    shards = {f"shard-{k}": images_rows(40, seed, 1000 * seed)[0] for k, seed in (("a", 1), ("b", 2), ("c", 3))}
    lake_path = tmp_path / "follow"
    lake = Lake(str(lake_path))
    rid = new_run_id()
    problems = []

    def download_goes_on():
        try:
            time.sleep(1.5)  # the download is submitted a moment after clip --follow: clip waits for it
            _download_record(lake, rid, "running", utcnow())
            write_pairs(lake, {"shard-a": shards["shard-a"]}, run_id=rid, table="images")
            deadline = time.time() + 120
            while not lake.table("scored").committed_units() and time.time() < deadline:
                time.sleep(0.2)  # the first shard is scored before the rest arrive: clip really follows
            for key in ("shard-b", "shard-c"):
                write_pairs(lake, {key: shards[key]}, run_id=rid, table="images")
                _download_record(lake, rid, "running", utcnow())
                time.sleep(1.0)
            _download_record(lake, rid, "succeeded", utcnow())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            problems.append(exc)

    writer = threading.Thread(target=download_goes_on)
    writer.start()
    assert clip(lake_path, "--follow", "--follow-poll-s", "0.3", "--follow-start-s", "60") == 0
    writer.join()
    assert not problems
    record = [r for r in lake.runs("clip")][0]
    assert record["status"] == "succeeded" and record["units"]["done"] == 3
    assert len(lake.table("scored").committed_units()) == 3
    assert len(lake.table("scored").manifest()["runs"]) == 1  # one run took all three

    # the same images scored after the download ended, without --follow: the same tables
    after = tmp_path / "after"
    shutil.copytree(lake_path / "images", after / "images")
    assert clip(after) == 0
    assert _scored_view(after) == _scored_view(lake_path)


def test_clip_follow_stops_when_the_writer_died_and_needs_something_to_follow(spark, tmp_path, capsys):
    lake_path = tmp_path / "lake"
    lake = Lake(str(lake_path))
    # nothing committed and nobody writing within --follow-start-s: said before any work
    assert clip(lake_path, "--follow", "--follow-start-s", "0.5") == 2
    assert "no live run writes it" in capsys.readouterr().err
    a, _ = images_rows(20, 5, 0)
    write_pairs(lake, {"shard-a": a}, table="images")
    _download_record(lake, "20200101T000000Z-dead", "running", "2020-01-01T00:00:00Z")  # killed long ago
    assert clip(lake_path, "--follow", "--follow-poll-s", "0.2", "--follow-start-s", "0.5") == 0
    assert "no live run writes images" in capsys.readouterr().out
    assert len(lake.table("scored").committed_units()) == 1


def test_clip_follow_says_when_a_shard_it_took_was_rewritten_and_the_rerun_takes_it(spark, tmp_path, capsys):
    """download --retry-failed rewrote a shard after clip --follow scored it: not a success, and a rerun rescores."""
    import threading
    import time

    from laion5b_spark.lake import new_run_id, utcnow

    lake_path = tmp_path / "lake"
    lake = Lake(str(lake_path))
    a, _ = images_rows(20, 6, 0)
    rid = new_run_id()
    _download_record(lake, rid, "running", utcnow())
    write_pairs(lake, {"shard-a": a}, run_id=rid, table="images")
    images = lake.table("images")

    def retry_rewrites_it():
        deadline = time.time() + 120
        while not lake.table("scored").committed_units() and time.time() < deadline:
            time.sleep(0.2)
        old = images.entries()[0]
        entry = images.write_unit(rid, old.unit, old.key, a.slice(0, 19), attempt=1)
        images.commit([entry], rid, replaces={old.unit: old.path})
        _download_record(lake, rid, "succeeded", utcnow())

    writer = threading.Thread(target=retry_rewrites_it)
    writer.start()
    assert clip(lake_path, "--follow", "--follow-poll-s", "0.2") == 1
    writer.join()
    assert "were rewritten after this run took them" in capsys.readouterr().out
    assert clip(lake_path) == 0  # the rerun scores the rewritten file
    assert lake.table("scored").num_rows() == 19

