"""A generated sample crawl: HTML pages written as WARC files (warcio) and the matching WAT files.

Used by ``make demo``, the tests and the benchmarks: no Common Crawl download is possible offline. Pages carry
what real pages carry and extraction must survive: legacy charsets declared in the HTTP header or only in
``<meta>``, entities and line breaks in alt text, ``<base href>``, relative and protocol-relative links,
fragments, ``data:``/``javascript:`` sources, SVGs, over-long URLs, repeated images, missing/short alt text,
``rel=license`` links, width/height attributes, and attribute text that only the HTML5 attribute rules read right
(``&param=2``, ``&times=4``, ``&amp;region=``, legacy ``&copy`` without ``;``, numeric references, controls).

The WAT files are built the way Common Crawl builds them - from the WARC, by an independent HTML parser
(stdlib ``html.parser`` finds the tags here, not the selectolax path extraction uses) - in either of the two
styles Common Crawl's WATs have: ``decoded`` (ia-web-commons since June 2019: attribute values with their
character references decoded, by the HTML5 attribute rules) or ``raw`` (before: attribute text as the page wrote
it), each with the warcinfo record such a file has. So "WARC and its WAT give the same pairs" is a real check of
both.
"""

from __future__ import annotations

import argparse
import gzip
import html
import io
import json
import os
import random
import re
import time
from html.parser import HTMLParser

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from ..extract.text import decode_attribute

CRAWL = "CC-MAIN-2099-01"
IMAGE_HOST = "http://images.sample.test"

_ADJ = ["red", "blue", "green", "vintage", "modern", "small", "large", "wooden", "golden", "bright", "dark",
        "handmade", "leather", "striped", "round", "cozy", "minimal", "rustic", "elegant", "colorful"]
_NOUN = ["sofa", "lamp", "dress", "bicycle", "mountain", "beach", "kitchen", "garden", "car", "dog", "cat",
         "chair", "table", "bridge", "castle", "forest", "river", "city skyline", "cake", "guitar", "watch"]
_CTX = ["in a living room", "at sunset", "on a white background", "in the snow", "near the sea",
        "for sale", "from above", "in the morning light", "with flowers", "on a wooden table"]
_FOREIGN = {
    "de": ["Ein rotes Sofa im hellen Wohnzimmer", "Blick auf die Berge bei Sonnenuntergang",
           "Handgemachte Lederschuhe für Damen", "Frisches Brot aus unserer Bäckerei"],
    "fr": ["Vue sur la mer depuis la terrasse", "Robe d'été à fleurs pour femme",
           "Gâteau au chocolat fait maison", "Le vieux pont de pierre au-dessus de la rivière"],
    "es": ["Playa de arena blanca en verano", "Casa rural con jardín y piscina",
           "Bicicleta de montaña para niños", "Plato de paella valenciana tradicional"],
    "ru": ["Красный диван в светлой гостиной", "Вид на горы на закате солнца",
           "Деревянный стол ручной работы", "Зимний лес после снегопада"],
    "ja": ["海辺の夕日と白い灯台の風景", "手作りの木製テーブルと椅子のセット",
           "春の公園で満開の桜の花", "東京の夜景と高層ビル群"],
    "zh": ["海边日落时的白色灯塔", "手工制作的木制桌椅套装",
           "春天公园里盛开的樱花", "城市夜景和高楼大厦"],
}
# charset, where it is declared, language of the page
_ENCODINGS = [
    ("utf-8", "header", None), ("utf-8", "meta", None), ("utf-8", "none", None),
    ("windows-1251", "header", "ru"), ("windows-1251", "meta", "ru"),
    ("shift_jis", "meta", "ja"), ("shift_jis", "header", "ja"),
    ("gb2312", "header", "zh"), ("gb2312", "meta", "zh"),
    ("iso-8859-1", "header", "fr"),
]


def english_caption(rng: random.Random) -> str:
    return f"{rng.choice(_ADJ).capitalize()} {rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_CTX)}"


