"""The lake-wide row key: ``uid``, a signed 64-bit hash of the normalized URL and the cleaned text.

``url_key`` is the same hash of the normalized URL alone (dedup's ``url`` mode).

xxh3-64 (fast, well distributed); the separator keeps ("ab", "c") and ("a", "bc") apart. Fixed at
extraction and never recomputed downstream, so every table joins on it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .urls import PLAIN_HOST, normalize_url

_SEP = "\x1f"
_NORMAL = "^" + PLAIN_HOST + "/"  # with no % or # anywhere: normalize_url's own shortcut (already normal)


def pair_uid(url: str, text: str) -> int:
    key = (normalize_url(url) + _SEP + text).encode("utf-8", "surrogatepass")
    return xxhash.xxh3_64_intdigest(key) - (1 << 63)  # shifted into int64 range


def url_key(url: str) -> int:
    return xxhash.xxh3_64_intdigest(normalize_url(url).encode("utf-8", "surrogatepass")) - (1 << 63)


def pair_uids(urls: pa.Array, texts: pa.Array) -> pa.Array:
    """``pair_uid`` of each row of two string arrays, as int64: URLs already in normal form (normalize_url's own
    test, as kernels) are joined to their text by one kernel; only the rest are normalized row by row."""
    urls, texts = _array(urls), _array(texts)
    if not len(urls):
        return pa.array([], pa.int64())
    normal = pc.and_(pc.match_substring_regex(urls, _NORMAL),
                     pc.invert(pc.or_(pc.match_substring(urls, "%"), pc.match_substring(urls, "#"))))
    other = np.flatnonzero(pc.invert(normal).to_numpy(zero_copy_only=False))
    if len(other):
        urls = pc.replace_with_mask(urls, pc.invert(normal),
                                    pa.array([normalize_url(u) for u in urls.take(other).to_pylist()], pa.string()))
    keys = pc.binary_join_element_wise(urls, texts, _SEP).cast(pa.binary()).to_pylist()  # (UTF-8, as pair_uid)
    digest = xxhash.xxh3_64_intdigest
    hashes = np.fromiter(map(digest, keys), dtype=np.uint64, count=len(keys))
    return pa.array((hashes ^ np.uint64(1 << 63)).view(np.int64))  # h - 2**63, as pair_uid shifts it


def _array(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
