"""Query a lake's knn index: ``search(lake, text=... | image=... | uid=..., k=...)`` -> rows of ``dataset``.

A text or image query is embedded with the CLIP model that made the lake's embeddings (the pointer file names
it); a uid query uses that row's own exported embedding. The image index answers by default (text -> image
retrieval, as clip-retrieval does); ``index="text"`` searches the captions instead. Loaded indices are cached per
process, keyed by the run that built them, so a notebook pays the load once and sees a rebuild.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..lake import Lake, LakeError
from .export import read_npy
from .layout import open_knn, read_pointer

_RESULT_COLUMNS = ["url", "text", "similarity", "punsafe", "pwatermark", "language", "width", "height"]


@dataclass
class KnnIndex:
    name: str
    pointer: dict
    index: object  # faiss index
    uids: np.ndarray  # id -> uid
    lake: Lake
    _parts: dict = field(default_factory=dict)  # part number -> matrix, read when a uid query needs it

    def id_of(self, uid: int) -> int:
        at = np.flatnonzero(self.uids == uid)
        if not len(at):
            raise KeyError(f"uid {uid} is not in the {self.name} index (not in its source rows: "
                           f"{self.pointer['source']})")
        return int(at[0])

    def vector(self, i: int) -> np.ndarray:
        """The exported embedding of id ``i``: only its part is read (memory-mapped on a local lake)."""
        offsets = np.concatenate([[0], np.cumsum(self.pointer["part_rows"])])
        p = int(np.searchsorted(offsets, i, side="right") - 1)
        if p not in self._parts:
            root = self.lake.index_path(self.name)
            self._parts[p] = read_npy(self.lake, f"{root}/{self.pointer['embeddings']}/{self.pointer['parts'][p]}.npy")
        return np.asarray(self._parts[p][i - offsets[p]], dtype=np.float32)


_cache: dict[tuple, KnnIndex] = {}


def open_index(lake: Lake | str, name: str = "image") -> KnnIndex:
    """The committed index ``name`` of a lake, loaded once per process and build run."""
    lake = Lake(lake) if isinstance(lake, str) else lake
    pointer = read_pointer(lake, name)
    if pointer is None:
        raise LakeError(f"{lake.index_path(name)} has no committed index: run jobs/index.py on this lake first")
    key = (lake.url, name, pointer["run_id"])
    if key not in _cache:
        root = lake.index_path(name)
        index = open_knn(lake, f"{root}/{pointer['index']}", pointer.get("index_param"))
        ids = pa.concat_tables([lake.read_parquet(f"{root}/{pointer['ids']}/{p}.parquet", ["uid"])
                                for p in pointer["parts"]])
        _cache[key] = KnnIndex(name, pointer, index, ids.column("uid").to_numpy(), lake)
    return _cache[key]


def search(lake: Lake | str, text: str | None = None, image=None, uid: int | None = None, k: int = 10,
           index: str | None = None) -> pd.DataFrame:
    """The k nearest rows to one query, joined to ``dataset``: rank, uid, score (inner product = cosine) and
    the dataset's url, text, similarity, punsafe, pwatermark, language, width, height.

    ``image``: PIL image, bytes or a path. ``index``: "image" (default) or "text"."""
    if sum(q is not None for q in (text, image, uid)) != 1:
        raise ValueError("give exactly one of text=, image=, uid=")
    lake = Lake(lake) if isinstance(lake, str) else lake
    knn = open_index(lake, index or "image")
    if uid is not None:
        query = knn.vector(knn.id_of(uid))[None, :]  # the row's own embedding of the searched modality
    else:
        query = _embed(knn.pointer["clip"], text=text, image=image)
    scores, ids = knn.index.search(np.ascontiguousarray(query, dtype=np.float32), k)
    keep = ids[0] >= 0
    found = pd.DataFrame({"rank": np.arange(1, keep.sum() + 1), "uid": knn.uids[ids[0][keep]],
                          "score": scores[0][keep].astype(np.float32)})
    return found.merge(_dataset_rows(lake, found["uid"].tolist()), on="uid", how="left")


def _dataset_rows(lake: Lake, uids: list[int]) -> pd.DataFrame:
    table = lake.table("dataset")
    cols = ["uid"] + _RESULT_COLUMNS
    if not uids or not table.files():
        return pd.DataFrame(columns=cols)
    rows = table.dataset().to_table(columns=cols, filter=pc.field("uid").isin(pa.array(uids, pa.int64())))
    return rows.to_pandas()


def _embed(clip: dict, text: str | None = None, image=None) -> np.ndarray:
    """One query embedding with the lake's CLIP model (on CPU: one query does not need a GPU)."""
    from ..clip import models

    m = models.load(clip["model"], clip.get("pretrained") or "", "cpu")
    if text is not None:
        return m.encode_texts([text]).numpy()
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    return m.encode_images(m.pixels([m.prepare(image.convert("RGB"))])).numpy()
