"""Near-duplicate images from the image index (SemDeDup-style): rows whose image embeddings have cosine at or
above a threshold form groups, and each group keeps one deterministic representative.

Three plain steps, each testable alone (the job runs the first two as Spark tasks, one per export part):

1. ``candidates``: the index's k nearest neighbours of every vector of a part; pairs whose approximate score
   reaches ``threshold - margin`` are candidates (a quantized index under-/over-estimates scores a little).
2. ``confirm``: the exact cosine of each candidate pair from the exported fp16 embeddings; pairs at or above
   the threshold are edges.
3. ``group``: connected components of the edges plus rows sharing an image ``sha256`` (exact duplicates);
   the representative is a released row where the group has one (with ``index.source = "scored"``), then the
   highest CLIP similarity, then the smallest uid. It runs as keyed exchanges (``components.py``), so no machine
   holds every row: on Spark in the job, in process in ``groups`` for tests.

Grouping is transitive (a~b and b~c put a, b and c in one group even when a and c are further apart), as in
SemDeDup's clusters; a high threshold keeps chains short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..accounting import Ledger
from ..exchange import STATS, InProcess, runs, split, tagged
from ..schemas import DEDUP_IMAGES
from .components import components


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


@dataclass(frozen=True)
class PartRows:
    """The indexed rows of one part, in id order (ids ``first .. first + len - 1``)."""
    first: int
    uid: np.ndarray
    similarity: np.ndarray
    passed: np.ndarray
    sha256: pa.Array  # strings, null where a row has none

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.first, self.first + len(self.uid), dtype=np.int64)

    def rank_keys(self, sel=slice(None)) -> tuple[np.ndarray, ...]:
        """Sort keys, most significant last (np.lexsort's order): released first, then the highest CLIP
        similarity (a missing one last), then the smallest uid, then the smallest id."""
        sim = np.nan_to_num(np.asarray(self.similarity, np.float64)[sel], nan=-np.inf)
        return (self.ids[sel], np.asarray(self.uid, np.int64)[sel], -sim,
                (~np.asarray(self.passed, bool)[sel]).astype(np.int8))


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def sha_words(sha: pa.Array) -> np.ndarray:
    """(rows, 4) uint64: the 32 bytes of each (non-null) hex sha256, decoded without Python strings, so an
    exchange moves 32 bytes a row. Values that are not 64 hex digits are hashed to 32 bytes one by one."""
    m = len(sha)
    if not m:
        return np.zeros((0, 4), np.uint64)
    sha = pa.concat_arrays([sha]) if sha.offset else sha
    offsets = np.frombuffer(sha.buffers()[1], np.int32)[: m + 1]
    if (np.diff(offsets) == 64).all():
        chars = np.frombuffer(sha.buffers()[2], np.uint8)[offsets[0]: offsets[0] + 64 * m].reshape(m, 64)
        nibbles = _HEX[chars]
        if (nibbles != 255).all():
            raw = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
            return np.ascontiguousarray(raw).view(np.uint64).reshape(m, 4)
    import hashlib

    raw = b"".join(hashlib.sha256(s.encode()).digest() for s in sha.to_pylist())
    return np.frombuffer(raw, np.uint64).reshape(m, 4).copy()


def _best_of(labels: np.ndarray, keys: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the position of its label's best-ranked row, and its label's size."""
    order = np.lexsort((*keys, labels))  # by label, then rank
    lab = labels[order]
    starts, sizes = runs(lab)
    best = np.empty(len(labels), np.int64)
    best[order] = np.repeat(order[starts], sizes)
    size = np.empty(len(labels), np.int64)
    size[order] = np.repeat(sizes, sizes)
    return best, size


def group(engine, offsets: np.ndarray, rows_of, near, finish, log=None) -> list[tuple[int, object, dict]]:
    """``dedup_images`` part by part, without one machine holding all rows: connected components of the near
    edges (``("near", a, b, cos)`` blocks from ``confirm``, under any address) plus rows sharing a sha256.

    ``offsets``: the first id of each part, then the total; ``rows_of(p)`` -> PartRows; ``finish(p, table)`` is
    called once per part with its rows (in id order) and returns what the caller keeps (a file entry, the table).
    Returns (part, finish's result, counts) per part; counts add up to the ``near_dup`` ledger (``ledger_of``)."""
    offsets = np.asarray(offsets, np.int64)
    n = max(1, len(offsets) - 1)

    def owner(ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(offsets, ids, side="right") - 1

    def sha_step(p: int):  # each row with a sha256, to the partition of its hash
        rows = rows_of(p)
        has = np.asarray(rows.sha256.is_valid(), bool)
        words = sha_words(rows.sha256.filter(pa.array(has)))
        yield from split(words[:, 0] % np.uint64(n), "sha", *words.T, *rows.rank_keys(has))

    def exact_step(p: int, blocks: list):  # one image's copies: the best-ranked one is the others' exact original
        w0, w1, w2, w3, *keys = tagged(blocks, "sha", 8)
        if not len(w0):
            return
        order = np.lexsort((w3, w2, w1, w0))
        new = np.concatenate([[True], (np.diff(w0[order]) != 0) | (np.diff(w1[order]) != 0)
                              | (np.diff(w2[order]) != 0) | (np.diff(w3[order]) != 0)])
        label = np.empty(len(w0), np.int64)
        label[order] = np.cumsum(new)
        best, _ = _best_of(label, tuple(keys))
        ids, uid = keys[0], keys[1]
        copy = best != np.arange(len(ids))
        yield from split(ids[copy] % n, "edge", ids[copy], ids[best[copy]])
        yield from split(owner(ids[copy]), "exact", ids[copy], uid[best[copy]])

    def near_step(p: int, blocks: list):  # near edges, and each end's nearest similarity to its part
        a, b, cos = tagged(blocks, "near", 3)
        yield from split(a % n, "edge", a, b)
        yield from split(owner(np.concatenate([a, b])), "nearest", np.concatenate([a, b]), np.concatenate([cos, cos]))

    def member_step(p: int, blocks: list):  # component members of part p, with their rank, to their root
        node, root = tagged(blocks, "member", 2)
        node, first = np.unique(node, return_index=True)
        root = root[first]
        rows = rows_of(p)
        keys = rows.rank_keys(node - rows.first)
        yield from split(root % n, "candidate", root, *keys)

    def root_step(p: int, blocks: list):  # per component: its best-ranked member represents it
        root, *keys = tagged(blocks, "candidate", 5)
        if not len(root):
            return
        best, size = _best_of(root, tuple(keys))
        ids, uid = keys[0], keys[1]
        yield from split(owner(ids), "rep", ids, ids[best], uid[best], size)

    def finish_step(p: int, blocks: list):
        rows = rows_of(p)
        table, counts = _part_table(rows, blocks)
        yield STATS, (p, finish(p, table), counts)

    exact = engine.keep(engine.exchange(engine.parts(n, sha_step), n, exact_step))
    near_out = engine.keep(engine.exchange(near, n, near_step))
    stars = components(engine, engine.only(engine.union(exact, near_out), "edge"), n, log)

    def members(p: int, blocks: list):  # (node, root) to the node's part and (root, root) to the root's
        child, root = tagged(blocks, "edge", 2)
        yield from split(owner(child), "member", child, root)
        yield from split(owner(root), "member", root, root)

    member_data = engine.exchange(stars, n, members)
    reps = engine.exchange(engine.exchange(member_data, n, member_step), n, root_step)
    # exact / nearest / rep blocks are already addressed to parts; an exchange delivers them
    done = engine.stats(engine.exchange(engine.only(engine.union(exact, near_out, reps), "exact", "nearest", "rep"),
                                        n, finish_step))
    for d in (exact, near_out, stars):
        engine.drop(d)
    return sorted(done, key=lambda x: x[0])


def _part_table(rows: PartRows, blocks: list) -> tuple[pa.Table, dict]:
    ids = rows.ids
    n, first = len(ids), rows.first
    uid = np.asarray(rows.uid, np.int64)
    rep_uid = uid.copy()
    rep_id = ids.copy()
    size = np.ones(n, np.int64)
    node, r_id, r_uid, r_size = tagged(blocks, "rep", 4)
    rep_id[node - first], rep_uid[node - first], size[node - first] = r_id, r_uid, r_size
    exact_of = np.zeros(n, np.int64)
    is_exact = np.zeros(n, bool)
    e_id, e_uid = tagged(blocks, "exact", 2)
    exact_of[e_id - first], is_exact[e_id - first] = e_uid, True
    nearest = np.full(n, -np.inf, np.float32)
    s_id, s_cos = tagged(blocks, "nearest", 2)
    np.maximum.at(nearest, s_id - first, s_cos.astype(np.float32))
    is_dup = rep_id != ids
    table = pa.table({
        "uid": pa.array(uid, pa.int64()),
        "duplicate": pa.array(is_dup),
        "near_dup_of": pa.array(np.where(is_dup, rep_uid, 0), pa.int64(), mask=~is_dup),
        "exact_dup_of": pa.array(exact_of, pa.int64(), mask=~is_exact),
        "group_size": pa.array(size.astype(np.int32), pa.int32()),
        "nearest_similarity": pa.array(nearest, pa.float32(), mask=~np.isfinite(nearest)),
        "sha256": rows.sha256,
    }, schema=DEDUP_IMAGES)
    # an exact copy is always a duplicate of its group too: it is counted as exact
    counts = {"rows": n, "kept": int((~is_dup).sum()), "exact_duplicate": int((is_dup & is_exact).sum()),
              "near_duplicate": int((is_dup & ~is_exact).sum())}
    return table, counts


def ledger_of(counts: list[dict]) -> Ledger:
    ledger = Ledger("near_dup", rows_in=sum(c["rows"] for c in counts), rows_out=sum(c["kept"] for c in counts))
    for reason in ("exact_duplicate", "near_duplicate"):
        if total := sum(c[reason] for c in counts):
            ledger.drop(reason, total)
    return ledger


def groups(uid, similarity, sha256, edges_a, edges_b, edges_cos, passed=None,
           part_rows: list[int] | None = None) -> tuple[pa.Table, Ledger]:
    """``group`` in this process over arrays of every row (tests, small inputs): the table in id order and the
    ledger. ``part_rows`` splits the rows into parts as the index job's export does."""
    uid = np.asarray(uid, np.int64)
    n = len(uid)
    sizes = part_rows or [n]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    sha = sha256 if isinstance(sha256, (pa.Array, pa.ChunkedArray)) else pa.array(sha256, pa.string())
    if isinstance(sha, pa.ChunkedArray):
        sha = sha.combine_chunks()
    passed = np.ones(n, bool) if passed is None else np.asarray(passed, bool)
    sim = np.asarray(similarity, np.float64)

    def rows_of(p: int) -> PartRows:
        lo, hi = int(offsets[p]), int(offsets[p + 1])
        return PartRows(lo, uid[lo:hi], sim[lo:hi], passed[lo:hi], sha.slice(lo, hi - lo))

    engine = InProcess()
    near = [(0, ("near", np.asarray(edges_a, np.int64), np.asarray(edges_b, np.int64),
                 np.asarray(edges_cos, np.float32)))]
    done = group(engine, offsets, rows_of, near, lambda p, t: t)
    tables = [t for _, t, _ in done]
    return (pa.concat_tables(tables) if tables else DEDUP_IMAGES.empty_table()), ledger_of([c for *_, c in done])
