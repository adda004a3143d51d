"""The TDM Reservation Protocol (W3C TDMRep): the tdm-reservation header and /.well-known/tdmrep.json, from the
parsers up to a shard on the project's fault server and the job's wiring (issue 15, class 6; no Spark)."""

import io
import json
import time

import pyarrow as pa
import pytest
from fault_server import FaultServer
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from laion5b_spark.accounting import REASONS, ErrorSamples
from laion5b_spark.config import load_config
from laion5b_spark.download import tdmrep
from laion5b_spark.download.image import ImageProcessor, ImageSettings
from laion5b_spark.download.job import DownloadSettings, _worker_downloader
from laion5b_spark.download.robots import RobotsCache
from laion5b_spark.download.safe_fetch import Fetched, Fetcher, FetchError, FetchPolicy
from laion5b_spark.download.shard import DROPPED, Downloader
from laion5b_spark.download.tdmrep import TdmRep, header_reservation, location_matches, parse_tdmrep, rule_for

FETCH_ERRORS = ["timeout", "connect_error", "dns_error", "tls_error", "too_large", "truncated_body",
                "blocked_private_ip", "invalid_url", "bad_scheme", "protocol_error", "too_many_redirects"]


def jpeg(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def rules_file(*rules) -> bytes:
    return json.dumps([dict(location=loc, **{"tdm-reservation": r}) for loc, r in rules]).encode()


# -- the response header ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, reserved", [
    ({"tdm-reservation": "1"}, True),
    ({"tdm-reservation": " 1 "}, True),
    ({"tdm-reservation": "1, 1"}, True),  # the header twice, joined by the fetcher
    ({"tdm-reservation": "0, 1"}, True),  # contradicting itself: the reservation stands
    ({"tdm-reservation": "0"}, False),
    ({"tdm-reservation": "2"}, False),  # any other value is a protocol error: unset
    ({"tdm-reservation": "yes"}, False),
    ({"tdm-reservation": ""}, False),
    ({"tdm-policy": "https://example.com/policy.json"}, False),  # a policy alone reserves nothing
    ({}, False),
])
def test_the_tdm_reservation_header(headers, reserved):
    assert (header_reservation(headers) is not None) == reserved


def test_the_header_names_its_policy():
    why = header_reservation({"tdm-reservation": "1", "tdm-policy": "https://example.com/policy.json"})
    assert why == "tdm-reservation: 1 (tdm-policy https://example.com/policy.json)"
    assert header_reservation({"tdm-reservation": "1"}) == "tdm-reservation: 1"


# -- tdmrep.json: parsing -----------------------------------------------------------------------------------

def test_parse_a_file():
    body = json.dumps([
        {"location": "/images/*", "tdm-reservation": 1, "tdm-policy": "https://example.com/p.json"},
        {"location": "/open/", "tdm-reservation": 0},
        {"location": "/odd/", "tdm-reservation": 2},  # a protocol error: the rule's value is unset
        {"location": "/str/", "tdm-reservation": "1"},  # as the header writes it
        {"location": "/bool/", "tdm-reservation": True},  # not 0 or 1: unset
        {"tdm-reservation": 1},  # no location: not a rule
        {"location": "", "tdm-reservation": 1},
        "not an object",
    ]).encode()
    rules = parse_tdmrep(body)
    assert [(r.location, r.reservation, r.policy) for r in rules] == [
        ("/images/*", 1, "https://example.com/p.json"), ("/open/", 0, None), ("/odd/", None, None),
        ("/str/", 1, None), ("/bool/", None, None)]


@pytest.mark.parametrize("body", [b"", b"   ", b"{oops", b"<html>not found</html>", b"42", b'"/"', b"null",
                                  b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000])
def test_what_is_not_a_tdmrep_file(body):
    assert parse_tdmrep(body) is None


