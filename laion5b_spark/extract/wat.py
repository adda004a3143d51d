"""Image links from Common Crawl WAT records.

A WAT record is one JSON document (Envelope -> Payload-Metadata -> HTTP-Response-Metadata -> HTML-Metadata
-> Head/Links). Every record is parsed whole, by orjson: the result depends only on the document, never on how
its JSON is written (``\\/``, ``\\u`` escapes, key order, spacing), and a record whose JSON does not parse is
``invalid_json`` wherever the damage is. (Earlier text-search shortcuts read only the image links; they could
not see damage elsewhere and missed escaped text, and making them sound needs the same full pass over the bytes
that parsing makes. Parsing whole costs ~0.02 s more per 6.5 MB of gzipped sample WAT, ~6% of extract's time.)

Image links are the ``IMG@/src`` objects of the ``Head.Link`` and ``Links`` arrays; one whose ``url`` is not a
string is still an img tag (its src is unusable: ``invalid_url``). The license is the first other link whose
``rel`` has the token ``license``.

Attribute text. ia-web-commons, which writes Common Crawl's WATs, decodes character references in attribute
values since June 2019 (commoncrawl/ia-web-commons issue #14, commit e0d23b8, first used for CC-MAIN-2019-26;
from late August 2019, issue #19 / PR #20, with jsoup's ``Parser.unescapeEntities(text, inAttribute=true)``,
the HTML5 attribute rules). Older WATs keep the attribute text as the page wrote it. Which one a file is comes
from its ``warcinfo`` record (``Software-Info: ia-web-commons.<version>-SNAPSHOT-<build time>``, see
``wat_style``); raw text is decoded here as a browser would (``text.decode_attribute``), decoded text is not
decoded again. Both get NUL as U+FFFD, as an HTML tokenizer (and so the WARC route) gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from .archive import RawRecord
from .page import Image, Page
from .text import decode_attribute

IMG_PATH = "IMG@/src"


class InvalidWat(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class WatStyle:
    """How a WAT file's producer wrote attribute values."""

    attributes_decoded: bool  # character references already decoded (ia-web-commons since June 2019)
    producer: str = ""  # the warcinfo's Software-Info, when it names one


DEFAULT_STYLE = WatStyle(True)  # today's Common Crawl layout: a file without warcinfo, or an unknown producer

