"""URL rules shared by every stage: resolving image links, and the normalized form used in keys.

``normalize_url`` is the lake-wide URL normal form (used in ``uid`` and by dedup):

1. scheme and host lower-cased; a trailing dot on the host removed;
2. the default port dropped (``:80`` for http, ``:443`` for https);
3. the fragment dropped; an empty path becomes ``/``;
4. percent-encoding normalized in path and query: escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``)
   decoded, all other escapes upper-cased (``%c3%a9`` -> ``%C3%A9``);
5. nothing else: query parameter order, trailing slashes, ``www.`` and dot segments are kept, because
   servers may treat them differently.

``resolve_link`` parses and serializes http(s) links as the WHATWG URL standard does, in these respects:

* a backslash before the query is a slash (``http://a.example\\@b.example/`` is host ``a.example``), in relative
  links too (``\\\\cdn.example\\x.jpg`` is ``//cdn.example/x.jpg``); any number of slashes may come between
  scheme and host, and ``http:x.jpg`` is a relative link on an http page (``https:x.jpg`` is host ``x.jpg``);
* scheme and host are lower-cased and the host percent-decoded; it is otherwise kept as written: ``" ` { }`` are
  valid in a WHATWG host, and a host holding a control, space, ``< > ^ |`` (or, once decoded, ``% / : ? # @``
  or bytes that are no UTF-8) is invalid, as is an empty one;
* C0 and C1 controls, space, DEL and ``" < >`` are percent-encoded (as UTF-8) in path and query, plus
  `` ` { } ^`` in the path and ``'`` in the query; user and password get WHATWG's userinfo set (``@ : / ; = [ ] |``
  and the like as well).

Not done: other non-ASCII text is kept as it is (the IRI form LAION's releases carry) and hosts are not
IDNA-encoded; default ports and empty paths are left to ``normalize_url`` (keys); dot segments of absolute
links, and ``%2e`` ones anywhere, are kept; relative links are joined by ``urllib``'s rules where ``join`` has no
shortcut, which collapse empty path segments (``a//b``) and drop an empty query or ``;`` parameter.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_C0_OR_SPACE = "".join(map(chr, range(0x21)))  # what browsers strip from both ends of a URL
# the characters resolve_link changes or encodes: a URL without any (and with a plain host) is returned as it is,
# here and in the vectorized filters of extract/pairs.py (an RE2 pattern too)
NEEDS_SERIALIZING = r"""[\x00-\x20\x7f-\x9f"'<>`{}^\\]"""
_NEEDS_SERIALIZING = re.compile(NEEDS_SERIALIZING)
# WHATWG's path and special-query percent-encode sets, but for non-ASCII text other than C1 controls (kept)
_PATH_ENCODE = re.compile(r"""[\x00-\x20\x7f-\x9f"<>`{}^]""")
_QUERY_ENCODE = re.compile(r"""[\x00-\x20\x7f-\x9f"'<>]""")
_USERINFO_ENCODE = re.compile(r"""[\x00-\x20\x7f-\x9f"#<>?`{}/:;=@\[\\\]^|]""")
_BAD_HOST = re.compile(r"[\x00-\x20\x7f-\x9f<>^|]")
# WHATWG's forbidden domain code points, for a host that held escapes (and U+FFFD: bytes that were no UTF-8)
_BAD_DECODED_HOST = re.compile(r"[\x00-\x20\x7f-\x9f#%/:<>?@\[\\\]^|\ufffd]")
_AUTHORITY_END = re.compile(r"[/?#]|$")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# http(s):// and a plain lower-case host (no port, userinfo, IDN); an RE2 pattern too (extract/pairs.py, keys.py)
PLAIN_HOST = r"https?://[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*"
_PLAIN_PREFIX = re.compile(PLAIN_HOST + r"(?=[/?#]|$)")


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
    if "\\" in s:
        s = _forward_slashes(s)
    if m:
        rest = s[m.end():]
        # "http:x" is relative on an http page; otherwise the host follows the scheme after any number of slashes
        absolute = rest.startswith("//") or scheme != base[:base.find(":")].lower()
        s = scheme + "://" + rest.lstrip("/") if absolute else "./" + rest if _SCHEME.match(rest) else rest
    else:
        absolute = False
        if s.startswith("//"):
            s = "//" + s.lstrip("/")  # (any number of slashes, as after a scheme)
    if s.startswith("//", s.find(":") + 1 if absolute else 0) and _AUTHORITY_END.match(s, s.find("//") + 2):
        raise BadUrl("invalid_url", "no host")
    if absolute:
        url = s
    else:
        try:
            url = join(base, s)
        except ValueError as exc:
            raise BadUrl("invalid_url", str(exc)) from exc
        if not url.startswith(("http://", "https://")):
            raise BadUrl("bad_scheme", f"relative link on a non-http page: {url[:60]}")
        if "\\" in url:  # from the base (WHATWG would have parsed it as a URL)
            url = _forward_slashes(url)
    hash_at = url.find("#")
    if hash_at >= 0:
        url = url[:hash_at]
    end = _plain_host_end(url)
    if end > 0:  # a plain host is lower-case and has no port, userinfo or forbidden character to check
        if _NEEDS_SERIALIZING.search(url, end):
            url = url[:end] + _path_and_query(url[end:])
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BadUrl("invalid_url", str(exc)) from exc
    host = parts.hostname
    if not host:
        raise BadUrl("invalid_url", "no host")
    if "%" in host:  # a host is percent-decoded (as UTF-8) before it is checked
        host = unquote(host, errors="replace").lower()
        if not host or _BAD_DECODED_HOST.search(host):
            raise BadUrl("invalid_url", f"forbidden character in host {host[:60]!r}")
    elif _BAD_HOST.search(host):
        raise BadUrl("invalid_url", f"forbidden character in host {host[:60]!r}")
    return _serialize(url, parts.netloc, host)


_TAB_OR_NEWLINE = re.compile("[\t\n\r]")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")
_PATH_END = _QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def join(base: str, s: str) -> str:
    """``urljoin(base, s)``, by concatenation for the usual links of a page with a plain http(s) URL:
    protocol-relative, root-relative and path-relative ones without dot segments, ``//`` in a relative
    path, ``;``, an empty query or fragment (urljoin resolves, collapses or drops those); absolute links with a
    plain host as they are. Everything else: urljoin."""
    host_end = _plain_host_end(base)
    if host_end < 0 or not s or ";" in s or s[-1] == "#":
        return urljoin(base, s)
    if _SCHEME.match(s):
        # an absolute link with a plain host: urljoin splits and joins it again, which changes only an empty
        # query, tabs and newlines (and ';' params and an empty fragment, ruled out above)
        if _plain_host_end(s) > 0 and s[-1] != "?" and "?#" not in s and not _TAB_OR_NEWLINE.search(s):
            return s
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


def _forward_slashes(s: str) -> str:
    """http(s) ("special") URLs, and links relative to one, read a backslash before the query as a slash."""
    q = _QUERY_OR_FRAGMENT.search(s)
    return s[:q.start()].replace("\\", "/") + s[q.start():] if q else s.replace("\\", "/")


def _serialize(url: str, netloc: str, host: str) -> str:
    """Scheme lower-cased, the (checked, lower-case) host in place of the written one, userinfo, path and query
    percent-encoded as WHATWG's serializer does (the fragment is gone)."""
    start = url.find("//") + 2
    end = start + len(netloc)  # urlsplit's netloc is this slice: the input was stripped as urlsplit strips
    at = netloc.rfind("@")
    userinfo = ""
    if at >= 0:
        user, colon, password = netloc[:at].partition(":")
        userinfo = _USERINFO_ENCODE.sub(_percent, user) + colon + _USERINFO_ENCODE.sub(_percent, password) + "@"
    written = netloc[at + 1:]
    colon = written.find(":", written.find("]") + 1 if written.startswith("[") else 0)
    port = written[colon:] if 0 <= colon < len(written) - 1 else ""  # (an empty port goes, as in WHATWG)
    if ":" in host:  # an IPv6 address (urlsplit took the brackets off)
        host = f"[{host}]"
    return url[:start].lower() + userinfo + host + port + _path_and_query(url[end:])


def _path_and_query(rest: str) -> str:
    q = rest.find("?")
    if q < 0:
        return _PATH_ENCODE.sub(_percent, rest)
    return _PATH_ENCODE.sub(_percent, rest[:q]) + "?" + _QUERY_ENCODE.sub(_percent, rest[q + 1:])


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
    out = urlunsplit((scheme, netloc, path, _normalize_pct(p.query), ""))
    if not p.query and "?" in url.split("#", 1)[0]:
        out += "?"  # an empty query is kept, as the shortcut in normalize_url keeps it (urlunsplit drops it)
    return out


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
