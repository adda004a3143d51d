"""The fetcher against hostile and broken servers (issue 15, classes 1, 2, 4 and 5's 103): every case ends within
the deadline and the byte caps, with a reason, on the project's own fault server (no Spark)."""

import gzip
import ipaddress
import time
import zlib

import pytest
from fault_server import FaultServer

from laion5b_spark.download.addresses import embedded_ipv4, is_public
from laion5b_spark.download.robots import RobotsCache
from laion5b_spark.download.safe_fetch import Fetcher, FetchError, FetchPolicy, Resolver, request_host

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"


@pytest.fixture
def srv():
    with FaultServer() as s:
        yield s


def fetcher(srv, **kw) -> Fetcher:
    kw.setdefault("deadline_s", 2.0)
    kw.setdefault("max_bytes", 2 * 2**20)
    return Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",), **kw))


def fails(f: Fetcher, url: str) -> tuple[str, float]:
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        f.fetch(url)
    return e.value.reason, time.monotonic() - t0


def endless(piece: bytes, first: bytes = b""):
    def script(_query):
        yield first
        while True:
            yield piece
    return script


# -- class 2: the deadline and the caps hold over the whole exchange ------------------------------------------

def test_a_dripped_head_ends_at_the_deadline_never_as_an_empty_200(srv):
    head = OK_HEAD + b"Content-Length: 5\r\n\r\nhello"
    srv.route("/drip", script=[x for b in head for x in (bytes([b]), 0.1)])  # 6 s to send the head
    reason, took = fails(fetcher(srv, deadline_s=1.0, read_timeout_s=5.0), srv.url("/drip"))
    assert reason == "timeout" and took < 2.0


def test_a_head_cut_short_is_a_protocol_error(srv):
    srv.route("/cut", script=[OK_HEAD + b"Content-Len"])
    assert fails(fetcher(srv), srv.url("/cut"))[0] == "protocol_error"
    srv.route("/nohead", script=[b"\xff\xd8\xff\xe0 raw bytes, no status line\r\n\r\n"])
    assert fails(fetcher(srv), srv.url("/nohead"))[0] == "protocol_error"
    srv.route("/silent", script=[])
    assert fails(fetcher(srv), srv.url("/silent"))[0] == "connect_error"


def test_endless_interim_responses_are_refused_after_a_few(srv):
    srv.route("/continue", script=endless(b"HTTP/1.1 100 Continue\r\n\r\n"))
    reason, took = fails(fetcher(srv), srv.url("/continue"))
    assert reason == "protocol_error" and took < 1.0


def test_early_hints_then_the_image(srv):
    srv.route("/hints", script=[b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                                OK_HEAD + b"Content-Length: 5\r\n\r\nhello"])
    got = fetcher(srv).fetch(srv.url("/hints"))
    assert got.status == 200 and got.body == b"hello"


def test_endless_headers_stop_at_the_head_cap(srv):
    srv.route("/headers", script=endless(b"X-Junk: " + b"a" * 100 + b"\r\n", OK_HEAD))
    reason, took = fails(fetcher(srv, max_header_bytes=16_384), srv.url("/headers"))
    assert reason == "protocol_error" and took < 1.0
    assert srv.script_bytes < 4 * 2**20  # not 40 MB: what the socket buffers took before the client hung up


def test_a_redirect_whose_body_never_ends_is_not_drained(srv):
    srv.route("/img", body=b"the image")
    srv.route("/moved", script=endless(b"x" * 65536, b"HTTP/1.1 302 Found\r\nLocation: /img\r\n\r\n"))
    t0 = time.monotonic()
    got = fetcher(srv).fetch(srv.url("/moved"))
    assert got.body == b"the image" and got.redirects == [srv.url("/moved")] and time.monotonic() - t0 < 1.0
    assert srv.script_bytes < 8 * 2**20


def test_a_redirect_with_a_small_body_keeps_the_connection(srv):
    srv.route("/img", body=b"the image")
    srv.route("/moved", status=301, body=b"<a href=/img>moved</a>", headers={"Location": "/img"})
    f = fetcher(srv)
    assert f.fetch(srv.url("/moved")).body == b"the image"
    assert f.fetch(srv.url("/moved")).body == b"the image"
    assert srv.connections == 1


