"""Near-duplicate images from the image index (SemDeDup-style): rows whose image embeddings have cosine at or
above a threshold form groups, and each group keeps one deterministic representative.

Three plain steps, each testable alone (the job runs the first two as Spark tasks, one per export part):

1. ``candidates``: the index's k nearest neighbours of every vector of a part; pairs whose approximate score
   reaches ``threshold - margin`` are candidates (a quantized index under-/over-estimates scores a little).
2. ``confirm``: the exact cosine of each candidate pair from the exported fp16 embeddings; pairs at or above
   the threshold are edges.
3. ``groups``: connected components of the edges plus rows sharing an image ``sha256`` (exact duplicates);
   the representative is a released row where the group has one (with ``index.source = "scored"``), then the
   highest CLIP similarity, then the smallest uid.

Grouping is transitive (a~b and b~c put a, b and c in one group even when a and c are further apart), as in
SemDeDup's clusters; a high threshold keeps chains short.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..schemas import DEDUP_IMAGES


def candidates(index, block: np.ndarray, first_id: int, k: int, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) global ids with i in this block, j != i among i's k nearest, approximate cosine >= floor."""
    if not len(block):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    q = np.ascontiguousarray(block, dtype=np.float32)
    scores, ids = index.search(q, k + 1)  # +1: the query itself
    rows = np.arange(len(block), dtype=np.int64)[:, None] + first_id
    keep = (ids >= 0) & (ids != rows) & (scores / query_scale(index, q)[:, None] >= floor)
    i = np.broadcast_to(rows, ids.shape)[keep]
    return i.astype(np.int64), ids[keep].astype(np.int64)


def query_scale(index, q: np.ndarray) -> np.ndarray:
    """What a unit query's score with itself is in this index: 1 for a plain inner-product index, less after a
    dimension-reducing transform (autofaiss's ``OPQ64_256,...`` keeps ~0.8 of a 512-d vector's squared norm in 256-d).
    Index scores divided by it are comparable to a cosine threshold; raw, a near-copy at cosine 0.999 scores ~0.8."""
    import faiss

    if not isinstance(index, faiss.IndexPreTransform):
        return np.einsum("nd,nd->n", q, q)
    x = q
    for t in range(index.chain.size()):
        x = faiss.downcast_VectorTransform(index.chain.at(t)).apply(x)
    return np.maximum(np.einsum("nd,nd->n", x, x), 1e-12)


def confirm(i: np.ndarray, j: np.ndarray, vec_i: np.ndarray, vec_j: np.ndarray,
            threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact cosine of candidate pairs (embeddings are L2-normalized); the pairs >= threshold, once each (i < j)."""
    cos = np.einsum("nd,nd->n", np.asarray(vec_i, np.float32), np.asarray(vec_j, np.float32))
    keep = cos >= threshold
    return unique_pairs(i[keep], j[keep], cos[keep])


def unique_pairs(i: np.ndarray, j: np.ndarray, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs as (a < b), each once (a pair found from both of its ends, or in two parts)."""
    a, b = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    if not len(a):
        return a, b, np.asarray(cos, np.float32)
    pairs = pd.DataFrame({"a": a, "b": b, "cos": cos}).drop_duplicates(["a", "b"])
    return pairs["a"].to_numpy(), pairs["b"].to_numpy(), pairs["cos"].to_numpy(np.float32)


def groups(uid: np.ndarray, similarity: np.ndarray, sha256, edges_a: np.ndarray, edges_b: np.ndarray,
           edges_cos: np.ndarray, passed: np.ndarray | None = None) -> tuple[pa.Table, Ledger]:
    """``dedup_images`` rows (in id order) and the ``near_dup`` ledger, from every indexed row and the edges.
    ``sha256``: a string array (Arrow or list) with nulls for rows without one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(uid)
    uid = np.asarray(uid, dtype=np.int64)
    sim = np.nan_to_num(np.asarray(similarity, dtype=np.float64), nan=-np.inf)
    released = np.ones(n, dtype=bool) if passed is None else np.asarray(passed, dtype=bool)
    # rank: released first, then the highest CLIP similarity, then the smallest uid - a group's best rank represents it
    order = np.lexsort((uid, -sim, ~released))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    sha = sha256 if isinstance(sha256, (pa.Array, pa.ChunkedArray)) else pa.array(sha256, pa.string())
    if isinstance(sha, pa.ChunkedArray):
        sha = sha.combine_chunks()
    # dictionary codes, not Python strings: 4 bytes a row on the driver
    codes = pc.fill_null(pc.dictionary_encode(sha).indices, -1).to_numpy().astype(np.int64) if n else \
        np.zeros(0, np.int64)
    exact_rep = _best_in_group(codes, rank)  # per row: the best-ranked row with its sha256 (itself when unique)
    exact_a = np.flatnonzero((codes >= 0) & (exact_rep != np.arange(n)))
    a = np.concatenate([edges_a, exact_a]).astype(np.int64)
    b = np.concatenate([edges_b, exact_rep[exact_a]]).astype(np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    rep = _best_in_group(comp, rank)
    size = np.bincount(comp, minlength=comp.max() + 1 if n else 0)[comp] if n else np.zeros(0, np.int64)
    nearest = np.full(n, -np.inf, dtype=np.float32)
    if len(edges_a):
        np.maximum.at(nearest, edges_a, edges_cos)
        np.maximum.at(nearest, edges_b, edges_cos)
    is_dup = rep != np.arange(n)
    is_exact = (codes >= 0) & (exact_rep != np.arange(n))
    table = pa.table({
        "uid": pa.array(uid, pa.int64()),
        "duplicate": pa.array(is_dup),
        "near_dup_of": pa.array(np.where(is_dup, uid[rep], 0), pa.int64(), mask=~is_dup),
        "exact_dup_of": pa.array(np.where(is_exact, uid[exact_rep], 0), pa.int64(), mask=~is_exact),
        "group_size": pa.array(size.astype(np.int32), pa.int32()),
        "nearest_similarity": pa.array(nearest, pa.float32(), mask=~np.isfinite(nearest)),
        "sha256": sha,
    }, schema=DEDUP_IMAGES)
    ledger = Ledger("near_dup", rows_in=n, rows_out=int((~is_dup).sum()))
    if is_exact.sum():  # an exact copy is always a duplicate of its group too: it is counted as exact
        ledger.drop("exact_duplicate", int((is_dup & is_exact).sum()))
    if (is_dup & ~is_exact).sum():
        ledger.drop("near_duplicate", int((is_dup & ~is_exact).sum()))
    return table, ledger


def _best_in_group(labels: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """For each row, the row of its group (label) with the lowest rank; rows labelled < 0 are their own group."""
    n = len(labels)
    out = np.arange(n, dtype=np.int64)
    grouped = labels >= 0
    if not grouped.any():
        return out
    rows = np.flatnonzero(grouped)
    lab = labels[rows]
    best_rank = np.full(lab.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best_rank, lab, rank[rows])
    row_of_rank = np.empty(n, dtype=np.int64)
    row_of_rank[rank] = np.arange(n)
    out[rows] = row_of_rank[best_rank[lab]]
    return out
