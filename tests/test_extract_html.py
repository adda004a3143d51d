"""The WARC route's HTML handling (issue 16): a per-record parse budget, and charset labels as browsers read them."""

import io
import os
import resource
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from conftest import shared_sample
from laion5b_spark.accounting import ErrorSamples
from laion5b_spark.config import load_config
from laion5b_spark.extract.html import codec_for, decode_body, page_from_html
from laion5b_spark.extract.settings import ExtractSettings
from laion5b_spark.extract.unit import extract_unit
from laion5b_spark.job import Unit, UnitContext

GOOD = b"<html><body><img src='/cat.jpg' alt='A sleepy orange cat'></body></html>"


def _warc(path, pages):
    """One response per (body, Content-Type header, extra HTTP headers)."""
    with open(path, "wb") as out:
        w = WARCWriter(out, gzip=True)
        for k, (body, ctype, extra) in enumerate(pages):
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype), *extra], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"http://p{k}.example/", "response", payload=io.BytesIO(body),
                                                http_headers=http))
    return path


def _run(path):
    cfg = load_config(None, ["extract.language_detection=false"])
    r = extract_unit(Unit(key=str(path), source=str(path)),
                     UnitContext(None, ExtractSettings.from_config(cfg), ErrorSamples()))
    for ledger in r.ledgers.values():
        assert ledger.balanced(), ledger.describe()
    return r


# --- class 4: no record costs more than ~1 s (lexbor runs in a guarded process) ---

def _img_with_attributes(n, sep=" ", fmt="a{}=1"):
    return ("<img src='/x.jpg' alt='many attributes' " + sep.join(fmt.format(i) for i in range(n)) + ">").encode()


PATHOLOGICAL = {  # shapes that make lexbor's tree builder quadratic, at sizes that took seconds to minutes
    "100k nested div": b"<div>" * 100_000,  # 21-31 s in the trial, 28 s here
    "nested ul li": b"<ul><li>" * 40_000,  # the li start tag walks the stack: ~11 s
    "spans then stray end tags": b"<span>" * 40_000 + b"</x>" * 40_000,  # ~5 s
    "100k attributes": _img_with_attributes(100_000),  # distinct attributes compared pairwise: ~19 s
    "100k valueless attributes": _img_with_attributes(100_000, fmt="a{}"),
    "100k slash-separated attributes": _img_with_attributes(100_000, sep="/", fmt="a{}"),
    # quoted values may hold '<' and '>': what looks like a tag end or an end tag there is neither
    "40k attributes holding '>'": _img_with_attributes(40_000, fmt='a{}=">"'),  # ~5 s
    "100k nested div, '</div>' in a title": b"<div title='</div>'>" * 100_000,  # ~3 s
}


@pytest.fixture
def quick_parse_limit(monkeypatch):
    """A 0.25 s limit: the guard is the same at any limit, and a refusal then costs ~0.3 s instead of ~1.1 s."""
    from laion5b_spark.extract import html

    monkeypatch.setattr(html, "MAX_PARSE_SECONDS", 0.25)
    return 0.25


def test_pathological_pages_are_counted_and_bounded_in_time(tmp_path, quick_parse_limit):
    pages = [(GOOD, "text/html", [])] + [(b"<html><body>" + body + GOOD, "text/html", [])
                                         for body in PATHOLOGICAL.values()]
    path = _warc(tmp_path / "bad.warc.gz", pages)
    def cpu() -> float:  # ours and the parser children's that ended (the budget kills them): CPU time, which a
        t = os.times()     # loaded test machine does not inflate as it does wall time
        return t.user + t.system + t.children_user + t.children_system

    t0 = cpu()
    r = _run(path)
    took = cpu() - t0
    assert r.ledgers["records"].dropped["record_too_complex"] == len(PATHOLOGICAL)
    assert r.rows.column("page_url").to_pylist() == ["http://p0.example/"]  # the good page is kept
    assert took < len(PATHOLOGICAL) * 1.0, took  # before the budget: minutes (each shape alone took 5-31 s)
    samples = [e for e in r.errors.samples if e["reason"] == "record_too_complex"]
    assert len(samples) == min(len(PATHOLOGICAL), ErrorSamples().per_reason)  # (samples are capped per reason)
    assert all("CPU" in e["message"] for e in samples)


