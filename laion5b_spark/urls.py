"""URL rules shared by every stage: resolving image links, and the normalized form used in keys.

``normalize_url`` is the lake-wide URL normal form (used in ``uid`` and by dedup):

1. scheme and host lower-cased; a trailing dot on the host removed;
2. the default port dropped (``:80`` for http, ``:443`` for https);
3. the fragment dropped; an empty path becomes ``/``;
4. percent-encoding normalized in path and query: escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``)
   decoded, all other escapes upper-cased (``%c3%a9`` -> ``%C3%A9``);
5. nothing else: query parameter order, trailing slashes, ``www.`` and dot segments are kept, because
   servers may treat them differently.

``resolve_link`` serializes what it returns as the WHATWG URL standard does: C0 and C1 controls, space, DEL and
``" < >`` are percent-encoded (as UTF-8) in path and query, plus `` ` { }`` in the path and ``'`` in the query; a
host holding a control, space or ``< > ^ |`` is invalid. Other non-ASCII text is kept as it is (the IRI form
LAION's releases carry), and hosts are not IDNA-encoded.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit, urlunsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_C0_OR_SPACE = "".join(map(chr, range(0x21)))  # what browsers strip from both ends of a URL
# the characters resolve_link changes or encodes: a URL without any (and with a plain host) is returned as it is,
# here and in the vectorized filters of extract/pairs.py (an RE2 pattern too)
NEEDS_SERIALIZING = r"""[\x00-\x20\x7f-\x9f"'<>`{}]"""
_NEEDS_SERIALIZING = re.compile(NEEDS_SERIALIZING)
# WHATWG's path and special-query percent-encode sets, but for non-ASCII text other than C1 controls (kept)
_PATH_ENCODE = re.compile(r"""[\x00-\x20\x7f-\x9f"<>`{}]""")
_QUERY_ENCODE = re.compile(r"""[\x00-\x20\x7f-\x9f"'<>]""")
_BAD_HOST = re.compile(r"[\x00-\x20\x7f-\x9f<>^|]")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PLAIN_PREFIX = re.compile(r"https?://[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*(?=[/?#]|$)")


class BadUrl(ValueError):
    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason  # an accounting reason: bad_scheme or invalid_url


def _plain_host_end(s: str) -> int:
    """For http(s)://host... with a plain lower-case host (no port, userinfo, IDN), where the host ends; else -1."""
    m = _PLAIN_PREFIX.match(s)
    return m.end() if m else -1


def resolve_link(src: str, base: str) -> str:
    """Absolute http(s) URL of a link as a browser would resolve and serialize it, without fragment.
    Raises BadUrl."""
    if _plain_host_end(src) > 0 and not _NEEDS_SERIALIZING.search(src):
        i = src.find("#")
        return src if i < 0 else src[:i]
    s = src.strip(_C0_OR_SPACE)
    if "\t" in s or "\n" in s or "\r" in s:  # browsers drop these anywhere in a URL
        s = s.replace("\t", "").replace("\n", "").replace("\r", "")
    if not s:
        raise BadUrl("invalid_url", "empty URL")
    m = _SCHEME.match(s)
    if m:
        scheme = m.group(1).lower()
        if scheme not in ("http", "https"):
            raise BadUrl("bad_scheme", f"{scheme}: URL")
        url = s
    else:
        try:
            url = join(base, s)
        except ValueError as exc:
            raise BadUrl("invalid_url", str(exc)) from exc
        if not url.startswith(("http://", "https://")):
            raise BadUrl("bad_scheme", f"relative link on a non-http page: {url[:60]}")
    hash_at = url.find("#")
    if hash_at >= 0:
        url = url[:hash_at]
    end = _plain_host_end(url)
    if end > 0:  # a plain host has no port, userinfo or forbidden character to check
        if _NEEDS_SERIALIZING.search(url):
            url = _serialize(url, url[url.find("//") + 2:end])
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BadUrl("invalid_url", str(exc)) from exc
    if not parts.hostname:
        raise BadUrl("invalid_url", "no host")
    if _NEEDS_SERIALIZING.search(url):
        if _BAD_HOST.search(parts.hostname):
            raise BadUrl("invalid_url", f"forbidden character in host {parts.hostname[:60]!r}")
        url = _serialize(url, parts.netloc)
    return url


_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")
_PATH_END = re.compile(r"[?#]")


def join(base: str, s: str) -> str:
    """``urljoin(base, s)``, by concatenation for the usual links of a page with a plain http(s) URL:
    protocol-relative, root-relative and path-relative ones without dot segments, ``//`` in a relative
    path, ``;``, an empty query or fragment (urljoin resolves, collapses or drops those). Everything else: urljoin."""
    host_end = _plain_host_end(base)
    if host_end < 0 or not s or ";" in s or s[-1] == "#" or _SCHEME.match(s):
        return urljoin(base, s)
    q = s.find("?")
    if q >= 0 and (q + 1 == len(s) or s[q + 1] == "#"):
        return urljoin(base, s)
    if s.startswith("//"):
        if len(s) > 2 and s[2] not in "/?#\\":
            return base[:base.index(":") + 1] + s
        return urljoin(base, s)
    m = _PATH_END.search(s)
    path = s[:m.start()] if m else s
    if not path or _DOT_SEGMENT.search(path):
        return urljoin(base, s)
    if s[0] == "/":
        return base[:host_end] + s
    m = _PATH_END.search(base, host_end)
    base_path = base[host_end:m.start()] if m else base[host_end:]
    if "//" in path or "//" in base_path or ";" in base_path or _DOT_SEGMENT.search(base_path):
        return urljoin(base, s)
    return base[:host_end] + (base_path[:base_path.rfind("/") + 1] or "/") + s


def _serialize(url: str, netloc: str) -> str:
    """Percent-encode what WHATWG's serializer encodes in userinfo, path and query (the fragment is gone)."""
    start = url.find("//") + 2
    end = start + len(netloc)  # urlsplit's netloc is this slice: the input was stripped as urlsplit strips
    if _PATH_ENCODE.search(netloc):
        at = netloc.rfind("@")  # only the userinfo can hold these: the host was checked
        netloc = _PATH_ENCODE.sub(_percent, netloc[:at]) + netloc[at:]
    rest = url[end:]
    q = rest.find("?")
    if q < 0:
        rest = _PATH_ENCODE.sub(_percent, rest)
    else:
        rest = _PATH_ENCODE.sub(_percent, rest[:q]) + "?" + _QUERY_ENCODE.sub(_percent, rest[q + 1:])
    return url[:start] + netloc + rest


def _percent(m: re.Match) -> str:
    return "".join(f"%{b:02X}" for b in m.group(0).encode("utf-8"))


def normalize_url(url: str) -> str:
    """The lake-wide normal form of an absolute URL (see the module docstring for the rules)."""
    if "%" not in url and "#" not in url:
        end = _plain_host_end(url)
        if end > 0 and url.startswith("/", end):
            return url  # already normal: lower-case scheme and host, no port/userinfo, a path, no escapes
    return _normalize_full(url)


def _normalize_full(url: str) -> str:
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return url.split("#", 1)[0]
    scheme = p.scheme.lower()
    host = (p.hostname or "").rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host
    if p.username is not None:
        netloc = p.username + (f":{p.password}" if p.password is not None else "") + "@" + netloc
    if port is not None and str(port) != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    path = _normalize_pct(p.path) or "/"
    return urlunsplit((scheme, netloc, path, _normalize_pct(p.query), ""))


def _normalize_pct(s: str) -> str:
    if "%" not in s:
        return s
    return _PCT.sub(_pct_repl, s)


def _pct_repl(m: re.Match) -> str:
    b = int(m.group(1), 16)
    return chr(b) if b in _UNRESERVED else "%" + m.group(1).upper()


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""
