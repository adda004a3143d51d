"""Embeddings out of ``scored``, in the layout autofaiss reads: one ``.npy`` (float16, N x D) per scored file and
modality, and beside it an ids parquet with the same rows in the same order (``uid``, ``sha256``,
``similarity``, ``passed``). Plain Python: a Spark task calls ``export_part`` for one scored file.

Row order inside a part is the scored file's (which is the images file's); autofaiss numbers vectors in the
sorted order of the ``.npy`` names, so the parts' concatenation in name order gives the global ids.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..accounting import Ledger
from ..lake import Lake
from .layout import BuildLayout, Part

IDS_SCHEMA = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("sha256", pa.string()),  # of the downloaded image (images.sha256): exact duplicates
    pa.field("similarity", pa.float32()),  # the CLIP score, which picks a duplicate group's representative
    pa.field("passed", pa.bool_()),  # in the release: a representative is a released row where the group has one
])
SOURCES = ("dataset", "scored")  # index the release (rows that passed) or every scored row


def export_part(lake: Lake, layout: BuildLayout, part: Part, source: str, model: str | tuple[str, ...],
                names: list[str]) -> dict:
    """Write one part's embeddings and ids for the modalities ``names``, each followed by its receipt (the
    part's ledger and row count). Rows are those of CLIP model ``model`` (``scored.model``; several labels when
    their image embeddings share one tower: clip.model and an mclip text tower) and ``source``."""
    scored = lake.table("scored").read_file(part.scored_path, columns=["uid", "status", "model", "passed",
                                                                       "similarity", "image_embedding",
                                                                       "text_embedding"])
    ledger = Ledger("index", rows_in=scored.num_rows)
    status = scored.column("status")
    is_scored = pc.equal(status, "scored")
    for reason in ("no_image", "decode_error"):
        _count(ledger.fail, reason, pc.equal(status, reason))
    labels = pa.array([model] if isinstance(model, str) else list(model), pa.string())
    mine = pc.and_(is_scored, pc.fill_null(pc.is_in(scored.column("model"), value_set=labels), False))
    _count(ledger.drop, "other_model", pc.and_(is_scored, pc.invert(mine)))
    keep = mine
    if source == "dataset":
        keep = pc.and_(mine, pc.fill_null(scored.column("passed"), False))
        _count(ledger.drop, "below_threshold", pc.and_(mine, pc.invert(keep)))
    rows = scored.filter(keep)
    ledger.rows_out = rows.num_rows
    images = lake.table("images").read_file(part.images_file or part.images_path, columns=["uid", "sha256"])
    at = pc.index_in(rows.column("uid"), value_set=images.column("uid").combine_chunks())
    ids = pa.table({"uid": rows.column("uid"),
                    "sha256": pc.take(images.column("sha256").combine_chunks(), at),  # not found: null, never wrong
                    "similarity": rows.column("similarity").cast(pa.float32()),
                    "passed": pc.fill_null(rows.column("passed"), False)}, schema=IDS_SCHEMA)
    receipt = {"part": part.name, "rows": rows.num_rows, "counts": {"index": ledger.to_dict()}}
    for name in names:
        if rows.num_rows:  # autofaiss cannot read a 0-row .npy: an empty part has ids only
            _write_npy(lake, layout.embeddings(name, part.name), embedding_matrix(rows.column(f"{name}_embedding")))
        lake.write_parquet(layout.ids(name, part.name), ids)
        lake.write_json(layout.receipt(name, part), receipt)
    return receipt


def _count(add, reason: str, mask) -> None:
    n = pc.sum(mask.cast(pa.int64())).as_py() or 0
    if n:
        add(reason, n)


def embedding_matrix(column) -> np.ndarray:
    """A list<float16> column with no nulls -> N x D float16, without going through Python lists."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float16)
    lengths = pc.list_value_length(col)
    lo, hi = pc.min_max(lengths).values()
    if lo.as_py() != hi.as_py() or col.null_count:
        raise ValueError(f"embeddings of {lo}..{hi} dimensions (or nulls) in one model's rows")
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return flat.astype(np.float16, copy=False).reshape(n, -1)


def _write_npy(lake: Lake, path: str, matrix: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix))
    lake.write_bytes(path, buf.getvalue())


def read_npy(lake: Lake, path: str) -> np.ndarray:
    """One export part's matrix: memory-mapped from a local lake, read whole from an object store."""
    if lake.is_local:
        return np.load(path, mmap_mode="r")
    with lake.fs.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))