def test_a_gzip_header_that_never_ends(srv):
    fname_forever = endless(b"a" * 65536, OK_HEAD + b"Content-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x08\0\0\0\0\0\xff")
    srv.route("/fname", script=fname_forever)
    reason, took = fails(fetcher(srv, max_bytes=200_000), srv.url("/fname"))
    assert reason == "too_large" and took < 1.0  # never 200 with an empty body


def test_endless_empty_deflate_blocks(srv):
    # a non-final stored block of length 0, forever: no output, all work
    srv.route("/blocks", script=endless(b"\x00\x00\x00\xff\xff" * 13107, OK_HEAD + b"Content-Encoding: deflate\r\n\r\n"))
    reason, took = fails(fetcher(srv, max_bytes=2 * 2**20), srv.url("/blocks"))
    assert reason == "too_large" and took < 2.0


def test_compressed_bodies_are_decoded_within_the_cap(srv):
    image = bytes(range(256)) * 40
    for enc, data in (("gzip", gzip.compress(image)), ("deflate", zlib.compress(image)),
                      ("deflate", zlib.compress(image)[2:-4])):  # raw deflate, as some servers send it
        srv.route("/z", body=data, headers={"Content-Encoding": enc})
        assert fetcher(srv).fetch(srv.url("/z")).body == image, enc
    srv.route("/bomb", body=gzip.compress(b"\0" * 5_000_000), headers={"Content-Encoding": "gzip"})
    assert fails(fetcher(srv, max_bytes=1_000_000), srv.url("/bomb"))[0] == "too_large"
    srv.route("/cut", body=gzip.compress(image)[:-20], headers={"Content-Encoding": "gzip"})
    assert fails(fetcher(srv), srv.url("/cut"))[0] == "truncated_body"
    srv.route("/br", body=b"\x0b\x02\x80hello\x03", headers={"Content-Encoding": "br"})
    assert fails(fetcher(srv), srv.url("/br"))[0] == "protocol_error"