def _repeated_images(site: int, page: int, image_host: str) -> list[str]:
    """Images that recur across pages, as on the real web: a site's banner (same URL and alt on most of its
    pages) and stock photos shared by many sites, sometimes with a different alt. They give dedup real work.
    A separate generator keeps the rest of the page identical to what it was without them."""
    r = random.Random(site * 1_000_003 + page)
    out = []
    if r.random() < 0.6:
        out.append(f'<img src="{image_host}/img/{site}/banner.jpg" alt="Welcome to site {site}, the banner photo">')
    if r.random() < 0.3:
        j = r.randint(0, 24)
        alt = f"Stock photo {j}: a calm lake at sunrise" if r.random() < 0.7 else f"Sunrise over the lake ({site})"
        out.append(f'<img src="{image_host}/stock/{j}.jpg" alt="{alt}">')
    return out


def _shape_images(site: int, page: int, image_host: str) -> list[str]:
    """Pictures of coloured shapes whose alt text names them - or, for 40%, names another colour or shape: what
    the clip stage's tiny model (trained on such pictures) can judge, so `make demo` shows the filter working.
    The URL says what the image server draws. A separate generator, as for _repeated_images."""
    from . import shapes

    r = random.Random(site * 7_000_003 + page * 13 + 5)
    out = []
    for k in range(r.choice((0, 0, 1, 2, 3))):
        c, s = shapes.sample(r)
        cc, ss = (c, s) if r.random() < 0.6 else shapes.mismatch(c, s, r)
        out.append(f'<img src="{image_host}/shapes/{c}-{s}/{site}-{page}-{k}.jpg" alt="{shapes.caption(cc, ss, r)}">')
    return out


def _entity_images(site: int, page: int, image_host: str) -> list[str]:
    """Image tags whose attribute text needs the HTML5 attribute rules - and so tells a WAT reader that decodes
    twice, or with ``html.unescape``, from one that reads as a browser does: ``&param=2`` and ``&times=4&not=5``
    hold no reference (a legacy name followed by an alphanumeric or '='), ``&amp;region=`` does; ``&copy``
    without ';' before a space is one; numeric references go through HTML5's table; raw controls in a URL are
    percent-encoded. A separate generator, as for _repeated_images."""
    r = random.Random(site * 9_000_011 + page * 7 + 3)
    if r.random() >= 0.3:
        return []
    q = f"{image_host}/q/{site}/{page}"
    srcs = [f"{q}/img.php?id=7&param=2", f"{q}/c.php?a=1&times=4&not=5&reg=6", f"{q}/r.php?a=1&amp;region=eu",
            f"{q}/s.php?WESPAGE&#x3D;home&amp;M&#x3D;FI", f"{q}/sp ace\x01\x7f.jpg", f"/q/{page}/rel&amp;ative.jpg"]
    alts = ["AT&amp;T &copy 2020 shop sign", "Fish &amp; chips &#8212; a classic", "Price &#128;5 &lt;cheap&gt;",
            "Caf&eacute; au lait &notit; here", "Tom &amp Jerry on a red sofa", "A line&#13;break and &#0; null"]
    return [f'<img src="{src}" alt="{r.choice(alts)}">' for src in r.sample(srcs, r.randint(1, 3))]


