"""The dedup job on Spark: against an independent pandas reference, across partitionings, incremental runs,
removal lists, bad rows, an s3:// lake, and a driver killed mid-write."""

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion5b_spark import schemas
from laion5b_spark.dedup.job import DedupJob
from laion5b_spark.keys import url_key
from laion5b_spark.lake import Lake
from laion5b_spark.sample.pairs import generate_rows, make_pairs_lake, write_pairs

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parent.parent
CRAWLS = ("CC-MAIN-2024-18", "CC-MAIN-2024-10")  # the later crawl is written first: order must come from names


@pytest.fixture(scope="module")
def pairs_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs-lake") / "lake"
    written = make_pairs_lake(str(root), files=3, rows_per_file=4000, crawls=CRAWLS, seed=3)
    return root, written


def _copy(src: Path, tmp_path: Path, name="lake") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def dedup(lake, *args) -> int:
    return DedupJob().main(["--lake", str(lake), "--set", "run.progress_interval_s=60", *args])


def reference(tables, existing_keys=frozenset(), mode="url_text") -> pd.DataFrame:
    """Survivors by the documented rule, computed independently with pandas."""
    df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    df["_nocrawl"] = df["crawl"].isna()
    df = df.sort_values(["_nocrawl", "crawl", "source_file", "source_offset"], kind="stable")
    df["_key"] = df["uid"] if mode == "url_text" else df["url"].map(url_key)
    df = df[~df["_key"].isin(existing_keys)]
    return df.drop_duplicates("_key", keep="first")


def survivors(df) -> set:
    return set(zip(df["uid"], df["source_file"], df["source_offset"]))


def table_files(lake) -> list[pa.Table]:
    t = Lake(str(lake)).table("pairs_unique")
    return [pq.read_table(t.path(e.path)) for e in t.entries()]  # commit order


def last_run(lake) -> dict:
    return Lake(str(lake)).runs("dedup")[-1]


def test_dedup_matches_reference_and_accounts_for_every_row(spark, pairs_lake, tmp_path):
    src, written = pairs_lake
    lake = _copy(src, tmp_path)
    assert dedup(lake, "--set", "dedup.file_mb=0.3") == 0
    out = Lake(str(lake)).table("pairs_unique").read_arrow()
    schemas.check("pairs_unique", out)
    ref = reference(written.values())
    assert survivors(out.to_pandas()) == survivors(ref)
    assert out.num_rows == len(ref) and len(set(out.column("uid").to_pylist())) == out.num_rows
    rec = last_run(lake)
    c = rec["counts"]["pairs"]
    total_in = sum(t.num_rows for t in written.values())
    assert c["rows_in"] == total_in and c["rows_out"] == len(ref)
    assert c["dropped"] == {"duplicate": total_in - len(ref)} and c["failed"] == {}
    assert 0.15 < c["dropped"]["duplicate"] / total_in < 0.6  # the generator's realistic duplicate share
    assert len(rec["per_input_file"]) == len(written)
    assert rec["output"]["files"] > 1 and len(table_files(lake)) == rec["output"]["files"]
    assert sum(rec["info"]["languages"].values()) == len(ref)
    assert sum(rec["info"]["dup_domains"].values()) <= c["dropped"]["duplicate"]
    import io

    from laion5b_spark.describe import describe
    shown = io.StringIO()
    describe(str(lake), sample_rows=2, out=shown)
    assert f"pairs_unique: {len(ref):,} rows" in shown.getvalue()
    assert f"last dedup run {rec['run_id']}: succeeded; pairs {total_in:,} in -> {len(ref):,} out" in shown.getvalue()


