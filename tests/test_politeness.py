"""Per-host caps, pauses, Retry-After, backoff and X-Robots-Tag (no network except one local server)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fault_server import FaultServer

from laion5b_spark.download.politeness import HostGate, backoff_s, retry_after_s, robots_denied
from laion5b_spark.download.safe_fetch import Fetcher, FetchPolicy


def test_host_cap_is_what_the_server_sees():
    with FaultServer() as srv:
        url = srv.route("/slow.jpg", body=b"x" * 100, delay_s=0.15)
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",)), per_host_connections=8)
        gate = HostGate(max_per_host=2)

        def get(_):
            with gate.slot("127.0.0.1"):
                return fetcher.fetch(url).status

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(get, range(12))) == [200] * 12
        assert srv.hits["/slow.jpg"] == 12 and srv.max_in_flight == 2


def test_min_interval_and_pause():
    gate = HostGate(max_per_host=4, min_interval_s=0.1)
    starts = []
    for _ in range(4):
        with gate.slot("h"):
            starts.append(time.monotonic())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.09
    gate.pause("h", 0.3)
    t0 = time.monotonic()
    with gate.slot("h"):
        assert time.monotonic() - t0 >= 0.28
    with gate.slot("other"):  # other hosts are not held up
        pass


def test_other_hosts_proceed_while_one_is_full():
    gate = HostGate(max_per_host=1)
    inside = threading.Event()
    release = threading.Event()

    def hold():
        with gate.slot("busy"):
            inside.set()
            release.wait(2)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(2)
    t0 = time.monotonic()
    with gate.slot("free"):
        assert time.monotonic() - t0 < 0.1
    release.set()
    t.join()


def test_retry_after_and_backoff():
    assert retry_after_s("120") == 120.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert abs(retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) - 10.0) < 1e-6
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert [backoff_s(i) for i in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_robots_tags():
    assert robots_denied(["noai"], "laion5b-spark")
    assert robots_denied(["noindex, nofollow"], "laion5b-spark")  # img2dataset's default set has noindex
    assert robots_denied(["laion5b-spark: noimageai"], "laion5b-spark")
    assert robots_denied(["NoML"], "laion5b-spark")
    assert not robots_denied(["otherbot: noai"], "laion5b-spark")
    assert not robots_denied(["nofollow", "max-image-preview:large"], "laion5b-spark")
    assert not robots_denied([], "laion5b-spark")