def make_page(rng: random.Random, site: int, page: int, image_host: str = IMAGE_HOST,
              demo_images: bool = True) -> tuple[str, dict, bytes]:
    """(url, http headers, body bytes) of one generated page. ``demo_images``: also the recurring, shape and
    entity images the demo and tests need (each from its own generator: without them the page is otherwise the
    same, with the composition bench/extract was calibrated on against a real WAT)."""
    charset, declared, lang = rng.choice(_ENCODINGS)
    host = f"site{site}.example.org"
    url = f"http://{host}/articles/{page}.html"
    use_base = rng.random() < 0.2
    imgs = (_repeated_images(site, page, image_host) + _shape_images(site, page, image_host)
            + _entity_images(site, page, image_host)) if demo_images else []
    n = rng.randint(0, 20)
    for k in range(n):
        src = f"{image_host}/img/{site}/{page}/{k}.jpg"
        roll = rng.random()
        if lang and rng.random() < 0.7:
            alt = rng.choice(_FOREIGN[lang])
        elif rng.random() < 0.15:
            alt = rng.choice(_FOREIGN[rng.choice(["de", "fr", "es"])])
        else:
            alt = english_caption(rng)
        attrs = ""
        if roll < 0.10:
            src = f"/static/{page}/{k}.png"  # relative: resolved against <base> or the page
        elif roll < 0.15:
            src = f"//cdn.{host}/i/{k}.webp#frag"
        elif roll < 0.18:
            src = "data:image/png;base64,iVBORw0KGgo="
        elif roll < 0.20:
            src = f"{image_host}/icons/{k}.svg"
        elif roll < 0.22:
            src = f"{image_host}/long/" + "x" * 2100 + ".jpg"
        elif roll < 0.25:
            src = "javascript:void(0)"
        r2 = rng.random()
        if r2 < 0.40:  # most real img tags have no usable alt text
            alt_attr = ""
        elif r2 < 0.50:
            alt_attr = ' alt=""'
        elif r2 < 0.55:
            alt_attr = ' alt="logo"'
        elif r2 < 0.60:
            alt_attr = f' alt="{html.escape(alt.split()[0] + " & " + alt, quote=True)}"'
        elif r2 < 0.64:
            alt_attr = f' alt="  {html.escape(alt, quote=True)}\n  (photo)  "'
        else:
            alt_attr = f' alt="{html.escape(alt, quote=True)}"'
        if rng.random() < 0.3:
            attrs += f' width="{rng.choice([120, 300, 640, 1024])}" height="{rng.choice(["80", "200px", "480"])}"'
        imgs.append(f'<img src="{html.escape(src, quote=True)}"{alt_attr}{attrs}>')
        if rng.random() < 0.05:
            imgs.append(imgs[-1])  # the same image twice on a page
    # real pages carry many more links than images (menus, tags, tracking URLs); WAT size is mostly these
    links = "".join(
        f'<a href="/{rng.choice(_NOUN).replace(" ", "-")}/{rng.randint(0, 99999)}.html?utm_source=nav&amp;ref={i}">'
        f"{english_caption(rng)}</a> " for i in range(rng.randint(50, 300)))
    scripts = "".join(f'<script src="/js/bundle-{rng.randint(0, 9999)}.js"></script>' for _ in range(rng.randint(2, 8)))
    license_link = ('<a rel="license" href="https://creativecommons.org/licenses/by/4.0/">CC BY</a>'
                    if rng.random() < 0.2 else "")
    meta = f'<meta charset="{charset}">' if declared == "meta" else ""
    base = f'<base href="http://static.{host}/b/">' if use_base else ""
    title = english_caption(rng)
    doc = (f"<!DOCTYPE html><html><head>{meta}<title>{html.escape(title)}</title>{base}"
           f'<meta name="viewport" content="width=device-width">{scripts}</head><body><h1>{html.escape(title)}</h1>'
           f"<p>{' '.join(english_caption(rng) for _ in range(rng.randint(2, 12)))}</p>"
           f"{''.join(imgs)}<nav>{links}</nav>{license_link}</body></html>")
    body = doc.encode(charset, errors="xmlcharrefreplace")
    ctype = f"text/html; charset={charset}" if declared == "header" else "text/html"
    headers = {"Content-Type": ctype, "Server": "sample", "Content-Length": str(len(body))}
    return url, headers, body


def write_warc(path: str, pages: list[tuple[str, dict, bytes]]) -> None:
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(os.path.basename(path), {"software": "laion5b-spark sample"}))
        for url, headers, body in pages:
            req = StatusAndHeaders("GET /x HTTP/1.1", [("Host", url.split("/")[2]), ("User-Agent", "sample")],
                                   protocol="HTTP/1.1", is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", http_headers=req))
            resp = StatusAndHeaders("200 OK", list(headers.items()), protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=resp))


# what Common Crawl's WATs say in their warcinfo record, per style (real values: April 2024 and May 2019)
WAT_SOFTWARE = {"decoded": "ia-web-commons.1.1.10-SNAPSHOT-20240401105522",
                "raw": "ia-web-commons.1.1.9-SNAPSHOT-20190515084427"}