@pytest.mark.parametrize("shuffle", [True, False])
def test_partitioning_does_not_change_the_table(spark, pairs_lake, tmp_path, shuffle):
    """The shared session (local[2], 8 default partitions: a task per file, one key bucket) vs another process
    on local[1] with 1 default partition (files grouped into two tasks) and 19 key buckets."""
    src, written = pairs_lake
    opts = ["--set", f"dedup.shuffle={str(shuffle).lower()}", "--set", "dedup.file_mb=0.3"]
    one, other = _copy(src, tmp_path, "one"), _copy(src, tmp_path, "other")
    assert dedup(one, *opts) == 0
    conf = tmp_path / "one-core.conf"
    conf.write_text((ROOT / "conf/spark/local.conf").read_text().replace("local[*]", "local[1]")
                    .replace("spark.default.parallelism             8", "spark.default.parallelism 1"))
    p = subprocess.run([sys.executable, str(ROOT / "jobs" / "dedup.py"), "--lake", str(other), "--spark-profile",
                        str(conf), "--set", "dedup.bucket_mb=0.02", *opts], capture_output=True, text=True,
                       env=dict(os.environ, L5S_SPARK_LOG_LEVEL="ERROR"))
    assert p.returncode == 0, p.stderr[-2000:]
    (a, b), (ra, rb) = (table_files(one), table_files(other)), (last_run(one), last_run(other))
    assert (ra["inputs"]["tasks"], ra["inputs"]["buckets"]) == (len(written), 1)
    assert (rb["inputs"]["tasks"], rb["inputs"]["buckets"]) == (2, math.ceil(24_000 * 16 / (0.02 * 2**20)))
    assert len(a) == len(b) > 1 and all(x.equals(y) for x, y in zip(a, b))
    rows = pa.concat_tables(a).to_pandas()
    rank = list(zip(rows["crawl"], rows["source_file"], rows["source_offset"]))
    assert (rank == sorted(rank)) != shuffle, "without shuffle rows keep input order; with it they are mixed"


def test_incremental_batches_keep_old_rows_and_are_idempotent(spark, tmp_path):
    lake = tmp_path / "lake"
    first = make_pairs_lake(str(lake), files=2, rows_per_file=3000, crawls=("CC-MAIN-2024-10",), seed=5)
    assert dedup(lake) == 0
    before = Lake(str(lake)).table("pairs_unique").manifest()
    old_files = table_files(lake)
    assert survivors(pa.concat_tables(old_files).to_pandas()) == survivors(reference(first.values()))
    # the next crawl: new items and recurrences of the first crawl's items (same item ids -> same url+text)
    key = "crawl-data/CC-MAIN-2024-18/segments/0/wat/CC-MAIN-2024-18-00000.warc.wat.gz"
    second = {key: generate_rows(3000, 77, first_item=10_000, item_space=13_000, source_file=key,
                                 crawl="CC-MAIN-2024-18")}
    write_pairs(Lake(str(lake)), second, run_id="second")
    assert dedup(lake) == 0
    after = Lake(str(lake)).table("pairs_unique").manifest()
    assert after["files"][:len(before["files"])] == before["files"]  # committed rows never change
    assert table_files(lake)[:len(old_files)] == old_files
    old_uids = set(pa.concat_tables(old_files).column("uid").to_pylist())
    new = pa.concat_tables(table_files(lake)[len(old_files):])
    ref = reference(second.values(), existing_keys=old_uids)
    assert survivors(new.to_pandas()) == survivors(ref)
    assert 0 < len(ref) < 3000 and last_run(lake)["counts"]["pairs"]["dropped"]["duplicate"] == 3000 - len(ref)
    # nothing new: nothing runs, nothing changes
    assert dedup(lake) == 0
    assert Lake(str(lake)).table("pairs_unique").manifest() == after
    # the same crawl extracted again under other unit keys: consumed, adds no row
    again = {k.replace("segments/0", "segments/copy"): t for k, t in second.items()}
    write_pairs(Lake(str(lake)), again, run_id="again")
    assert dedup(lake) == 0
    assert Lake(str(lake)).table("pairs_unique").num_rows() == len(old_uids) + new.num_rows
    assert last_run(lake)["counts"]["pairs"]["dropped"] == {"duplicate": 3000}


