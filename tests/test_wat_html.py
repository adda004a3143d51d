"""WAT link extraction (any JSON layout, both attribute styles) and WARC HTML decoding.
tests/test_wat_routes.py has the property tests of the WAT reader."""

import orjson
import pytest

from conftest import shared_sample
from laion5b_spark.extract.archive import RawRecord
from laion5b_spark.extract.html import codec_for, decode_body, page_from_html
from laion5b_spark.extract.wat import InvalidWat, WatStyle, page_from_wat


def wat_record(links, head=None, url="http://p.example/a.html", raw=None):
    doc = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": url}, "Payload-Metadata": {
        "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": head or {}, "Links": links}}}}}
    data = raw if raw is not None else orjson.dumps(doc)
    return RawRecord(0, "metadata", url, "application/json", data, 0, len(data))


def as_tuples(page):
    return (page.url, page.base, page.license,
            [(i.src, i.alt, i.width, i.height) for i in page.images])


LINKS = [
    {"path": "A@/href", "url": "/x", "text": "x {braces} here"},
    {"path": "IMG@/src", "url": "a.jpg", "alt": "A cat"},
    {"path": "IMG@/src", "url": "b.jpg"},
    {"path": "IMG@/src", "url": "c.jpg", "alt": "quote \" and \\ backslash é"},
    {"path": "A@/href", "url": "https://creativecommons.org/licenses/by/4.0/", "rel": "license"},
]


def test_links_base_and_license():
    rec = wat_record(LINKS, head={"Base": "http://b.example/", "Title": "t"})
    page = page_from_wat(rec)
    assert page.base == "http://b.example/" and page.license.startswith("https://creativecommons.org/")
    assert [(i.src, i.alt) for i in page.images] == [("a.jpg", "A cat"), ("b.jpg", None),
                                                     ("c.jpg", 'quote " and \\ backslash é')]


def test_any_key_order_gives_the_same_page():
    links = [dict(reversed(list(link.items()))) for link in LINKS]
    assert as_tuples(page_from_wat(wat_record(links))) == as_tuples(page_from_wat(wat_record(LINKS)))


def test_brace_inside_alt():
    links = [{"path": "IMG@/src", "url": "a.jpg", "alt": "a } b { c"}, {"alt": "x}", "path": "IMG@/src", "url": "b"}]
    page = page_from_wat(wat_record(links))
    assert [i.alt for i in page.images] == ["a } b { c", "x}"]


def test_spaced_json_uses_the_full_parser():
    raw = orjson.dumps({"Envelope": {"Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
        "Links": [{"path": "IMG@/src", "url": "a.jpg", "alt": "A dog"}]}}}}}, option=orjson.OPT_INDENT_2)
    page = page_from_wat(wat_record(None, raw=raw))
    assert [(i.src, i.alt) for i in page.images] == [("a.jpg", "A dog")]


def test_records_without_html_and_invalid_json():
    no_html = orjson.dumps({"Envelope": {"Payload-Metadata": {"Actual-Content-Type": "application/http"}}})
    assert page_from_wat(wat_record(None, raw=no_html)) is None
    with pytest.raises(InvalidWat):
        page_from_wat(wat_record(None, raw=b'{"Envelope": {"HTML-Metadata": {"Links": [ {"path":"IMG@/src", '))
    with pytest.raises(InvalidWat):
        page_from_wat(wat_record(None, raw=b"\x00\x01 binary garbage"))


@pytest.mark.parametrize("label,codec", [("gb2312", "gb18030"), ("GBK", "gb18030"), ("iso-8859-1", "cp1252"),
                                         ("Shift_JIS", "cp932"), ("utf8", "utf-8"), ("windows-1251", "cp1251"),
                                         ("x-unknown", None), (None, None)])
def test_whatwg_labels(label, codec):
    assert codec_for(label) == codec


