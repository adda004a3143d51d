"""The index job on Spark: indices with measured recall, planted near-duplicates found (and nothing else),
the query helper, resume (nothing to do; a crash after the export exports nothing again; new scored files make
a new build and the old one goes), an s3:// lake, and text queries with the project's tiny CLIP."""

import json
import os

import numpy as np
import pytest

from laion5b_spark import schemas
from laion5b_spark.index import job as index_job
from laion5b_spark.index import search
from laion5b_spark.index.job import IndexJob
from laion5b_spark.index.layout import read_pointer
from laion5b_spark.lake import Lake
from laion5b_spark.sample.embeddings import make_scored_lake

pytestmark = pytest.mark.spark
FAST = ["--set", "index.recall_queries=200", "--set", "index.max_index_memory_usage=100M",
        "--set", "index.current_memory_available=2G", "--set", "run.progress_interval_s=60"]


def run_index(lake, *extra) -> int:
    return IndexJob().main(["--lake", str(lake), *FAST, *extra])


def last_run(lake: Lake) -> dict:
    return lake.runs("index")[-1]


def check_planted(lake: Lake, truth) -> None:
    rows = lake.table("dedup_images").read_arrow()
    schemas.check("dedup_images", rows)
    d = rows.to_pandas().set_index("uid")
    indexed = {u for u, p in truth.passed.items() if p}
    assert set(d.index) == indexed  # one row per indexed (dataset) row
    expected_dups = set()
    for group in truth.near_groups + truth.exact_groups:
        rep = min(group, key=lambda u: (-truth.similarity[u], u))
        assert not d.loc[rep, "duplicate"]
        for u in group:
            if u != rep:
                assert d.loc[u, "near_dup_of"] == rep, (group, u)
                expected_dups.add(u)
            assert d.loc[u, "group_size"] == len(group)
    assert set(d.index[d["duplicate"]]) == expected_dups  # no false groups
    for a, b in truth.exact_groups:
        rep = min((a, b), key=lambda u: (-truth.similarity[u], u))
        other = b if rep == a else a
        assert d.loc[other, "exact_dup_of"] == rep
    near = lake.runs("index")[-1]["counts"]["near_dup"]
    assert near["dropped"]["exact_duplicate"] == len(truth.exact_groups)
    assert near["dropped"]["near_duplicate"] == sum(len(g) - 1 for g in truth.near_groups)


