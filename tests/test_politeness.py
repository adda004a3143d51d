"""Per-host caps, pauses, Retry-After, backoff and X-Robots-Tag (no network except one local server)."""

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest
from fault_server import FaultServer
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from laion5b_spark.accounting import ErrorSamples
from laion5b_spark.download.image import ImageProcessor, ImageSettings
from laion5b_spark.download.politeness import HostGate, backoff_s, retry_after_s, robots_denied
from laion5b_spark.download.safe_fetch import Fetcher, FetchPolicy
from laion5b_spark.download.shard import Downloader


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


# -- X-Robots-Tag as the search engines define it (issue 15, class 6) -------------------------------------------

TOKEN = "laion5b-spark"


@pytest.mark.parametrize("line", [
    "max-image-preview:large, noai",  # the cases: a value directive is not a crawler name
    "unavailable_after: 2030-01-01, noimageai",
    "max-snippet:20, noai",
    "max-video-preview: -1, NoImageAI",
    "unavailable_after: Wed, 21 Oct 2015 07:28:00 GMT, noai",  # RFC 850/1123 dates hold commas and colons
    "unavailable_after: Wednesday, 03-Nov-2027 15:00:00 PST, noml",
    "none",  # = noindex, nofollow
    "NONE",
    "laion5b-spark: none",
    "otherbot: nofollow, laion5b-spark: noai",  # a later group names us
    "noarchive, LAION5B-Spark: noimageindex",
    "googlebot: unavailable_after: 25 Jun 2010 15:00:00 PST, laion5b-spark: noai",
    "*: noai",
])
def test_x_robots_tag_lines_that_deny(line):
    assert robots_denied([line], TOKEN)


@pytest.mark.parametrize("line", [
    "max-image-preview:large",
    "max-image-preview:none",  # a search preview setting, not an opt-out of this use
    "unavailable_after: Wed, 21 Oct 2015 07:28:00 GMT",
    "otherbot: none",
    "otherbot: noindex, noai",  # the whole group is otherbot's
    "otherbot: unavailable_after: Wed, 21 Oct 2015 07:28:00 GMT, noai",
    "laion5b-spark: nofollow, otherbot: noai",
    "all, nofollow, noarchive",
    "max-snippet: noai",  # a value, not a directive
    "",
])
def test_x_robots_tag_lines_that_allow(line):
    assert not robots_denied([line], TOKEN)


# a reference reading of generated lines: the groups that apply to us, and whether one holds an opt-out
_DENY = {"noai", "noimageai", "noindex", "noimageindex", "noml", "none"}
_OTHER = ["nofollow", "noarchive", "nosnippet", "notranslate", "indexifembedded", "all", "index", "follow",
          "nocache", "noodp", "max-snippet"]
_DATES = ["2030-01-01", "2030-01-01T10:00:00+01:00", "Wed, 21 Oct 2015 07:28:00 GMT",
          "Wednesday, 03-Nov-2027 15:00:00 PST", "25 Jun 2010 15:00:00 PST", "Mon, 01 Jan 2035 00:00:00 +0000"]
_VALUES = {"max-snippet": ["20", "-1", "0"], "max-image-preview": ["none", "standard", "large"],
           "max-video-preview": ["-1", "0", "30"], "unavailable_after": _DATES}
_AGENTS = ["laion5b-spark", "LAION5B-SPARK", "Laion5B-Spark", "googlebot", "otherbot", "bingbot", "*", "img2dataset"]


def _case(draw, word):
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@st.composite
def _directive(draw, first_of_group: bool):
    """(rendered text, denies): a plain directive, an opt-out, a value directive with its value, or (not first in
    a group: after a date, "otherbot: foo" would read as more of the date) an unknown word."""
    kind = draw(st.sampled_from(["deny", "other", "value"] if first_of_group else ["deny", "other", "value", "word"]))
    if kind == "deny":
        d = draw(st.sampled_from(sorted(_DENY)))
        return _case(draw, d), True
    if kind == "other":
        return _case(draw, draw(st.sampled_from(_OTHER))), False
    if kind == "word":  # an unknown directive (ignored)
        return draw(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).filter(lambda w: w not in _DENY
                                                                                   and w not in _VALUES)), False
    name = draw(st.sampled_from(sorted(_VALUES)))
    space = draw(st.sampled_from(["", " ", "  "]))
    return f"{_case(draw, name)}:{space}{draw(st.sampled_from(_VALUES[name]))}", False


