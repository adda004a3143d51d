"""What the release is, row by row, without Spark: dataset rows minus the duplicates dedup_images marks, in
LAION-5B's buckets and columns, and the files around the shards (img2dataset's ``_stats.json``, the shard lists,
the Hugging Face dataset card).

A row leaves as an ``exact_duplicate`` when its exact-copy representative is another row, else as a
``near_duplicate`` (the rule stats' release count uses: ``laion5b_spark.stats.funnel``). Buckets follow clip:
a language in ``clip.english`` is ``english``, ``nolang`` is ``nolang``, any other is ``multilingual``.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schemas import RELEASE, RELEASE_LAION

BUCKETS = ("english", "multilingual", "nolang")
LAION_NAMES = {"english": "laion2B-en", "multilingual": "laion2B-multi", "nolang": "laion1B-nolang"}
LISTS = "webdataset.json"  # the shard lists, at the release's root
CARD = "README.md"  # the Hugging Face dataset card, at the release's root


def bucket_of(language: pa.ChunkedArray | pa.Array, english: tuple[str, ...]) -> np.ndarray:
    """Index into BUCKETS per row, as clip's Scorer assigns its buckets."""
    is_english = pc.fill_null(pc.is_in(language, value_set=pa.array(list(english), pa.string())), False)
    is_nolang = pc.fill_null(pc.equal(language, "nolang"), False)
    return np.where(is_english.to_numpy(zero_copy_only=False), 0,
                    np.where(is_nolang.to_numpy(zero_copy_only=False), 2, 1)).astype(np.int8)


def duplicate_kinds(dedup: pa.Table) -> pa.Table:
    """dedup_images rows marked duplicate -> (uid, exact): exact when the exact-copy representative is another row."""
    dup = dedup.filter(pc.fill_null(dedup.column("duplicate"), False))
    exact_of = dup.column("exact_dup_of")
    exact = pc.fill_null(pc.and_(pc.is_valid(exact_of), pc.not_equal(exact_of, dup.column("uid"))), False)
    return pa.table({"uid": dup.column("uid"), "exact": exact})


