"""Image links from WARC HTML responses: decode the body right, then read <img>, <base> and rel=license.

Charset order (as browsers): byte-order mark, HTTP ``Content-Type`` charset, ``<meta charset>`` /
``http-equiv`` in the first 4 KB, then statistical detection. Only WHATWG encoding labels count
(https://encoding.spec.whatwg.org/#names-and-labels): a label browsers do not know (``undefined``, ``cp037``,
``punycode``, ...) is ignored, as browsers ignore it, and the next source decides - Python knows many codecs no
browser would apply to a page (EBCDIC, punycode, rot13, its ``undefined`` codec that always raises). Each WHATWG
encoding decodes with the Python codec closest to what a browser does (``gb2312`` as gb18030, ``iso-8859-1`` as
cp1252, ``shift_jis`` as cp932, ...), which is what keeps legacy CJK and Cyrillic pages free of U+FFFD.
``x-user-defined`` maps bytes 0x80-0xFF to U+F780-U+F7FF; the ``replacement`` encoding (``iso-2022-kr``,
``hz-gb-2312``, ...) shows browsers nothing of the page, so neither does it us (decode_error).

Parsing has a budget (``parse_steps``): lexbor builds the tree in time quadratic in some shapes no real page
has - deep nesting walked by later tags, thousands of attributes on one tag - so such a record is counted as
``record_too_complex`` instead of costing seconds to minutes.
"""

from __future__ import annotations

import codecs
import re

import numpy as np
from resiliparse.parse.encoding import detect_encoding
from selectolax.lexbor import LexborHTMLParser

from .page import Image, Page

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)

# WHATWG encoding -> (Python codec, its labels), from https://encoding.spec.whatwg.org/encodings.json
_ENCODINGS = {
    "UTF-8": ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    "IBM866": ("cp866", "866 cp866 csibm866 ibm866"),
    "ISO-8859-2": ("iso8859-2", "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 "
                                "latin2"),
    "ISO-8859-3": ("iso8859-3", "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 "
                                "latin3"),
    "ISO-8859-4": ("iso8859-4", "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 "
                                "latin4"),
    "ISO-8859-5": ("iso8859-5", "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
                                "iso_8859-5:1988"),
    "ISO-8859-6": ("iso8859-6", "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
                                "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    "ISO-8859-7": ("iso8859-7", "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
                                "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    "ISO-8859-8": ("iso8859-8", "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
                                "iso88598 iso_8859-8 iso_8859-8:1988 visual"),
    "ISO-8859-8-I": ("iso8859-8", "csiso88598i iso-8859-8-i logical"),  # same bytes; logical order is display
    "ISO-8859-10": ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    "ISO-8859-13": ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    "ISO-8859-14": ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    "ISO-8859-15": ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    "ISO-8859-16": ("iso8859-16", "iso-8859-16"),
    "KOI8-R": ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    "KOI8-U": ("koi8-u", "koi8-ru koi8-u"),
    "macintosh": ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    "windows-874": ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    "windows-1250": ("cp1250", "cp1250 windows-1250 x-cp1250"),
    "windows-1251": ("cp1251", "cp1251 windows-1251 x-cp1251"),
    "windows-1252": ("cp1252", "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
                               "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252"),
    "windows-1253": ("cp1253", "cp1253 windows-1253 x-cp1253"),
    "windows-1254": ("cp1254", "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
                               "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254"),
    "windows-1255": ("cp1255", "cp1255 windows-1255 x-cp1255"),
    "windows-1256": ("cp1256", "cp1256 windows-1256 x-cp1256"),
    "windows-1257": ("cp1257", "cp1257 windows-1257 x-cp1257"),
    "windows-1258": ("cp1258", "cp1258 windows-1258 x-cp1258"),
    "x-mac-cyrillic": ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    "GBK": ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk"),
    "gb18030": ("gb18030", "gb18030"),
    "Big5": ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    "EUC-JP": ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    "ISO-2022-JP": ("iso2022_jp", "csiso2022jp iso-2022-jp"),
    "Shift_JIS": ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    "EUC-KR": ("cp949", "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
                        "ksc_5601 windows-949"),
    "replacement": ("replacement", "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement"),
    "UTF-16BE": ("utf-16-be", "unicodefffe utf-16be"),
    "UTF-16LE": ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    "x-user-defined": ("x-user-defined", "x-user-defined"),
}
_CODEC_OF_LABEL = {label: codec for codec, labels in _ENCODINGS.values() for label in labels.split()}
_NOT_PYTHON = ("replacement", "x-user-defined")
assert all(codecs.lookup(c).name == c for c in _CODEC_OF_LABEL.values() if c not in _NOT_PYTHON)
# x-user-defined: ASCII as is, bytes 0x80-0xFF to U+F780-U+F7FF (decoded as latin-1, then moved)
_X_USER_DEFINED = {c: 0xF780 + c - 0x80 for c in range(0x80, 0x100)}
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class ReplacementEncoding(ValueError):
    """The page's charset is WHATWG's replacement encoding: browsers show nothing of it."""


