"""The notebook API of the lake: summaries equal the manifests, every reader (arrow, pandas, DuckDB, Spark, on a
local and an s3:// lake) reads exactly the listed files, and show_images renders the rows asked for."""

import html
import sys

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from inspect_lake_fixture import copy_lake, inspect_lake  # noqa: F401 - the fixture
from laion5b_spark.lake import DATA, Lake
from laion5b_spark.notebook import run_history, show_images, summary, to_duckdb, to_spark

pytestmark = pytest.mark.spark
INTRUDER = 1 << 60  # the uid of the unlisted file's rows


def manifest(root, table) -> dict:
    with open(f"{root}/{table}/_manifest.json", "rb") as f:
        return orjson.loads(f.read())


def test_summary_and_run_history_equal_the_manifests_and_records(inspect_lake):  # noqa: F811
    lake = Lake(inspect_lake)
    s = summary(lake).set_index("table")
    assert list(s.index) == ["dataset", "images", "pairs", "pairs_unique", "scored"]
    for name, row in s.iterrows():
        m = manifest(inspect_lake, name)
        listed = [f for f in m["files"] if f.get("path")]
        assert row["rows"] == sum(pq.read_metadata(f"{inspect_lake}/{name}/{f['path']}").num_rows for f in listed)
        assert row["files"] == len(listed) and row["runs"] == len(m["runs"]) and row["last_run"] == m["runs"][-1]
        assert row["MB"] == round(sum(f["bytes"] for f in listed) / 1e6, 3)
        assert row["updated"].isoformat().startswith(m["updated"][:19])
    h = run_history(lake)
    assert sorted(h["job"]) == ["clip", "dedup", "download", "extract"]
    for rec in h.to_dict("records"):
        with open(f"{inspect_lake}/_runs/{rec['job']}/{rec['run_id']}.json", "rb") as f:
            run = orjson.loads(f.read())
        assert rec["status"] == run["status"] == "succeeded" and rec["seconds"] == run["seconds"]
        for ledger, c in run["counts"].items():
            assert (rec[f"{ledger}.rows_in"], rec[f"{ledger}.rows_out"]) == (c["rows_in"], c["rows_out"])
    assert h.loc[h.job == "extract", "img_tags.rows_in"].item() == 99  # 88 pairs + 11 dropped img tags
    assert len(run_history(lake, "clip")) == 1 and list(run_history(lake, "clip").job) == ["clip"]


def _plant_unlisted_file(lake: Lake, table: str) -> None:
    """Valid parquet files of the table that its manifest does not list: a crashed run's staged unit (written,
    never committed), and a file in data/ that a plain ``data/*.parquet`` glob would pick up (copied in by hand,
    or left by a commit killed before its manifest write)."""
    t = lake.table(table)
    rows = t.read_file(t.entries()[0].path)
    rows = rows.set_column(rows.schema.get_field_index("uid"), "uid", pa.array([INTRUDER] * rows.num_rows, pa.int64()))
    staged = t.write_unit("crashed-run", "crashed-unit", "crashed", rows)
    planted = t.path(f"{DATA}/part-crashed-run.parquet")
    lake.write_parquet(planted, rows)
    assert lake.fs.exists(t.staged("crashed-run", staged.path)) and planted in lake.glob(t.path(f"{DATA}/*.parquet"))
    assert not {t.staged("crashed-run", staged.path), planted} & set(t.files())


