"""Generated CLIP-like embeddings with planted duplicates, and lakes holding them (index tests and bench/index).

Vectors are clustered unit vectors (real CLIP embeddings are far from uniform: topics), and the planted
near-duplicates are a base vector plus small noise, so their cosine to the base is known to be high while
unrelated vectors stay far below any near-duplicate threshold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .. import schemas
from ..clip.label import model_label
from ..config import DEFAULTS
from ..lake import Lake
from .pairs import write_pairs


MAIN_LABEL = model_label(DEFAULTS["clip"]["model"], DEFAULTS["clip"]["pretrained"])


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, dim: int, rng: np.random.Generator, clusters: int = 64, spread: float = 0.6) -> np.ndarray:
    """n unit vectors around ``clusters`` random centres; ``spread`` sets how far rows stray from them."""
    centres = unit_rows(rng.standard_normal((clusters, dim)))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit_rows(x).astype(np.float32)


def hierarchical(n: int, dim: int, rng: np.random.Generator, branching: tuple[int, ...] = (64, 16, 16, 16),
                 spread: tuple[float, ...] = (1.0, 0.8, 0.6, 0.45), noise: float = 0.35) -> np.ndarray:
    """n unit vectors under a tree of topics (64 topics, 16 subtopics each, ...): a row's neighbours grow
    further apart level by level - graded neighbourhoods, as real embeddings have (one level of flat clusters
    makes every member of a cluster an equally good neighbour, which no index can rank)."""
    centres = np.zeros((1, dim))
    for fan, s in zip(branching, spread):
        centres = np.repeat(centres, fan, axis=0) + s * rng.standard_normal((len(centres) * fan, dim)) / np.sqrt(dim)
    leaf = rng.integers(0, len(centres), n)
    x = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 65536):  # bounded memory for millions of rows
        hi = min(n, lo + 65536)
        x[lo:hi] = centres[leaf[lo:hi]] + noise * rng.standard_normal((hi - lo, dim)) / np.sqrt(dim)
    return unit_rows(x).astype(np.float32)


def near_copy(base: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A vector whose cosine to ``base`` is about 1 - noise**2 / 2 (0.9988 for 0.05)."""
    return unit_rows(base[None, :] + noise * rng.standard_normal((1, base.shape[0])) / np.sqrt(base.shape[0]))[0]


@dataclass
class EmbeddingLake:
    uids: list[int]
    image: np.ndarray  # N x D float32, in uid order of ``uids``
    text: np.ndarray
    near_groups: list[list[int]] = field(default_factory=list)  # planted: uids of near-copies, base first
    exact_groups: list[list[int]] = field(default_factory=list)  # planted: uids sharing image bytes (sha256)
    passed: dict[int, bool] = field(default_factory=dict)
    similarity: dict[int, float] = field(default_factory=dict)


