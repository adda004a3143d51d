"""jobs/stats.py: the funnel equals counts taken from the tables themselves, the release drops what
dedup_images marks, the report and its plots are written through the lake (local and s3://), and a lake
missing stages, or missing altogether, gives an explained outcome."""

import io
import json
from collections import Counter
from urllib.parse import urlsplit

import orjson
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inspect_lake_fixture import DUPLICATES, copy_lake, inspect_lake, write_dedup_images  # noqa: F401
from laion5b_spark import stats
from laion5b_spark.lake import Lake
from laion5b_spark.sample.pairs import generate_rows, write_pairs
from laion5b_spark.stats.job import StatsJob

PLOTS = {"similarity.png", "image_sizes.png", "languages.png", "domains.png"}


def listed(root: str, table: str, columns: list[str]):
    """A table read straight from its manifest's files with pyarrow (not through the lake code)."""
    with open(f"{root}/{table}/_manifest.json", "rb") as f:
        m = orjson.loads(f.read())
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f"{root}/{table}/{e['path']}", columns=columns)
                             for e in m["files"] if e.get("path")]), m


@pytest.mark.spark
def test_funnel_equals_counts_from_the_tables(inspect_lake):  # noqa: F811
    f = stats.funnel(Lake(inspect_lake))
    pairs, pm = listed(inspect_lake, "pairs", ["uid"])
    unique, _ = listed(inspect_lake, "pairs_unique", ["uid"])
    images, _ = listed(inspect_lake, "images", ["uid", "status", "reason"])
    scored, _ = listed(inspect_lake, "scored", ["uid", "status", "passed"])
    dataset, _ = listed(inspect_lake, "dataset", ["uid"])
    img = images.to_pandas()
    sc = scored.to_pandas()

    s = f.stage("pairs")
    tags = Counter()
    for e in pm["files"]:
        tags.update(e["counts"]["img_tags"]["dropped"])
    assert s.rows == pairs.num_rows and s.dropped == dict(tags) and s.rows_in == s.rows + sum(tags.values())
    s = f.stage("pairs_unique")
    assert s.rows == unique.num_rows == pairs.num_rows - DUPLICATES and s.dropped == {"duplicate": DUPLICATES}
    assert s.rows_in == pairs.num_rows and s.pending == 0
    s = f.stage("downloaded")
    assert s.rows == int((img.status == "success").sum()) and s.rows_in == len(img)
    assert s.failed == dict(Counter(img[img.status != "success"].reason)) and s.pending == unique.num_rows - len(img)
    s = f.stage("passed_clip")
    ok = sc[sc.status == "scored"]
    assert s.rows == dataset.num_rows == int(ok.passed.sum())
    assert s.dropped == {"below_threshold": int((~ok.passed.astype(bool)).sum())}
    assert s.failed == {"decode_error": int((sc.status == "decode_error").sum())}
    assert s.rows_in == int((sc.status != "no_image").sum()) == f.stage("downloaded").rows
    s = f.stage("release")
    assert s.rows == dataset.num_rows and not s.dropped
    assert any("no dedup_images table" in n for n in f.notes)
    # every stage balances: rows in = rows out + dropped + failed
    for s in f.stages:
        assert s.rows_in == s.rows + sum(s.dropped.values()) + sum(s.failed.values()), s.name
    rows = f.frame().set_index("table")
    assert rows.loc["pairs_unique", "of_previous"] == pytest.approx(unique.num_rows / pairs.num_rows)


@pytest.mark.spark
def test_release_drops_what_dedup_images_marks(inspect_lake, tmp_path):  # noqa: F811
    lake = Lake(copy_lake(inspect_lake, tmp_path / "lake"))
    uids = lake.table("dataset").to_arrow(["uid"]).column("uid").to_pylist()
    dups = {uids[1]: (uids[0], False), uids[2]: (uids[0], False), uids[3]: (uids[0], False),
            uids[5]: (uids[4], True), uids[6]: (uids[4], True)}
    write_dedup_images(lake, dups, uids[:-1])  # the last release row was not indexed
    f = stats.funnel(lake)
    s = f.stage("release")
    assert s.rows == len(uids) - 5 and s.dropped == {"near_duplicate": 3, "exact_duplicate": 2}
    assert any("1 dataset rows are not in dedup_images" in n for n in s.notes)
    assert not any("no dedup_images" in n for n in f.notes)
    assert "image embedding within index.near_dup_threshold" in f.text()  # the reason's meaning


