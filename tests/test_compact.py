"""jobs/compact.py: images files rewritten without the bytes of rows below every CLIP threshold.

On a copy of the inspection lake (a real clip run with the tiny shapes CLIP): every row stays with every other
column as it was, only the rows the rule names lose their bytes; the images ledger, --retry-failed's units, clip's
resume, the index's parts and the export keep working on the compacted files; reruns add nothing; a live
download keeps compact out (one writer per table) and the other way round.
"""

from __future__ import annotations

import json
import tarfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from inspect_lake_fixture import ASSET, copy_lake, inspect_lake  # noqa: F401 - the fixture

from laion5b_spark import fsck, schemas
from laion5b_spark.clip.job import ClipJob
from laion5b_spark.compact.job import CompactJob
from laion5b_spark.compact.rule import offer_name, offers, take_offer
from laion5b_spark.download.job import DownloadJob
from laion5b_spark.index.layout import parts_of
from laion5b_spark.lake import Lake, new_run_id, utcnow

pytestmark = pytest.mark.spark


def compact(lake: str, *extra: str) -> int:
    return CompactJob().main(["--lake", lake, "--set", "run.commit_interval_s=0.5", *extra])


def clip(lake: str) -> int:
    threshold = json.load(open(ASSET + ".json"))["threshold"]
    return ClipJob().main(["--lake", lake, "--set", "clip.model=l5s-tiny",
                           "--set", f"clip.pretrained={ASSET}.safetensors", "--set", f"clip.threshold={threshold}",
                           "--set", "clip.batch_size=32", "--set", "run.commit_interval_s=0.5"])


def by_uid(table: pa.Table) -> dict[int, dict]:
    return {r["uid"]: r for r in table.to_pylist()}


@pytest.fixture
def lake(inspect_lake, tmp_path):  # noqa: F811
    return Lake(copy_lake(inspect_lake, tmp_path / "lake"))


def test_rows_stay_and_only_rows_below_every_threshold_lose_their_bytes(lake):
    before = lake.table("images").read_arrow()
    entries_before = {e.unit: e for e in lake.table("images").entries()}
    scored = by_uid(lake.table("scored").read_arrow(["uid", "status", "similarity", "passed"]))
    thresholds = [lake.table("scored").meta()[k] for k in
                  ("clip.threshold", "clip.multilingual_threshold", "clip.nolang_threshold")]
    floor = min(thresholds) - 0.01
    assert compact(lake.url, "--set", "compact.margin=0.01") == 0

    after = lake.table("images").read_arrow()
    schemas.check("images", after)
    assert after.column("uid").to_pylist() == before.column("uid").to_pylist()  # every row, same order
    for name in schemas.IMAGES.names:
        if name != "jpg":
            assert after.column(name).equals(before.column(name)), name
    dropped = 0
    for b, a in zip(before.to_pylist(), after.to_pylist()):
        s = scored[b["uid"]]
        below = s["status"] == "scored" and not s["passed"] and s["similarity"] < floor
        if below and b["jpg"] is not None:
            assert a["jpg"] is None, b["uid"]
            dropped += 1
        else:
            assert a["jpg"] == b["jpg"], b["uid"]  # passed, near a threshold, unscored, or failed: as stored
    assert dropped > 0 and dropped < sum(s["status"] == "scored" for s in scored.values())

    entries = {e.unit: e for e in lake.table("images").entries()}
    assert entries.keys() == entries_before.keys()
    for unit, e in entries.items():
        old = entries_before[unit]
        assert e.counts == old.counts and e.covers == old.covers and e.rows == old.rows  # the download's ledger
        assert e.compacted["from"] == old.path and e.path != old.path
        assert e.bytes < old.bytes
    assert sum(e.compacted["rows"] for e in entries.values()) == dropped
    record = lake.runs("compact")[-1]
    assert record["status"] == "succeeded" and record["info"]["rows_without_bytes"] == dropped
    assert record["info"]["from_clip"] == 0  # clip's offers were made for margin 0: each file was read again
    assert record["info"]["image_bytes_after"] < record["info"]["image_bytes_before"]
    ledger = record["counts"]["compact"]
    assert ledger["rows_in"] == ledger["rows_out"] == before.num_rows
    report = fsck.check(lake)
    assert report.ok, report.lines()

    # a rerun has nothing to do; clip finds nothing stale (scores stay); the index reads the compacted files
    assert compact(lake.url) == 0 and lake.runs("compact")[-1]["units"]["to_run"] == 0
    scored_before = lake.table("scored").manifest()["files"]
    assert clip(lake.url) == 0 and lake.runs("clip")[-1]["units"]["to_run"] == 0
    assert lake.table("scored").manifest()["files"] == scored_before
    parts = parts_of(lake.table("scored").entries(), lake.table("images").current_files())
    assert parts and all(p.images_file in {e.path for e in entries.values()} for p in parts)
    # --retry-failed still finds the shards with failures worth another try (the ledger stayed)
    args = type("A", (), {"retry_failed": True, "denylist": []})()
    retry = DownloadJob().list_units(args, DownloadJob().settings(args, _cfg(lake, ["http_404"]), lake), lake)
    assert {u.replaces for u in retry if u.replaces} == {e.path for e in entries.values()
                                                         if e.counts["images"]["failed"].get("http_404")}


