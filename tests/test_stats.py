"""jobs/stats.py: the funnel equals counts taken from the tables themselves, the release drops what
dedup_images marks, the report and its plots are written through the lake (local and s3://), the plots and
sample images count the release, run records give durations and throughput per stage, the page renders in
headless Chromium (skipped without it), and a lake missing stages, or missing altogether, gives an explained
outcome."""

import html
import io
import json
import re
import shutil
import subprocess
from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inspect_lake_fixture import DUPLICATES, _commit, copy_lake, inspect_lake, write_dedup_images  # noqa: F401
from laion5b_spark import schemas, stats
from laion5b_spark.lake import Lake, new_run_id
from laion5b_spark.sample.pairs import generate_rows, write_pairs
from laion5b_spark.stats import plots
from laion5b_spark.stats.job import StatsJob
from laion5b_spark.stats.report import render_html
from laion5b_spark.stats.runs import stage_runs

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


def _with_duplicates(inspect_lake, tmp_path) -> tuple[Lake, set[int]]:  # noqa: F811
    """A copy of the inspection lake whose dedup_images marks 5 release rows duplicate (2 of them exact)."""
    lake = Lake(copy_lake(inspect_lake, tmp_path / "lake"))
    uids = sorted(lake.table("dataset").to_arrow(["uid"]).column("uid").to_pylist())
    # the lowest uids: each would be a sample image if it were not a duplicate
    dups = {uids[1]: (uids[9], False), uids[2]: (uids[9], False), uids[3]: (uids[9], False),
            uids[0]: (uids[8], True), uids[5]: (uids[8], True)}
    write_dedup_images(lake, dups, uids)
    return lake, set(dups)


@pytest.mark.spark
def test_plots_and_samples_count_the_release(inspect_lake, tmp_path):  # noqa: F811
    lake, dups = _with_duplicates(inspect_lake, tmp_path)
    s = stats.compute(lake)
    release = s.funnel.stage("release")
    assert release.rows == lake.table("dataset").num_rows() - 5
    dataset = listed(str(tmp_path / "lake"), "dataset", ["uid", "url", "language", "punsafe"])[0].to_pandas()
    kept = dataset[~dataset.uid.isin(dups)]
    # similarity: scored rows split into release / duplicates / below threshold; the release part is the release
    counts = {k: int(v.sum()) for k, v in s.similarity.hist.counts.items()}
    scored = listed(str(tmp_path / "lake"), "scored", ["status", "passed"])[0].to_pandas()
    scored = scored[scored.status == "scored"]
    assert counts == {"release": release.rows, "duplicate (not released)": 5,
                      "below threshold": int((~scored.passed.astype(bool)).sum())}
    # languages and hosts: the release's rows
    assert dict(s.languages[1]) == dict(Counter(kept.language)) and s.languages[0] == "release"
    assert dict(s.domains[1]) == dict(Counter(urlsplit(u).hostname.removeprefix("www.") for u in kept.url))
    # sizes: the release's images, from images joined on uid (width, height, aspect)
    images = listed(str(tmp_path / "lake"), "images", ["uid", "original_width", "original_height"])[0].to_pandas()
    mine = images[images.uid.isin(kept.uid)]
    assert s.sizes.of == "release"
    assert s.sizes.original_width.total == s.sizes.original_height.total == s.sizes.aspect.total == len(mine)
    assert s.sizes.stored == [("128x128", len(mine))]
    ratio = mine.original_width / mine.original_height
    got = s.sizes.aspect.counts["aspect ratio"]
    assert got.sum() == len(ratio) and got[np.searchsorted(s.sizes.aspect.edges, ratio.max()) - 1] > 0
    assert "release (" in s.captions["languages.png"] and "minus 5 duplicates" in s.captions["languages.png"]
    # samples: per bucket, the release rows of that bucket with the lowest uids; none a duplicate
    buckets = {b.name: b for b in s.samples}
    assert list(buckets) == ["english", "multilingual", "nolang"]
    english = kept[kept.language == "en"].uid.sort_values().tolist()
    other = kept[~kept.language.isin(["en", "nolang"])].uid.sort_values().tolist()
    assert [r["uid"] for r in buckets["english"].samples] == english[:16] and buckets["english"].rows == len(english)
    assert [r["uid"] for r in buckets["multilingual"].samples] == other[:16]
    assert buckets["nolang"].rows == 0 and buckets["nolang"].samples == []
    for b in s.samples:
        for r in b.samples:
            assert r["uid"] not in dups
            Image.open(io.BytesIO(r["jpg"])).verify()  # the stored image, read by uid
    # no NSFW head / watermark model in the fixture's clip run: a line each, no empty plot
    assert dataset.punsafe.isna().all() and "safety.png" not in s.plots
    assert [n.split(" is empty")[0] for n in s.plot_notes] == ["punsafe", "pwatermark"]


