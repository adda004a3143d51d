"""jobs/export.py: the release read back with what its users use - webdataset over the brace pattern, HF
datasets over the folder, pandas over the LAION parquet, img2dataset's URL-list reader - plus reruns, resume,
argument and lake errors. One export of a copy of the inspection lake (a real clip run) serves most tests."""

from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import isolate_hf_hub
from inspect_lake_fixture import copy_lake, inspect_lake, write_dedup_images  # noqa: F401 - the fixture
from PIL import Image

from laion5b_spark import fsck, schemas, stats
from laion5b_spark.export import hub
from laion5b_spark.export.job import ExportJob
from laion5b_spark.export.release import BUCKETS
from laion5b_spark.lake import Lake, new_run_id

_exported: dict[str, str] = {}


def export(lake: str, *extra: str) -> int:
    return ExportJob().main(["--lake", lake, "--set", "run.commit_interval_s=0.5", *extra])


def with_duplicates(src: str, dst) -> tuple[Lake, dict[int, tuple[int, bool]]]:
    """A copy of the inspection lake with dedup_images: one exact and one near duplicate in each of two buckets
    where it can, and the last dataset row left out of it (not indexed yet: kept, as stats keeps it)."""
    lake = Lake(copy_lake(src, dst))
    ds = lake.table("dataset").read_arrow(["uid", "language"]).to_pylist()
    by_lang: dict[str, list[int]] = {}
    for r in ds:
        by_lang.setdefault(r["language"], []).append(r["uid"])
    dups = {}
    for uids in by_lang.values():
        if len(uids) >= 3:
            dups[uids[1]] = (uids[0], True)
            dups[uids[2]] = (uids[0], False)
    write_dedup_images(lake, dups, [r["uid"] for r in ds[:-1]])
    return lake, dups


@pytest.fixture(scope="module")
def exported(inspect_lake, tmp_path_factory):  # noqa: F811
    if "lake" not in _exported:
        lake, dups = with_duplicates(inspect_lake, tmp_path_factory.mktemp("export") / "lake")
        assert export(lake.url) == 0
        _exported.update(lake=lake.url, dups=json.dumps({str(k): v for k, v in dups.items()}))
    return Lake(_exported["lake"]), {int(k): tuple(v) for k, v in json.loads(_exported["dups"]).items()}


def expected(lake: Lake, dups: dict) -> pd.DataFrame:
    """The release as the definition says: dataset rows minus the duplicates, each in its language's bucket."""
    ds = lake.table("dataset").to_pandas()
    ds = ds[~ds.uid.isin(list(dups))]
    ds["bucket"] = np.where(ds.language == "en", "english", np.where(ds.language == "nolang", "nolang", "multilingual"))
    return ds


