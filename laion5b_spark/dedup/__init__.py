"""The dedup stage: pairs -> pairs_unique (see docs/DEDUP.md)."""