def _cfg(lake: Lake, reasons: list[str]) -> dict:
    from laion5b_spark.config import load_config

    return load_config(None, [f"download.retry_reasons={json.dumps(reasons)}"])


def test_a_rewritten_compacted_file_is_scored_again_and_compacted_rows_keep_their_scores(lake):
    assert compact(lake.url) == 0
    images = lake.table("images")
    e = images.entries()[0]
    rows = images.read_file(e.path)
    compacted = {r["uid"] for r in rows.to_pylist() if r["status"] == "success" and r["jpg"] is None}
    assert compacted
    # what download --retry-failed does: the failed rows fetched again in place, the rest (bytes or not) kept
    donor = next(r["jpg"] for r in rows.to_pylist() if r["jpg"] is not None and r["jpg"].startswith(b"\xff\xd8\xff"))
    fixed = [dict(r, status="success", reason=None, error_message=None, http_status=200, jpg=donor, width=128,
                  height=128) if r["status"] == "failed" else r for r in rows.to_pylist()]
    rid = new_run_id()
    new = images.write_unit(rid, e.unit, e.key, pa.Table.from_pylist(fixed, schema=schemas.IMAGES),
                            counts=e.counts, covers=e.covers)
    images.commit([new], rid, replaces={e.unit: e.path})
    assert images.current_files().get(e.path) is None  # the retry's file is no compaction of it

    old_scores = by_uid(lake.table("scored").read_arrow())
    assert clip(lake.url) == 0
    r = lake.runs("clip")[-1]
    assert r["units"]["to_run"] == 1
    now = by_uid(lake.table("scored").read_arrow())
    for uid in compacted:  # no bytes to score: the scores they had
        assert now[uid]["status"] == "scored" and now[uid]["similarity"] == old_scores[uid]["similarity"]
        assert now[uid]["image_embedding"] == old_scores[uid]["image_embedding"]
    retried = [x["uid"] for x in fixed if x["jpg"] is donor]
    assert retried and all(now[u]["status"] == "scored" for u in retried)
    ledger = r["counts"]["clip"]
    assert ledger["rows_in"] == ledger["rows_out"] + sum(ledger["dropped"].values()) + sum(ledger["failed"].values())
    assert ledger.get("failed", {}).get("no_image", 0) == 0
    # and the new file, now scored, is compacted by the next run, from the offer clip's rescoring wrote
    assert compact(lake.url) == 0 and lake.runs("compact")[-1]["units"]["to_run"] == 1
    assert lake.runs("compact")[-1]["info"]["from_clip"] == 1


def test_clips_offers_give_the_same_files_as_reading_them_again(inspect_lake, tmp_path):  # noqa: F811
    offered = Lake(copy_lake(inspect_lake, tmp_path / "offered"))
    again = Lake(copy_lake(inspect_lake, tmp_path / "again"))
    images = again.table("images")
    names = sorted(offers(images))
    assert len(names) == 2 == len(images.entries())  # one per images file, written by the fixture's clip run
    for rel in offers(images).values():  # without offers compact reads each file whole
        images.remove_files([rel, rel[:-len(".parquet")] + ".json"])
    for lake in (offered, again):
        assert compact(lake.url) == 0
    assert offered.runs("compact")[-1]["info"]["from_clip"] == 2 and again.runs("compact")[-1]["info"]["from_clip"] == 0
    assert offered.table("images").read_arrow().equals(again.table("images").read_arrow())
    assert {e.compacted["by"] for e in offered.table("images").entries()} == {"clip"}
    assert {e.compacted["by"] for e in again.table("images").entries()} == {"compact"}
    assert offers(offered.table("images")) == {}  # taken
    assert fsck.check(offered).ok