def files_digest(root: str) -> dict[str, str]:
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if "/_runs" in d or "/_staging" in d or n.endswith("_stats.json") or n == "_manifest.json":
                continue  # run records and timings change; the data must not
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_webdataset_shards_read_back_as_the_release(exported):
    import webdataset as wds

    lake, dups = exported
    want = expected(lake, dups)
    lists = json.load(open(lake.table("release").path("webdataset.json")))
    assert sum(lists[b]["samples"] for b in BUCKETS) == len(want) > 0
    for b in BUCKETS:
        rows = want[want.bucket == b]
        info = lists[b]
        assert info["shards"] == len(lake.table("dataset").all_entries()) and not info["missing"]
        if not len(rows):  # webdataset refuses a pattern of empty shards: none is given
            assert info["pattern"] is None and info["samples"] == 0
            continue
        samples = list(wds.WebDataset(info["url"], shardshuffle=False))
        assert len(samples) == len(rows) == info["samples"]
        text_of = dict(zip(rows.uid, rows.text))
        similarity_of = dict(zip(rows.uid, rows.similarity))
        for s in samples:
            meta = json.loads(s["json"])
            assert s["txt"].decode() == meta["caption"] == text_of[meta["uid"]]
            assert meta["similarity"] == pytest.approx(similarity_of[meta["uid"]], rel=1e-6)
            assert "punsafe" in meta and "pwatermark" in meta
            assert Image.open(io.BytesIO(s["jpg"])).convert("RGB").size == (meta["width"], meta["height"])
        for f in info["files"]:  # img2dataset's stats beside each shard
            st = json.load(open(lake.table("release").path(f[:-4] + "_stats.json")))
            assert set(st) >= {"count", "successes", "failed_to_download", "failed_to_resize", "duration",
                               "start_time", "end_time", "status_dict"}
    # the same count as stats' release, and the duplicates under their reasons
    release = stats.funnel(lake).stage("release")
    run = lake.runs("export")[-1]
    dropped = {}
    for ledger in run["counts"].values():
        for reason, n in ledger["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    assert release.rows == len(want) and dropped == release.dropped == {"exact_duplicate": len(dups) // 2,
                                                                        "near_duplicate": len(dups) // 2}


def test_laion_parquet_reads_with_pandas_and_img2dataset(exported, tmp_path):
    from img2dataset.reader import Reader

    lake, dups = exported
    want = expected(lake, dups)
    root = lake.table("release").path("laion")
    for b in BUCKETS:
        df = pd.read_parquet(f"{root}/{b}")
        assert list(df.columns) == ["URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "hash", "punsafe", "pwatermark",
                                    "LANGUAGE", "uid", "key"]
        assert {c: str(t) for c, t in df.dtypes.items() if c in ("WIDTH", "HEIGHT", "similarity", "hash",
                                                               "punsafe", "pwatermark")} == {
            "WIDTH": "int32", "HEIGHT": "int32", "similarity": "float64", "hash": "int64", "punsafe": "float32",
            "pwatermark": "float32"}
        rows = want[want.bucket == b]
        assert sorted(df.URL) == sorted(rows.url) and (df.hash == df.uid).all()
        if not len(rows):
            continue
        reader = Reader(f"{root}/{b}", "parquet", "URL", "TEXT", None, None, None, 10_000, set(), str(tmp_path))
        got = []
        for _, shard in reader:
            t = pa.ipc.open_file(shard).read_all()
            got += list(zip(t.column("url").to_pylist(), t.column("caption").to_pylist()))
        assert sorted(got) == sorted(zip(rows.url, rows.text))


def test_hf_folder_loads_with_an_image_column_per_bucket(exported, tmp_path, monkeypatch):
    import datasets

    lake, dups = exported
    want = expected(lake, dups)
    isolate_hf_hub(monkeypatch, tmp_path / "hub", offline=True)
    datasets.disable_progress_bars()
    folder = lake.table("release").root
    present = [b for b in BUCKETS if (want.bucket == b).any()]
    assert datasets.get_dataset_config_names(folder) == present
    for b in present:
        d = datasets.load_dataset(folder, b, split="train", cache_dir=str(tmp_path / "cache"))
        assert isinstance(d.features["jpg"], datasets.Image) and len(d) == (want.bucket == b).sum()
        assert d[0]["jpg"].size[0] > 0 and d[0]["txt"] == d[0]["json"]["caption"]


def test_rerun_adds_nothing_and_the_lake_passes_check(exported):
    lake, dups = exported
    before = files_digest(lake.root)
    assert export(lake.url) == 0
    assert lake.runs("export")[-1]["units"]["to_run"] == 0
    assert files_digest(lake.root) == before
    report = fsck.check(lake)
    assert report.ok and not report.tables["release"].notes, report.lines()  # README.md, webdataset.json: layout
    assert report.tables["release"].rows == len(expected(lake, dups))


def test_a_failed_unit_resumes_to_the_same_files_and_push_waits_for_it(exported, inspect_lake, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    lake = Lake(copy_lake(inspect_lake, tmp_path / "lake"))
    src, _ = exported
    write_dedup_images(lake, *_dedup_of(src))
    images = lake.table("images")
    second = images.path(images.entries()[1].path)
    with open(second, "rb") as f:
        good = f.read()
    with open(second, "wb") as f:
        f.write(b"not parquet")  # the unit reading it fails; the other commits
    pushed = []
    monkeypatch.setattr(hub, "upload", lambda folder, repo, private=False: pushed.append((folder, repo)) or "url")
    assert export(lake.url, "--push-to-hub", "me/release") == 1 and not pushed
    with open(second, "wb") as f:
        f.write(good)
    assert export(lake.url, "--push-to-hub", "me/release") == 0
    assert pushed == [(lake.table("release").root, "me/release")]
    run = lake.runs("export")[-1]["units"]
    assert run["already_committed"] == 1 and run["done"] == 1
    ours, theirs = files_digest(lake.table("release").root), files_digest(src.table("release").root)
    shards = lambda d: {k: v for k, v in d.items() if k.startswith(("webdataset/", "laion/"))}  # noqa: E731
    assert shards(ours) == shards(theirs) and len(shards(ours)) == 3 * 2 * 2  # buckets x (tar, parquet) x units

    # a new index run rebuilt dedup_images (no duplicates now): every unit is rewritten under the same names
    dedup, rid = lake.table("dedup_images"), new_run_id()
    uids = lake.table("dataset").read_arrow(["uid"]).column("uid").to_pylist()
    rows = pa.Table.from_pylist([{"uid": u, "duplicate": False, "group_size": 1} for u in uids],
                                schema=schemas.DEDUP_IMAGES)
    dedup.commit([dedup.write_unit(rid, "rebuilt", "rebuilt", rows)], rid, replace_all=True)
    assert export(lake.url) == 0 and lake.runs("export")[-1]["units"]["done"] == 2
    assert lake.table("release").num_rows() == len(uids)
    assert set(shards(files_digest(lake.table("release").root))) == set(shards(ours)) and fsck.check(lake).ok


def _dedup_of(lake: Lake):
    t = lake.table("dedup_images").read_arrow().to_pylist()
    return ({r["uid"]: (r["exact_dup_of"] or r["near_dup_of"], r["exact_dup_of"] is not None) for r in t
             if r["duplicate"]}, [r["uid"] for r in t])


def test_wrong_arguments_and_a_lake_without_dataset_stop_in_one_line(tmp_path, capsys):
    assert export(str(tmp_path / "lake"), "--push-to-hub", "not a/valid/repo") == 2
    assert export(str(tmp_path / "lake"), "--set", "export.shard_digits=0") == 2
    assert export(str(tmp_path / "lake")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("[export] error:") for line in err)
    assert "--push-to-hub" in err[0] and "shard_digits" in err[1] and "run jobs/clip.py first" in err[2]
    with pytest.raises(SystemExit) as exc:
        ExportJob().main(["--lake", str(tmp_path), "--no-such-flag"])
    assert exc.value.code == 2


def test_a_new_dataset_unit_never_takes_a_shard_number_an_exported_unit_holds(exported, tmp_path):
    """dataset rebuilt in another order (a new unit listed first): exported units keep their numbers, the new one
    takes a free number instead of overwriting another unit's shards."""
    from laion5b_spark.config import load_config
    from laion5b_spark.lake import MANIFEST

    lake = Lake(copy_lake(exported[0].url, tmp_path / "lake"))
    table = lake.table("dataset")
    m = table.manifest()
    m["files"] = [dict(m["files"][-1], unit="a-new-unit")] + m["files"]
    lake.write_json(table.path(MANIFEST), m)
    job = ExportJob()
    args = job.parser().parse_args(["--lake", lake.url])
    settings = job.settings(args, load_config(), lake)
    units = job.list_units(args, settings, lake)
    shards = {u.id: u.get("shard") for u in units}
    held = {e.unit: int(e.covers["shard"]) for e in lake.table("release").all_entries()}
    assert len(set(shards.values())) == len(shards) == len(held) + 1
    assert all(shards[u] == n for u, n in held.items())
    assert shards["a-new-unit"] not in held.values()
