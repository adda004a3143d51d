"""The lake-wide row key: ``uid``, a signed 64-bit hash of the normalized URL and the cleaned text.

``url_key`` is the same hash of the normalized URL alone (dedup's ``url`` mode).

xxh3-64 (fast, well distributed); the separator keeps ("ab", "c") and ("a", "bc") apart. Fixed at
extraction and never recomputed downstream, so every table joins on it.
"""

from __future__ import annotations

import xxhash

from .urls import normalize_url

_SEP = "\x1f"


def pair_uid(url: str, text: str) -> int:
    key = (normalize_url(url) + _SEP + text).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_64_intdigest(key) - (1 << 63)  # shifted into int64 range


def url_key(url: str) -> int:
    return xxhash.xxh3_64_intdigest(normalize_url(url).encode("utf-8", "surrogatepass")) - (1 << 63)