@pytest.mark.spark
def test_stats_job_writes_the_report_and_valid_plots(inspect_lake, tmp_path, capsys):  # noqa: F811
    root = copy_lake(inspect_lake, tmp_path / "lake")
    assert StatsJob().main(["--lake", root]) == 0
    out = capsys.readouterr().out
    report = f"{root}/_reports/stats/report.html"
    assert "passed CLIP (dataset)" in out and "below_threshold" in out and f"report: {report}" in out.splitlines()[-1]
    for name in PLOTS:
        with open(f"{root}/_reports/stats/{name}", "rb") as fh:
            im = Image.open(io.BytesIO(fh.read()))
            assert im.format == "PNG" and im.size[0] >= 400
            im.verify()
    page = open(report).read()
    assert page.count("data:image/png;base64,") == 4 and all(f"href='{n}'" in page for n in PLOTS)
    assert "below_threshold" in page and "CLIP similarity of image and text under" in page
    data = json.load(open(f"{root}/_reports/stats/stats.json"))
    threshold = Lake(root).runs("clip")[-1]["config"]["clip"]["threshold"]
    assert list(data["thresholds"].values()) == [threshold] and f"{threshold:g}" in page
    assert [s["rows"] for s in data["funnel"]["stages"]] == [s.rows for s in stats.funnel(Lake(root)).stages]
    urls = listed(root, "dataset", ["url"])[0].column("url").to_pylist()
    hosts = Counter(urlsplit(u).hostname.removeprefix("www.") for u in urls)
    assert dict(data["domains"]) == dict(hosts) and "red-cdn.test" in hosts  # www. dropped


@pytest.mark.spark
def test_stats_job_on_an_s3_lake(inspect_lake, moto_s3, capsys):  # noqa: F811
    import s3fs

    fs = s3fs.S3FileSystem(**moto_s3)
    fs.put(inspect_lake, "l5s-test/stats-lake", recursive=True)
    opts = ",".join(f'{k} = "{v}"' for k, v in moto_s3.items())
    assert StatsJob().main(["--lake", "s3://l5s-test/stats-lake", "--set", f"lake.storage_options={{{opts}}}"]) == 0
    out = capsys.readouterr().out
    assert "report: s3://l5s-test/stats-lake/_reports/stats/report.html" in out
    fs.invalidate_cache()
    assert {p.rsplit("/", 1)[-1] for p in fs.ls("l5s-test/stats-lake/_reports/stats")} >= PLOTS | {"report.html"}
    Image.open(io.BytesIO(fs.cat("l5s-test/stats-lake/_reports/stats/similarity.png"))).verify()
    local = stats.funnel(Lake(inspect_lake))
    remote = json.loads(fs.cat("l5s-test/stats-lake/_reports/stats/stats.json"))
    assert [s["rows"] for s in remote["funnel"]["stages"]] == [s.rows for s in local.stages]


def test_a_lake_with_only_pairs_says_what_is_missing(tmp_path, capsys):
    root = str(tmp_path / "lake")
    write_pairs(Lake(root), {"f": generate_rows(50, seed=1)})
    assert StatsJob().main(["--lake", root]) == 0
    out = capsys.readouterr().out
    f = stats.funnel(Lake(root))
    assert f.stage("pairs").rows == 50 and not f.stage("downloaded").built and f.stage("release").rows is None
    assert "manifest rows only" in f.stage("pairs").source
    assert "pairs (extract)" in out and "report:" in out
    assert (tmp_path / "lake" / "_reports" / "stats" / "languages.png").exists()
    assert not (tmp_path / "lake" / "_reports" / "stats" / "similarity.png").exists()


def test_dry_run_writes_nothing_and_a_missing_lake_is_explained(tmp_path, capsys):
    root = str(tmp_path / "lake")
    write_pairs(Lake(root), {"f": generate_rows(10, seed=2)})
    assert StatsJob().main(["--lake", root, "--dry-run"]) == 0
    assert "pairs (extract)" in capsys.readouterr().out and not (tmp_path / "lake" / "_reports").exists()
    assert StatsJob().main(["--lake", str(tmp_path / "nowhere")]) == 2
    assert "no lake at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        StatsJob().main(["--help"])
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out