@pytest.mark.parametrize("text,charset,declared", [
    ("Красный диван в светлой гостиной", "windows-1251", "header"),
    ("海辺の夕日と白い灯台の風景。手作りの木製テーブル", "shift_jis", "meta"),
    ("海边日落时的白色灯塔，手工制作的木制桌椅套装", "gb2312", "header"),
    ("Gâteau au chocolat fait maison — café", "windows-1252", "meta"),
    ("Ein rotes Sofa für das Wohnzimmer, schön und groß", "utf-8", "none"),
])
def test_decode_body_no_replacement_chars(text, charset, declared):
    meta = f'<meta charset="{charset}">' if declared == "meta" else ""
    body = f"<html><head>{meta}</head><body><p>{text}</p><img src=a.jpg alt='{text}'></body></html>"
    raw = body.encode(charset)
    decoded, codec, clean = decode_body(raw, charset if declared == "header" else None)
    assert clean and "\ufffd" not in decoded and text in decoded
    page = page_from_html(decoded, "http://p/")
    assert page.images[0].alt == text


def test_gb2312_page_with_gbk_only_characters():
    # pages labelled gb2312 routinely use GBK characters: decoding as gb18030 (as browsers do) keeps them
    text = "镕基和喆"  # not in GB2312
    raw = f"<img src=a.jpg alt='{text}'>".encode("gb18030")
    decoded, _, clean = decode_body(raw, "gb2312")
    assert clean and page_from_html(decoded, "http://p/").images[0].alt == text


def test_binary_body_labelled_html_does_not_raise():
    raw = bytes(range(256)) * 40
    decoded, _, _ = decode_body(raw, None)
    assert page_from_html(decoded, "http://p/").images == []


def test_html_base_license_and_attributes():
    html = ('<html><head><base href="/static/"><link rel="License" href="/lic.html"></head><body>'
            '<img src="a.jpg" alt="One &amp; two" width="300" height="200px"><img src="b.jpg">'
            '<img alt="no src"><a rel="license" href="https://cc.org/">cc</a></body></html>')
    page = page_from_html(html, "http://p.example/x/y.html")
    assert page.base == "/static/" and page.license == "/lic.html"
    assert [(i.src, i.alt, i.width, i.height) for i in page.images] == [("a.jpg", "One & two", "300", "200px"),
                                                                       ("b.jpg", None, None, None)]


def test_real_cc_page_decoding():
    # cc-excerpt holds cp1251 and gb2312 pages with and without declared charsets
    import io

    from fastwarc.warc import ArchiveIterator

    data = shared_sample("cc-excerpt.warc.gz").read_bytes()
    for rec in ArchiveIterator(io.BytesIO(data), parse_http=True):
        if str(rec.record_type) == "response" and "html" in (rec.http_content_type or ""):
            text, codec, clean = decode_body(rec.reader.read(), rec.http_charset)
            assert clean, (rec.headers.get("WARC-Target-URI"), codec)
            assert text.count("\ufffd") == 0


def test_wat_attribute_text_as_its_producer_left_it():
    # an old-style WAT (before June 2019) keeps "&amp;": decoded here, as the WARC route's parser does
    links = [{"path": "IMG@/src", "url": "http://i.example/a.jpg?w=1&amp;h=2", "alt": "A &amp; B"},
             {"path": "A@/href", "url": "https://cc.org/by?x=1&amp;y=2", "rel": "license"}]
    rec = wat_record(links, head={"Base": "http://b.example/?a=1&amp;b=2"})
    page = page_from_wat(rec, WatStyle(attributes_decoded=False))
    assert page.images[0].src == "http://i.example/a.jpg?w=1&h=2"
    assert page.images[0].alt == "A &amp; B" and page.images[0].alt_is_raw_html  # decoded at caption cleanup
    assert page.license == "https://cc.org/by?x=1&y=2" and page.base == "http://b.example/?a=1&b=2"
    # today's WATs are decoded already: "&amp;" there was "&amp;amp;" in the page, and stays
    page = page_from_wat(rec)
    assert page.images[0].src == "http://i.example/a.jpg?w=1&amp;h=2" and not page.images[0].alt_is_raw_html
    assert page.license == "https://cc.org/by?x=1&amp;y=2" and page.base == "http://b.example/?a=1&amp;b=2"


def test_odd_json_types_do_not_raise():
    links = [{"path": "IMG@/src", "url": ["not", "a", "string"], "alt": "x"},
             {"path": "IMG@/src", "url": "ok.jpg", "alt": 5, "width": 300},
             {"path": "A@/href", "rel": "license", "url": ["x"]}]
    page = page_from_wat(wat_record(links))
    # an img link without a usable url is still an img tag: counted, then dropped as invalid_url
    assert [(i.src, i.alt, i.width) for i in page.images] == [("", "x", None), ("ok.jpg", None, "300")]
    assert page.license is None
