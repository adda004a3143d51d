"""One images shard as an img2dataset-compatible webdataset tar, for training loaders that read tars, not parquet.

Each successful row becomes three members named by its key - ``{key}.jpg`` (the stored image; the extension is
the encode format), ``{key}.txt`` (the caption) and ``{key}.json`` (the metadata img2dataset writes, plus uid and
language) - in row order. Failed rows are left out, as img2dataset leaves them out of its tars (they stay in the
images table). Members carry mtime 0, owner 0 and mode 0o444, so the same shard always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa

_COLUMNS = ["uid", "url", "text", "language", "key", "status", "error_message", "width", "height",
            "original_width", "original_height", "sha256", "exif", "jpg"]


def write_tar(images: pa.Table, path: str, encode_format: str = "jpg", extra_columns: tuple[str, ...] = ()) -> int:
    """Write the successful rows of ``images`` (schemas.IMAGES) to a tar at the local ``path``; return how many
    samples it holds. The caller moves the file into the lake.

    ``encode_format`` names the image members' extension (the ``jpg`` column holds that format's bytes).
    ``extra_columns``: more columns of ``images`` each sample's json carries (img2dataset's
    save_additional_columns; the release's similarity, punsafe, pwatermark).
    """
    written = 0
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        # a few rows at a time: a whole shard's image bytes as Python objects would double its memory
        for batch in images.select(_COLUMNS + list(extra_columns)).to_batches(max_chunksize=64):
            for row in batch.to_pylist():
                if row["status"] != "success" or row["jpg"] is None:
                    continue
                key = row["key"]
                if "." in key or "/" in key:  # readers take the key as the name up to its first dot
                    raise ValueError(f"key {key!r} cannot name webdataset members")
                meta = {"url": row["url"], "caption": row["text"], "key": key, "status": row["status"],
                        "error_message": row["error_message"], "width": row["width"], "height": row["height"],
                        "original_width": row["original_width"], "original_height": row["original_height"],
                        "sha256": row["sha256"], "exif": row["exif"], "uid": row["uid"],
                        "language": row["language"], **{c: row[c] for c in extra_columns}}
                _add(tar, f"{key}.{encode_format}", row["jpg"])
                _add(tar, f"{key}.txt", row["text"].encode("utf-8"))
                _add(tar, f"{key}.json", json.dumps(meta, indent=4).encode("utf-8"))  # img2dataset's indent
                written += 1
    return written


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0
    tar.addfile(info, io.BytesIO(data))


def read_tar_samples(path: str) -> list[dict]:
    """The samples of a tar written by ``write_tar``: ``{key, image, text, json}`` each, in tar order."""
    samples: dict[str, dict] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition("/")[2].partition(".")
            data = tar.extractfile(member).read()
            sample = samples.setdefault(key, {"key": key, "image": None, "text": None, "json": None})
            if ext == "txt":
                sample["text"] = data.decode("utf-8")
            elif ext == "json":
                sample["json"] = json.loads(data)
            else:
                sample["image"] = data
    return list(samples.values())