def test_a_byte_order_mark_and_a_single_object_are_read():
    assert [r.location for r in parse_tdmrep(b"\xef\xbb\xbf" + rules_file(("/", 1)))] == ["/"]
    # one object instead of an array: a common mistake, read as a one-rule file (it errs towards the reservation)
    assert [r.reservation for r in parse_tdmrep(b'{"location": "/", "tdm-reservation": 1}')] == [1]


# -- tdmrep.json: matching locations (robots.txt patterns, case-sensitive, the first match in sequence) ------

@pytest.mark.parametrize("pattern, target, matches", [
    ("/", "/a.jpg", True),
    ("/img", "/img/a.jpg", True),
    ("/img", "/imgs/a.jpg", True),  # a prefix, as in robots.txt
    ("/img/", "/imgs/a.jpg", False),
    ("/Img/", "/img/a.jpg", False),  # case-sensitive
    ("/*.jpg$", "/a/b.jpg", True),
    ("/*.jpg$", "/a/b.jpg?w=200", False),  # the query is part of what is matched, as in robots.txt
    ("/*.jpg", "/a/b.jpg?w=200", True),
    ("/a$", "/a", True),
    ("/a$", "/ab", False),
    ("/fish*.php", "/fishheads/catfish.php?parameters", True),
    ("/fish*.php", "/Fish.PHP", False),
    ("/a*b*c$", "/aXbYc", True),
    ("/a*b*c$", "/aXbYcZ", False),
    ("/a*b$", "/ab/b", True),
    ("*", "/anything", True),
    ("*.gif$", "/x/y.gif", True),
    ("/path/foo-%24", "/path/foo-$", True),  # the report's example: a literal $ is written %24
    ("/path/foo-$", "/path/foo-", True),
    ("/%7Ejoe/", "/~joe/a.jpg", True),  # an encoded unreserved character equals the character
    ("/~joe/", "/%7ejoe/a.jpg", True),
    ("/a%3cb", "/a%3Cb", True),  # hex digits in either case
    ("/a%2Fb", "/a/b", False),  # an encoded reserved character stays distinct
    ("/café/", "/caf%C3%A9/x.jpg", True),  # non-ASCII compared as its UTF-8 percent-encoding
    ("/caf%c3%a9/", "/café/x.jpg", True),
])
def test_location_patterns(pattern, target, matches):
    assert location_matches(pattern, target) == matches


def test_the_first_matching_rule_decides():
    rules = parse_tdmrep(rules_file(("/premium/", 1), ("/", 0)))
    assert rule_for(rules, "/premium/a.jpg").reservation == 1 and rule_for(rules, "/free/a.jpg").reservation == 0
    rules = parse_tdmrep(rules_file(("/", 0), ("/premium/", 1)))  # "the most specific match is the first"
    assert rule_for(rules, "/premium/a.jpg").reservation == 0
    assert rule_for(parse_tdmrep(rules_file(("/premium/", 1))), "/free/a.jpg") is None


def test_matching_is_bounded_on_hostile_patterns():
    # 2,000 rules of nine wildcards against a 2,000-character path: a backtracking regex takes forever on this
    rules = parse_tdmrep(rules_file(*[("/" + "*a" * 9 + f"*b{i}$", 1) for i in range(2000)]))
    t0 = time.monotonic()
    assert rule_for(rules, "/" + "a" * 2000) is None
    assert time.monotonic() - t0 < 2.0


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
                         st.sampled_from(["location", "tdm-reservation", "tdm-policy", "x"]), kids, max_size=4),
                     max_leaves=20)