def test_safety_plot_and_empty_line_from_the_release(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    n = 40
    rows = pa.table({"url": [f"http://h.test/{i}.jpg" for i in range(n)], "text": ["t"] * n,
                     "width": pa.array([64] * n, pa.int32()), "height": pa.array([64] * n, pa.int32()),
                     "similarity": pa.array([0.3] * n, pa.float32()),
                     "punsafe": pa.array([i // 2 / 20 + 0.0125 + 0.025 * (i % 2) for i in range(n)], pa.float32()),
                     "pwatermark": pa.nulls(n, pa.float32()), "language": ["nolang"] * n,
                     "uid": pa.array(range(n), pa.int64())}, schema=schemas.DATASET)
    _commit(lake, "dataset", {"all": (rows, {})}, new_run_id())
    write_dedup_images(lake, {3: (2, False)}, list(range(n)))
    s = stats.compute(lake)
    assert s.safety.rows == n - 1 and s.safety.hists["pwatermark"] is None
    hist = s.safety.hists["punsafe"]
    assert hist.total == n - 1 and list(hist.counts["punsafe"]) == [2, 1] + [2] * 18  # two per bin; uid 3 left
    assert "safety.png" in s.plots and Image.open(io.BytesIO(s.plots["safety.png"])).size[0] >= 400
    assert s.plot_notes == [f"pwatermark is empty (null in all {n - 1} release rows): no watermark model configured: "
                            "clip.watermark_model"]
    page = render_html(lake, s)
    assert s.plot_notes[0] in page and "punsafe is empty" not in page
    assert [b.rows for b in s.samples] == [0, 0, n - 1]  # no images table: rows, no pictures
    assert "nolang: 39 release rows" in page


def test_runs_per_stage_from_the_run_records(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_pairs(lake, {"f": generate_rows(10, seed=3)})

    def record(job, rid, status, seconds, counts, started="2026-01-01T00:00:00Z"):
        r = {"job": job, "run_id": rid, "status": status, "started": started, "counts": counts}
        if seconds is not None:
            r.update(seconds=seconds, ended="2026-01-01T00:01:00Z")
        lake.write_run(job, rid, r)

    ledger = lambda n_in, n_out: {"rows_in": n_in, "rows_out": n_out, "dropped": {}, "failed": {}}  # noqa: E731
    record("download", "r1", "partial", 10.0, {"images": ledger(300, 250)})
    record("download", "r2", "succeeded", 20.0, {"images": ledger(600, 500)}, started="2026-01-02T00:00:00Z")
    record("extract", "e1", "succeeded", 4.0, {"records": ledger(80, 60), "img_tags": ledger(900, 700)})
    record("clip", "c1", "running", None, {}, started="2026-01-03T00:00:00Z")  # still going: no seconds yet
    record("export", "x1", "succeeded", 5.0, {"release": ledger(50, 40)})  # a stage this module does not know
    runs = {r.job: r for r in stage_runs(lake)}
    assert list(runs) == ["extract", "download", "clip", "export"]  # pipeline order, then the others; no stats
    d = runs["download"]
    assert (d.runs, d.seconds, d.ledger, d.rows_in, d.rows_out) == (2, 30.0, "images", 900, 750)
    assert d.rows_per_s == 30.0 and d.last_status == "succeeded" and d.last_seconds == 20.0
    assert (runs["extract"].ledger, runs["extract"].rows_per_s) == ("records", 20.0)
    assert runs["clip"].last_status == "running" and runs["clip"].rows_in is None and runs["clip"].rows_per_s is None
    assert (runs["export"].ledger, runs["export"].rows_per_s) == ("release", 10.0)
    assert StatsJob().main(["--lake", lake.url]) == 0
    page = open(tmp_path / "lake" / "_reports" / "stats" / "report.html").read()
    assert "<h2>Runs per stage</h2>" in page and "900 images" in page and "<td>30.0</td>" in page
    data = json.load(open(tmp_path / "lake" / "_reports" / "stats" / "stats.json"))
    assert [r["job"] for r in data["runs"]] == ["extract", "download", "clip", "export"] and data["samples"] == {}


def test_count_axes_go_logarithmic_only_when_skewed():
    assert plots.skewed([5000, 20, 3]) and not plots.skewed([90, 20, 3])
    assert not plots.skewed([0, 0, 7]) and not plots.skewed([])
    png = plots.bar_chart([("en", 5000), ("de", 20), ("fr", 3)], "languages")
    assert Image.open(io.BytesIO(png)).format == "PNG"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# put first in <head>: records script and load errors, and on load writes what decoded into a <pre> that
# --dump-dom shows (no console output of its own: any console line is the page's)
_PROBE = """<script>
var l5sErrors = [];
window.addEventListener('error', function (e) {
  l5sErrors.push(e.message || ('load: ' + (e.target.alt || e.target.tagName)));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement('pre');
  out.id = 'l5s-probe';
  out.textContent = JSON.stringify({images: imgs.length, errors: l5sErrors,
    broken: imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
                .map(function (i) { return i.alt; }),
    plots: document.querySelectorAll('img.plot').length, thumbs: document.querySelectorAll('.grid img').length,
    height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def render_in_chromium(page: str, where) -> tuple[dict, str]:
    """(what the probe saw, Chromium's console lines) for a page rendered headless."""
    path = where / "probed.html"
    path.write_text(page.replace("<head>", "<head>" + _PROBE, 1))
    got = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={where}/profile",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                          path.as_uri()], capture_output=True, text=True, timeout=120)
    probe = re.search(r'<pre id="l5s-probe">(.*?)</pre>', got.stdout, re.S)
    assert probe, f"no probe output from chromium: {got.stderr[-2000:]}"
    return json.loads(html.unescape(probe.group(1))), "\n".join(
        line for line in got.stderr.splitlines() if ":CONSOLE" in line)


@pytest.mark.spark
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(inspect_lake, tmp_path):  # noqa: F811
    lake, _ = _with_duplicates(inspect_lake, tmp_path)
    assert StatsJob().main(["--lake", lake.url]) == 0
    s = json.load(open(tmp_path / "lake" / "_reports" / "stats" / "stats.json"))
    page = (tmp_path / "lake" / "_reports" / "stats" / "report.html").read_text()
    shown = sum(len(b["uids"]) for b in s["samples"].values())
    seen, console = render_in_chromium(page, tmp_path)
    assert seen["plots"] == len(s["plots"]) == 4
    assert seen["thumbs"] == shown == sum(min(16, b["rows"]) for b in s["samples"].values()) > 16
    assert seen["images"] == seen["plots"] + seen["thumbs"]
    assert seen["broken"] == [] and seen["errors"] == [] and console == ""
    # the probe sees a picture that does not decode (so the checks above can fail)
    bad = page.replace("</body>", "<img alt='bad' src='data:image/png;base64,iVBORw0KGgo='></body>")
    seen, _ = render_in_chromium(bad, tmp_path)
    assert seen["broken"] == ["bad"] and seen["images"] == shown + 5
    # and a screenshot of the page is not blank: the plots and thumbnails paint many colours
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path}/profile",
                    "--hide-scrollbars", f"--window-size=1200,{min(seen['height'], 8000)}", f"--screenshot={shot}",
                    (tmp_path / "lake" / "_reports" / "stats" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        assert im.size == (1200, min(seen["height"], 8000))
        assert len(im.convert("RGB").getcolors(1 << 24)) > 1000
