"""One knn index from exported embeddings: autofaiss builds it, an exact search on a sample measures its recall.

autofaiss wipes its temporary folder when it starts, so a build cannot resume half-way: the unit of resume is
the whole index (the export before it resumes per part). Loading an index re-applies the search parameters
autofaiss tuned (``index_param``), which ``faiss.read_index`` does not keep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULTS


_INDEX = DEFAULTS["index"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class IndexSettings:
    source: str = _INDEX["source"]
    max_index_memory_usage: str = _INDEX["max_index_memory_usage"]
    current_memory_available: str = _INDEX["current_memory_available"]
    index_key: str = _INDEX["index_key"]  # "" = autofaiss chooses (e.g. HNSW32 for small sets, OPQ+IVF-HNSW-PQ for big ones)
    index_param: str = _INDEX["index_param"]
    max_index_query_time_ms: float = _INDEX["max_index_query_time_ms"]
    min_nearest_neighbors_to_retrieve: int = _INDEX["min_nearest_neighbors_to_retrieve"]
    nb_cores: int = _INDEX["nb_cores"]  # 0 = every core of the driver
    distributed: str = _INDEX["distributed"]  # "pyspark": autofaiss builds shards on the executors (5B-scale)
    recall_queries: int = _INDEX["recall_queries"]
    recall_k: int = _INDEX["recall_k"]
    seed: int = _INDEX["seed"]

    @classmethod
    def from_config(cls, c: dict) -> "IndexSettings":
        return cls(**{k: type(getattr(cls, k))(c[k]) for k in cls.__dataclass_fields__})


class Vectors:
    """The exported parts of one modality as one N x D matrix by global id (parts stay separate, memory-mapped)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [p for p in parts if len(p)]
        sizes = np.array([len(p) for p in self.parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.dim = self.parts[0].shape[1] if self.parts else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        which = np.searchsorted(self.offsets, ids, side="right") - 1
        for p in np.unique(which):
            sel = which == p
            out[sel] = self.parts[p][ids[sel] - self.offsets[p]]
        return out

    def blocks(self, rows: int = 65536):
        """(first id, float32 block) over every vector, in id order."""
        for p, part in enumerate(self.parts):
            for lo in range(0, len(part), rows):
                yield int(self.offsets[p]) + lo, np.asarray(part[lo:lo + rows], dtype=np.float32)


def build(embeddings_dir: str, index_file: str, infos_file: str, s: IndexSettings,
          temporary_folder: str | None = None) -> dict:
    """autofaiss over a folder of .npy parts (inner product: the embeddings are L2-normalized)."""
    from autofaiss import build_index

    t0 = time.time()
    _, infos = build_index(
        embeddings=embeddings_dir, index_path=index_file, index_infos_path=infos_file, file_format="npy",
        index_key=s.index_key or None, index_param=s.index_param or None,
        max_index_query_time_ms=s.max_index_query_time_ms, max_index_memory_usage=s.max_index_memory_usage,
        min_nearest_neighbors_to_retrieve=s.min_nearest_neighbors_to_retrieve,
        current_memory_available=s.current_memory_available, metric_type="ip", nb_cores=s.nb_cores or None,
        distributed=s.distributed or None, verbose=logging.WARNING,
        **({"temporary_indices_folder": temporary_folder} if temporary_folder else {}))
    if infos is None:
        raise RuntimeError("autofaiss built no index (its log above says why; too few vectors for the index_key?)")
    infos = dict(infos, build_seconds=round(time.time() - t0, 1))
    return infos


def load(index_file: str, index_param: str | None):
    """A built index, with autofaiss's tuned search parameters applied again."""
    import faiss

    index = faiss.read_index(index_file)
    if index_param:
        faiss.ParameterSpace().set_index_parameters(index, index_param)
    return index


def exact_top_k(queries: np.ndarray, vectors: Vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top k over every vector, streamed block by block (the ground truth)."""
    q = np.asarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for first, block in vectors.blocks():
        s = q @ block.T
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, top + first], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    return best_s, best_i


def recall(index, vectors: Vectors, queries: int, k: int, seed: int = 0) -> dict:
    """Recall@k of the index against exact search, for a seeded sample of the indexed vectors as queries.

    A returned neighbour counts when its exact score reaches the k-th exact score (less 1e-4): with exact
    duplicates in the data several ids are equally right, and counting ids alone would call that a miss.
    """
    n = len(vectors)
    if n == 0:
        return {"queries": 0, "k": k, "recall_at_k": None, "recall_at_1": None}
    t0 = time.time()
    k = min(k, n)
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    q = vectors.get(ids)
    exact_s, _ = exact_top_k(q, vectors, k)
    _, approx_i = index.search(q, k)
    hits = np.zeros(len(q), dtype=np.int64)
    top1 = np.zeros(len(q), dtype=bool)
    for r in range(len(q)):
        found = approx_i[r][approx_i[r] >= 0]
        if not len(found):
            continue
        scores = vectors.get(found) @ q[r]
        good = scores >= exact_s[r, k - 1] - 1e-4
        hits[r] = int(good.sum())
        top1[r] = scores[0] >= exact_s[r, 0] - 1e-4
    return {"queries": int(len(q)), "k": int(k), "recall_at_k": round(float(hits.sum() / (len(q) * k)), 4),
            "recall_at_1": round(float(top1.mean()), 4), "seconds": round(time.time() - t0, 1)}