_url_text = st.text(st.sampled_from("/*$%?#:@[]ab%2A7eé~. \x00"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(_json, st.lists(_url_text, min_size=1, max_size=5))
def test_any_json_file_and_any_url_give_an_answer_never_an_exception(data, paths):
    body = json.dumps(data).encode()
    rules = parse_tdmrep(body)
    assert rules is None or all(r.reservation in (0, 1, None) for r in rules)
    tdm = TdmRep(FakeFetch((200, body)))
    for p in paths:
        for url in (f"http://a.example{p}", p, f"https://[{p}]/x", f"http://a.example:{p}/"):
            why = tdm.check(url)
            assert why is None or why.startswith("tdmrep.json reserves")


# -- tdmrep.json: fetching, once per origin, errors as the report says --------------------------------------

class FakeFetch:
    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def __call__(self, url, headers=None, *, max_bytes=None, truncate=False):
        self.calls.append((url, max_bytes, truncate))
        if isinstance(self.answer, BaseException):
            raise self.answer
        status, body = self.answer
        return Fetched(url, status, {"content-length": str(len(body))}, body, "192.0.2.1")


def test_the_file_is_fetched_once_per_origin_within_its_cap():
    fetch = FakeFetch((200, rules_file(("/premium/", 1))))
    tdm = TdmRep(fetch)
    assert tdm.check("https://a.example:8443/premium/x.jpg") == "tdmrep.json reserves TDM rights on /premium/x.jpg"
    assert tdm.check("https://a.example:8443/free/x.jpg") is None
    assert tdm.check("http://b.example/premium/x.jpg") is not None
    assert fetch.calls == [("https://a.example:8443/.well-known/tdmrep.json", tdmrep.MAX_TDMREP_BYTES, False),
                           ("http://b.example/.well-known/tdmrep.json", tdmrep.MAX_TDMREP_BYTES, False)]
    assert tdm.stats == {"fetched": 2, "cache_hits": 1, "reserved": 2}
    assert tdm.check("ftp://a.example/x.jpg") is None and len(fetch.calls) == 2  # left to the fetcher


def test_a_reservation_names_its_policy():
    body = json.dumps([{"location": "/", "tdm-reservation": 1, "tdm-policy": "https://a.example/tdm.json"}])
    assert TdmRep(FakeFetch((200, body.encode()))).check("http://a.example/x.jpg") == (
        "tdmrep.json reserves TDM rights on /x.jpg (tdm-policy https://a.example/tdm.json)")


@pytest.mark.parametrize("answer", [FetchError(r) for r in FETCH_ERRORS]
                         + [(s, rules_file(("/", 1))) for s in (301, 400, 403, 404, 410, 429, 500, 503)]
                         + [(200, b"{oops"), (200, b""), (200, b"<html>soft 404</html>")])
def test_no_file_means_no_reservation_from_it(answer):
    """The report: an origin that does not answer with the file (after redirects) does not implement the protocol
    this way - its images are judged by their tdm-reservation header alone."""
    assert TdmRep(FakeFetch(answer)).check("http://a.example/x.jpg") is None


def test_a_failed_fetch_is_asked_again_soon(monkeypatch):
    monkeypatch.setattr(tdmrep, "UNREACHABLE_TTL_S", 0.1)
    fetch = FakeFetch(FetchError("timeout"))
    tdm = TdmRep(fetch)
    assert tdm.check("http://a.example/x.jpg") is None
    fetch.answer = (200, rules_file(("/", 1)))
    assert tdm.check("http://a.example/x.jpg") is None and len(fetch.calls) == 1  # still the cached answer
    time.sleep(0.2)
    assert tdm.check("http://a.example/x.jpg") is not None and len(fetch.calls) == 2
    fetch.answer = (404, b"")
    time.sleep(0.2)
    assert tdm.check("http://a.example/x.jpg") is not None  # an answer holds a day


def test_header_checks_alone_fetch_nothing():
    tdm = TdmRep(None)
    assert tdm.check("http://a.example/x.jpg") is None and tdm.stats["fetched"] == 0
    assert tdm.reserved_by({"tdm-reservation": "1"}) == "tdm-reservation: 1"


# -- a shard on the fault server ----------------------------------------------------------------------------

def shard_rows(urls):
    return pa.table({"uid": list(range(len(urls))), "url": urls, "text": ["t"] * len(urls),
                     "language": ["en"] * len(urls)})


def test_a_shard_drops_reserved_images_and_never_fetches_those_the_file_reserves():
    img = jpeg()
    with FaultServer() as srv:
        srv.route("/robots.txt", body=b"User-agent: *\nAllow: /\n")
        srv.route("/.well-known/tdmrep.json", body=json.dumps([
            {"location": "/premium/", "tdm-reservation": 1, "tdm-policy": srv.url("/policy.json")},
            {"location": "/*.png$", "tdm-reservation": 1},
            {"location": "/", "tdm-reservation": 0}]).encode(), headers={"Content-Type": "application/json"})
        urls = [srv.route("/premium/a.jpg", body=img), srv.route("/free/b.jpg", body=img),
                srv.route("/free/c.png", body=img),
                srv.route("/free/hdr.jpg", body=img, headers={"tdm-reservation": "1", "tdm-policy": "https://p"}),
                srv.route("/free/zero.jpg", body=img, headers={"tdm-reservation": "0"}),
                srv.route("/free/odd.jpg", body=img, headers={"tdm-reservation": "true"})]
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",)))
        proc = ImageProcessor(ImageSettings(image_size=32))
        robots, tdm = RobotsCache(fetcher.fetch, "laion5b-spark"), TdmRep(fetcher.fetch)
        out, ledger = Downloader(fetcher, proc, robots=robots, tdm=tdm).shard(shard_rows(urls), ErrorSamples(), "k")
        assert out.column("reason").to_pylist() == ["tdm_reserved", None, "tdm_reserved", "tdm_reserved", None,
                                                    None]
        messages = out.column("error_message").to_pylist()
        policy = srv.url("/policy.json")
        assert messages[0] == f"tdmrep.json reserves TDM rights on /premium/a.jpg (tdm-policy {policy})"
        assert messages[3] == "tdm-reservation: 1 (tdm-policy https://p)"
        assert srv.hits["/premium/a.jpg"] == 0 and srv.hits["/free/c.png"] == 0  # reserved: never requested
        assert srv.hits["/.well-known/tdmrep.json"] == 1 and srv.hits["/robots.txt"] == 1
        assert ledger.balanced() and ledger.dropped == {"tdm_reserved": 3} and not ledger.failed

        # header checks without robots checks: the file is not asked for, the header still counts
        out, _ = Downloader(fetcher, proc, tdm=TdmRep(None)).shard(shard_rows(urls), ErrorSamples(), "k")
        assert out.column("reason").to_pylist() == [None, None, None, "tdm_reserved", None, None]
        assert srv.hits["/.well-known/tdmrep.json"] == 1
        out, _ = Downloader(fetcher, proc).shard(shard_rows(urls), ErrorSamples(), "k")  # respect_tdmrep off
        assert out.column("reason").to_pylist() == [None] * 6


def test_a_broken_tdmrep_json_on_the_server_reserves_nothing():
    with FaultServer() as srv:
        srv.route("/.well-known/tdmrep.json", body=b'[{"location": "/", "tdm-reservation": 1}', )  # cut JSON
        srv.route("/a.jpg", body=jpeg())
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",)))
        out, _ = Downloader(fetcher, ImageProcessor(ImageSettings(image_size=32)), tdm=TdmRep(fetcher.fetch)).shard(
            shard_rows([srv.url("/a.jpg")]), ErrorSamples(), "k")
        assert out.column("reason").to_pylist() == [None] and srv.hits["/.well-known/tdmrep.json"] == 1


# -- the reason and the setting -----------------------------------------------------------------------------

def test_tdm_reserved_is_a_decision_on_by_default():
    assert "tdm_reserved" in REASONS and "tdm_reserved" in DROPPED
    s = DownloadSettings.from_config(load_config())
    assert s.respect_tdmrep and not s.robots_txt
    d = _worker_downloader(s)
    assert d.tdm is not None and d.tdm.fetch is None  # headers only: the file comes with robots checks
    d = _worker_downloader(DownloadSettings.from_config(load_config(overrides=["download.robots_txt=true"])))
    assert d.tdm.fetch is not None and d.robots is not None
    off = DownloadSettings.from_config(load_config(overrides=["download.respect_tdmrep=false"]))
    assert not off.respect_tdmrep and _worker_downloader(off).tdm is None
