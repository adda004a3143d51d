"""The safe fetcher against a real HTTP server with faults (no Spark)."""

import socket
import time

import pytest
from fault_server import FaultServer

from laion5b_spark.download.safe_fetch import Fetcher, FetchError, FetchPolicy, _Allow, blocked


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


def fetcher(srv, **kw) -> Fetcher:
    """The server's own address:port is allow-listed - nothing else on loopback is."""
    return Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",), **kw))


def test_fetch_image_and_keep_alive(srv):
    url = srv.route("/a.jpg", body=b"\xff\xd8" + b"x" * 5000, headers={"Content-Type": "image/jpeg"})
    f = fetcher(srv)
    first, second = f.fetch(url), f.fetch(url)
    assert first.status == 200 and first.body == second.body and len(first.body) == 5002
    assert first.headers["content-type"] == "image/jpeg" and first.ip == "127.0.0.1"
    assert srv.hits["/a.jpg"] == 2 and srv.connections == 1  # one kept-alive connection


def test_http_errors_are_results_not_exceptions(srv):
    f = fetcher(srv)
    assert f.fetch(srv.url("/missing")).status == 404
    r = f.fetch(srv.route("/busy", status=429, headers={"Retry-After": "3"}))
    assert r.status == 429 and r.headers["retry-after"] == "3"


def test_redirect_chain_and_limit(srv):
    srv.route("/img", body=b"ok")
    for i in range(1, 8):
        srv.route(f"/r{i}", status=302, headers={"Location": "/img" if i == 1 else f"/r{i - 1}"})
    r = fetcher(srv).fetch(srv.url("/r3"))
    assert r.body == b"ok" and r.url == srv.url("/img") and len(r.redirects) == 3
    with pytest.raises(FetchError) as e:
        fetcher(srv, max_redirects=5).fetch(srv.url("/r7"))
    assert e.value.reason == "too_many_redirects"


def test_private_addresses_are_refused_by_default(srv):
    url = srv.route("/a.jpg", body=b"x")
    with pytest.raises(FetchError) as e:
        Fetcher().fetch(url)
    assert e.value.reason == "blocked_private_ip" and srv.connections == 0


def test_redirect_to_another_loopback_port_is_refused_without_connecting(srv):
    with FaultServer() as other:
        other.route("/secret", body=b"internal")
        srv.route("/hop", status=302, headers={"Location": other.url("/secret")})
        with pytest.raises(FetchError) as e:
            fetcher(srv).fetch(srv.url("/hop"))
        assert e.value.reason == "blocked_private_ip"
        assert other.connections == 0 and srv.hits["/hop"] == 1


@pytest.mark.parametrize("target", ["http://10.1.2.3/x.jpg", "http://169.254.169.254/latest/meta-data/",
                                    "http://[fd00:ec2::254]/latest/", "http://0.0.0.0/", "http://[::ffff:10.0.0.1]/",
                                    "http://100.64.0.1/", "http://224.0.0.1/", "http://[::1]:80/"])
def test_redirect_to_internal_addresses_is_refused_at_once(srv, target):
    srv.route("/hop", status=301, headers={"Location": target})
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetcher(srv).fetch(srv.url("/hop"))
    assert e.value.reason == "blocked_private_ip" and time.monotonic() - t0 < 1.0  # refused, not timed out


def test_allow_list_forms():
    allow = _Allow(("10.0.0.0/8", "127.0.0.1:8080", "[fd00::1]:443"))
    assert not blocked("10.9.9.9", 1, allow) and blocked("11.0.0.1", 1, _Allow(()) ) is False
    assert not blocked("127.0.0.1", 8080, allow) and blocked("127.0.0.1", 8081, allow)
    assert not blocked("fd00::1", 443, allow) and blocked("fd00::1", 80, allow)
    assert not blocked("93.184.216.34", 80, _Allow(()))


def test_slow_drip_ends_at_the_deadline(srv):
    url = srv.route("/drip", body=b"x" * 100, drip_s=0.1)  # 10 s to send, each byte well within read timeout
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetcher(srv, deadline_s=1.0, read_timeout_s=5.0).fetch(url)
    assert e.value.reason == "timeout" and time.monotonic() - t0 < 2.5


def test_read_timeout(srv):
    url = srv.route("/stall", body=b"x", delay_s=2.0)
    with pytest.raises(FetchError) as e:
        fetcher(srv, read_timeout_s=0.3).fetch(url)
    assert e.value.reason == "timeout"


def test_oversized_bodies(srv):
    f = fetcher(srv, max_bytes=10_000)
    with pytest.raises(FetchError) as e:  # announced
        f.fetch(srv.route("/big", body=b"x" * 20_000))
    assert e.value.reason == "too_large"
    with pytest.raises(FetchError) as e:  # not announced: counted while reading
        f.fetch(srv.route("/stream", body=b"x" * 20_000, length=-1))
    assert e.value.reason == "too_large"
    assert f.fetch(srv.route("/ok", body=b"y" * 9_000)).body == b"y" * 9_000  # the pool still works


def test_truncated_body(srv):
    with pytest.raises(FetchError) as e:
        fetcher(srv).fetch(srv.route("/cut", body=b"x" * 1000, send_bytes=100))
    assert e.value.reason == "truncated_body"


def test_scheme_url_and_dns_failures(srv):
    f = fetcher(srv)
    for url, reason in [("ftp://example.com/a.jpg", "bad_scheme"), ("http://[oops/x", "invalid_url"),
                        ("http:///x.jpg", "invalid_url")]:
        with pytest.raises(FetchError) as e:
            f.fetch(url)
        assert e.value.reason == reason, url
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
        pytest.skip("this resolver answers for .invalid")
    except socket.gaierror:
        pass
    with pytest.raises(FetchError) as e:
        f.fetch("http://no-such-host.invalid/x.jpg")
    assert e.value.reason == "dns_error"


def test_every_fetch_reason_is_in_the_accounting_vocabulary():
    import re
    from pathlib import Path

    from laion5b_spark.accounting import REASONS
    import laion5b_spark.download.safe_fetch as sf

    import laion5b_spark.download.http1 as http1

    text = Path(sf.__file__).read_text() + Path(http1.__file__).read_text()
    raised = set(re.findall(r'FetchError\("([a-z_]+)"', text))
    assert raised and raised <= set(REASONS), raised - set(REASONS)


def test_robots_tag_lines_are_kept(srv):
    url = srv.route("/tagged", body=b"x", headers={"X-Robots-Tag": "noai"})
    assert fetcher(srv).fetch(url).robots_tags == ["noai"]


def test_connect_to_sends_a_host_to_a_given_address_still_checked(srv):
    srv.route("/a.jpg", body=b"mirrored")
    to = (f"images.sample.test=127.0.0.1:{srv.port}",)
    r = fetcher(srv, connect_to=to).fetch("http://images.sample.test/a.jpg")
    assert r.body == b"mirrored" and r.ip == "127.0.0.1" and srv.hits["/a.jpg"] == 1
    assert fetcher(srv, connect_to=(f"*=127.0.0.1:{srv.port}",)).fetch("http://any.example/a.jpg").status == 200
    with pytest.raises(FetchError) as e:  # the address is not allow-listed: refused, never connected
        Fetcher(FetchPolicy(connect_to=to)).fetch("http://images.sample.test/a.jpg")
    assert e.value.reason == "blocked_private_ip" and srv.connections == 2
    with pytest.raises(ValueError, match="HOST=ADDRESS:PORT"):
        Fetcher(FetchPolicy(connect_to=("images.sample.test:80",)))