def test_index_job_builds_indices_finds_planted_duplicates_and_answers_queries(spark, tmp_path):
    lake_dir = tmp_path / "lake"
    # file 1 of 3 has no image at all: an empty part between two full ones; 4 rows of the other CLIP model
    truth = make_scored_lake(str(lake_dir), files=3, rows_per_file=200, seed=1, empty_file=1, other_model=4)
    assert run_index(lake_dir) == 0
    lake = Lake(str(lake_dir))
    r = last_run(lake)
    assert r["status"] == "succeeded"
    idx = r["counts"]["index"]
    n_indexed = sum(truth.passed.values())
    assert idx["rows_in"] == 600 and idx["rows_out"] == n_indexed
    assert idx["failed"]["no_image"] >= 200 and idx["dropped"]["other_model"] == 4
    assert idx["rows_in"] == idx["rows_out"] + sum(idx["dropped"].values()) + sum(idx["failed"].values())
    for name in ("image", "text"):
        p = read_pointer(lake, name)
        assert p["vectors"] == n_indexed and p["dim"] == 32 and len(p["parts"]) == 2  # the empty part has no file
        assert p["recall"]["recall_at_k"] >= 0.99  # autofaiss picks an exact index for 500 vectors
        assert os.path.exists(lake.index_path(name, p["index"]))
    check_planted(lake, truth)

    base = truth.near_groups[0]
    hits = search(lake, uid=base[0], k=3)
    assert set(hits["uid"]) == set(base) and hits["score"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert hits["url"].tolist() == [f"http://img.test/{u}.jpg" for u in hits["uid"]]  # joined to dataset
    assert list(hits["rank"]) == [1, 2, 3]
    text_hits = search(lake, uid=base[0], k=1, index="text")
    assert text_hits["uid"].iloc[0] == base[0]  # a caption's nearest caption is itself
    with pytest.raises(KeyError, match="not in the image index"):
        search(lake, uid=-5, k=3)

    # a rerun with nothing new does nothing
    runs = len(lake.runs("index"))
    assert run_index(lake_dir) == 0
    assert len(lake.runs("index")) == runs


def test_a_quantized_index_still_finds_every_planted_duplicate(spark, tmp_path):
    """IVF-PQ scores are approximate and, after OPQ's reduction to fewer dimensions (what autofaiss picks for big
    builds), on another scale: candidates are compared on the query's own scale, the exact check decides."""
    lake_dir = tmp_path / "lake"
    truth = make_scored_lake(str(lake_dir), files=2, rows_per_file=3000, dim=64, seed=2, near_groups=30,
                             exact_pairs=10)
    assert run_index(lake_dir, "--set", "index.index_key=OPQ16_32,IVF16_HNSW32,PQ16", "--set", "index.text=false") == 0
    lake = Lake(str(lake_dir))
    p = read_pointer(lake, "image")
    assert p["index_key"] == "OPQ16_32,IVF16_HNSW32,PQ16" and read_pointer(lake, "text") is None
    # stated: >= 0.4 recall@10 for 16-byte codes of 64-d clustered data cut to 32-d (0.49 measured; exact: 1.0)
    assert 0.4 <= p["recall"]["recall_at_k"] < 1.0
    check_planted(lake, truth)


def test_a_crash_between_the_two_indices_resumes_with_the_same_tables(spark, tmp_path, monkeypatch):
    """Killed while building the text index: the image index stays committed (not rebuilt), the rerun builds
    text and near-duplicates, and every table equals an uninterrupted run's."""
    truth = make_scored_lake(str(tmp_path / "a"), files=2, rows_per_file=150, seed=7)
    make_scored_lake(str(tmp_path / "b"), files=2, rows_per_file=150, seed=7)
    real_build = index_job.build

    def build_but_not_text(emb_dir, *a, **kw):
        if "/text/" in emb_dir:
            raise RuntimeError("killed during the text build")
        return real_build(emb_dir, *a, **kw)

    monkeypatch.setattr(index_job, "build", build_but_not_text)
    assert run_index(tmp_path / "a") == 3  # failed: recorded with its trace, one line printed
    a = Lake(str(tmp_path / "a"))
    assert last_run(a)["status"] == "failed" and "text build" in last_run(a)["error"]
    assert "Traceback" in last_run(a)["trace"]
    image_run = read_pointer(a, "image")["run_id"]
    assert read_pointer(a, "text") is None and a.table("dedup_images").num_rows() == 0
    monkeypatch.undo()
    assert run_index(tmp_path / "a") == 0
    assert read_pointer(a, "image")["run_id"] == image_run  # not built again
    assert last_run(a)["inputs"]["parts_to_export"] == 0
    assert run_index(tmp_path / "b") == 0
    b = Lake(str(tmp_path / "b"))
    assert a.table("dedup_images").read_arrow().equals(b.table("dedup_images").read_arrow())
    for name in ("image", "text"):
        pa_, pb = read_pointer(a, name), read_pointer(b, name)
        assert (pa_["build"], pa_["vectors"], pa_["parts"]) == (pb["build"], pb["vectors"], pb["parts"])
    check_planted(a, truth)


def test_changed_near_dup_settings_redo_only_that_pass(spark, tmp_path):
    lake_dir = tmp_path / "lake"
    truth = make_scored_lake(str(lake_dir), files=2, rows_per_file=150, seed=8)
    assert run_index(lake_dir, "--set", "index.text=false") == 0
    lake = Lake(str(lake_dir))
    image_run = read_pointer(lake, "image")["run_id"]
    # planted near-copies are at cosine ~0.9988: above 0.9999 only the exact copies stay duplicates
    assert run_index(lake_dir, "--set", "index.text=false", "--set", "index.near_dup_threshold=0.9999") == 0
    assert read_pointer(lake, "image")["run_id"] == image_run
    d = lake.table("dedup_images").read_arrow().to_pandas()
    assert set(d.loc[d["duplicate"], "uid"]) == {min(g, key=lambda u: (truth.similarity[u], -u))
                                                 for g in truth.exact_groups}
    # and another index setting rebuilds the index (a new file; the old one goes)
    old_file = lake.index_path("image", read_pointer(lake, "image")["index"])
    assert run_index(lake_dir, "--set", "index.text=false", "--set", "index.near_dup_threshold=0.9999",
                     "--set", "index.index_key=Flat") == 0
    p = read_pointer(lake, "image")
    assert p["run_id"] != image_run and p["index_key"] == "Flat" and not os.path.exists(old_file)


def test_crash_after_export_resumes_without_exporting_again(spark, tmp_path, monkeypatch):
    lake_dir = tmp_path / "lake"
    make_scored_lake(str(lake_dir), files=3, rows_per_file=100, seed=3)

    def boom(*a, **kw):
        raise RuntimeError("killed during the build")

    monkeypatch.setattr(index_job, "build", boom)
    assert run_index(lake_dir) == 3
    lake = Lake(str(lake_dir))
    assert last_run(lake)["status"] == "failed" and read_pointer(lake, "image") is None
    assert "killed during the build" in last_run(lake)["error"]
    monkeypatch.undo()
    assert run_index(lake_dir) == 0
    r = last_run(lake)
    assert r["status"] == "succeeded" and r["inputs"]["parts_to_export"] == 0
    assert r["counts"]["index"]["rows_in"] == 300  # the ledger of parts exported by the crashed run


def test_new_scored_files_make_a_new_build_and_the_old_one_goes(spark, tmp_path):
    from laion5b_spark.sample.pairs import write_pairs

    lake_dir = tmp_path / "lake"
    make_scored_lake(str(lake_dir), files=2, rows_per_file=100, seed=4)
    assert run_index(lake_dir) == 0
    lake = Lake(str(lake_dir))
    old = read_pointer(lake, "image")
    other = make_scored_lake(str(tmp_path / "other"), files=1, rows_per_file=100, seed=5)
    src = Lake(str(tmp_path / "other"))
    # one more scored file arrives (a new crawl); a scored unit's key is the images file it scored
    (img,) = src.table("images").entries()
    (new,) = write_pairs(lake, {"new-shard": src.table("images").read_file(img.path)}, run_id="r2", table="images")
    for name in ("scored", "dataset"):
        (e,) = src.table(name).entries()
        write_pairs(lake, {new.path: src.table(name).read_file(e.path)}, run_id="r2", table=name)
    assert run_index(lake_dir) == 0
    new = read_pointer(lake, "image")
    assert new["build"] != old["build"]
    for name in ("image", "text"):
        assert sorted(os.listdir(lake.index_path(name))) == sorted(["_index.json", new["build"]])  # old build gone
    n = sum(1 for p in json.load(open(lake_dir / "dedup_images" / "_manifest.json"))["files"])
    assert n == 3 and lake.table("dedup_images").num_rows() == new["vectors"]
    assert new["vectors"] == old["vectors"] + sum(other.passed.values())


def test_index_on_an_s3_lake_equals_a_local_one(spark, tmp_path, moto_s3):
    local = tmp_path / "lake"
    make_scored_lake(str(local), files=2, rows_per_file=100, seed=6)
    s3 = Lake("s3://l5s-test/index-lake", moto_s3)
    make_scored_lake(s3, files=2, rows_per_file=100, seed=6)
    assert run_index(local, "--set", "index.text=false") == 0
    opts = ",".join(f'{k} = "{v}"' for k, v in moto_s3.items())
    assert IndexJob().main(["--lake", s3.url, *FAST, "--set", "index.text=false",
                            "--set", f"lake.storage_options={{{opts}}}"]) == 0
    a = Lake(str(local)).table("dedup_images").read_arrow().sort_by("uid")
    b = s3.table("dedup_images").read_arrow().sort_by("uid")
    assert a.equals(b)
    hits = search(s3, uid=a.column("uid")[0].as_py(), k=2)
    assert hits["uid"].iloc[0] == a.column("uid")[0].as_py()


def test_text_query_finds_the_shapes_it_names(spark, tmp_path):
    """End to end with the project's tiny CLIP: clip scores shape pictures, index builds, a text query
    returns pictures of what it names."""
    from test_clip_job import clip, images_rows
    from laion5b_spark.sample.pairs import write_pairs

    lake_dir = tmp_path / "lake"
    a, _ = images_rows(200, 11, 0)
    write_pairs(Lake(str(lake_dir)), {"shard-a": a}, table="images")
    assert clip(lake_dir) == 0
    assert run_index(lake_dir, "--set", "index.text=false") == 0
    hits = search(Lake(str(lake_dir)), text="a red circle", k=5)
    assert len(hits) == 5
    # dataset rows are pairs whose caption fits the picture: the caption says what the picture shows
    good = sum("red" in t and "circle" in t for t in hits["text"])
    assert good >= 4, hits[["text", "score"]]
    assert np.all(np.diff(hits["score"].to_numpy()) <= 1e-6)
