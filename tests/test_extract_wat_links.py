"""WAT link arrays: the comprehension route of wat._read_links (images and rel links picked first, then read)
gives what one in-order pass over every link gives, whatever the links hold; and a gzipped ARC file is reported
by the member reader's first-step path as it was by its general loop."""

import gzip
import io
import random

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laion5b_spark.extract.archive import FileEvent, RawRecord, iter_records
from laion5b_spark.extract.page import Image, Page
from laion5b_spark.extract.wat import WatStyle, _read_links, _read_links_any, page_from_wat

PAGE = "http://p.example/d/a.html"
_text = st.lists(st.sampled_from(["a", " ", "&amp;", "&#108;", "\x00", "license", "LICENSE", "IMG@/src"]),
                 max_size=5).map("".join)
_scalar = st.one_of(_text, st.none(), st.integers(-3, 3), st.booleans())
_path = st.one_of(st.sampled_from(["IMG@/src", "A@/href", "LINK@/href"]), _scalar)
_fields = {"url": _scalar, "alt": _scalar, "rel": st.one_of(st.sampled_from(["license", "x License"]), _scalar),
           "width": _scalar, "height": _scalar}
_link = st.fixed_dictionaries({"path": _path}, optional=_fields)  # what Common Crawl writes: every link has a path
_odd = st.one_of(st.fixed_dictionaries({}, optional=_fields), _scalar, st.lists(_scalar, max_size=1))
_links = st.one_of(st.lists(_link, max_size=8), st.lists(st.one_of(_link, _link, _odd), max_size=8))


def _page(arrays, raw, read):
    page = Page(PAGE)
    for links in arrays:  # Head.Link, then Links: one page, as page_from_wat reads them
        read(links, page, raw)
    return page.license, [tuple(i) for i in page.images], [type(i) for i in page.images]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_links, min_size=1, max_size=2), st.booleans())
def test_picked_links_read_as_one_pass_over_every_link(arrays, raw):
    assert _page(arrays, raw, _read_links) == _page(arrays, raw, _read_links_any)


def _wat_page(head_links, links, decoded=True):
    doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": PAGE}, "Payload-Metadata": {
        "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": {"Link": head_links}, "Links": links}}}}}
    payload = orjson.dumps(doc)
    return page_from_wat(RawRecord(0, "metadata", "", "application/json", payload, 0, len(payload)),
                         WatStyle(decoded))


def test_license_and_images_in_document_order():
    cc = "https://creativecommons.org/licenses/by/4.0/"
    for odd in ({"url": "http://i.example/no-path.jpg", "rel": "license"},  # not an image, and a license link
                {"path": "A@/href", "url": "http://i.example/no-path.jpg", "rel": "license"}):
        page = _wat_page(
            [{"path": "LINK@/href", "url": "http://h.example/css", "rel": "stylesheet"}],
            [{"path": "IMG@/src", "url": "http://i.example/0.jpg", "alt": "a", "rel": "license"},  # not a license
             {"path": "A@/href", "url": "http://a.example/", "rel": "nofollow"}, odd,
             {"path": "IMG@/src", "url": "http://i.example/1.jpg", "width": 20},
             {"path": "A@/href", "url": cc, "rel": "license"}])
        assert page.url == PAGE  # (the record's header has none: the document's)
        assert page.license == "http://i.example/no-path.jpg"
        assert [(i.src, i.alt, i.width) for i in page.images] == [("http://i.example/0.jpg", "a", None),
                                                                   ("http://i.example/1.jpg", None, "20")]
        assert all(type(i) is Image for i in page.images)
    # the Head's license comes first; old-style (raw) attribute text is decoded, rel included
    page = _wat_page([{"path": "LINK@/href", "url": "http://h.example/l?a=1&amp;b=2", "rel": "&#108;icense"}],
                     [{"path": "A@/href", "url": cc, "rel": "license"},
                      {"path": "IMG@/src", "url": "http://i.example/a.jpg?x=1&amp;y=2", "alt": "A &amp; B"}],
                     decoded=False)
    assert page.license == "http://h.example/l?a=1&b=2"
    assert [(i.src, i.alt, i.alt_is_raw_html) for i in page.images] == [("http://i.example/a.jpg?x=1&y=2",
                                                                         "A &amp; B", True)]


def test_gzipped_arc_file_is_unsupported_whatever_its_first_member_size():
    # inflated in the member reader's first step, and in several (incompressible: more than a step's input)
    for body in (b"filedesc://x.arc 0.0.0.0 20000101000000 text/plain 76\n",
                 b"filedesc://x.arc\n" + random.Random(0).randbytes(100_000)):
        data = gzip.compress(body, mtime=0) + gzip.compress(b"http://a.example/ 1.2.3.4 2000 text/html 3\nabc\n")
        items = list(iter_records(io.BufferedReader(io.BytesIO(data)), 1 << 20))
        assert [(type(i), i.reason) for i in items] == [(FileEvent, "unsupported_format")], items
