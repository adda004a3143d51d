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

TABLES: dict[str, pa.Schema] = {"pairs": PAIRS, "pairs_unique": PAIRS_UNIQUE}


def check(table_name: str, table: pa.Table) -> None:
    """Raise when a table does not match its declared schema (names, types, non-null columns)."""
    expected = TABLES[table_name]
    if not table.schema.equals(expected, check_metadata=False):
        raise AssertionError(f"{table_name}: schema\n{table.schema}\n!= expected\n{expected}")
    for field in expected:
        if not field.nullable and table.column(field.name).null_count:
            raise AssertionError(f"{table_name}.{field.name} has nulls")