_TAG_NAME = re.compile(r"<[A-Za-z][^\s/>]*")
_ATTRIBUTE = re.compile(r"""([^\s/>=][^\s/>=]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")


def _raw_attributes(start_tag: str) -> dict:
    """Attribute name -> value as the page wrote it (html.parser only gives decoded values); the first wins."""
    out: dict = {}
    m = _TAG_NAME.match(start_tag)
    for a in _ATTRIBUTE.finditer(start_tag, m.end() if m else 0):
        name = a.group(1).lower()
        if name not in out:
            out[name] = next((v for v in a.groups()[1:] if v is not None), "")
    return out


class _WatParser(HTMLParser):
    """Collects what Common Crawl's WAT generator records: Head (Title, Base, Metas, Link) and Links, with
    attribute values as the style writes them."""

    def __init__(self, style: str = "decoded"):
        if style not in WAT_SOFTWARE:
            raise ValueError(f"WAT style {style!r}: one of {sorted(WAT_SOFTWARE)}")
        super().__init__(convert_charrefs=True)
        self._value = decode_attribute if style == "decoded" else str
        self.head = {"Metas": [], "Link": []}
        self.links: list[dict] = []
        self._title = None

    def handle_starttag(self, tag, attrs):
        a = {k: self._value(v) for k, v in _raw_attributes(self.get_starttag_text() or "").items()}
        if tag == "img" and "src" in a:
            link = {"path": "IMG@/src", "url": a["src"]}
            for k in ("alt", "title"):
                if k in a:
                    link[k] = a[k]
            self.links.append(link)
        elif tag == "a" and "href" in a:
            link = {"path": "A@/href", "url": a["href"]}
            if "rel" in a:
                link["rel"] = a["rel"]
            self.links.append(link)
        elif tag == "link" and "href" in a:
            self.head["Link"].append({"path": "LINK@/href", "url": a["href"], "rel": a.get("rel", "")})
        elif tag == "script" and "src" in a:
            self.head.setdefault("Scripts", []).append({"path": "SCRIPT@/src", "url": a["src"]})
        elif tag == "base" and "href" in a:
            self.head["Base"] = a["href"]
        elif tag == "meta":
            self.head["Metas"].append(a)
        elif tag == "title":
            self._title = ""

    def handle_data(self, data):
        if self._title is not None:
            self._title += data

    def handle_endtag(self, tag):
        if tag == "title" and self._title is not None:
            self.head["Title"] = self._title
            self._title = None


def _charset(ctype: str, body: bytes) -> str:
    import re

    m = re.search(r"charset=([\w-]+)", ctype or "")
    if not m:
        m = re.search(rb'<meta[^>]+charset="?([\w-]+)', body[:4096])
        label = m.group(1).decode() if m else "utf-8"
    else:
        label = m.group(1)
    return {"gb2312": "gb18030", "iso-8859-1": "cp1252", "shift_jis": "cp932"}.get(label.lower(), label)


def html_metadata(html_text: str, style: str = "decoded") -> dict:
    """The ``HTML-Metadata`` (Head, Links) a WAT of the given style holds for one HTML page."""
    p = _WatParser(style)
    p.feed(html_text)
    p.close()
    return {"Head": p.head, "Links": p.links}


def warc_to_wat(warc_path: str, wat_path: str, vary_key_order: bool = False, seed: int = 0,
                style: str = "decoded") -> None:
    """Write the WAT of a WARC file in Common Crawl's layout: a warcinfo record naming the producer of the
    ``style`` (``decoded`` or ``raw`` attribute text), then one JSON metadata record per WARC record.

    Links are written as Common Crawl writes them (``path``, ``url``, then the rest); ``vary_key_order``
    reverses the keys on about half the pages, for tests of readers that must not depend on the order.
    """
    from warcio.archiveiterator import ArchiveIterator

    if style not in WAT_SOFTWARE:
        raise ValueError(f"WAT style {style!r}: one of {sorted(WAT_SOFTWARE)}")
    rng = random.Random(seed)
    with open(warc_path, "rb") as src, open(wat_path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(os.path.basename(wat_path), {
            "Software-Info": f"{WAT_SOFTWARE[style]} (laion5b-spark sample crawl)",
            "format": "WARC File Format 1.0",
            "description": f"sample crawl WAT, {style} attribute text as Common Crawl's WATs of that producer"}))
        it = ArchiveIterator(src)
        for rec in it:
            wtype = rec.rec_type
            target = rec.rec_headers.get_header("WARC-Target-URI") or ""
            envelope = {"Format": "WARC", "WARC-Header-Metadata": dict(rec.rec_headers.headers),
                        "Payload-Metadata": {"Actual-Content-Type": rec.content_type or ""}}
            if wtype == "response" and rec.http_headers is not None:
                body = rec.content_stream().read()
                ctype = rec.http_headers.get_header("Content-Type") or ""
                resp = {"Response-Message": {"Status": rec.http_headers.get_statuscode(), "Version": "HTTP/1.1"},
                        "Headers": dict(rec.http_headers.headers)}
                if "html" in ctype:
                    meta = html_metadata(body.decode(_charset(ctype, body), errors="replace"), style)
                    if vary_key_order and rng.random() < 0.5:
                        meta["Links"] = [dict(reversed(list(link.items()))) for link in meta["Links"]]
                    resp["HTML-Metadata"] = meta
                envelope["Payload-Metadata"]["HTTP-Response-Metadata"] = resp
            else:
                rec.content_stream().read()
            doc = {"Container": {"Filename": os.path.basename(warc_path), "Compressed": True,
                                 "Offset": str(it.get_record_offset())},
                   "Envelope": envelope}
            payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers = {"WARC-Target-URI": target, "WARC-Refers-To": rec.rec_headers.get_header("WARC-Record-ID")}
            meta = writer.create_warc_record(target, "metadata", payload=io.BytesIO(payload),
                                             warc_headers_dict=headers, warc_content_type="application/json")
            writer.write_record(meta)


def make_sample_crawl(out_dir: str, files: int = 4, pages_per_file: int = 150, seed: int = 0,
                      image_host: str = IMAGE_HOST, vary_key_order: bool = False, progress=None,
                      wat_style: str = "decoded", demo_images: bool = True) -> dict:
    """Write ``files`` WARC files and their WAT files in Common Crawl's layout, plus both path manifests.
    ``wat_style``: ``decoded`` (Common Crawl since June 2019) or ``raw`` attribute text (before).
    ``demo_images``: see make_page (bench/extract turns them off).
    ``progress(line)``: called after each file with files done, pages/s and an ETA."""
    rng = random.Random(seed)
    warcs, wats = [], []
    t0 = time.time()
    for i in range(files):
        seg = f"crawl-data/{CRAWL}/segments/1700000000000.{i:02d}"
        name = f"{CRAWL}-20990101000000-{i:05d}"
        warc_rel = f"{seg}/warc/{name}.warc.gz"
        wat_rel = f"{seg}/wat/{name}.warc.wat.gz"
        for rel in (warc_rel, wat_rel):
            os.makedirs(os.path.join(out_dir, os.path.dirname(rel)), exist_ok=True)
        pages = [make_page(rng, site=rng.randint(0, 60), page=i * pages_per_file + j, image_host=image_host,
                           demo_images=demo_images) for j in range(pages_per_file)]
        write_warc(os.path.join(out_dir, warc_rel), pages)
        warc_to_wat(os.path.join(out_dir, warc_rel), os.path.join(out_dir, wat_rel), vary_key_order, seed + i,
                    wat_style)
        warcs.append(warc_rel)
        wats.append(wat_rel)
        if progress is not None:
            elapsed = max(time.time() - t0, 1e-6)
            left = elapsed / (i + 1) * (files - i - 1)
            progress(f"{i + 1}/{files} WARC + WAT files, {(i + 1) * pages_per_file:,} pages "
                     f"({(i + 1) * pages_per_file / elapsed:,.0f} pages/s), ETA {left:.0f}s")
    for name, rels in (("warc.paths.gz", warcs), ("wat.paths.gz", wats)):
        with gzip.open(os.path.join(out_dir, name), "wt") as f:
            f.write("\n".join(rels) + "\n")
    return {"warc": warcs, "wat": wats, "root": out_dir}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m laion5b_spark.sample",
                                 description="Write a generated sample crawl (WARC + WAT + path manifests).")
    ap.add_argument("--out", required=True)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--pages-per-file", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-host", default=IMAGE_HOST)
    ap.add_argument("--wat-style", choices=sorted(WAT_SOFTWARE), default="decoded",
                    help="WAT attribute text: decoded (Common Crawl since June 2019) or raw (before)")
    args = ap.parse_args(argv)
    out = make_sample_crawl(args.out, args.files, args.pages_per_file, args.seed, args.image_host,
                            progress=lambda line: print(f"[sample {time.strftime('%H:%M:%S')}] {line}", flush=True),
                            wat_style=args.wat_style)
    print(f"sample crawl in {args.out}: {len(out['warc'])} WARC + {len(out['wat'])} WAT files, "
          f"manifests wat.paths.gz / warc.paths.gz")
    return 0