def _attribute_names_holding_lt(groups, per=40):
    parts, k = ["<html><body><img "], 0
    for i in range(groups):
        parts.append(f"a<{i} ")
        for _ in range(per):
            parts.append(f"q{k:x} ")
            k += 1
    return "".join(parts) + ">"


# review 16, finding 1: pages the parse-step estimate (before lexbor) cleared or underrated that cost lexbor
# 10-13 s each here (b: 2.9 GB as well)
ESTIMATE_BYPASSES = {
    "a '<' in attribute names splits the stretches": lambda: _attribute_names_holding_lt(1_500),
    "b formatting elements reconstructed": lambda: "<body>" + "".join(f"<p><b id={k}>x" for k in range(4_000)),
    "c style in svg is not raw text": lambda: "<body><svg><style>" + "<g>" * 40_000 + "</x>" * 40_000,
    "d void end tags close nothing": lambda: "<body>" + "<div></img>" * 80_000,
    "e '--!>' ends a comment": lambda: "<body><!-- --!>" + "<div>" * 80_000 + "-->",
    "f noscript is markup (scripting off)": lambda: "<body><noscript>" + "<div>" * 80_000 + "</noscript>",
    "g vertical tab is no HTML whitespace": lambda: "<body><div\x0ba=\">" + "<div>" * 80_000 + "\">",
}


@pytest.mark.parametrize("shape", sorted(ESTIMATE_BYPASSES))
def test_estimate_bypasses_are_refused_within_the_limit(shape):
    from laion5b_spark.extract.html import RecordTooComplex

    html = ESTIMATE_BYPASSES[shape]()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(RecordTooComplex, match="CPU|memory"):
        page_from_html(html, "http://p/")
    took = time.perf_counter() - t0
    assert took < 5.0, f"{took:.1f} s"  # the 1 s limit, with room for a loaded machine; before: 10-13 s
    # the tree is built in another process: this one does not grow (before, b took 2.9 GB here)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 300 << 10


# building blocks of the shapes that make a tree builder super-linear, and of markup that hides tags from a
# scanner that does not tokenize exactly as HTML does
_PREFIXES = ["", "<svg>", "<math>", "<svg><style>", "<svg><title>", "<noscript>", "<!-- --!>", "<!-->",
             "<div\x0ba=\">", "<div\x0ca=\">", "<img a='", "<table>", "<select>", "<template>", "<textarea>",
             "<title>", "<script>", "<!--", "<?x ", "</ y", "<svg><![CDATA[", "<plaintext>", "<frameset>"]
_BLOCKS = ["<div>", "<span>", "<ul><li>", "<table><tr><td>", "<p>", "<b>", "<b id={k}>", "<a href={k}>x",
           "<font size={k}>", "<p><i class=c{k}>x", "<div>x", "</x>", "</p>", "</img>", "</div>", "</b>", "<g>",
           "<mi>", "<object>", "<img a{k}=1 ", "a<{k} ", "<td>", "<option>", "<h1>", "<nobr>", "<button>",
           "<table>x", "<svg>", "</svg>", "<foreignObject>", "<li>", "<dd>", "<form>", "<select>", "<marquee>"]


@st.composite
def _pathological_pages(draw):
    prefix = draw(st.sampled_from(_PREFIXES))
    parts = []
    for block in draw(st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=3)):
        n = draw(st.sampled_from([1, 30, 1_000, 10_000, 40_000]))  # (st.integers would favour small counts)
        parts.append("".join(block.format(k=k) for k in range(n)) if "{k}" in block else block * n)
    if draw(st.booleans()):
        parts = [p for pair in zip(parts, parts) for p in pair]  # a shape twice: open, then walk again
    return "<html><body>" + prefix + "".join(parts) + GOOD.decode()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_pathological_pages())
def test_any_pathological_markup_is_parsed_or_refused_in_bounded_time(quick_parse_limit, html):
    from laion5b_spark.extract.html import RecordTooComplex

    t0 = time.process_time(), time.perf_counter()
    try:
        page_from_html(html, "http://p/")
    except RecordTooComplex:
        pass
    cpu, wall = time.process_time() - t0[0], time.perf_counter() - t0[1]
    # this process only encodes the page and waits; the parser process is stopped at the limit (+ ~50 ms)
    assert wall < quick_parse_limit + 2.0, f"{wall:.2f} s for {len(html):,} characters"
    assert cpu < 1.0, cpu


