"""robots.txt rules (RFC 9309) through the real safe fetcher against a scripted server (no Spark)."""

import socket
import threading
import time

import pytest
from fault_server import FaultServer

from laion5b_spark.download import robots
from laion5b_spark.download.robots import RobotsCache
from laion5b_spark.download.safe_fetch import Fetched, Fetcher, FetchPolicy

TOKEN = "laion5b-spark"


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


def cache(token=TOKEN, **kw) -> RobotsCache:
    return RobotsCache(Fetcher(FetchPolicy(allow=("127.0.0.1/32",))).fetch, token, **kw)


def test_disallowed_and_allowed_paths_with_one_fetch(srv):
    srv.route("/robots.txt", body=b"User-agent: *\nDisallow: /private\nDisallow: /img?size=big\n")
    rc = cache()
    assert rc.check(srv.url("/private/a.jpg")) == f"robots.txt disallows /private/a.jpg for {TOKEN}"
    assert rc.check(srv.url("/img?size=big")) is not None  # the query counts
    assert rc.check(srv.url("/img?size=small")) is None
    assert rc.check(srv.url("/public/a.jpg#frag")) is None
    assert srv.hits["/robots.txt"] == 1
    assert rc.stats == {"fetched": 1, "cache_hits": 3, "denied": 2}


def test_agent_specific_group_beats_the_star_group(srv):
    srv.route("/robots.txt", body=b"User-agent: *\nDisallow: /\n\nUser-agent: LAION5B-Spark\nDisallow: /private\n")
    ours, other = cache(), cache("otherbot")
    assert ours.check(srv.url("/public.jpg")) is None
    assert ours.check(srv.url("/private/x.jpg")) is not None
    assert other.check(srv.url("/public.jpg")) is not None


@pytest.mark.parametrize("status", [404, 401, 403, 410])
def test_4xx_allows_everything(srv, status):
    if status != 404:  # an unrouted path is the server's 404
        srv.route("/robots.txt", status=status, body=b"User-agent: *\nDisallow: /\n")
    assert cache().check(srv.url("/anything.jpg")) is None
    assert srv.hits["/robots.txt"] == 1


@pytest.mark.parametrize("status", [503, 500, 429])
def test_5xx_and_429_deny_everything(srv, status):
    srv.route("/robots.txt", status=status, body=b"")
    rc = cache()
    assert rc.check(srv.url("/a.jpg")) == f"robots.txt unreachable (HTTP {status})"
    assert rc.check(srv.url("/b.jpg")) is not None and srv.hits["/robots.txt"] == 1  # cached too
    assert rc.stats["denied"] == 2


def test_connection_refused_denies_everything():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed on leaving: nothing listens there
    t0 = time.monotonic()
    assert cache().check(f"http://127.0.0.1:{port}/a.jpg") == "robots.txt unreachable (connect_error)"
    assert time.monotonic() - t0 < 1.0  # refused, not waited out


def test_redirects_are_followed_and_a_redirect_loop_allows(srv):
    srv.route("/robots.txt", status=301, headers={"Location": "/real-robots.txt"})
    srv.route("/real-robots.txt", body=b"User-agent: *\nDisallow: /x\n")
    assert cache().check(srv.url("/x/1.jpg")) is not None
    with FaultServer() as loop:
        loop.route("/robots.txt", status=302, headers={"Location": "/robots.txt"})
        assert cache().check(loop.url("/x/1.jpg")) is None  # more than 5 redirects: unavailable (2.3.1.2)


def test_only_the_first_500_kib_are_read(srv):
    filler = b"# " + b"x" * 1000 + b"\n"
    body = b"User-agent: *\nDisallow: /early\n" + filler * 600 + b"Disallow: /late\n"
    srv.route("/robots.txt", body=body)
    rc = cache()
    assert rc.check(srv.url("/early.jpg")) is not None
    assert rc.check(srv.url("/late.jpg")) is None


def test_one_fetch_per_origin_under_30_threads(srv):
    srv.route("/robots.txt", body=b"User-agent: *\nDisallow: /no\n", delay_s=0.3)
    rc, start, results = cache(), threading.Barrier(30), [None] * 30

    def ask(i):
        start.wait()
        results[i] = rc.check(srv.url(f"/{'no' if i % 2 else 'yes'}/{i}.jpg"))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert srv.hits["/robots.txt"] == 1
    assert [r is None for r in results] == [i % 2 == 0 for i in range(30)]
    assert rc.stats == {"fetched": 1, "cache_hits": 29, "denied": 15}


def test_expiry_refetches_and_unreachable_expires_sooner(srv, monkeypatch):
    srv.route("/robots.txt", body=b"User-agent: *\nDisallow: /no\n")
    rc = cache(ttl_s=0.2)
    rc.check(srv.url("/a.jpg"))
    rc.check(srv.url("/b.jpg"))
    assert srv.hits["/robots.txt"] == 1
    time.sleep(0.3)
    rc.check(srv.url("/c.jpg"))
    assert srv.hits["/robots.txt"] == 2

    monkeypatch.setattr(robots, "UNREACHABLE_TTL_S", 0.2)
    srv.route("/robots.txt", status=503)
    rc = cache()  # a day for answers, 0.2 s for an unreachable origin
    assert rc.check(srv.url("/a.jpg")) is not None
    time.sleep(0.3)
    srv.route("/robots.txt", body=b"")
    assert rc.check(srv.url("/a.jpg")) is None and srv.hits["/robots.txt"] == 4


def test_lru_keeps_at_most_max_origins():
    asked = []

    def fetch(url):
        asked.append(url)
        return Fetched(url, 404, {}, b"", "192.0.2.1")

    rc = RobotsCache(fetch, TOKEN, max_origins=2)
    for host in ["a", "b", "a", "c", "a", "b"]:  # c evicts b (a was used since), b evicts c
        assert rc.check(f"http://{host}.example/x.jpg") is None
    assert [u.split("//")[1].split(".")[0] for u in asked] == ["a", "b", "c", "b"]
    assert len(rc._cache) == 2
    assert rc.check("https://a.example/x") is None and len(asked) == 5  # another scheme, another origin
    assert rc.check("ftp://a.example/x") is None and len(asked) == 5  # not http(s): left to the fetcher