def test_url_mode_keeps_one_row_per_normalized_url(spark, pairs_lake, tmp_path):
    src, written = pairs_lake
    lake = _copy(src, tmp_path)
    spelled = {"crawl-data/extra/respelled.wat.gz": generate_rows(50, 9, first_item=0, item_space=50,
                                                                   source_file="crawl-data/extra/respelled.wat.gz")}
    t = spelled["crawl-data/extra/respelled.wat.gz"]
    respelled = pa.array([u.replace("https://", "HTTPS://").replace(".com/", ".COM:443/") + "#x"
                          for u in t.column("url").to_pylist()])
    spelled["crawl-data/extra/respelled.wat.gz"] = t.set_column(1, "url", respelled)
    write_pairs(Lake(str(lake)), spelled, run_id="respelled")
    assert dedup(lake, "--key", "url") == 0
    out = Lake(str(lake)).table("pairs_unique").read_arrow().to_pandas()
    ref = reference(list(written.values()) + list(spelled.values()), mode="url")
    assert survivors(out) == survivors(ref)
    assert not out["url"].str.startswith("HTTPS").any()  # every respelled row duplicates an earlier crawl's
    assert len(ref) < len(reference(written.values()))  # url mode removes re-captioned repeats too
    assert dedup(lake, "--key", "url_text") == 2  # the table's key is fixed at its first commit


def test_denylist_and_opt_out_are_counted(spark, pairs_lake, tmp_path):
    src, written = pairs_lake
    lake = _copy(src, tmp_path)
    rows = pd.concat([t.to_pandas() for t in written.values()])
    listed = sorted(set(rows["url"]))[:40]
    import hashlib
    (tmp_path / "deny.txt").write_text("\n".join(listed[:20]) + "\n#kind=url_sha256\n"
                                       + "\n".join(hashlib.sha256(u.encode()).hexdigest() for u in listed[20:]) + "\n")
    (tmp_path / "hosts.txt").write_text("img7.example-cdn.com\n.img8.example-cdn.com\n")
    assert dedup(lake, "--denylist", str(tmp_path / "deny.txt"), "--opt-out-domains", str(tmp_path / "hosts.txt")) == 0
    out = Lake(str(lake)).table("pairs_unique").read_arrow().to_pandas()
    assert not out["url"].isin(listed).any()
    assert not out["url"].str.contains("//img[78].example-cdn.com/").any()
    kept = rows[~rows["url"].isin(listed) & ~rows["url"].str.contains("//img[78].example-cdn.com/")]
    assert survivors(out) == survivors(reference([pa.Table.from_pandas(kept, preserve_index=False)]))
    c = last_run(lake)["counts"]["pairs"]
    assert c["dropped"]["denylisted"] == int(rows["url"].isin(listed).sum())
    assert c["dropped"]["domain_opt_out"] == int(rows["url"].str.contains("//img[78].example-cdn.com/").sum())
    assert c["rows_in"] == c["rows_out"] + sum(c["dropped"].values())


def test_malformed_list_stops_before_any_work(spark, pairs_lake, tmp_path, capsys):
    src, _ = pairs_lake
    lake = _copy(src, tmp_path)
    (tmp_path / "deny.csv").write_text("url\nhttp://ok.example/a.jpg\nnot a url\n")
    assert dedup(lake, "--denylist", str(tmp_path / "deny.csv")) == 2
    assert f"{tmp_path / 'deny.csv'}:3" in capsys.readouterr().err
    assert not (lake / "pairs_unique").exists() and not (lake / "_runs" / "dedup").exists()