_SOFTWARE = re.compile(rb"^(?:Software-Info|software)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_IA_WEB_COMMONS = re.compile(r"ia-web-commons\.(\d+)\.(\d+)(?:\.(\d+))?[^\s-]*(?:-SNAPSHOT)?(?:-(\d{8}))?")
# the first build that decodes: issue #14 was filed on 2019-06-13 against the May 2019 WATs (build 20190515),
# and CC-MAIN-2019-26 (crawled from 2019-06-15) was the first crawl written with the fix
_FIRST_DECODING_BUILD = "20190613"


def wat_style(warcinfo: RawRecord) -> WatStyle:
    """The style of the WAT file this warcinfo record opens: raw attribute text for ia-web-commons before 1.1.9
    and for 1.1.9 builds before June 2019 (Common Crawl's WATs up to CC-MAIN-2019-22), decoded otherwise. An
    unknown producer gets today's layout, which every crawl since June 2019 has."""
    m = _SOFTWARE.search(warcinfo.data, warcinfo.payload_start, warcinfo.payload_end)
    if m is None:
        return DEFAULT_STYLE
    software = m.group(1).decode("utf-8", "replace")
    v = _IA_WEB_COMMONS.search(software)
    if v is None:
        return WatStyle(True, software)
    version = (int(v.group(1)), int(v.group(2)), int(v.group(3) or 0))
    if version < (1, 1, 9):
        decoded = False
    elif version == (1, 1, 9):
        decoded = v.group(4) is None or v.group(4) >= _FIRST_DECODING_BUILD  # a 1.1.9 without a date: today's
    else:
        decoded = True
    return WatStyle(decoded, software)


def page_from_wat(rec: RawRecord, style: WatStyle = DEFAULT_STYLE) -> Page | None:
    """The page's links, or None when the record describes no HTML page. Raises InvalidWat on bad JSON."""
    try:
        doc = orjson.loads(memoryview(rec.data)[rec.payload_start:rec.payload_end])
    except orjson.JSONDecodeError as exc:
        raise InvalidWat(str(exc)) from exc
    envelope = doc.get("Envelope") if type(doc) is dict else None
    if type(envelope) is not dict:
        return None
    meta = _get(envelope, "Payload-Metadata", "HTTP-Response-Metadata", "HTML-Metadata")
    if type(meta) is not dict:
        return None
    url = rec.target_uri
    if not url:  # (the WARC header's, else the document's)
        url = _get(envelope, "WARC-Header-Metadata", "WARC-Target-URI")
        url = url if type(url) is str else ""
    page = Page(url=url)
    raw = not style.attributes_decoded
    head = meta.get("Head")
    if type(head) is dict:
        base = head.get("Base")
        if type(base) is str:
            page.base = _attr(base, raw)
        links = head.get("Link")
        if type(links) is list:
            _read_links(links, page, raw)  # Head precedes Links in a WAT: its license links come first
    links = meta.get("Links")
    if type(links) is list:
        _read_links(links, page, raw)
    return page


def _read_links(links: list, page: Page, raw: bool) -> None:
    """A link array's images, and the license if the page has none yet. Anchors are most of the links and are
    read by two comprehensions (an image test, a test for a ``rel`` key): half the time of one loop that asks
    every link for its path and its rel (bench/extract). The links they pick are then read in order."""
    try:
        images = [link for link in links if link["path"] == IMG_PATH]  # (a subscript: ~15% less than .get)
        with_rel = [link for link in links if "rel" in link] if page.license is None else ()
    except (KeyError, TypeError):  # a link without a path, or not an object (orjson gives dict, list, str, ...)
        _read_links_any(links, page, raw)
        return
    if images:
        _read_images(images, page, raw)
    for link in with_rel:  # (in order: the first license link wins)
        if link.get("path") != IMG_PATH:
            _read_license(link, page, raw)
            if page.license is not None:
                break


def _read_links_any(links, page: Page, raw: bool) -> None:
    """One pass over links of any kind, in order."""
    for link in links:
        try:
            path = link.get("path")
        except AttributeError:  # not an object (orjson gives dict, list, str, int, float, bool or None)
            continue
        if path == IMG_PATH:
            _read_images((link,), page, raw)
        elif page.license is None:
            _read_license(link, page, raw)


def _read_images(links, page: Page, raw: bool) -> None:
    """Image links (``IMG@/src`` objects) as Images, in order."""
    append = page.images.append
    new = tuple.__new__  # (what Image._make does, less its Python-level call)
    for link in links:
        src = link.get("url")
        # a url that is not a string is an img tag all the same: counted, then dropped as invalid_url
        src = _attr(src, raw) if type(src) is str else ""
        alt = link.get("alt")
        if type(alt) is not str:
            alt = None
        elif not raw and "\x00" in alt:  # raw text gets this from decode_attribute, at caption cleanup
            alt = alt.replace("\x00", "\ufffd")
        width = link.get("width")
        height = link.get("height")
        append(new(Image, (src, alt, None if width is None else _str_or_none(width),
                           None if height is None else _str_or_none(height), raw)))


def _read_license(link: dict, page: Page, raw: bool) -> None:
    """The page's license, if this (non-image) link's rel has the token ``license``."""
    rel = link.get("rel")
    if rel and type(rel) is str:
        if raw:
            rel = decode_attribute(rel)
        url = link.get("url")
        if type(url) is str and "license" in rel.lower().split():
            page.license = _attr(url, raw)


def _attr(v: str, raw: bool) -> str:
    if raw:
        return decode_attribute(v)
    return v.replace("\x00", "\ufffd") if "\x00" in v else v


def _str_or_none(v) -> str | None:
    return v if type(v) is str else (str(v) if type(v) is int else None)


def _get(doc, *keys):
    for k in keys:
        if type(doc) is not dict:
            return None
        doc = doc.get(k)
    return doc