@pytest.mark.parametrize("table", ["dataset", "scored"])  # scored: float16 embeddings, which Spark reads as float
def test_readers_read_only_the_listed_files(inspect_lake, tmp_path, spark, table):  # noqa: F811
    lake = Lake(copy_lake(inspect_lake, tmp_path / "lake"))
    _plant_unlisted_file(lake, table)
    t = lake.table(table)
    expected = sorted(u for f in t.files() for u in pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
    assert len(expected) == t.num_rows() and INTRUDER not in expected
    assert sorted(t.to_arrow(["uid"]).column("uid").to_pylist()) == expected
    assert sorted(t.to_pandas(["uid"])["uid"]) == expected
    assert sorted(u for (u,) in to_duckdb(t).select("uid").fetchall()) == expected
    df = to_spark(t, spark)
    assert sorted(r.uid for r in df.select("uid").collect()) == expected
    if table == "scored":
        assert dict(df.dtypes)["image_embedding"] == "array<float>"
        first = df.filter("status = 'scored'").first()
        arrow = t.to_arrow(filter=pc.field("uid") == first.uid)
        assert first.image_embedding == pytest.approx(arrow.column("image_embedding")[0].as_py(), rel=1e-3)


def test_to_arrow_filter_and_an_empty_known_table(inspect_lake, tmp_path):  # noqa: F811
    lake = Lake(inspect_lake)
    d = lake.table("dataset")
    sims = d.to_pandas(["similarity"])["similarity"]
    high = d.to_arrow(["uid", "similarity"], filter=pc.field("similarity") >= float(sims.median()))
    assert high.num_rows == int((sims >= sims.median()).sum()) and high.schema.names == ["uid", "similarity"]
    empty = Lake(str(tmp_path / "none")).table("dedup_images")
    assert empty.to_arrow().num_rows == 0 and "duplicate" in empty.to_pandas().columns
    assert to_duckdb(empty).fetchall() == []


def test_readers_on_an_s3_lake_read_only_the_listed_files(inspect_lake, moto_s3, spark):  # noqa: F811
    import s3fs

    url = "s3://l5s-test/inspect-readers"
    s3fs.S3FileSystem(**moto_s3).put(inspect_lake, url.removeprefix("s3://"), recursive=True)
    lake = Lake(url, moto_s3)
    assert not lake.is_local
    _plant_unlisted_file(lake, "dataset")
    t = lake.table("dataset")
    expected = sorted(Lake(inspect_lake).table("dataset").to_arrow(["uid"]).column("uid").to_pylist())
    assert sorted(t.to_arrow(["uid"]).column("uid").to_pylist()) == expected
    assert sorted(u for (u,) in to_duckdb(t).select("uid").fetchall()) == expected
    assert sorted(r.uid for r in to_spark(t, spark).select("uid").collect()) == expected
    assert summary(lake).set_index("table").loc["dataset", "rows"] == len(expected)
    assert show_images(lake, n=3).data.count("<img") == 3  # bytes from the s3 images table


def test_show_images_renders_n_rows_with_captions_and_scores(inspect_lake):  # noqa: F811
    lake = Lake(inspect_lake)
    page = show_images(lake, n=5).data
    assert page.count("<img") == 5 and page.count("<figure") == 5
    shown = lake.table("dataset").dataset().head(5, columns=["text", "similarity"]).to_pylist()
    for row in shown:
        assert html.escape(row["text"]) in page
        assert f"similarity {row['similarity']:.3f}" in page
    assert "data:image/jpeg;base64," in page and "punsafe" not in page  # null scores are left out, not "nan"


@pytest.mark.parametrize("where", ["similarity >= 0.9", pc.field("similarity") >= 0.9])
def test_show_images_where_filters(inspect_lake, where):  # noqa: F811
    lake = Lake(inspect_lake)
    d = lake.table("dataset").to_pandas(["uid", "text", "similarity"])
    keep = d[d.similarity >= 0.9]
    assert 0 < len(keep) < len(d)
    page = show_images(lake, n=100, where=where).data
    assert page.count("<img") == len(keep)
    assert all(f"uid {u}" in page for u in keep.uid) and not any(f"uid {u}\"" in page for u in d[d.similarity < 0.9].uid)


def test_show_images_of_scored_rows_and_of_failed_downloads(inspect_lake):  # noqa: F811
    lake = Lake(inspect_lake)
    rejected = show_images(lake.table("scored"), n=4, where="status == 'scored' and passed == False").data
    assert rejected.count("<img") == 4 and "similarity" in rejected
    scored = lake.table("scored").to_pandas(["uid", "status", "passed"])
    uids = scored[(scored.status == "scored") & ~scored.passed.astype(bool)].uid.head(4)
    texts = lake.table("images").to_pandas(["uid", "text"]).set_index("uid").text
    assert all(html.escape(texts[u]) in rejected and f"uid {u}" in rejected for u in uids)  # text from images
    failed = show_images(lake.table("images"), n=10, where="status == 'failed'").data
    assert failed.count("<img") == 0 and failed.count("<figure") == 6 and "http_404" in failed


def test_show_images_of_search_hits_keeps_their_order(inspect_lake):  # noqa: F811
    import pandas as pd

    lake = Lake(inspect_lake)
    d = lake.table("dataset").to_pandas(["uid", "url", "text", "similarity"]).head(4)
    hits = pd.DataFrame({"rank": [1, 2, 3], "uid": list(d.uid[[2, 0, 3]]), "score": [0.9, 0.8, 0.7],
                         "url": list(d.url[[2, 0, 3]]), "text": list(d.text[[2, 0, 3]]),
                         "similarity": list(d.similarity[[2, 0, 3]])})
    page = show_images(hits, lake=lake, uids=hits["uid"].tolist(), columns=["rank", "score"]).data
    assert page.count("<img") == 3
    at = [page.index(f"uid {u}\"") for u in hits.uid]
    assert at == sorted(at) and "score 0.900" in page and "rank 1" in page
    with pytest.raises(ValueError, match="lake="):
        show_images(hits)


def test_show_images_without_ipython(inspect_lake, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # the import fails as where IPython is absent
    view = show_images(Lake(inspect_lake), n=2)
    assert type(view).__name__ == "HtmlView" and view._repr_html_() == view.data and view.data.count("<img") == 2
