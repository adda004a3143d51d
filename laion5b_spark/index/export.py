"""Embeddings out of ``scored``, in the layout autofaiss reads: one ``.npy`` (float16, N x D) per scored file and
modality, and beside it an ids parquet with the same rows in the same order (``uid``, ``sha256``,
``similarity``). Plain Python: a Spark task calls ``export_part`` for one scored file.

Row order inside a part is the scored file's (which is the images file's); autofaiss numbers vectors in the
sorted order of the ``.npy`` names, so ``part-000000`` .. ``part-NNNNNN`` give global ids by concatenation.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..accounting import Ledger
from ..lake import Lake

MODALITIES = ("image", "text")
IDS_SCHEMA = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("sha256", pa.string()),  # of the downloaded image (images.sha256): exact duplicates
    pa.field("similarity", pa.float32()),  # the CLIP score, which picks a duplicate group's representative
])
SOURCES = ("dataset", "scored")  # index the release (rows that passed) or every scored row


@dataclass(frozen=True)
class Part:
    """One scored file -> one export part of every modality."""

    number: int
    scored_path: str  # relative to the scored table
    images_path: str  # the images file it scored (the scored unit's key)
    rows: int

    @property
    def name(self) -> str:
        return f"part-{self.number:06d}"


class BuildLayout:
    """Where one build's files live, under ``Lake.index_path(name, build)``."""

    def __init__(self, lake: Lake, build: str):
        self.lake, self.build = lake, build

    def root(self, name: str) -> str:
        return self.lake.index_path(name, self.build)

    def embeddings_dir(self, name: str) -> str:
        return self.lake.index_path(name, self.build, "embeddings")

    def embeddings(self, name: str, part: str) -> str:
        return self.lake.index_path(name, self.build, "embeddings", f"{part}.npy")

    def ids(self, name: str, part: str) -> str:
        return self.lake.index_path(name, self.build, "ids", f"{part}.parquet")

    def index_file(self, name: str) -> str:
        return self.lake.index_path(name, self.build, "knn.index")

    def infos_file(self, name: str) -> str:
        return self.lake.index_path(name, self.build, "index_infos.json")

    def receipt(self, part: Part) -> str:
        """Written after a part's files (each written whole): the part is exported. Kept with the image build."""
        return self.lake.index_path(MODALITIES[0], self.build, "_exported", f"{part.name}.json")

    def exported(self, part: Part) -> bool:
        return self.lake.fs.exists(self.receipt(part))


def export_part(lake: Lake, layout: BuildLayout, part: Part, source: str) -> dict:
    """Write one part's embeddings and ids for every modality; returns its ledger and row count."""
    scored = lake.table("scored").read_file(part.scored_path, columns=["uid", "status", "passed", "similarity",
                                                                       "image_embedding", "text_embedding"])
    images = lake.table("images").read_file(part.images_path, columns=["uid", "sha256"])
    ledger = Ledger("index", rows_in=scored.num_rows)
    status = scored.column("status")
    is_scored = pc.equal(status, "scored")
    for reason in ("no_image", "decode_error"):
        n = pc.sum(pc.equal(status, reason).cast(pa.int64())).as_py() or 0
        if n:
            ledger.fail(reason, n)
    keep = is_scored
    if source == "dataset":
        keep = pc.and_(is_scored, pc.fill_null(scored.column("passed"), False))
        below = pc.sum(pc.and_(is_scored, pc.invert(keep)).cast(pa.int64())).as_py() or 0
        if below:
            ledger.drop("below_threshold", below)
    rows = scored.filter(keep)
    ledger.rows_out = rows.num_rows
    sha = _sha256_for(rows.column("uid"), images)
    ids = pa.table({"uid": rows.column("uid"), "sha256": sha,
                    "similarity": rows.column("similarity").cast(pa.float32())}, schema=IDS_SCHEMA)
    for name in MODALITIES:
        if rows.num_rows:  # autofaiss cannot read a 0-row .npy: an empty part has ids only
            _write_npy(lake, layout.embeddings(name, part.name), embedding_matrix(rows.column(f"{name}_embedding")))
    for name in MODALITIES:  # ids last: their presence says the part is complete
        _write_parquet(lake, layout.ids(name, part.name), ids)
    return {"part": part.name, "rows": rows.num_rows, "counts": {"index": ledger.to_dict()}}


def embedding_matrix(column) -> np.ndarray:
    """A list<float16> column with no nulls -> N x D float16, without going through Python lists."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float16)
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return flat.astype(np.float16, copy=False).reshape(n, -1)


def _sha256_for(uids: pa.ChunkedArray, images: pa.Table) -> pa.Array:
    """images.sha256 of each uid (scored rows are an images file's rows, so every uid is there)."""
    at = pc.index_in(uids, value_set=images.column("uid").combine_chunks())
    return pc.take(images.column("sha256").combine_chunks(), at)  # a uid not found gives null, not a wrong hash


def _write_npy(lake: Lake, path: str, matrix: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(matrix))
    lake.write_bytes(path, buf.getvalue())


def _write_parquet(lake: Lake, path: str, table: pa.Table) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".parquet", prefix="l5s-ids-")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        lake.upload(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_npy(lake: Lake, path: str, mmap: bool = True) -> np.ndarray:
    """One export part's matrix: memory-mapped from a local lake, read whole from an object store."""
    if lake.is_local and mmap:
        return np.load(path, mmap_mode="r")
    with lake.fs.open(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def read_ids(lake: Lake, path: str) -> pa.Table:
    if lake.is_local:
        return pq.read_table(path)
    with lake.fs.open(path, "rb") as f:
        return pq.read_table(f)