def codec_for(label: str | None) -> str | None:
    """Python codec (or "replacement" / "x-user-defined") of a WHATWG encoding label; None for any other label."""
    if not label:
        return None
    return _CODEC_OF_LABEL.get(label.strip("\t\n\f\r \"'").lower())


def decode_body(body: bytes, http_charset: str | None) -> tuple[str, str, bool]:
    """(text, codec, clean): clean is False when no candidate decoded strictly and bytes were replaced."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body.decode(codec, "replace"), codec, True
    candidates = []
    http = codec_for(http_charset)
    meta = codec_for(_meta_charset(body))
    # HTML's prescan: a <meta> cannot switch to UTF-16 (the bytes it was read from were ASCII) nor x-user-defined
    meta = {"utf-16-le": "utf-8", "utf-16-be": "utf-8", "x-user-defined": "cp1252"}.get(meta, meta)
    for c in (http, meta):
        if c and c not in candidates:
            candidates.append(c)
    if candidates and candidates[0] == "replacement":
        raise ReplacementEncoding(f"charset {http_charset if http else _meta_charset(body)!r} is WHATWG's "
                                  f"replacement encoding: browsers show nothing of this page")
    candidates = [c for c in candidates if c != "replacement"]
    for c in candidates:
        try:
            return _decode(body, c, "strict"), c, True
        except UnicodeDecodeError:
            continue
    detected = _detected(body)
    try:
        return _decode(body, detected, "strict"), detected, True
    except UnicodeDecodeError:
        chosen = candidates[0] if candidates else detected
        return _decode(body, chosen, "replace"), chosen, False


def _decode(body: bytes, codec: str, errors: str) -> str:
    if codec == "x-user-defined":
        return body.decode("latin-1").translate(_X_USER_DEFINED)
    return body.decode(codec, errors)


def _detected(body: bytes) -> str:
    label = detect_encoding(body) or ""
    codec = codec_for(label) or codec_for(label.replace("_", "-"))
    return codec if codec and codec not in _NOT_PYTHON else "utf-8"


def _meta_charset(body: bytes) -> str | None:
    m = _META_CHARSET.search(body, 0, 4096)
    return m.group(1).decode("ascii", "replace") if m else None


# --- the parse budget ---
# lexbor's tree builder walks the stack of open elements for each end tag and for start tags that check a scope
# (div, ul, li, p, h1, ...), and compares each new attribute of a tag with the ones before it. Nesting no real page
# has makes that quadratic: 100,000 nested <div>s took 28 s, 40,000 <ul><li> 11 s, 100,000 attributes on one <img>
# 19 s. parse_steps estimates those steps from the tags alone, before parsing. Measured here, the slowest shapes cost
# 1-7 ns a step, so MAX_PARSE_STEPS is ~0.1-0.7 s on one core. Real pages are far below: the deepest page of the
# real samples nests 36 elements, the most attributes on one tag is 9, and the highest estimate of a real page is
# under 1/1000 of the budget (tests/test_extract_html.py); 5,000 nested <div>s or 2,000 attributes still parse.
MAX_PARSE_STEPS = 100_000_000
# Bodies over this many bytes are not parsed (a gzip/br Content-Encoding can inflate a 1 MB record ~1000x); no
# Common Crawl page comes near it: Common Crawl truncates payloads at 1 MiB.
MAX_HTML_BYTES = 32 << 20
# Up to this many characters no shape can reach the budget, so the estimate is skipped: a tag takes >= 3
# characters ("<a>") and an attribute >= 2, so at most (L/3)**2/2 + (L/2)**2/2 = 7.2e7 steps.
SMALL_DOC = 20_000
# Nor, in one pass over the '<', a page with at most FEW_TAGS of them (the stack part stays under FEW_TAGS**2/2 =
# 5e7) whose stretches from one '<' to the next are short: a tag's attributes lie in its stretch (unless quoted
# values hide '<' in it), and beyond the ~250 one-byte names each distinct one takes >= 3 bytes, so the attribute
# part is under sum(stretch**2)/18 <= STRETCH_STEPS. It clears every real and sample page measured (the worst at
# 1/7 of STRETCH_STEPS) for ~30 us a 50 KB page; only the rest pays for the estimate.
FEW_TAGS = 10_000
STRETCH_STEPS = 50_000_000

_VOID = "area base basefont bgsound br col embed frame hr image img input keygen link meta param source track wbr"
# elements whose start tag closes an open one of their kind (or is implied away): a page of unclosed <p>, <li>,
# <td>, <option> is not deep; their end tags neither open nor close a level here
_SELF_CLOSING = "p li dt dd option optgroup tr td th thead tbody tfoot colgroup caption rb rt rp rtc html head body"
# elements whose content is text up to their end tag: '<' in them starts no tag
_RAW_TEXT = "script style textarea title xmp iframe noembed noframes noscript plaintext"
_NAME_BYTES = 8  # tag names are keyed by their first 8 characters


def _key(name: str) -> int:
    b = name.encode()[:_NAME_BYTES]
    return int.from_bytes(b.ljust(_NAME_BYTES, b"\0"), "little")


_KINDS = {**{_key(n): 1 for n in _VOID.split()}, **{_key(n): 2 for n in _SELF_CLOSING.split()},
          **{_key(n): 3 for n in _RAW_TEXT.split()}}
_KIND_KEYS = np.array(sorted(_KINDS), dtype=np.uint64)
_KIND_CODES = np.array([_KINDS[k] for k in sorted(_KINDS)] + [0], dtype=np.int8)  # 1 void, 2 flat, 3 raw text
_SHIFTS = np.arange(_NAME_BYTES, dtype=np.uint64) * np.uint64(8)
_ATTRIBUTE = re.compile(rb"""[^\s/>"'=][^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>]*+))?+""")
# a whole start tag, quoted values (which may hold '<' and '>') included; possessive: no backtracking
_START_TAG = re.compile(rb"""<[a-zA-Z][^\s/>]*+(?:[\s/]++|[^\s/>"'=][^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|"""
                        rb"""[^\s>]++))?+)*+>""")