def test_over_the_memory_limit_is_refused(monkeypatch):
    from laion5b_spark.extract import html

    monkeypatch.setattr(html, "MAX_PARSE_MEMORY", 64 << 20)
    html._PARSER.close()  # (the limit is set when the parser process starts)
    try:
        page = "<body>" + "".join(f"<p><b id={k}>x" for k in range(1_000))  # 500,000 elements, ~230 MB
        with pytest.raises(html.RecordTooComplex, match="memory"):
            page_from_html(page, "http://p/")
        assert page_from_html(GOOD.decode(), "http://p/").images[0].alt == "A sleepy orange cat"
    finally:
        html._PARSER.close()


def test_a_parser_process_that_died_is_replaced():
    import os
    import signal

    from laion5b_spark.extract import html

    assert page_from_html(GOOD.decode(), "http://p/").images
    os.kill(html._PARSER.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    time.sleep(0.05)
    assert page_from_html(GOOD.decode(), "http://p/").images[0].src == "/cat.jpg"


def test_a_forked_process_gets_its_own_parser_process():
    import os

    from laion5b_spark.extract import html

    assert page_from_html(GOOD.decode(), "http://p/").images
    parents = html._PARSER.pid
    pid = os.fork()
    if pid == 0:  # (the pipes to the parent's parser process must not be shared: replies would cross)
        ok = False
        try:
            ok = page_from_html(GOOD.decode(), "http://c/").images[0].src == "/cat.jpg" and \
                html._PARSER.pid not in (None, parents)
        finally:
            html._PARSER.close()
            os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert html._PARSER.pid == parents and page_from_html(GOOD.decode(), "http://p/").images


@pytest.mark.parametrize("shape", ["div", "ul", "span", "attrs"])
def test_moderate_nesting_and_attributes_still_parse(shape):
    # far beyond real pages (deepest real sample page: 36; most attributes on one tag: 9), and still parsed
    body = {"div": "<div>" * 5_000, "ul": "<ul><li>" * 2_000, "span": "<span>" * 5_000 + "</x>" * 5_000,
            "attrs": _img_with_attributes(2_000).decode()}[shape]
    page = page_from_html("<html><body>" + body + GOOD.decode(), "http://p/")
    assert page.images[-1].alt == "A sleepy orange cat"


REAL_WARCS = ("cc-excerpt.warc.gz", "clipped.warc.gz", "example.warc.gz", "example-bad-non-chunked.warc.gz",
              "example-resource.warc.gz", "example-space-in-target-uri.warc.gz", "example-trunc.warc",
              "example-wget-bad-target-uri.warc.gz", "example-wrong-chunks.warc.gz")


def _html_pages(path):
    from fastwarc.warc import ArchiveIterator

    with open(path, "rb") as f:
        try:
            for rec in ArchiveIterator(f, parse_http=True):
                if str(rec.record_type).endswith("response") and "html" in (rec.http_content_type or ""):
                    yield decode_body(rec.reader.read(), rec.http_charset)[0]
        except OSError:  # example-trunc.warc ends inside a record
            return


def test_real_pages_parse_far_below_the_limit_and_as_lexbor_parses_them_in_process():
    from selectolax.lexbor import LexborHTMLParser

    from laion5b_spark.extract.html import MAX_PARSE_SECONDS, page_fields

    pages, slowest = 0, 0.0
    for name in REAL_WARCS:
        for text in _html_pages(shared_sample(name)):
            t0 = time.process_time()
            LexborHTMLParser(text)
            slowest = max(slowest, time.process_time() - t0)
            page = page_from_html(text, "http://p/")
            base, license_url, images = page_fields(text.encode("utf-8", "ignore"))
            assert (page.base, page.license) == (base, license_url)
            assert [(i.src, i.alt, i.width, i.height) for i in page.images] == images
            pages += 1
    assert pages == 22
    assert slowest < MAX_PARSE_SECONDS / 20, slowest  # real pages take milliseconds


@pytest.mark.parametrize("name", REAL_WARCS)
def test_no_real_page_is_refused(name):
    r = _run(shared_sample(name))
    assert "record_too_complex" not in r.ledgers["records"].dropped
    if name == "cc-excerpt.warc.gz":
        assert r.rows.num_rows == 24


def test_no_sample_crawl_page_is_refused(tmp_path):
    import glob

    from laion5b_spark.sample.crawl import make_sample_crawl

    make_sample_crawl(str(tmp_path), files=1, pages_per_file=300, seed=7)
    (warc,) = glob.glob(str(tmp_path / "**" / "warc" / "*.warc.gz"), recursive=True)
    r = _run(warc)
    assert r.info["html_pages"] == 300
    assert "record_too_complex" not in r.ledgers["records"].dropped
    assert r.rows.num_rows > 1_000


# --- class 5: charset labels as browsers read them ---

ASCII_PAGE = b"<html><head><title>t</title></head><body><img src='/a.jpg' alt='A red bicycle by the sea'></body></html>"


@pytest.mark.parametrize("label", ["undefined", "cp037", "cp1026", "ebcdic-cp-us", "punycode", "rot13", "base64",
                                   "idna", "hex", "zlib", "x-nonsense", "utf-7", "utf-32", ""])
def test_labels_browsers_do_not_know_are_ignored(label, tmp_path):
    path = _warc(tmp_path / "x.warc.gz", [(ASCII_PAGE, f"text/html; charset={label}", []),
                                          (ASCII_PAGE.replace(b"<head>", f'<head><meta charset="{label}">'.encode()),
                                           "text/html", [])])
    r = _run(path)
    assert r.ledgers["records"].rows_out == 2, r.ledgers["records"].describe()
    assert r.rows.column("text").to_pylist() == ["A red bicycle by the sea"] * 2
    assert codec_for(label) is None


def test_unknown_http_label_lets_the_meta_label_decide():
    text = "Красный диван в светлой гостиной"
    raw = f'<html><head><meta charset="windows-1251"></head><body><img src=a.jpg alt="{text}"></body></html>'
    decoded, codec, clean = decode_body(raw.encode("cp1251"), "cp037")
    assert codec == "cp1251" and clean and page_from_html(decoded, "http://p/").images[0].alt == text


@pytest.mark.parametrize("label,codec", [
    ("unicode-1-1-utf-8", "utf-8"), ("x-unicode20utf8", "utf-8"), (" UTF-8 ", "utf-8"), ('"utf-8"', "utf-8"),
    ("ascii", "cp1252"), ("us-ascii", "cp1252"), ("ansi_x3.4-1968", "cp1252"), ("iso_8859-1:1987", "cp1252"),
    ("latin1", "cp1252"), ("iso-8859-9", "cp1254"), ("tis-620", "cp874"), ("iso-8859-11", "cp874"),
    ("koi", "koi8-r"), ("koi8-ru", "koi8-u"), ("mac", "mac-roman"), ("x-mac-ukrainian", "mac-cyrillic"),
    ("gb_2312", "gb18030"), ("gbk", "gb18030"), ("big5", "big5hkscs"), ("ms932", "cp932"), ("windows-949", "cp949"),
    ("ks_c_5601-1987", "cp949"), ("csiso2022jp", "iso2022_jp"), ("x-euc-jp", "euc_jp"), ("iso-8859-8-i", "iso8859-8"),
    ("logical", "iso8859-8"), ("dos-874", "cp874"), ("csunicode", "utf-16-le"), ("unicodefffe", "utf-16-be"),
    ("x-user-defined", "x-user-defined"), ("iso-2022-kr", "replacement"), ("hz-gb-2312", "replacement"),
    # real Python codecs that no browser accepts as labels
    ("latin-1", None), ("cp037", None), ("utf_8", None), ("cp437", None), ("iso-8859-12", None), ("utf-32", None),
])
def test_whatwg_label_table(label, codec):
    assert codec_for(label) == codec


def test_x_user_defined_maps_high_bytes_to_the_private_use_area():
    decoded, codec, clean = decode_body(b"<p>ab\x80\xff</p>", "x-user-defined")
    assert codec == "x-user-defined" and clean and decoded == "<p>ab\uf780\uf7ff</p>"


def test_replacement_encoding_loses_the_page_as_browsers_do(tmp_path):
    # iso-2022-kr, hz-gb-2312, ... decode to a single U+FFFD in browsers (a guard against script injection)
    path = _warc(tmp_path / "r.warc.gz", [(ASCII_PAGE, "text/html; charset=iso-2022-kr", [])])
    r = _run(path)
    assert r.ledgers["records"].failed["decode_error"] == 1
    assert "replacement" in r.errors.samples[0]["message"]


def test_meta_utf16_means_utf8_as_the_html_prescan_says():
    text = "Gâteau au chocolat — café"
    raw = f'<html><head><meta charset="utf-16"></head><body><img src=a.jpg alt="{text}"></body></html>'.encode()
    decoded, codec, _ = decode_body(raw, None)
    assert codec == "utf-8" and page_from_html(decoded, "http://p/").images[0].alt == text


# WHATWG's windows-874 and windows-1250..1258 (encoding.spec.whatwg.org/index-windows-*.txt): the bytes Microsoft's
# tables leave undefined in 0x80-0x9F are the C1 controls of the same value; windows-1255 has 0xCA = U+05BA; the
# other bytes undefined there are errors in browsers too (review 16, finding 12)
_C1_DEFINED_BY_WHATWG = {
    "windows-874": [*range(0x81, 0x85), *range(0x86, 0x91), *range(0x98, 0xA0)],
    "windows-1250": [0x81, 0x83, 0x88, 0x90, 0x98],
    "windows-1251": [0x98],
    "windows-1252": [0x81, 0x8D, 0x8F, 0x90, 0x9D],
    "windows-1253": [0x81, 0x88, 0x8A, *range(0x8C, 0x91), 0x98, 0x9A, *range(0x9C, 0xA0)],
    "windows-1254": [0x81, *range(0x8D, 0x91), 0x9D, 0x9E],
    "windows-1255": [0x81, 0x8A, *range(0x8C, 0x91), 0x9A, *range(0x9C, 0xA0)],
    "windows-1257": [0x81, 0x83, 0x88, 0x8A, 0x8C, 0x90, 0x98, 0x9A, 0x9C, 0x9F],
    "windows-1258": [0x81, 0x8A, *range(0x8D, 0x91), 0x9A, 0x9D, 0x9E],
}
_UNDEFINED_BY_WHATWG = {"windows-874": [*range(0xDB, 0xDF), *range(0xFC, 0x100)], "windows-1253": [0xAA, 0xD2, 0xFF],
                        "windows-1255": [*range(0xD9, 0xE0), 0xFB, 0xFC, 0xFF], "windows-1257": [0xA1, 0xA5]}


@pytest.mark.parametrize("label", sorted(_C1_DEFINED_BY_WHATWG))
def test_windows_codepages_decode_their_c1_bytes_as_whatwg_does(label):
    c1 = bytes(_C1_DEFINED_BY_WHATWG[label])
    text = "<p>Prix " + "".join(map(chr, c1)) + "</p>"
    for http, body in ((label, b"<p>Prix " + c1 + b"</p>"),  # declared in HTTP, or in a <meta>
                       (None, f'<meta charset="{label}">'.encode() + b"<p>Prix " + c1 + b"</p>")):
        decoded, codec, clean = decode_body(body, http)
        assert (decoded.endswith(text), codec, clean) == (True, codec_for(label), True)


def test_windows_1255_holam_haser_and_the_bytes_whatwg_leaves_undefined():
    assert decode_body(b"\xe5\xca", "windows-1255")[0] == "\u05d5\u05ba"  # vav + holam haser for vav
    for label, undefined in _UNDEFINED_BY_WHATWG.items():
        for b in undefined:
            _, codec, clean = decode_body(b"<p>" + bytes([b]) + b"</p>", label)
            assert not (codec == codec_for(label) and clean), (label, hex(b))  # an error, as in browsers


def test_single_byte_tables_equal_lexbors_whatwg_decoders():
    # lexbor (bundled with selectolax) implements the WHATWG indexes: all 128 upper bytes of the ten code pages
    import ctypes
    import glob
    import os

    import selectolax

    from laion5b_spark.extract.html import _decode

    (lib,) = glob.glob(os.path.join(os.path.dirname(selectolax.__file__), "lexbor*.so"))
    so = ctypes.CDLL(lib)
    for label in ["windows-874"] + [f"windows-125{i}" for i in range(9)]:
        name = f"lxb_encoding_decode_{label.replace('-', '_')}_single"
        if not hasattr(so, name):
            pytest.skip(f"{name} not exported by this selectolax build")
        decode = getattr(so, name)
        decode.restype = ctypes.c_uint32
        decode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_char_p]
        for b in range(0x80, 0x100):
            buf = ctypes.create_string_buffer(bytes([b]), 1)
            cp = decode(None, ctypes.byref(ctypes.c_char_p(ctypes.addressof(buf))),
                        ctypes.c_char_p(ctypes.addressof(buf) + 1))
            try:
                ours = ord(_decode(bytes([b]), codec_for(label), "strict"))
            except UnicodeDecodeError:
                ours = None
            assert ours == (None if cp > 0x10FFFF else cp), (label, hex(b))
