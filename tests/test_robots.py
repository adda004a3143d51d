"""robots.txt rules (RFC 9309) through the real safe fetcher against a scripted server (no Spark)."""

import socket
import threading
import time

import pytest
from fault_server import FaultServer

from laion5b_spark.download import robots
from laion5b_spark.download.robots import RobotsCache
from laion5b_spark.download.safe_fetch import Fetched, Fetcher, FetchError, FetchPolicy

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

    def fetch(url, **_caps):
        asked.append(url)
        return Fetched(url, 404, {}, b"", "192.0.2.1")

    rc = RobotsCache(fetch, TOKEN, max_origins=2)
    for host in ["a", "b", "a", "c", "a", "b"]:  # c evicts b (a was used since), b evicts c
        assert rc.check(f"http://{host}.example/x.jpg") is None
    assert [u.split("//")[1].split(".")[0] for u in asked] == ["a", "b", "c", "b"]
    assert len(rc.origins) == 2
    assert rc.check("https://a.example/x") is None and len(asked) == 5  # another scheme, another origin
    assert rc.check("ftp://a.example/x") is None and len(asked) == 5  # not http(s): left to the fetcher


# -- robots.py on its own: every fetch outcome, read as RFC 9309 says (issue 15, class 2) ------------------------

FETCH_ERRORS = ["timeout", "connect_error", "tls_error", "too_large", "truncated_body", "protocol_error"]
URL_FAULTS = ["dns_error", "blocked_private_ip", "invalid_url", "bad_scheme"]
RULES = b"User-agent: *\nDisallow: /no\n"


class FakeFetch:
    """The fetcher's interface without a network: answers with ``answer`` (a FetchError is raised) and honours
    ``max_bytes`` / ``truncate`` as the fetcher does; ``cut_at`` cuts every body there (a truncating fetcher)."""

    def __init__(self, answer, cut_at: int | None = None):
        self.answer, self.cut_at, self.calls = answer, cut_at, []

    def __call__(self, url, headers=None, *, max_bytes=None, truncate=False):
        self.calls.append((url, max_bytes, truncate))
        if isinstance(self.answer, BaseException):
            raise self.answer
        status, hdrs, body = self.answer
        if self.cut_at is not None:
            body = body[:self.cut_at]
        elif max_bytes is not None and len(body) > max_bytes:
            if not truncate:
                raise FetchError("too_large", "over the cap")
            body = body[:max_bytes]
        return Fetched(url, status, hdrs, body, "192.0.2.1")


def framed(body: bytes) -> dict:
    return {"content-length": str(len(body))}


@pytest.mark.parametrize("reason", FETCH_ERRORS)
def test_every_fetch_error_means_unreachable(reason):
    rc = RobotsCache(FakeFetch(FetchError(reason, "boom")), TOKEN)
    assert rc.check("http://a.example/x.jpg") == f"robots.txt unreachable ({reason})"


@pytest.mark.parametrize("reason", URL_FAULTS)
def test_the_urls_own_faults_are_left_to_the_image_fetch(reason):
    # the image fetch meets the same refusal and counts it under its own reason, not as robots_unreachable
    assert RobotsCache(FakeFetch(FetchError(reason, "boom")), TOKEN).check("http://a.example/x.jpg") is None


def test_too_many_redirects_means_unavailable():
    assert RobotsCache(FakeFetch(FetchError("too_many_redirects")), TOKEN).check("http://a.example/x.jpg") is None


def test_every_status_is_read_as_rfc_9309_says():
    for status in range(100, 600):
        rc = RobotsCache(FakeFetch((status, framed(RULES), RULES)), TOKEN)
        yes, no = rc.check("http://a.example/yes.jpg"), rc.check("http://a.example/no.jpg")
        if 200 <= status < 300:  # the rules apply
            assert (yes, no) == (None, f"robots.txt disallows /no.jpg for {TOKEN}"), status
        elif 400 <= status < 500 and status != 429:  # unavailable: no rules
            assert (yes, no) == (None, None), status
        else:  # 5xx, 429, and what a fetcher should never hand back (1xx, an unfollowed 3xx): unreachable
            assert yes == no == f"robots.txt unreachable (HTTP {status})", status