def test_chunked_framing(srv):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    srv.route("/chunked", script=[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body])
    assert fetcher(srv).fetch(srv.url("/chunked")).body == b"hello world"
    srv.route("/bad", script=[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"])
    assert fails(fetcher(srv), srv.url("/bad"))[0] == "protocol_error"
    srv.route("/short", script=[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nhello"])
    assert fails(fetcher(srv), srv.url("/short"))[0] == "truncated_body"
    srv.route("/big", script=endless(b"10000\r\n" + b"x" * 65536 + b"\r\n", OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"))
    assert fails(fetcher(srv, max_bytes=300_000), srv.url("/big"))[0] == "too_large"


def test_conflicting_content_lengths_are_refused(srv):
    srv.route("/two", script=[OK_HEAD + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello"])
    assert fails(fetcher(srv), srv.url("/two"))[0] == "protocol_error"
    srv.route("/same", script=[OK_HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"])
    assert fetcher(srv).fetch(srv.url("/same")).body == b"hello"


def test_a_slow_robots_txt_means_unreachable_not_allow_all(srv):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Padding: " + b"p" * 30 + b"\r\n"
    srv.route("/robots.txt", script=[x for b in head for x in (bytes([b]), 0.05)])  # then closes, head unfinished
    robots = RobotsCache(fetcher(srv, deadline_s=1.0, read_timeout_s=0.5).fetch, "laion5b-spark")
    refusal = robots.check(srv.url("/a.jpg"))
    assert refusal and "unreachable" in refusal


def test_a_dripped_tls_record_ends_at_the_deadline(srv):
    # a TLS record header announcing 16 KB, then a byte every 0.1 s, each within the read timeout
    srv.route("/", script=[b"\x16\x03\x03\x40\x00"] + [x for _ in range(200) for x in (b"\x02", 0.1)])
    f = Fetcher(FetchPolicy(allow=(f"127.0.0.1:{srv.port}",), connect_to=(f"*=127.0.0.1:{srv.port}",),
                            deadline_s=1.0, read_timeout_s=5.0, connect_timeout_s=5.0))
    t0 = time.monotonic()
    with pytest.raises(FetchError) as e:
        f.fetch("https://tls.test/")
    assert e.value.reason in ("timeout", "tls_error") and time.monotonic() - t0 < 2.0


# -- class 1: hosts outside ASCII, bad redirects ---------------------------------------------------------------

@pytest.mark.parametrize("url, host", [("http://пример.test/x", "xn--e1afmkfd.test"),
                                       ("http://bücher.test/x", "xn--bcher-kva.test"),
                                       ("http://BÜCHER.test/x", "xn--bcher-kva.test"),
                                       ("http://faß.test/x", "xn--fa-hia.test"),  # UTS 46 non-transitional
                                       ("http://例え。テスト/x", "xn--r8jz45g.xn--zckzah")])  # ideographic full stop
def test_idn_hosts_go_out_as_idna(srv, url, host):
    srv.route("/x", body=b"ok")
    got = fetcher(srv, connect_to=(f"*=127.0.0.1:{srv.port}",)).fetch(url)
    assert got.status == 200 and srv.requests[-1][1]["Host"] == host


def test_paths_outside_ascii_are_percent_encoded(srv):
    srv.route("/b%C3%BCcher/a%20b.jpg", body=b"ok")
    got = fetcher(srv).fetch(srv.url("/bücher/a b.jpg"))
    assert got.status == 200 and srv.requests[-1][0] == "/b%C3%BCcher/a%20b.jpg"


def test_a_host_mapping_to_localhost_is_refused():
    assert request_host("ⓛocalhost") == "localhost"
    with pytest.raises(FetchError) as e:
        Fetcher().fetch("http://ⓛocalhost/")
    assert e.value.reason == "blocked_private_ip"


@pytest.mark.parametrize("url", ["http://xn--zz.test/", "http://a\u0000b.test/", "http://exa mple.test/",
                                 "http://%6c%6fcalhost/", "http://a..\u0301.test/"])
def test_hosts_no_name_may_hold_are_invalid(url):
    with pytest.raises(FetchError) as e:
        Fetcher().fetch(url)
    assert e.value.reason in ("invalid_url", "dns_error")


def test_a_redirect_to_an_unparsable_location_fails_its_url_only(srv):
    srv.route("/bad", status=302, headers={"Location": "http://[oops/x.jpg"})
    assert fails(fetcher(srv), srv.url("/bad"))[0] == "invalid_url"
    srv.route("/img", body=b"ok")
    assert fetcher(srv).fetch(srv.url("/img")).status == 200


# -- class 4: IPv6 forms that embed IPv4, and IANA's registries -----------------------------------------------

REFUSED = ["64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::a00:1", "2002:7f00:1::", "::127.0.0.1",
           "::ffff:0:7f00:1", "fec0::1", "::ffff:169.254.169.254", "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
           "2001:db8::1", "3fff::1", "5f00::1", "100::1", "fd00:ec2::254", "fe80::1", "ff02::1", "::", "::1",
           "192.0.0.8", "192.0.2.1", "198.18.0.1", "240.0.0.1", "255.255.255.255", "0.1.2.3", "100.64.0.1",
           "2002:a9fe:a9fe::1", "64:ff9b::c0a8:1"]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "64:ff9b::5db8:d822", "2002:5db8:d822::1",
          "::ffff:93.184.216.34", "192.0.0.9", "2001:4:112::1"]


@pytest.mark.parametrize("ip", REFUSED)
def test_special_purpose_addresses_are_refused(ip):
    assert not is_public(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_and_their_nat64_forms_are_fetchable(ip):
    assert is_public(ip)


def test_embedded_ipv4():
    v6 = ipaddress.IPv6Address
    assert str(embedded_ipv4(v6("64:ff9b::a9fe:a9fe"))) == "169.254.169.254"
    assert str(embedded_ipv4(v6("2002:7f00:1::"))) == "127.0.0.1"
    assert embedded_ipv4(v6("2606:2800:220:1::1")) is None


class _FixedResolver(Resolver):
    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def resolve(self, host, port):
        return list(self.answer)


@pytest.mark.parametrize("ip", ["64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::127.0.0.1", "fec0::1"])
def test_names_and_redirects_to_embedded_forms_never_connect(srv, ip):
    with pytest.raises(FetchError) as e:
        Fetcher(resolver=_FixedResolver([ip])).fetch("http://rebind.test/x.jpg")
    assert e.value.reason == "blocked_private_ip"
    srv.route("/hop", status=302, headers={"Location": f"http://[{ip}]/x.jpg"})
    assert fails(fetcher(srv), srv.url("/hop"))[0] == "blocked_private_ip"
    assert srv.hits["/hop"] == 1


def test_a_kept_alive_connection_the_server_closed_is_not_reused(srv):
    srv.route("/once", script=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])  # then closes, unannounced
    f = fetcher(srv)
    assert [f.fetch(srv.url("/once")).body for _ in range(3)] == [b"ok"] * 3
    assert srv.connections == 3


# -- found in review -------------------------------------------------------------------------------------------

def test_a_million_tiny_chunks_cost_their_bytes_not_an_object_each(srv):
    import tracemalloc

    srv.route("/tiny", script=[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nX\r\n" * 300_000 + b"0\r\n\r\n"])
    tracemalloc.start()
    try:
        got = fetcher(srv, deadline_s=20.0).fetch(srv.url("/tiny"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.body == b"X" * 300_000
    assert peak < 6 * 2**20  # a list of 300,000 one-byte objects alone is over 10 MB


@pytest.mark.parametrize("value", [b"\xb2", b"0" * 4999 + b"1", b"-1", b"1e3", b"5, 6"])
def test_content_lengths_that_are_not_ascii_numbers_are_protocol_errors(srv, value):
    srv.route("/cl", script=[OK_HEAD + b"Content-Length: " + value + b"\r\n\r\nhello"])
    assert fails(fetcher(srv), srv.url("/cl"))[0] == "protocol_error"


@pytest.mark.parametrize("head", [b"Transfer-Encoding: gzip, chunked\r\n", b"Content-Encoding: gzip, gzip\r\n"])
def test_codings_we_did_not_ask_for_are_refused(srv, head):
    body = gzip.compress(gzip.compress(b"hello"))
    srv.route("/coded", script=[OK_HEAD + head + b"Content-Length: %d\r\n\r\n" % len(body) + body])
    assert fails(fetcher(srv), srv.url("/coded"))[0] == "protocol_error"


def test_a_truncating_fetch_still_sees_a_chunk_cut_short(srv):
    srv.route("/cut", script=[OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\ne\r\nUser-agent: *\n\r\n"
                              b"96000\r\nDisallow: /"])  # a 600 KiB chunk, then the server closes
    with pytest.raises(FetchError) as e:
        fetcher(srv).fetch(srv.url("/cut"), max_bytes=1000, truncate=True)
    assert e.value.reason == "truncated_body"


def test_a_truncated_compressed_body_decodes_as_far_as_it_goes(srv):
    text = b"".join(b"Disallow: /%d\n" % i for i in range(50_000))
    srv.route("/big.txt", body=gzip.compress(text), headers={"Content-Encoding": "gzip"})
    got = fetcher(srv).fetch(srv.url("/big.txt"), max_bytes=100_000, truncate=True)
    assert got.body == text[:100_000]


@pytest.mark.parametrize("url", ["https://a..b.example/", "http://" + "a" * 64 + ".example/", "http://h.test:0/"])
def test_hosts_and_ports_no_request_may_use(srv, url):
    f = fetcher(srv, connect_to=(f"*=127.0.0.1:{srv.port}",))
    assert fails(f, url)[0] == "invalid_url"


def test_a_cached_dns_failure_is_raised_anew_each_time():
    resolver = Resolver()
    seen = []
    for _ in range(3):
        with pytest.raises(FetchError) as e:
            resolver.resolve("no-such-host.invalid", 80)
        seen.append(e.value)
    assert len({id(x) for x in seen}) == 3 and all(x.reason == "dns_error" for x in seen)