_SEPARATORS = np.zeros(256, dtype=bool)
_SEPARATORS[[0x20, 0x09, 0x0A, 0x0C, 0x0D, 0x2F, 0x22, 0x27]] = True  # what can end one attribute: \s / " '
# a stretch without tags this long after a tag could be that tag's attributes (~12,000 of them, ~0.3 s)
_LONG_STRETCH = 24_000


class RecordTooComplex(ValueError):
    """A record over the per-record budget: counted as record_too_complex, not parsed."""


def parse_steps(html: str, raw: bytes | None = None, gates: bool = True) -> int:
    """Estimated tree-building steps for html: sum over tags of the open-element depth they may walk, plus the
    attribute pairs a tag's attributes are compared in; 0 for a page the gates clear (SMALL_DOC, FEW_TAGS and
    STRETCH_STEPS: under the budget whatever its shape). raw: the same document in an ASCII-compatible encoding
    (saves encoding it again). Tags in comments, script, style (...) or in quoted attribute values do not count."""
    if gates and len(html) <= SMALL_DOC:
        return 0
    b = raw if raw is not None else html.encode("utf-8", "surrogatepass")
    a = np.frombuffer(b, dtype=np.uint8)
    n = len(a)
    lt = (a == 0x3C).nonzero()[0]
    if gates and len(lt) <= FEW_TAGS:
        stretch = (lt[1:] - lt[:-1]).astype(np.float64)
        last = float(n - lt[-1]) if len(lt) else 0.0
        if (float(stretch @ stretch) + last * last) / 18 <= STRETCH_STEPS:
            return 0
    lt = lt[lt + 3 < n]
    nxt = a[lt + 1]
    is_end = nxt == 0x2F
    first = a[lt + 1 + is_end] | 0x20
    tag = (first >= 0x61) & (first <= 0x7A)
    comments = lt[(nxt == 0x21) & (a[lt + 2] == 0x2D) & (a[lt + 3] == 0x2D)]
    lt, is_end = lt[tag], is_end[tag]
    if not len(lt):
        return 0
    m = a[np.minimum((lt + 1 + is_end)[:, None] + np.arange(_NAME_BYTES), n - 1)]
    low = m | 0x20
    in_name = np.logical_and.accumulate(((low >= 0x61) & (low <= 0x7A)) | ((m >= 0x30) & (m <= 0x39)), axis=1)
    key = (np.where(in_name, low, 0).astype(np.uint64) << _SHIFTS).sum(axis=1)
    j = np.searchsorted(_KIND_KEYS, key)
    kind = _KIND_CODES[np.where(_KIND_KEYS[np.minimum(j, len(_KIND_KEYS) - 1)] == key, j, len(_KIND_KEYS))]
    gt = np.flatnonzero(a == 0x3E)
    # no tags in comments and raw text (in document order: a "<!--" in a script starts no comment)
    raw_start = (kind == 3) & ~is_end
    if len(comments) or raw_start.any():
        keep = _outside(lt, _text_spans(a, lt, is_end, key, raw_start, comments, gt))
        lt, is_end, kind = lt[keep], is_end[keep], kind[keep]
    # a tag ends at its first '>'; a '<' before that is in one of its attribute values, not a tag
    k = np.searchsorted(gt, lt)
    ends = np.where(k < len(gt), gt[np.minimum(k, len(gt) - 1)], n)
    inside = np.concatenate(([False], lt[1:] < np.maximum.accumulate(ends)[:-1]))
    if inside.any():
        lt, is_end, kind, ends = lt[~inside], is_end[~inside], kind[~inside], ends[~inside]
    # ... unless a quoted value holds a '>' (which may hide attributes and end tags): then find its real end
    attrs = np.zeros(len(lt), dtype=np.int64)
    stretch = np.concatenate((lt[1:], [n])) - ends
    check = (stretch >= _LONG_STRETCH) & ~is_end
    check |= _open_quotes(a, lt, ends) & ~is_end
    if check.any():
        spans, covered = [], -1
        for i in np.flatnonzero(check).tolist():
            s = int(lt[i])
            if s < covered:
                continue
            t = _START_TAG.match(b, s)
            if t is not None and t.end() - 1 > ends[i]:
                ends[i] = t.end() - 1
                spans.append((s + 1, t.end()))
                covered = t.end()
                attrs[i] = _distinct_attributes(b, s + 1, t.end() - 1)
        if spans:
            keep = _outside(lt, np.array(spans, dtype=np.int64))
            lt, is_end, kind, ends, attrs = lt[keep], is_end[keep], kind[keep], ends[keep], attrs[keep]
    # open elements before each tag: the elements it may walk
    step = np.where(is_end, -1, 1) * ((kind == 0) | (kind == 3) | ((kind == 1) & is_end))
    total = np.cumsum(step)
    depth = total - np.minimum(np.minimum.accumulate(total), 0)  # (an unmatched end tag closes nothing)
    steps = int(depth[:-1].sum())
    # attributes: a tag of L bytes has fewer than L/2; count them where that could matter
    length = np.where(is_end | (attrs > 0), 0, ends - lt)
    if int((length.astype(np.float64) ** 2).sum()) // 8 > MAX_PARSE_STEPS // 10:
        long_tags = np.flatnonzero(length > 2_000)
        for i in long_tags.tolist():  # few: data: URIs, inline SVG paths ... and attacks
            attrs[i] = _distinct_attributes(b, int(lt[i]) + 1, int(ends[i]))
        length[long_tags] = 0
        if int((length.astype(np.float64) ** 2).sum()) // 8 > MAX_PARSE_STEPS // 10:  # many mid-size tags
            before = np.concatenate(([0], np.cumsum(_SEPARATORS[a], dtype=np.int64)))
            short = length > 0
            attrs[short] = before[ends[short]] - before[lt[short]]
    else:
        attrs = np.maximum(attrs, length // 8)  # (a real attribute takes ~8+ bytes; this part is tiny here)
    return steps + int((attrs ** 2).sum() // 2)


def _distinct_attributes(b: bytes, start: int, end: int) -> int:
    if end - start > 2_000 and not _SEPARATORS[np.frombuffer(b, np.uint8, end - start, start)].sum() > 1_000:
        return 1_000  # long but few separators (a data: URI): at most that many attributes
    return len({t.group().split(b"=")[0].lower() for t in _ATTRIBUTE.finditer(b, start, end)})


def _open_quotes(a: np.ndarray, lt: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which tags [lt, ends) hold an odd number of '"' or of "'": a quoted value may run past that '>'."""
    odd = np.zeros(len(lt), dtype=bool)
    for q in (0x22, 0x27):
        at = np.flatnonzero(a == q)
        if len(at):
            odd |= (np.searchsorted(at, ends) - np.searchsorted(at, lt)) % 2 == 1
    return odd


def _text_spans(a, lt, is_end, key, raw_start, comments, gt) -> np.ndarray:
    """[start, end) of comments and raw-text element contents, in document order (what starts inside one
    starts nothing)."""
    n = len(a)
    closes = gt[(gt >= 2) & (a[np.maximum(gt - 1, 0)] == 0x2D) & (a[np.maximum(gt - 2, 0)] == 0x2D)]  # "-->"
    k = np.searchsorted(closes, comments + 4)
    starts, ends = [comments], [np.where(k < len(closes), closes[np.minimum(k, max(len(closes) - 1, 0))], n)
                                if len(closes) else np.full(len(comments), n)]
    for name_key in np.unique(key[raw_start]):
        ends_of_kind = lt[is_end & (key == name_key)]
        s = lt[raw_start & (key == name_key)]
        j = np.searchsorted(ends_of_kind, s)
        starts.append(s)
        ends.append(np.where(j < len(ends_of_kind), ends_of_kind[np.minimum(j, max(len(ends_of_kind) - 1, 0))], n)
                    if len(ends_of_kind) else np.full(len(s), n))
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(starts, kind="stable")
    spans, covered = [], -1
    for s, e in zip(starts[order].tolist(), ends[order].tolist()):
        if s >= covered:
            spans.append((s + 1, e))
            covered = e
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def _outside(positions: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Mask of the positions not inside any of the sorted, disjoint [start, end) spans."""
    if not len(spans):
        return np.ones(len(positions), dtype=bool)
    inside = np.searchsorted(spans[:, 0], positions, side="right") - 1
    return (inside < 0) | (positions >= spans[np.maximum(inside, 0), 1])


def check_budget(html: str, raw: bytes | None = None) -> None:
    steps = parse_steps(html, raw)
    if steps > MAX_PARSE_STEPS:
        raise RecordTooComplex(f"~{steps:,} tree-building steps (deep nesting or many attributes) over the "
                               f"{MAX_PARSE_STEPS:,} a record may take")


# codecs whose bytes can hold '<' or ASCII letters that are not those characters (the budget check then encodes)
NOT_ASCII_SAFE = ("utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "iso2022_jp")


def page_from_html(html: str, page_url: str, raw: bytes | None = None) -> Page:
    """raw: the page's bytes when its codec is not in NOT_ASCII_SAFE (the budget check reads them as they are)."""
    check_budget(html, raw)
    tree = LexborHTMLParser(html)
    page = Page(url=page_url)
    base = tree.css_first("base[href]")
    if base is not None:
        page.base = base.attributes.get("href")
    for selector in ("link[rel]", "a[rel]"):  # <head> links first, as a WAT lists them
        for node in tree.css(selector):
            href = node.attributes.get("href")
            if href and "license" in (node.attributes.get("rel") or "").lower().split():
                page.license = href
                break
        if page.license:
            break
    for node in tree.css("img[src]"):
        a = node.attributes
        page.images.append(Image(src=a.get("src") or "", alt=a.get("alt"), width=a.get("width"),
                                 height=a.get("height")))
    return page
