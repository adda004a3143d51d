"""The download stage: pairs_unique -> images (see docs/DOWNLOAD.md once built)."""