def duplicate_flags(uid: pa.ChunkedArray | pa.Array, duplicates: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``uid``: (marked duplicate, an exact one), from ``duplicates`` (uid, exact) rows."""
    at = pc.index_in(uid, value_set=duplicates.column("uid").combine_chunks())
    is_dup = pc.is_valid(at).to_numpy(zero_copy_only=False)
    exact = pc.fill_null(pc.take(duplicates.column("exact").combine_chunks(), at), False)
    return is_dup, exact.to_numpy(zero_copy_only=False) & is_dup


def laion_rows(dataset: pa.Table, images: pa.Table, bucket: np.ndarray, shard: int) -> pa.Table:
    """The release rows (schemas.RELEASE) of dataset rows and their images rows, aligned row by row."""
    width = pc.coalesce(images.column("original_width"), images.column("width"))
    height = pc.coalesce(images.column("original_height"), images.column("height"))
    n = dataset.num_rows
    return pa.table({
        "URL": dataset.column("url"), "TEXT": dataset.column("text"), "WIDTH": width, "HEIGHT": height,
        "similarity": dataset.column("similarity").cast(pa.float64()), "hash": dataset.column("uid"),
        "punsafe": dataset.column("punsafe"), "pwatermark": dataset.column("pwatermark"),
        "LANGUAGE": dataset.column("language"), "uid": dataset.column("uid"), "key": images.column("key"),
        "bucket": pa.array(np.array(BUCKETS, dtype=object)[bucket] if n else [], pa.string()),
        "shard": pa.array(np.full(n, shard, np.int32)),
    }, schema=RELEASE)


def laion_file(rows: pa.Table) -> pa.Table:
    """One bucket's rows as LAION published them (schemas.RELEASE_LAION)."""
    return rows.select(RELEASE_LAION.names).cast(RELEASE_LAION)


def shard_name(shard: int, digits: int) -> str:
    return f"{shard:0{digits}d}"


def stats_json(samples: int, failed: int, start: float, end: float) -> bytes:
    """A shard's ``_stats.json`` as img2dataset writes it (img2dataset.logger.write_stats): ``count`` rows of the
    shard, ``successes`` samples in the tar, rows without an image counted as ``failed_to_download``."""
    status = {"success": samples} if samples else {}
    if failed:
        status["no_image"] = failed
    return json.dumps({"count": samples + failed, "successes": samples, "failed_to_download": failed,
                       "failed_to_resize": 0, "duration": end - start, "start_time": start, "end_time": end,
                       "status_dict": status}, indent=4).encode()


def shard_lists(entries: list, digits: int, url: str) -> dict:
    """Per bucket: the committed shards, their samples, and the brace pattern ``webdataset.WebDataset`` takes
    (only when the shards are 0..N with none missing, as a pattern over a gap fails at the gap, and hold samples).
    ``entries``: the release manifest's (a unit's ledger per bucket counts its samples); ``url``: the folder."""
    out = {}
    for b in BUCKETS:
        shards = sorted((int(e.covers["shard"]), int(e.counts.get(b, {}).get("rows_out", 0))) for e in entries
                        if f"webdataset/{b}/{shard_name(int(e.covers['shard']), digits)}.tar" in e.extra)
        numbers = [s for s, _ in shards]
        dense = numbers == list(range(len(numbers))) and sum(n for _, n in shards) > 0  # webdataset refuses 0 samples
        rel = f"webdataset/{b}/{{{shard_name(0, digits)}..{shard_name(len(numbers) - 1, digits)}}}.tar"
        out[b] = {"laion_name": LAION_NAMES[b], "samples": sum(n for _, n in shards), "shards": len(numbers),
                  "pattern": rel if dense else None, "url": f"{url}/{rel}" if dense else None,
                  "files": [f"webdataset/{b}/{shard_name(s, digits)}.tar" for s in numbers],
                  "missing": sorted(set(range(max(numbers) + 1)) - set(numbers)) if numbers else []}
    return out


def dataset_card(lists: dict, encode_format: str, lake_url: str) -> str:
    """README.md of the release folder: one config per non-empty bucket over its webdataset shards, with features
    (``jpg`` an Image, so ``datasets.load_dataset(folder, bucket)`` decodes it), then what the folder holds."""
    configs, infos = [], []
    present = [b for b in BUCKETS if lists[b]["samples"]]
    for i, b in enumerate(present):
        configs.append(f"- config_name: {b}\n  data_files:\n  - split: train\n    path: webdataset/{b}/*.tar\n"
                       + ("  default: true\n" if i == 0 else ""))
        infos.append(f"- config_name: {b}\n  features:\n"
                     f"  - name: __key__\n    dtype: string\n  - name: __url__\n    dtype: string\n"
                     f"  - name: {encode_format}\n    dtype: image\n  - name: txt\n    dtype: string\n"
                     f"  - name: json\n    struct:\n" + "".join(
                         f"    - name: {name}\n      dtype: {dtype}\n" for name, dtype in _JSON_FIELDS)
                     + f"  splits:\n  - name: train\n    num_examples: {lists[b]['samples']}\n")
    rows = "\n".join(f"| `{b}` | {LAION_NAMES[b]} | {lists[b]['samples']:,} | {lists[b]['shards']} | "
                     f"`{lists[b]['pattern'] or 'none: see webdataset.json'}` |" for b in BUCKETS)
    first = present[0] if present else "english"
    return (f"---\nconfigs:\n{''.join(configs)}dataset_info:\n{''.join(infos)}"
            f"task_categories:\n- image-to-text\n- text-to-image\n---\n"
            f"# Image-text release built with laion5b-spark\n\n"
            f"CLIP-filtered image-text pairs in LAION-5B's three buckets, near- and exact-duplicate images removed. "
            f"Exported from the lake `{lake_url}` by `jobs/export.py`.\n\n"
            f"| config | LAION part | samples | shards | webdataset pattern |\n|---|---|---|---|---|\n{rows}\n\n"
            f"- `webdataset/<bucket>/NNNNN.tar`: `{encode_format}` / `txt` / `json` per sample as img2dataset "
            f"writes them, and `NNNNN_stats.json` per shard.\n"
            f"- `laion/<bucket>/NNNNN.parquet`: the metadata in LAION's columns (URL, TEXT, WIDTH, HEIGHT, "
            f"similarity, hash, punsafe, pwatermark, LANGUAGE) plus `uid` and `key`: an img2dataset URL list.\n\n"
            f"```python\nfrom datasets import load_dataset\nds = load_dataset(\"path/to/this/folder\", \"{first}\", "
            f"split=\"train\")\n```\n")


# the json member's fields as laion5b_spark.download.webdataset writes them (img2dataset's, plus uid and language)
_JSON_FIELDS = (("url", "string"), ("caption", "string"), ("key", "string"), ("status", "string"),
                ("error_message", "string"), ("width", "int64"), ("height", "int64"), ("original_width", "int64"),
                ("original_height", "int64"), ("sha256", "string"), ("exif", "string"), ("uid", "int64"),
                ("language", "string"))
