"""Every table's schema, in one place. Column names follow LAION's release where one exists."""

from __future__ import annotations

import pyarrow as pa

PAIRS = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),  # laion5b_spark.keys.pair_uid(url, text)
    pa.field("url", pa.string(), nullable=False),  # absolute image URL, fragment dropped
    pa.field("text", pa.string(), nullable=False),  # cleaned alt text
    pa.field("page_url", pa.string(), nullable=False),
    pa.field("language", pa.string(), nullable=False),  # ISO 639-1 or "nolang"
    pa.field("language_score", pa.float32(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),  # input key (e.g. crawl-relative path)
    pa.field("source_offset", pa.int64(), nullable=False),  # offset of the record's gzip member
    pa.field("crawl", pa.string()),  # e.g. CC-MAIN-2024-10, when the path says
    pa.field("license", pa.string()),  # rel="license" link of the page (LAION's LICENSE)
    pa.field("width", pa.int32()),  # from HTML attributes, when given
    pa.field("height", pa.int32()),
])

# dedup keeps every column: one row per dedup key, chosen deterministically (docs/DEDUP.md)
PAIRS_UNIQUE = PAIRS

# one row per pairs_unique row: failures too, with null image bytes and the reason
IMAGES = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("language", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # shard id + row in shard (img2dataset's "key")
    pa.field("status", pa.string(), nullable=False),  # success | failed
    pa.field("reason", pa.string()),  # accounting reason when not a success
    pa.field("error_message", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("width", pa.int32()),  # of the stored (resized) image
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("sha256", pa.string()),  # of the downloaded bytes, as hash lists name them
    pa.field("mime", pa.string()),  # sniffed format of the downloaded bytes
    pa.field("jpg", pa.binary()),  # the stored image (download.encode_format)
    pa.field("exif", pa.string()),
])

# one row per images row: every pair scored or counted (no_image, decode_error), embeddings in fp16
SCORED = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("status", pa.string(), nullable=False),  # scored | no_image | decode_error
    pa.field("model", pa.string()),  # the CLIP model that scored the row (per language: clip.multilingual_*)
    pa.field("similarity", pa.float32()),  # cosine of the image and text embeddings
    pa.field("punsafe", pa.float32()),  # null without clip.nsfw_head
    pa.field("pwatermark", pa.float32()),  # null without clip.watermark_model
    pa.field("passed", pa.bool_()),  # similarity >= the row's threshold
    pa.field("image_embedding", pa.list_(pa.float16())),  # L2-normalized
    pa.field("text_embedding", pa.list_(pa.float16())),
])

# the release: the rows that pass, LAION's columns
DATASET = pa.schema([
    pa.field("url", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("similarity", pa.float32(), nullable=False),
    pa.field("punsafe", pa.float32()),
    pa.field("pwatermark", pa.float32()),
    pa.field("language", pa.string(), nullable=False),
    pa.field("uid", pa.int64(), nullable=False),
])

# one row per indexed row (the index job): near-duplicate groups from the image index, exact ones by sha256
DEDUP_IMAGES = pa.schema([
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("duplicate", pa.bool_(), nullable=False),  # true: not its group's representative (drop it for a release)
    pa.field("near_dup_of", pa.int64()),  # the representative's uid (highest similarity, then smallest uid)
    pa.field("exact_dup_of", pa.int64()),  # the representative of the rows with the same image sha256
    pa.field("group_size", pa.int32(), nullable=False),  # rows in its group (1: no duplicate)
    pa.field("nearest_similarity", pa.float32()),  # highest cosine of a confirmed near-duplicate pair at this row
    pa.field("sha256", pa.string()),
])

TABLES: dict[str, pa.Schema] = {"pairs": PAIRS, "pairs_unique": PAIRS_UNIQUE, "images": IMAGES, "scored": SCORED,
                                "dataset": DATASET, "dedup_images": DEDUP_IMAGES}


def check(table_name: str, table: pa.Table) -> None:
    """Raise when a table does not match its declared schema (names, types, non-null columns)."""
    expected = TABLES[table_name]
    if not table.schema.equals(expected, check_metadata=False):
        raise AssertionError(f"{table_name}: schema\n{table.schema}\n!= expected\n{expected}")
    for field in expected:
        if not field.nullable and table.column(field.name).null_count:
            raise AssertionError(f"{table_name}.{field.name} has nulls")


# the export (jobs/export.py): the release in LAION-5B's published layout - laion2B-en-joined / laion2B-multi-joined
# columns and types (URL, TEXT, WIDTH, HEIGHT int32, similarity float64, hash int64, punsafe, pwatermark float32,
# LANGUAGE) - plus the lake's keys; one file per bucket and shard under the release's laion/<bucket>/
RELEASE_LAION = pa.schema([
    pa.field("URL", pa.string(), nullable=False),
    pa.field("TEXT", pa.string(), nullable=False),
    pa.field("WIDTH", pa.int32()),  # of the image at the URL (images.original_width), as LAION's
    pa.field("HEIGHT", pa.int32()),
    pa.field("similarity", pa.float64(), nullable=False),
    pa.field("hash", pa.int64(), nullable=False),  # the uid (xxh3-64 of url + text), not LAION's mmh3 (docs/EXPORT.md)
    pa.field("punsafe", pa.float32()),
    pa.field("pwatermark", pa.float32()),
    pa.field("LANGUAGE", pa.string(), nullable=False),
    pa.field("uid", pa.int64(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # the images row's key: the webdataset sample's name
])

# the release table's rows (LAKE/release/data/): every bucket, with the bucket and the shard each row is in
RELEASE = pa.schema([*RELEASE_LAION,
                     pa.field("bucket", pa.string(), nullable=False),  # english | multilingual | nolang
                     pa.field("shard", pa.int32(), nullable=False)])  # webdataset/<bucket>/<shard>.tar

TABLES["release"] = RELEASE