@st.composite
def _line(draw):
    """(an X-Robots-Tag line, whether it applies an opt-out to us): groups of directives, each but perhaps the
    first named after a crawler; a name applies to its directives until the next name."""
    text, denies = [], False
    for g in range(draw(st.integers(1, 4))):
        agent = None if g == 0 and draw(st.booleans()) else draw(st.one_of(
            st.sampled_from(_AGENTS), st.from_regex(r"[a-z][a-z0-9_-]{0,10}bot", fullmatch=True)))
        ours = agent is None or agent == "*" or agent.lower() == TOKEN
        pieces = []
        for i in range(draw(st.integers(1, 4))):
            d, deny = draw(_directive(first_of_group=i == 0))
            denies |= deny and ours
            pieces.append(d)
        sep = draw(st.sampled_from([",", ", ", " , ", ",  "]))
        group = sep.join(pieces)
        text.append(group if agent is None else f"{agent}:{draw(st.sampled_from(['', ' ']))}{group}")
    return draw(st.sampled_from([",", ", "])).join(text), denies


@settings(max_examples=150, deadline=None)
@given(st.lists(_line(), min_size=1, max_size=3))
def test_x_robots_tag_matches_a_reference_reading(lines):
    assert robots_denied([t for t, _ in lines], TOKEN) == any(d for _, d in lines)


def test_x_robots_tag_on_the_fault_server_through_a_shard():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "JPEG")
    img = buf.getvalue()

    def raw(*tag_lines):  # one X-Robots-Tag header line each, as a server may send them
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n" + b"".join(
            b"X-Robots-Tag: " + t.encode() + b"\r\n" for t in tag_lines)
        return [head + b"Content-Length: %d\r\n\r\n" % len(img) + img]

    with FaultServer() as srv:
        cases = {  # path -> (route, expected reason)
            "/preview.jpg": (dict(headers={"X-Robots-Tag": "max-image-preview:large, noai"}), "robots_denied"),
            "/dated.jpg": (dict(headers={"X-Robots-Tag": "unavailable_after: 2030-01-01, noimageai"}),
                           "robots_denied"),
            "/rfc-date.jpg": (dict(headers={"X-Robots-Tag": "unavailable_after: Wed, 21 Oct 2030 07:28:00 GMT, noai"}),
                              "robots_denied"),
            "/none.jpg": (dict(headers={"X-Robots-Tag": "none"}), "robots_denied"),
            "/other.jpg": (dict(headers={"X-Robots-Tag": "otherbot: noai, noimageai"}), None),
            "/preview-only.jpg": (dict(headers={"X-Robots-Tag": "max-image-preview:large"}), None),
            "/two-lines.jpg": (dict(script=raw("googlebot: noindex", "laion5b-spark: noai")), "robots_denied"),
            "/two-other.jpg": (dict(script=raw("otherbot: noai", "max-image-preview:large, nofollow")), None),
        }
        urls = [srv.route(p, body=img, **kw) if "script" not in kw else srv.route(p, **kw)
                for p, (kw, _) in cases.items()]
        rows = pa.table({"uid": list(range(len(urls))), "url": urls, "text": ["t"] * len(urls),
                         "language": ["en"] * len(urls)})
        fetcher = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",)))
        out, ledger = Downloader(fetcher, ImageProcessor(ImageSettings(image_size=32))).shard(rows, ErrorSamples(), "k")
        assert out.column("reason").to_pylist() == [r for _, r in cases.values()]
        assert ledger.balanced() and ledger.dropped == {"robots_denied": 5}


def test_retry_after_values_that_do_not_parse_are_ignored():
    from laion5b_spark.download.politeness import retry_after_s

    assert retry_after_s("\u00b2") is None  # a digit to str.isdigit, not to float()
    assert retry_after_s("Mon, 01 Jan 99999999999999999999 00:00:00 GMT") is None
    assert retry_after_s("120") == 120.0
