"""ingest: an existing URL list (LAION, DataComp, CC12M; parquet, CSV/TSV, JSONL) -> the ``pairs`` table."""
