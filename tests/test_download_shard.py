"""One shard against a real HTTP server with every fault the issue names (no Spark)."""

import hashlib
import io

import pyarrow as pa
import pytest
from fault_server import FaultServer
from PIL import Image

from laion5b_spark import schemas
from laion5b_spark.accounting import ErrorSamples
from laion5b_spark.dedup.lists import DenyList
from laion5b_spark.download.image import ImageProcessor, ImageSettings
from laion5b_spark.download.robots import RobotsCache
from laion5b_spark.download.safe_fetch import Fetcher, FetchPolicy
from laion5b_spark.download.shard import Downloader, ShardSettings
from laion5b_spark.keys import pair_uid


def jpeg(w, h, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def shard():
    with FaultServer() as srv, FaultServer() as other:
        ok, listed = jpeg(640, 480), jpeg(300, 300, (0, 0, 255))
        bomb = io.BytesIO()
        Image.new("1", (12_000, 12_000)).save(bomb, "PNG")
        cases = {  # path -> (route kwargs, expected reason or None)
            "/ok.jpg": (dict(body=ok, headers={"Content-Type": "image/jpeg"}), None),
            "/ok.png": (dict(body=_png(), headers={"Content-Type": "image/png"}), None),
            "/missing.jpg": (None, "http_404"),
            "/flaky.jpg": (dict(body=ok, fail_first=1, fail_status=500), None),
            "/busy.jpg": (dict(body=ok, fail_first=1, fail_status=429, fail_headers={"Retry-After": "1"}), None),
            "/gone-for-an-hour.jpg": (dict(body=ok, fail_first=9, fail_status=429,
                                           fail_headers={"Retry-After": "3600"}), "rate_limited"),
            "/forbidden.jpg": (dict(status=403, body=b"no"), "http_error"),
            "/moved.jpg": (dict(status=301, headers={"Location": "/ok.jpg"}), None),
            "/to-internal.jpg": (dict(status=302, headers={"Location": other.url("/secret.jpg")}),
                                 "blocked_private_ip"),
            "/to-metadata.jpg": (dict(status=302, headers={"Location": "http://169.254.169.254/x"}),
                                 "blocked_private_ip"),
            "/drip.jpg": (dict(body=ok[:200], drip_s=0.05), "timeout"),
            "/huge.jpg": (dict(body=b"\xff\xd8\xff" + b"x" * 300_000), "too_large"),
            "/cut.jpg": (dict(body=ok, send_bytes=500), "truncated_body"),
            "/corrupt.jpg": (dict(body=b"\xff\xd8\xff\xe0" + b"\x13garbage" * 400), "decode_error"),
            "/bomb.png": (dict(body=bomb.getvalue(), headers={"Content-Type": "image/png"}), "decompression_bomb"),
            "/page.jpg": (dict(body=b"<html>" + b"x" * 6000, headers={"Content-Type": "image/jpeg"}),
                          "not_an_image"),
            "/noai.jpg": (dict(body=ok, headers={"X-Robots-Tag": "noai"}), "robots_denied"),
            "/otherbot.jpg": (dict(body=ok, headers={"X-Robots-Tag": "otherbot: noai"}), None),
            "/listed.jpg": (dict(body=listed), "denylisted"),
            "/tiny.jpg": (dict(body=jpeg(8, 8)), "image_too_small"),
        }
        for path, (kw, _) in cases.items():
            if kw is not None:
                srv.route(path, **kw)
        other.route("/secret.jpg", body=ok)
        urls = [srv.url(p) for p in cases] + ["ftp://files.example/a.jpg"]
        expected = [r for _, r in cases.values()] + ["bad_scheme"]
        rows = pa.table({"uid": [pair_uid(u, "t") for u in urls], "url": urls, "text": ["t"] * len(urls),
                         "language": ["en"] * len(urls)})
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",), max_bytes=200_000, deadline_s=1.5,
                                      read_timeout_s=1.0))
        proc = ImageProcessor(ImageSettings(image_size=64, min_bytes=1000))
        deny = DenyList(image_sha256={hashlib.sha256(listed).hexdigest()})
        settings = ShardSettings(threads=8, max_per_host=3, retries=2, backoff_base_s=0.1)
        yield srv, other, rows, expected, fetcher, proc, deny, settings


def _png() -> bytes:
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 255, (80, 120, 4), dtype=np.uint8)  # incompressible: > 1000 B
    buf = io.BytesIO()
    Image.fromarray(noise, "RGBA").save(buf, "PNG")
    return buf.getvalue()


def test_every_row_gets_its_outcome(shard):
    srv, other, rows, expected, fetcher, proc, deny, settings = shard
    errors = ErrorSamples()
    out, ledger = Downloader(fetcher, proc, settings, deny).shard(rows, errors, "000007")
    schemas.check("images", out)
    assert out.num_rows == rows.num_rows and out.column("url").to_pylist() == rows.column("url").to_pylist()
    got = dict(zip(out.column("url").to_pylist(), out.column("reason").to_pylist()))
    assert got == dict(zip(rows.column("url").to_pylist(), expected))
    assert ledger.balanced() and ledger.rows_out == expected.count(None)
    assert ledger.dropped == {"robots_denied": 1, "denylisted": 1}
    ok = out.filter(pa.compute.equal(out.column("status"), "success"))
    assert all(b is not None for b in ok.column("jpg").to_pylist())
    assert set(ok.column("width").to_pylist()) == {64} and set(ok.column("height").to_pylist()) == {64}
    assert out.column("key").to_pylist()[:2] == ["000007000000", "000007000001"]
    failed = out.filter(pa.compute.equal(out.column("status"), "failed"))
    assert failed.column("jpg").null_count == failed.num_rows
    assert other.connections == 0  # the internal server was never reached
    assert srv.hits["/flaky.jpg"] == 2 and srv.hits["/busy.jpg"] == 2 and srv.hits["/missing.jpg"] == 1
    assert srv.hits["/gone-for-an-hour.jpg"] == 1  # not retried: the host asked for an hour
    assert srv.max_in_flight <= 3  # the per-host cap, as the server saw it
    assert {s["reason"] for s in errors.samples} == {r for r in expected if r}


def test_robots_txt_when_asked_keeps_disallowed_images_unfetched():
    with FaultServer() as srv:
        srv.route("/robots.txt", body=b"User-agent: laion5b-spark\nDisallow: /private/\n")
        urls = [srv.route("/private/a.jpg", body=jpeg(100, 100)), srv.route("/public/b.jpg", body=jpeg(100, 100))]
        rows = pa.table({"uid": [1, 2], "url": urls, "text": ["t", "t"], "language": ["en", "en"]})
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",)))
        proc = ImageProcessor(ImageSettings(image_size=64))
        robots = RobotsCache(fetcher.fetch, "laion5b-spark")
        out, ledger = Downloader(fetcher, proc, robots=robots).shard(rows, ErrorSamples(), "k")
        assert out.column("reason").to_pylist() == ["robots_denied", None]
        assert "robots.txt disallows" in out.column("error_message")[0].as_py()
        assert srv.hits["/private/a.jpg"] == 0 and srv.hits["/robots.txt"] == 1
        out, _ = Downloader(fetcher, proc).shard(rows, ErrorSamples(), "k")  # robots_txt off: fetched
        assert out.column("reason").to_pylist() == [None, None]
