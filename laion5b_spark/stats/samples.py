"""Sample images of the release, per bucket (English / multilingual / nolang, as LAION-5B's three parts).

The rows shown are each bucket's lowest uids: the same rows on every run over the same release, whatever the
file layout. Choosing them is a top-N in DuckDB (memory flat); their image bytes are then read for those rows
only: the ``uid`` column of each ``images`` file, then just the row groups holding a chosen row (never a scan of
the image column).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import BUCKETS, RELEASE_LABEL, Views, bucket_of, english_languages

_SHOWN = ["uid", "url", "text", "language", "similarity", "punsafe", "pwatermark", "width", "height"]


@dataclass
class Bucket:
    name: str
    rows: int  # release rows in the bucket
    samples: list[dict]  # the shown rows (lowest uids first), each with its image bytes under "jpg" (None: none)


def samples(v: Views, per_bucket: int = 16) -> list[Bucket]:
    """Up to ``per_bucket`` release rows per bucket, with their images; [] before a dataset exists."""
    if not v.has(RELEASE_LABEL) or per_bucket <= 0:
        return []
    release, bucket = v.view(RELEASE_LABEL), bucket_of(english_languages(v.lake))
    counts = dict(v.rows(f"select {bucket} as b, count(*) from {release} group by b"))
    out = []
    for name in BUCKETS:
        rows = [dict(zip(_SHOWN, r)) for r in v.rows(
            f"select {', '.join(_SHOWN)} from {release} where {bucket} = ? order by uid limit ?", [name, per_bucket])]
        out.append(Bucket(name, int(counts.get(name, 0)), rows))
    images = _image_bytes(v, {r["uid"] for b in out for r in b.samples})
    for b in out:
        for r in b.samples:
            r["jpg"] = images.get(r["uid"])
    return out


def _image_bytes(v: Views, uids: set[int]) -> dict[int, bytes | None]:
    """uid -> the stored image of the chosen rows: per images file, its uid column, then only the row groups
    that hold a chosen row; stops once every row is found."""
    if not uids or not v.has("images"):
        return {}
    table, wanted, found = v.lake.table("images"), pa.array(sorted(uids), pa.int64()), {}
    for entry in table.entries():
        ids = table.read_file(entry.path, ["uid"]).column("uid")
        for at in np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)):
            row = table.read_rows(entry.path, int(at), int(at) + 1, ["uid", "jpg", "status"]).to_pylist()[0]
            if row["uid"] not in found or found[row["uid"]] is None:  # a success wins over another row's failure
                found[row["uid"]] = row["jpg"] if row["status"] == "success" else None
        if len(found) == len(uids) and all(b is not None for b in found.values()):
            break
    return found
