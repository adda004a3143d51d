"""Per-row decisions of the dedup stage, on Arrow columns: which rows may enter the table, and their keys.

``classify`` gives every row a code: 0 (eligible) or the reason it cannot enter. Both the key pass and the row
pass call it on the same file, so they agree on every row without passing row data between them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..keys import url_key
from ..urls import normalize_url
from .lists import DenyList, DomainOptOut

KEY_MODES = ("url_text", "url")
# code -> accounting reason, in precedence order (a row gets the first that applies)
CODES = ("", "missing_url", "missing_text", "invalid_url", "missing_uid", "text_too_long", "domain_opt_out",
         "denylisted")
FAILED_CODES = frozenset({1, 2, 3, 4})  # bad input; the others are decisions
ELIGIBLE = 0

_URL_OK = r"^[hH][tT][tT][pP][sS]?://[^/?#\s]+"
_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"


@dataclass(frozen=True)
class RowRules:
    mode: str = "url_text"
    max_text_chars: int = 4096
    deny: DenyList | None = None
    opt_out: DomainOptOut | None = None

    # what the key pass reads; the row pass reads every column
    KEY_COLUMNS = ("uid", "url", "text", "source_offset")


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def hosts(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lower-case host of each URL ("" when there is none), like urls.host_of but vectorized.

    Fast path: the third "/"-separated part of "scheme://host/..."; the regex (10x slower) only for the few
    rows whose part has a userinfo, port, query or fragment in it."""
    urls = pc.fill_null(urls, "")
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    part = pc.list_element(pc.split_pattern(pc.binary_join_element_wise(urls, "///", ""), "/", max_splits=3), 2)
    odd = np.zeros(len(urls), dtype=bool)
    for c in "@:?#[":
        odd |= np.asarray(pc.greater_equal(pc.find_substring(part, c), 0), dtype=bool)
    odd |= ~np.asarray(pc.match_substring_regex(urls, r"^[A-Za-z][A-Za-z0-9+.\-]*://"), dtype=bool)
    if odd.any():
        idx = np.flatnonzero(odd)
        slow = pc.struct_field(pc.extract_regex(pc.take(urls, idx), _HOST), "host")
        part = pc.replace_with_mask(part, pa.array(odd), pc.fill_null(slow, "").cast(pa.string()))
    return pc.utf8_rtrim(pc.utf8_lower(part), characters=".")


def opted_out(host_col: pa.Array, rules: DomainOptOut) -> np.ndarray:
    out = _np(pc.is_in(host_col, value_set=pa.array(sorted(rules.exact), pa.string()))) if rules.exact \
        else np.zeros(len(host_col), dtype=bool)
    if rules.suffixes:
        suffixes = pa.array(sorted(rules.suffixes), pa.string())
        h = host_col
        for _ in range(128):  # a DNS name has at most 127 labels
            out |= _np(pc.is_in(h, value_set=suffixes))
            h = pc.replace_substring_regex(h, r"^[^.]*\.?", "", max_replacements=1)
            if not pc.any(pc.not_equal(h, "")).as_py():
                break
    return out


def denylisted(urls: pa.Array | pa.ChunkedArray, deny: DenyList) -> np.ndarray:
    out = np.zeros(len(urls), dtype=bool)
    values = [u or "" for u in urls.to_pylist()] if deny.applies_to_urls else []
    if deny.urls:
        normal = pa.array([normalize_url(u) if u else "" for u in values], pa.string())
        out |= _np(pc.is_in(normal, value_set=pa.array(sorted(deny.urls), pa.string())))
    for kind, fn in (("url_sha256", hashlib.sha256), ("url_md5", hashlib.md5)):
        listed = getattr(deny, kind)
        if listed:
            hexes = pa.array([fn(u.encode("utf-8", "surrogatepass")).hexdigest() for u in values], pa.string())
            out |= _np(pc.is_in(hexes, value_set=pa.array(sorted(listed), pa.string())))
    return out


def classify(table: pa.Table, rules: RowRules) -> np.ndarray:
    """One int8 code per row: 0 eligible, else the index in CODES of the reason it is left out."""
    n = table.num_rows
    url, text, uid = table.column("url"), table.column("text"), table.column("uid")
    checks: list[tuple[int, np.ndarray]] = []
    missing_url = _np(pc.or_(pc.is_null(url), pc.equal(pc.utf8_length(pc.fill_null(url, "")), 0)))
    checks.append((1, missing_url))
    text_len = pc.utf8_length(pc.fill_null(pc.utf8_trim_whitespace(text), ""))
    checks.append((2, _np(pc.equal(text_len, 0))))
    checks.append((3, ~missing_url & ~_np(pc.match_substring_regex(pc.fill_null(url, ""), _URL_OK))))
    checks.append((4, _np(pc.is_null(uid))))
    checks.append((5, _np(pc.greater(pc.utf8_length(pc.fill_null(text, "")), rules.max_text_chars))))
    if rules.opt_out:
        checks.append((6, opted_out(hosts(url), rules.opt_out)))
    if rules.deny is not None and rules.deny.applies_to_urls:
        checks.append((7, denylisted(url, rules.deny)))
    codes = np.zeros(n, dtype=np.int8)
    for code, mask in reversed(checks):  # the first reason in precedence order wins
        codes[mask] = code
    return codes


def keys_of(table: pa.Table, mode: str) -> np.ndarray:
    """The 8-byte dedup key of each row: the uid (url_text), or the hash of the normalized URL (url)."""
    if mode == "url_text":
        return np.asarray(pc.fill_null(table.column("uid"), 0), dtype=np.int64)
    if mode == "url":
        return np.fromiter((url_key(u) if u else 0 for u in table.column("url").to_pylist()),
                           dtype=np.int64, count=table.num_rows)
    raise ValueError(f"unknown dedup key mode {mode!r}")


def file_order(source_offset: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Row order by source offset (stable), or None when the file is already in that order (extract's are)."""
    off = np.asarray(pc.fill_null(source_offset, 0), dtype=np.int64)
    if len(off) < 2 or bool(np.all(off[1:] >= off[:-1])):
        return None
    return np.argsort(off, kind="stable")
