"""One URL never costs its shard (issue 15, class 1): whatever the URL strings and the Location values a server
sends, a shard gives one output row per input row, each success or failed with a reason of the vocabulary."""

import io

import pyarrow as pa
from fault_server import FaultServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from laion5b_spark.accounting import REASONS, ErrorSamples
from laion5b_spark.download.image import ImageProcessor, ImageSettings
from laion5b_spark.download.safe_fetch import Fetcher, FetchPolicy
from laion5b_spark.download.shard import Downloader, ShardSettings


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


_SERVER = FaultServer().__enter__()  # one server for every example; closed with the process
_LOCATIONS: list[str] = []
_SERVER.route("/ok.jpg", body=_jpeg())
_SERVER.route("/r", script=lambda q: [b"HTTP/1.1 302 Found\r\nLocation: " +
                                      _LOCATIONS[int(q.partition("=")[2] or 0) % max(1, len(_LOCATIONS))]
                                      .encode("utf-8", "surrogateescape") + b"\r\nContent-Length: 0\r\n\r\n"])
_HOSTS = st.sampled_from(["img.test", "пример.test", "ⓛocalhost", "[::1]", "[64:ff9b::a9fe:a9fe]", "a..b", "",
                          "xn--zz", "bücher.test:8080", "h.test:99999", "user@h.test", "%00", "[oops"])
_URLS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}",
              st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", ""]), _HOSTS | st.text(max_size=15),
              st.text(max_size=20)),
    st.builds(lambda i: f"http://img.test/r?i={i}", st.integers(0, 7)),
    st.just("http://img.test/ok.jpg"),
    st.none(),
)
_LOCATION = st.one_of(st.text(max_size=40), st.builds(lambda h: f"http://{h}/ok.jpg", _HOSTS),
                      st.sampled_from(["/ok.jpg", "http://[oops/x.jpg", "//img.test/ok.jpg", "\x00", "http://",
                                       "https://169.254.169.254/", "/r?i=0"]))


def _downloader() -> Downloader:
    fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{_SERVER.port}",),
                                  connect_to=(f"*=127.0.0.1:{_SERVER.port}",),
                                  deadline_s=2.0, read_timeout_s=1.0, connect_timeout_s=1.0, max_redirects=3))
    return Downloader(fetcher, ImageProcessor(ImageSettings(image_size=16)),
                      ShardSettings(threads=4, retries=0, backoff_base_s=0.0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(urls=st.lists(_URLS, min_size=1, max_size=8), locations=st.lists(_LOCATION, min_size=1, max_size=8))
def test_one_row_out_per_row_in_whatever_the_urls_and_redirects(urls, locations):
    _LOCATIONS[:] = locations
    rows = pa.table({"uid": pa.array(range(len(urls)), pa.int64()), "url": pa.array(urls, pa.string()),
                     "text": ["t"] * len(urls), "language": ["en"] * len(urls)})
    out, ledger = _downloader().shard(rows, ErrorSamples(), "00000")
    assert out.num_rows == len(urls) and out.column("uid").to_pylist() == list(range(len(urls)))
    assert ledger.balanced() and ledger.rows_in == len(urls)
    for r in out.select(["url", "status", "reason"]).to_pylist():
        assert (r["status"] == "success") == (r["reason"] is None), r
        assert r["reason"] is None or r["reason"] in REASONS, r
        if r["url"] == "http://img.test/ok.jpg":
            assert r["status"] == "success", r


def test_an_unexpected_exception_fails_its_row_only():
    class Exploding(ImageProcessor):
        def __call__(self, data):
            raise RuntimeError("a bug in the decoder")

    d = _downloader()
    d.processor = Exploding(ImageSettings(image_size=16))
    urls = ["http://img.test/ok.jpg", "http://img.test/missing.jpg"]
    rows = pa.table({"uid": [1, 2], "url": urls, "text": ["t", "t"], "language": ["en", "en"]})
    out, ledger = d.shard(rows, ErrorSamples(), "00000")
    assert out.column("reason").to_pylist() == ["row_error", "http_404"]
    assert out.column("error_message")[0].as_py() == "RuntimeError: a bug in the decoder"
    assert ledger.failed == {"row_error": 1, "http_404": 1}