def test_an_offer_that_does_not_fit_is_not_taken(lake):
    images = lake.table("images")
    e = images.entries()[0]
    rel = offers(images)[offer_name(e.unit, e.path)]
    assert take_offer(images, rel, e.path, e.rows + 1, 0.0) is None  # other rows
    assert take_offer(images, rel, "data/other.parquet", e.rows, 0.0) is None  # another file
    floor = json.loads(open(images.path(rel[:-len(".parquet")] + ".json")).read())["floor"]
    assert take_offer(images, rel, e.path, e.rows, floor + 0.01) is None  # another floor
    rows, info = take_offer(images, rel, e.path, e.rows, floor)
    assert rows.num_rows == e.rows and info["from"] == e.path
    assert offer_name(e.unit, e.path) not in offers(images)  # removed once read


def _live(lake: Lake, job: str, table: str, **extra) -> str:
    rid = new_run_id()
    lake.write_run(job, rid, {"job": job, "run_id": rid, "status": "running", "started": utcnow(),
                              "heartbeat": utcnow(), "table": table, "tables": [table], **extra})
    return rid


def test_a_live_download_keeps_compact_out_and_the_other_way_round(lake, capsys):
    live = _live(lake, "download", "images")
    capsys.readouterr()
    assert compact(lake.url) == 2
    err = capsys.readouterr().err.strip()
    assert "download run" in err and "one writer at a time" in err and len(err.splitlines()) == 1
    assert not lake.table("images").entries()[0].compacted
    _end(lake, "download", live)

    live = _live(lake, "compact", "images", grows=[])
    assert DownloadJob().main(["--lake", lake.url]) == 2
    assert "compact run" in capsys.readouterr().err
    _end(lake, "compact", live)

    # a killed download's record (its heartbeat stopped run.writer_stale_s ago) no longer holds the table
    _live(lake, "download", "images", heartbeat=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 700)))
    assert compact(lake.url) == 0 and all(e.compacted for e in lake.table("images").entries())


def _end(lake: Lake, job: str, run_id: str) -> None:
    rec = next(r for r in lake.runs(job) if r["run_id"] == run_id)
    lake.write_run(job, run_id, dict(rec, status="failed", ended=utcnow()))


def test_clip_follow_does_not_wait_for_compact_and_compact_follows_clip(lake):
    _live(lake, "compact", "images", grows=[])
    job = ClipJob()
    args = type("A", (), {"follow_stale_s": 600.0})()
    assert job._writers(lake, args) == []  # it only rewrites images files: nothing new for clip to take
    _live(lake, "download", "images")
    assert [w.split()[0] for w in job._writers(lake, args)] == ["download"]
    _live(lake, "clip", "scored")
    assert [w.split()[0] for w in CompactJob()._writers(lake, args)] == ["clip"]


def test_wrong_settings_and_a_lake_without_scores_stop_in_one_line(lake, tmp_path, capsys):
    capsys.readouterr()
    assert compact(lake.url, "--set", "compact.margin=-0.1") == 2
    assert "compact.margin" in capsys.readouterr().err
    bare = Lake(str(tmp_path / "bare"))
    bare.table("images")  # nothing committed
    assert compact(bare.url) == 2
    err = capsys.readouterr().err
    assert "run jobs/clip.py first" in err and "Traceback" not in err


def test_the_export_of_a_compacted_lake_is_the_release_of_the_uncompacted_one(inspect_lake, tmp_path):  # noqa: F811
    from test_export import expected, export, with_duplicates

    plain, dups = with_duplicates(inspect_lake, tmp_path / "plain")
    small = Lake(copy_lake(plain.root, tmp_path / "small"))
    assert compact(small.url) == 0
    for lake in (plain, small):
        assert export(lake.url) == 0
    want = sorted(expected(plain, dups).uid)
    for lake in (plain, small):
        assert sorted(lake.table("release").read_arrow(["uid"]).column("uid").to_pylist()) == want
    tars = {}
    for lake in (plain, small):
        tars[lake.url] = {m.name: tarfile.open(p).extractfile(m).read() for p in lake.glob(
            lake.table("release").path("webdataset/*/*.tar")) for m in tarfile.open(p) if m.isfile()}
    assert tars[plain.url] == tars[small.url] and tars[plain.url]  # the same samples, the same bytes
