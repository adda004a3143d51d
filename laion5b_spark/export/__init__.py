"""The export: the release (dataset minus dedup_images' duplicates) as LAION parquet, webdataset shards and a
Hugging Face dataset folder. ``jobs/export.py`` runs it; docs/EXPORT.md shows how to load each format."""
