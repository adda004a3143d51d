"""Removal lists: URL / URL-hash / image-hash denylists and domain opt-out lists.

They are read and checked on the driver before any work starts; a bad entry is a ``ListError`` naming the file
and line. Formats (docs/DEDUP.md has examples):

* denylist, parquet or CSV (with a header): columns ``url``, ``url_sha256``, ``url_md5`` (hex of the URL string as
  stored in the lake), ``sha256``/``image_sha256``, ``md5``/``image_md5`` (hex of the image bytes: applied by the
  download stage, which has the images). At least one of them.
* denylist, text: one entry per line - an http(s) URL, or ``KIND:HEX`` with KIND one of the column names; a bare
  hex hash needs a ``#kind=KIND`` line before it. ``#`` starts a comment.
* domain opt-out, text: ``example.com`` removes that exact host; ``.example.com`` (or ``*.example.com``) removes the
  domain and every subdomain.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from ..config import ConfigError
from ..urls import normalize_url

HASH_KINDS = {"url_sha256": 64, "url_md5": 32, "image_sha256": 64, "image_md5": 32}
_ALIASES = {"sha256": "image_sha256", "md5": "image_md5"}
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_URL = re.compile(r"^[hH][tT][tT][pP][sS]?://[^/?#\s]+")
_HOST = re.compile(r"^[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?)*$")


class ListError(ConfigError):
    """A removal list that cannot be used: the message names the file and line."""


@dataclass
class DenyList:
    urls: set[str] = field(default_factory=set)  # normalized (laion5b_spark.urls.normalize_url)
    url_sha256: set[str] = field(default_factory=set)
    url_md5: set[str] = field(default_factory=set)
    image_sha256: set[str] = field(default_factory=set)
    image_md5: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)

    def add(self, kind: str, value: str, where: str) -> None:
        value = value.strip()
        if not value:
            return
        if kind == "url":
            if not _URL.match(value):
                raise ListError(f"{where}: {value[:80]!r} is not an http(s) URL")
            self.urls.add(normalize_url(value))
            return
        kind = _ALIASES.get(kind, kind)
        if kind not in HASH_KINDS:
            raise ListError(f"{where}: unknown kind {kind!r}; use url, {', '.join(HASH_KINDS)}")
        if len(value) != HASH_KINDS[kind] or not _HEX.match(value):
            raise ListError(f"{where}: {value[:80]!r} is not a {kind} ({HASH_KINDS[kind]} hex digits)")
        getattr(self, kind).add(value.lower())

    @property
    def applies_to_urls(self) -> bool:
        return bool(self.urls or self.url_sha256 or self.url_md5)

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("urls", "url_sha256", "url_md5", "image_sha256", "image_md5")}


@dataclass
class DomainOptOut:
    exact: set[str] = field(default_factory=set)
    suffixes: set[str] = field(default_factory=set)  # "example.com" for ".example.com": itself and subdomains
    files: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)

    def matches(self, host: str) -> bool:
        """Plain-Python rule (the vectorized one in rows.py must agree with it)."""
        host = host.lower().rstrip(".")
        if host in self.exact:
            return True
        while host:
            if host in self.suffixes:
                return True
            host = host.partition(".")[2]
        return False


def load_denylists(paths: list[str]) -> DenyList:
    deny = DenyList()
    for path in paths:
        deny.files.append(path)
        lower = path.lower()
        if lower.endswith(".parquet"):
            _read_parquet(deny, path)
        elif lower.endswith((".csv", ".csv.gz")):
            _read_csv(deny, path)
        else:
            _read_text(deny, path)
    return deny


def load_opt_out(paths: list[str]) -> DomainOptOut:
    rules = DomainOptOut()
    for path in paths:
        rules.files.append(path)
        for n, line in _lines(path):
            entry = line.split("#", 1)[0].strip().lower().rstrip(".")
            if not entry:
                continue
            suffix = entry.startswith((".", "*."))
            host = entry.lstrip("*").lstrip(".")
            if "://" in host or "/" in host:
                raise ListError(f"{path}:{n}: {line.strip()[:80]!r} is a URL; a domain opt-out list holds hosts "
                                "(example.com) or suffix rules (.example.com)")
            if not _HOST.match(host):
                raise ListError(f"{path}:{n}: {line.strip()[:80]!r} is not a host name (use punycode for IDN)")
            (rules.suffixes if suffix else rules.exact).add(host)
    return rules


def _lines(path: str):
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                yield n, line
    except FileNotFoundError as exc:
        raise ListError(f"{path}: no such list file") from exc
    except UnicodeDecodeError as exc:
        raise ListError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); parquet lists must end "
                        ".parquet") from exc


def _read_text(deny: DenyList, path: str) -> None:
    default_kind = None
    for n, line in _lines(path):
        raw = line.strip()
        m = re.match(r"#\s*kind\s*=\s*(\w+)", raw)
        if m:
            default_kind = m.group(1)
            if default_kind != "url" and _ALIASES.get(default_kind, default_kind) not in HASH_KINDS:
                raise ListError(f"{path}:{n}: unknown kind {default_kind!r}; use url, {', '.join(HASH_KINDS)}")
            continue
        entry = raw.split("#", 1)[0].strip() if not _URL.match(raw) else raw
        if not entry:
            continue
        where = f"{path}:{n}"
        if _URL.match(entry):
            deny.add("url", entry, where)
        elif ":" in entry:
            kind, _, value = entry.partition(":")
            deny.add(kind.strip().lower(), value, where)
        elif default_kind:
            deny.add(default_kind, entry, where)
        else:
            raise ListError(f"{where}: {entry[:80]!r} is neither a URL nor KIND:HEX; write e.g. url_sha256:{entry[:8]}… "
                            "or put a '#kind=url_sha256' line before bare hashes")


def _columns(found: list[str], path: str) -> list[str]:
    usable = [c for c in found if c == "url" or _ALIASES.get(c, c) in HASH_KINDS]
    if not usable:
        raise ListError(f"{path}:1: no usable column; expected one of url, {', '.join(HASH_KINDS)}, sha256, md5 "
                        f"(found: {', '.join(found) or 'none'})")
    return usable


def _read_csv(deny: DenyList, path: str) -> None:
    try:
        with fsspec.open(path, "rt", compression="infer", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            cols = _columns(header, path)
            idx = [(header.index(c), c) for c in cols]
            for n, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise ListError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
                for i, kind in idx:
                    deny.add(kind, row[i], f"{path}:{n}")
    except FileNotFoundError as exc:
        raise ListError(f"{path}: no such list file") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ListError(f"{path}: not a readable CSV list: {exc}") from exc


def _read_parquet(deny: DenyList, path: str) -> None:
    try:
        with fsspec.open(path, "rb") as f:
            table = pq.read_table(f)
    except FileNotFoundError as exc:
        raise ListError(f"{path}: no such list file") from exc
    except Exception as exc:  # noqa: BLE001 - any parquet failure means the same to the user
        raise ListError(f"{path}: not a readable parquet file: {exc}") from exc
    for col in _columns([c.lower() for c in table.column_names], path):
        name = next(c for c in table.column_names if c.lower() == col)
        for n, value in enumerate(table.column(name).to_pylist(), 1):
            if value is not None:
                deny.add(col, str(value), f"{path}: row {n}")


def describe_lists(deny: DenyList, opt_out: DomainOptOut) -> str:
    parts = [f"{n:,} {k}" for k, n in deny.sizes().items() if n]
    if opt_out:
        parts.append(f"{len(opt_out.exact):,} opted-out hosts, {len(opt_out.suffixes):,} opted-out domains")
    return ", ".join(parts) if parts else "none"


def list_paths(*groups: list[str]) -> list[str]:
    """Paths from config and command line, each once, local ones checked to exist."""
    out: list[str] = []
    for group in groups:
        for p in group or []:
            if p not in out:
                if "://" not in p and not Path(p).exists():
                    raise ListError(f"{p}: no such list file")
                out.append(p)
    return out