def make_scored_lake(lake: Lake | str, files: int = 3, rows_per_file: int = 200, dim: int = 32, seed: int = 0,
                     near_groups: int = 10, copies: int = 2, exact_pairs: int = 5, pass_share: float = 0.8,
                     no_image: int = 3, empty_file: int | None = None, other_model: int = 0) -> EmbeddingLake:
    """``images`` + ``scored`` + ``dataset`` tables as download and clip write them (one scored file per images
    file), with planted near-duplicate groups and exact duplicates among the rows that pass. ``empty_file``: a
    file whose downloads all failed (no vector from it); ``other_model``: rows scored by another CLIP model
    (the multilingual one of a run), which the index leaves out. Rows are labelled with the built-in
    clip.model, as a clip run with the default settings would."""
    rng = np.random.default_rng(seed)
    n = files * rows_per_file
    img = clustered(n, dim, rng)
    txt = clustered(n, dim, rng)
    sha = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    sim = rng.uniform(0.25, 0.45, n).astype(np.float32)
    passed = rng.random(n) < pass_share
    status = np.array(["scored"] * n, dtype=object)
    status[rng.choice(n, size=no_image, replace=False)] = "no_image"
    if empty_file is not None:
        status[empty_file * rows_per_file:(empty_file + 1) * rows_per_file] = "no_image"
    model = np.array([MAIN_LABEL] * n, dtype=object)
    free = [i for i in rng.permutation(n).tolist() if status[i] == "scored"]
    for i in [free.pop() for _ in range(other_model)]:
        model[i] = "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"
    truth = EmbeddingLake(uids=[], image=img, text=txt)
    for _ in range(near_groups):
        group = [free.pop() for _ in range(copies + 1)]
        for i in group[1:]:
            img[i] = near_copy(img[group[0]], rng)
        passed[group] = True
        truth.near_groups.append(group)
    for _ in range(exact_pairs):
        a, b = free.pop(), free.pop()
        img[b], sha[b] = img[a], sha[a]
        passed[[a, b]] = True
        truth.exact_groups.append([a, b])
    uids = np.arange(n, dtype=np.int64) * 7919 + 11  # not positions: the job must carry uids, not ids
    truth.uids = uids.tolist()
    truth.near_groups = [[int(uids[i]) for i in g] for g in truth.near_groups]
    truth.exact_groups = [[int(uids[i]) for i in g] for g in truth.exact_groups]
    lake = Lake(lake) if isinstance(lake, str) else lake
    images, scored, dataset = {}, {}, {}
    for f in range(files):
        s = slice(f * rows_per_file, (f + 1) * rows_per_file)
        m = rows_per_file
        ok = status[s] == "scored"
        images[f"shard-{f:04d}"] = _table(schemas.IMAGES, m, uid=uids[s], url=[f"http://img.test/{u}.jpg" for u in uids[s]],
                                           text=[f"caption {u}" for u in uids[s]], language=["en"] * m,
                                           key=[f"{f:04d}{i:05d}" for i in range(m)],
                                           status=np.where(ok, "success", "failed").tolist(),
                                           sha256=[h if o else None for h, o in zip(sha[s], ok)],
                                           width=[256] * m, height=[256] * m)
        emb = lambda x: pa.array([list(v) if o else None for v, o in zip(x.astype(np.float16), ok)],  # noqa: E731
                                 pa.list_(pa.float16()))
        scored[f] = _table(schemas.SCORED, m, uid=uids[s], status=status[s].tolist(),
                           model=[m if o else None for m, o in zip(model[s], ok)],
                           similarity=np.where(ok, sim[s], np.nan).tolist(),
                           passed=[bool(p) if o else None for p, o in zip(passed[s], ok)],
                           image_embedding=emb(img[s]), text_embedding=emb(txt[s]))
        keep = ok & passed[s]
        dataset[f] = _table(schemas.DATASET, int(keep.sum()), url=[f"http://img.test/{u}.jpg" for u in uids[s][keep]],
                            text=[f"caption {u}" for u in uids[s][keep]], width=[256] * int(keep.sum()),
                            height=[256] * int(keep.sum()), similarity=sim[s][keep],
                            language=["en"] * int(keep.sum()), uid=uids[s][keep])
    entries = write_pairs(lake, images, table="images")
    write_pairs(lake, {e.path: scored[i] for i, e in enumerate(entries)}, table="scored")
    write_pairs(lake, {e.path: dataset[i] for i, e in enumerate(entries)}, table="dataset")
    truth.passed = {int(u): bool(p and s == "scored" and m == MAIN_LABEL)  # what the index takes
                    for u, p, s, m in zip(uids, passed, status, model)}
    truth.similarity = {int(u): float(v) for u, v in zip(uids, sim)}
    return truth


def _table(schema: pa.Schema, n: int, **cols) -> pa.Table:
    arrays = {}
    for f in schema:
        v = cols.get(f.name)
        if v is None:
            arrays[f.name] = pa.nulls(n, f.type)
        elif isinstance(v, pa.Array):
            arrays[f.name] = v
        else:
            arrays[f.name] = pa.array(v.tolist() if isinstance(v, np.ndarray) else v, f.type, from_pandas=True)
    return pa.table(arrays, schema=schema)
