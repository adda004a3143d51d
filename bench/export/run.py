"""bench/export: writing the release's webdataset shards - the export's writer vs img2dataset's own - on the same rows.

    python bench/export/run.py [--samples 20000] [--shard 10000] [--repeat 3]

The same samples (256 px JPEGs of --distinct generated photos-like images, captions, metadata as the images table
holds them) are written as shards of --shard samples, one after the other in this process (one core each):

  ours          what an export unit writes per bucket and shard: laion5b_spark.download.webdataset.write_tar
                (the tar: jpg/txt/json per sample), the LAION parquet and img2dataset's _stats.json
  img2dataset   img2dataset.writer.WebDatasetSampleWriter (the tar through webdataset.TarWriter, plus its
                per-shard parquet of the metadata) and img2dataset.logger.write_stats: what img2dataset writes per shard

Both read the rows from the same Arrow table (img2dataset gets them as the Python values its downloader holds).
Prints samples/s and MB/s of each, best of --repeat, and the ratio ours / img2dataset; both tars hold the same
samples (checked). Writes bench/export/last.json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from laion5b_spark.download.webdataset import write_tar  # noqa: E402
from laion5b_spark.export.release import laion_file, laion_rows, stats_json  # noqa: E402
from laion5b_spark.schemas import DATASET, IMAGES  # noqa: E402


def photo(rng: np.random.Generator, size: int = 256) -> bytes:
    """A smooth gradient with blobs and grain: compresses like a photo (~15-30 KB at q95), not like noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([np.sin(x * rng.uniform(2, 9) + rng.uniform(0, 6)) * 80 + 128,
                    np.cos(y * rng.uniform(2, 9)) * 80 + 128, (x + y) * 60 + rng.uniform(0, 60)], -1)
    img += rng.normal(0, 6, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def rows(n: int, distinct: int) -> tuple[pa.Table, pa.Table]:
    """(images rows, dataset rows) of n samples."""
    rng = np.random.default_rng(0)
    jpgs = [photo(rng) for _ in range(distinct)]
    uid = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    url = [f"https://img{i % 97}.example.com/photos/{i}/large.jpg" for i in range(n)]
    text = [f"a photo of item {i} on a wooden table, natural light, high resolution" for i in range(n)]
    images = pa.table({
        "uid": uid, "url": url, "text": text, "language": ["en"] * n, "key": [f"{i:09d}" for i in range(n)],
        "status": ["success"] * n, "reason": pa.nulls(n, pa.string()), "error_message": pa.nulls(n, pa.string()),
        "http_status": pa.array([200] * n, pa.int32()), "width": pa.array([256] * n, pa.int32()),
        "height": pa.array([256] * n, pa.int32()), "original_width": pa.array([1024] * n, pa.int32()),
        "original_height": pa.array([768] * n, pa.int32()), "sha256": [f"{i:064x}" for i in range(n)],
        "mime": ["jpeg"] * n, "jpg": [jpgs[i % distinct] for i in range(n)], "exif": pa.nulls(n, pa.string()),
    }, schema=IMAGES)
    dataset = pa.table({"url": url, "text": text, "width": images["width"], "height": images["height"],
                        "similarity": pa.array(rng.uniform(0.28, 0.4, n), pa.float32()),
                        "punsafe": pa.array(rng.uniform(0, 1, n), pa.float32()),
                        "pwatermark": pa.array(rng.uniform(0, 1, n), pa.float32()), "language": ["en"] * n,
                        "uid": uid}, schema=DATASET)
    return images, dataset


def ours(images: pa.Table, dataset: pa.Table, out: str, shard: int) -> None:
    for s, lo in enumerate(range(0, images.num_rows, shard)):
        t0 = time.time()
        part = images.slice(lo, shard)
        write_tar(part, f"{out}/{s:05d}.tar", "jpg")
        release = laion_rows(dataset.slice(lo, shard), part, np.zeros(part.num_rows, np.int8), s)
        pq.write_table(laion_file(release), f"{out}/{s:05d}.parquet", compression="zstd")
        with open(f"{out}/{s:05d}_stats.json", "wb") as f:
            f.write(stats_json(part.num_rows, 0, t0, time.time()))


_I2D_SCHEMA = pa.schema([pa.field(n, t) for n, t in (
    ("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
    ("original_height", pa.int32()), ("exif", pa.string()), ("sha256", pa.string()))])


def img2dataset(images: pa.Table, dataset: pa.Table, out: str, shard: int) -> None:
    from img2dataset.logger import CappedCounter, write_stats  # imported before the clock starts (main)
    from img2dataset.writer import WebDatasetSampleWriter

    cols = ["url", "text", "key", "status", "error_message", "width", "height", "original_width",
            "original_height", "exif", "sha256", "jpg"]
    for s, lo in enumerate(range(0, images.num_rows, shard)):
        t0 = time.time()
        writer = WebDatasetSampleWriter(s, out, True, 5, _I2D_SCHEMA, "jpg")
        status = CappedCounter()
        for batch in images.slice(lo, shard).select(cols).to_batches(max_chunksize=64):
            for r in batch.to_pylist():
                meta = {"url": r["url"], "caption": r["text"], "key": r["key"], "status": r["status"],
                        "error_message": r["error_message"], "width": r["width"], "height": r["height"],
                        "original_width": r["original_width"], "original_height": r["original_height"],
                        "exif": r["exif"], "sha256": r["sha256"]}
                writer.write(r["jpg"], r["key"], r["text"], meta)
                status.increment("success")
        writer.close()
        n = min(shard, images.num_rows - lo)
        write_stats(out, s, n, n, 0, 0, t0, time.time(), status, 5)


def members(folder: str) -> list[str]:
    names = []
    for f in sorted(os.listdir(folder)):
        if f.endswith(".tar"):
            with tarfile.open(os.path.join(folder, f)) as tar:
                names += sorted(m.name for m in tar)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--shard", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    importlib.import_module("img2dataset.writer")  # its import (torch, albumentations: seconds) is not writing

    images, dataset = rows(args.samples, args.distinct)
    mb = sum(len(j) for j in images.column("jpg").to_pylist()) / 1e6
    best, outs = {}, {}
    for _ in range(args.repeat):
        for name, fn in (("ours", ours), ("img2dataset", img2dataset)):
            out = outs.setdefault(name, tempfile.mkdtemp(prefix=f"l5s-bench-export-{name}-"))
            shutil.rmtree(out)
            os.makedirs(out)
            t0 = time.perf_counter()
            fn(images, dataset, out, args.shard)
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
    same = members(outs["ours"]) == members(outs["img2dataset"])
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    assert same, "the two writers' tars hold different members"
    rate = {k: args.samples / v for k, v in best.items()}
    result = {"samples": args.samples, "shard": args.shard, "image_mb": round(mb, 1),
              "seconds": {k: round(v, 3) for k, v in best.items()},
              "samples_per_s": {k: round(v) for k, v in rate.items()},
              "mb_per_s": {k: round(mb / v, 1) for k, v in best.items()},
              "ratio_ours_over_img2dataset": round(rate["ours"] / rate["img2dataset"], 2),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "command": "python bench/export/run.py " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=2))
    with open(os.path.join(os.path.dirname(__file__), "last.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