def test_bad_rows_are_counted_and_the_rest_kept(spark, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    good = generate_rows(200, 1, source_file="crawl-data/x/good.wat.gz")
    loose = pa.schema([f.with_nullable(True) for f in schemas.PAIRS])
    bad = pa.Table.from_pylist([
        dict(good.slice(0, 1).to_pylist()[0], url=None, source_offset=1),
        dict(good.slice(0, 1).to_pylist()[0], url="", source_offset=2),
        dict(good.slice(0, 1).to_pylist()[0], text=None, source_offset=3),
        dict(good.slice(0, 1).to_pylist()[0], url="not a url at all", source_offset=4),
        dict(good.slice(0, 1).to_pylist()[0], uid=None, url="https://fresh.example/x.jpg", source_offset=5),
        dict(good.slice(0, 1).to_pylist()[0], text="long " * 2000, source_offset=6),
    ], schema=loose)
    write_pairs(lake, {"crawl-data/x/good.wat.gz": good, "crawl-data/x/bad.wat.gz": bad.cast(loose)})
    assert dedup(tmp_path / "lake") == 0
    c = last_run(tmp_path / "lake")["counts"]["pairs"]
    assert c["failed"] == {"missing_url": 2, "missing_text": 1, "invalid_url": 1, "missing_uid": 1}
    assert c["dropped"]["text_too_long"] == 1
    assert c["rows_out"] == len(reference([good]))
    assert c["rows_in"] == c["rows_out"] + sum(c["dropped"].values()) + sum(c["failed"].values())


def test_dedup_on_an_s3_lake(spark, moto_s3, tmp_path):
    url = "s3://l5s-test/dedup-lake"
    lake = Lake(url, moto_s3)
    tables = {f"crawl-data/CC-MAIN-2024-10/f{i}.wat.gz": generate_rows(500, i, first_item=i * 500, item_space=900,
                                                                      source_file=f"crawl-data/CC-MAIN-2024-10/f{i}.wat.gz",
                                                                      crawl="CC-MAIN-2024-10") for i in range(2)}
    write_pairs(lake, tables)
    opts = ",".join(f'{k} = "{v}"' for k, v in moto_s3.items())
    assert dedup(url, "--set", f"lake.storage_options={{{opts}}}") == 0
    out = lake.table("pairs_unique").read_arrow().to_pandas()
    assert survivors(out) == survivors(reference(tables.values()))


def test_rerun_after_driver_killed_mid_write_gives_the_same_table(pairs_lake, tmp_path):
    """kill -9 of the driver once output files are being written; the rerun equals an uninterrupted run."""
    src, _ = pairs_lake
    lake, clean = _copy(src, tmp_path, "crash"), _copy(src, tmp_path, "clean")
    args = ["--set", "dedup.file_mb=0.02", "--set", "run.progress_interval_s=60"]  # many small output files
    env = dict(os.environ, L5S_SPARK_LOG_LEVEL="ERROR")
    cmd = [sys.executable, str(ROOT / "jobs" / "dedup.py"), "--lake"]
    proc = subprocess.Popen(cmd + [str(lake)] + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    data = lake / "pairs_unique" / "data"
    staged = lake / "pairs_unique" / "_staging"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(staged.glob("*/data/*.parquet")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = lake / "pairs_unique" / "_manifest.json"
    assert list(staged.glob("*/data/*.parquet")), "the driver was killed before writing any output"
    assert not manifest.exists() or not orjson.loads(manifest.read_bytes())["files"], "killed after the commit"
    assert not data.exists() or not list(data.iterdir())  # the killed run's files are staged: no reader sees them
    assert subprocess.run(cmd + [str(lake)] + args, env=env, capture_output=True).returncode == 0
    assert subprocess.run(cmd + [str(clean)] + args, env=env, capture_output=True).returncode == 0
    a, b = table_files(lake), table_files(clean)
    assert len(a) == len(b) > 5 and all(x.equals(y) for x, y in zip(a, b))
    listed = {Path(p).name for p in Lake(str(lake)).table("pairs_unique").files()}
    assert {p.name for p in data.iterdir()} == listed  # plain readers of data/ see exactly the table
