"""The download job on Spark: pairs_unique shards against a local image server, resume, bad settings."""

import io
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fault_server import FaultServer
from PIL import Image

from laion5b_spark import schemas
from laion5b_spark.download.job import DownloadJob
from laion5b_spark.download.webdataset import read_tar_samples
from laion5b_spark.keys import pair_uid
from laion5b_spark.lake import Lake
from laion5b_spark.sample.pairs import generate_rows, write_pairs

pytestmark = pytest.mark.spark


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320 + seed, 240), (seed * 7 % 255, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def served_lake(tmp_path):
    with FaultServer() as srv:
        urls, expected = [], []
        for i in range(20):
            urls.append(srv.route(f"/img/{i}.jpg", body=jpeg(i)))
            expected.append(None)
        for i in range(5):
            urls.append(srv.url(f"/gone/{i}.jpg"))
            expected.append("http_404")
        for i in range(3):
            urls.append(srv.route(f"/noai/{i}.jpg", body=jpeg(i), headers={"X-Robots-Tag": "noai"}))
            expected.append("robots_denied")
        for i in range(2):
            urls.append(srv.route(f"/hop/{i}.jpg", status=302, headers={"Location": f"http://10.0.0.{i + 1}/x.jpg"}))
            expected.append("blocked_private_ip")
        rows = generate_rows(len(urls), 1, source_file="crawl-data/x/f.wat.gz")
        texts = rows.column("text").to_pylist()
        rows = rows.set_column(1, "url", pa.array(urls)).set_column(
            0, "uid", pa.array([pair_uid(u, t) for u, t in zip(urls, texts)], pa.int64()))
        lake = tmp_path / "lake"
        write_pairs(Lake(str(lake)), {"batch": rows}, table="pairs_unique")
        yield srv, lake, dict(zip(urls, expected))


def download(lake, port, *extra) -> int:
    return DownloadJob().main(["--lake", str(lake), "--set", f'download.allow=["127.0.0.1:{port}"]',
                               "--set", "download.shard_rows=8", "--set", "download.threads=4",
                               "--set", "download.backoff_base_s=0.05", "--set", "run.commit_interval_s=0.5", *extra])


def test_download_job_accounts_for_every_row_and_resumes(spark, served_lake):
    srv, lake, expected = served_lake
    assert download(lake, srv.port, "--set", "download.webdataset=true") == 0
    t = Lake(str(lake)).table("images")
    out = t.read_arrow()
    schemas.check("images", out)
    assert out.num_rows == len(expected) and len(t.entries()) == 4  # 30 rows in shards of 8
    # a webdataset tar beside each shard, holding its successes under the same keys
    samples = [s for tar in t.extra_files("tar") for s in read_tar_samples(tar)]
    ok_rows = out.filter(pc.equal(out.column("status"), "success"))
    assert len(t.extra_files("tar")) == 4 and [s["key"] for s in samples] == ok_rows.column("key").to_pylist()
    assert [s["image"] for s in samples] == ok_rows.column("jpg").to_pylist()
    assert dict(zip(out.column("url").to_pylist(), out.column("reason").to_pylist())) == expected
    ok = out.filter(pc.equal(out.column("status"), "success"))
    assert ok.num_rows == 20 and set(ok.column("width").to_pylist()) == {256}
    assert set(ok.column("original_height").to_pylist()) == {240}
    rec = Lake(str(lake)).runs("download")[-1]
    c = rec["counts"]["images"]
    assert c["rows_in"] == 30 and c["rows_out"] == 20
    assert c["dropped"] == {"robots_denied": 3} and c["failed"] == {"http_404": 5, "blocked_private_ip": 2}
    hits = sum(srv.hits.values())
    assert download(lake, srv.port) == 0  # every shard committed: nothing runs, nothing is fetched again
    assert sum(srv.hits.values()) == hits and Lake(str(lake)).table("images").num_rows() == 30


def test_retry_failed_fetches_only_the_retryable_failures_again(spark, tmp_path):
    with FaultServer() as srv:
        flaky = [srv.route(f"/flaky/{i}.jpg", body=jpeg(i), fail_first=1, fail_status=500) for i in range(4)]
        fine = [srv.route(f"/fine/{i}.jpg", body=jpeg(i)) for i in range(3)]
        gone = [srv.url("/gone.jpg")]
        urls = flaky + fine + gone
        rows = generate_rows(len(urls), 3, source_file="crawl-data/x/r.wat.gz").set_column(1, "url", pa.array(urls))
        lake = tmp_path / "lake"
        write_pairs(Lake(str(lake)), {"r": rows}, table="pairs_unique")
        assert download(lake, srv.port, "--set", "download.retries=0") == 0
        t = Lake(str(lake)).table("images")
        before = t.read_arrow()
        entries = t.entries()
        assert before.column("reason").to_pylist().count("http_error") == 4
        hint = Lake(str(lake)).runs("download")[-1]["info"]["retryable"]
        assert hint == 4

        assert download(lake, srv.port, "--set", "download.retries=0", "--set", "download.webdataset=true",
                        "--retry-failed") == 0
        after = t.read_arrow()
        assert after.num_rows == len(urls) and after.column("key") == before.column("key")
        assert after.column("url").to_pylist() == urls
        assert after.column("reason").to_pylist() == [None] * 7 + ["http_404"]
        assert all(srv.hits[f"/flaky/{i}.jpg"] == 2 for i in range(4))
        assert all(srv.hits[f"/fine/{i}.jpg"] == 1 for i in range(3)) and srv.hits["/gone.jpg"] == 1
        # the same shards (unit ids), new files; the replaced files are gone
        now = t.entries()
        assert [e.unit for e in now] == [e.unit for e in entries]
        assert {e.path for e in now}.isdisjoint(e.path for e in entries)
        assert not any(os.path.exists(t.path(e.path)) for e in entries)
        assert sum(len(read_tar_samples(p)) for p in t.extra_files("tar")) == 7  # the rewritten shards have tars
        c = sum(e.counts["images"]["rows_out"] for e in now)
        assert c == 7 and Lake(str(lake)).runs("download")[-1]["info"]["recovered"] == 4
        # nothing retryable is left: another --retry-failed run fetches nothing
        hits = sum(srv.hits.values())
        assert download(lake, srv.port, "--retry-failed") == 0 and sum(srv.hits.values()) == hits


def test_bad_download_settings_stop_before_any_work(spark, served_lake, capsys):
    srv, lake, _ = served_lake
    assert DownloadJob().main(["--lake", str(lake), "--set", 'download.allow=["not-a-network"]']) == 2
    assert "download settings" in capsys.readouterr().err
    assert DownloadJob().main(["--lake", str(lake), "--set", "download.resize_mode=stretch"]) == 2
    assert sum(srv.hits.values()) == 0


def test_download_to_an_s3_lake(spark, moto_s3, tmp_path):
    with FaultServer() as srv:
        urls = [srv.route(f"/s3/{i}.jpg", body=jpeg(i)) for i in range(6)] + [srv.url("/s3/missing.jpg")]
        rows = generate_rows(len(urls), 2, source_file="crawl-data/x/s3.wat.gz")
        rows = rows.set_column(1, "url", pa.array(urls))
        url = "s3://l5s-test/download-lake"
        write_pairs(Lake(url, moto_s3), {"s3": rows}, table="pairs_unique")
        opts = ",".join(f'{k} = "{v}"' for k, v in moto_s3.items())
        assert download(url, srv.port, "--set", f"lake.storage_options={{{opts}}}") == 0
        out = Lake(url, moto_s3).table("images").read_arrow(columns=["status", "reason"])
        assert out.num_rows == 7 and out.column("status").to_pylist().count("success") == 6


@pytest.mark.slow
def test_driver_killed_mid_run_then_rerun_gives_every_shard_once(tmp_path):
    """kill -9 of the driver after the first shard commits; the rerun fetches only the rest."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from conftest import wait_for_first_commit

    root = Path(__file__).resolve().parent.parent
    with FaultServer() as srv:
        urls = [srv.route(f"/k/{i}.jpg", body=jpeg(i % 50), delay_s=0.05) for i in range(160)]
        rows = generate_rows(len(urls), 3, source_file="crawl-data/x/k.wat.gz").set_column(1, "url", pa.array(urls))
        lake = tmp_path / "lake"
        write_pairs(Lake(str(lake)), {"k": rows}, table="pairs_unique")
        cmd = [sys.executable, str(root / "jobs" / "download.py"), "--lake", str(lake), "--set",
               f'download.allow=["127.0.0.1:{srv.port}"]', "--set", "download.shard_rows=10", "--set",
               "download.threads=2", "--set", "run.commit_interval_s=0.3"]
        env = dict(os.environ, L5S_SPARK_LOG_LEVEL="ERROR")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        committed = wait_for_first_commit(lake, proc, table="images")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 1 <= committed < 16, committed
        done = [e["key"].rsplit(":", 1)[1].split("-") for e in Lake(str(lake)).table("images").manifest()["files"]]
        done_urls = [urls[i] for a, b in done for i in range(int(a), int(b))]
        assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
        t = Lake(str(lake)).table("images")
        out = t.read_arrow(columns=["url", "status"])
        assert sorted(out.column("url").to_pylist()) == sorted(urls)  # every row once
        assert set(out.column("status").to_pylist()) == {"success"}
        assert len({e["unit"] for e in t.manifest()["files"]}) == 16
        assert done_urls and all(srv.hits[u.split(str(srv.port), 1)[1]] == 1 for u in done_urls)  # not again