def test_robots_txt_is_asked_for_with_the_500_kib_cap_and_cut_there():
    fetch = FakeFetch((200, framed(RULES), RULES))
    RobotsCache(fetch, TOKEN).check("https://a.example:8443/x.jpg")
    # one byte past the cap: a file of exactly 500 KiB is whole, a longer one is cut there
    assert fetch.calls == [("https://a.example:8443/robots.txt", robots.MAX_ROBOTS_BYTES + 1, True)]


def test_a_line_cut_at_the_cap_is_dropped_not_misread():
    # the cap falls inside "Disallow: /private/": read whole lines only, or /pri would shut out /pricing
    head = b"User-agent: *\n" + b"# " + b"x" * 1000 + b"\n"
    filler = head + b"#" * (robots.MAX_ROBOTS_BYTES - len(head) - len(b"Disallow: /pri") - 1) + b"\n"
    body = filler + b"Disallow: /private/\n"
    assert body[:robots.MAX_ROBOTS_BYTES].endswith(b"\nDisallow: /pri")
    for cut_at in (None, robots.MAX_ROBOTS_BYTES + 1):  # a fetcher that cuts where asked, one that gives more
        rc = RobotsCache(FakeFetch((200, framed(body), body), cut_at=cut_at), TOKEN)
        assert rc.check("http://a.example/pricing.jpg") is None


def test_a_body_shorter_than_its_content_length_is_unreachable():
    cut = b"User-agent: *\nDisallow: /no"  # the server promised 200 bytes, then closed
    rc = RobotsCache(FakeFetch((200, {"content-length": "200"}, cut)), TOKEN)
    assert rc.check("http://a.example/x.jpg") == "robots.txt unreachable (body cut short: 27 of 200 bytes)"


@pytest.mark.parametrize("status, headers, allowed", [
    (200, {"content-length": "0"}, True),  # an empty robots.txt: no rules
    (204, {}, True),  # No Content has no body by definition
    (200, {"transfer-encoding": "chunked"}, True),
    (200, {}, False),  # no framing at all: an empty file and a cut-off answer look the same - never "allow all"
    (200, {"content-type": "text/plain"}, False),
])
def test_an_empty_body_allows_all_only_when_the_answer_says_it_is_empty(status, headers, allowed):
    refusal = RobotsCache(FakeFetch((status, headers, b"")), TOKEN).check("http://a.example/x.jpg")
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal == "robots.txt unreachable (an empty answer without Content-Length)"


def test_an_unexpected_exception_is_not_cached():
    fetch = FakeFetch(ValueError("a bug in the fetcher"))
    rc = RobotsCache(fetch, TOKEN)
    with pytest.raises(ValueError):
        rc.check("http://a.example/x.jpg")
    fetch.answer = (200, framed(RULES), RULES)
    assert rc.check("http://a.example/no.jpg") is not None and len(fetch.calls) == 2


def test_an_unreachable_robots_txt_is_a_retryable_failure_not_a_decision():
    from laion5b_spark.config import DEFAULTS
    from laion5b_spark.download.safe_fetch import FetchError
    from laion5b_spark.download.shard import DROPPED

    def fetch(url, **kw):
        raise FetchError("timeout", "slow")

    verdict = RobotsCache(fetch, "laion5b-spark").verdict("http://img.test/a.jpg")
    assert verdict[0] == "robots_unreachable" and "unreachable" in verdict[1]
    assert "robots_unreachable" not in DROPPED and "robots_unreachable" in DEFAULTS["download"]["retry_reasons"]


def test_a_file_of_exactly_the_cap_keeps_its_last_line():
    body = b"User-agent: *\n" + b"#" * (robots.MAX_ROBOTS_BYTES - 14 - 14) + b"\nDisallow: /no"
    assert len(body) == robots.MAX_ROBOTS_BYTES
    rc = RobotsCache(FakeFetch((200, framed(body), body)), TOKEN)
    assert rc.check("http://a.example/no.jpg") is not None


def test_a_compressed_robots_txt_is_not_cut_short():
    # Content-Length counts the gzip bytes; the fetcher hands back the decoded file
    rc = RobotsCache(FakeFetch((200, {"content-length": "43", "content-encoding": "gzip"}, RULES)), TOKEN)
    assert rc.check("http://a.example/yes.jpg") is None and rc.check("http://a.example/no.jpg") is not None
