"""The download stage: pairs_unique -> images, polite and safe, in resumable shards (docs/DOWNLOAD.md)."""
