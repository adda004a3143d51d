"""bench/clip/gpu: the clip UDF's batch function (``Scorer.score``, the code the job runs) on one GPU, and where the
time goes.

    python bench/clip/gpu.py [--device auto|cpu|cuda] [--models ViT-B-32,ViT-L-14] [--images 16384]
                             [--batch-size 256] [--decode-threads 8] [--read-rows 1024] [--json OUT]

Input: an ``images`` table written through the lake as download writes it (parquet, 1,000-row groups) of 256 px
JPEGs, half coloured shapes and half photo-like (smooth colour fields plus noise, ~30 KB each), read back with
``Table.read_rows`` ``--read-rows`` rows at a time, as a clip task does. Random weights (pretrained ""): throughput
does not depend on them. bf16 autocast on cuda, fp32 on cpu (models.ClipModel).

Per model it reports:
  end to end      img/s of iter_row_chunks + Scorer.score_tables over the whole table (decode pool, batching, both towers,
                  fp16 embedding columns), after one warm-up call
  GPU busy        nvidia-smi's utilization.gpu (share of time a kernel ran) sampled every 200 ms during the end
                  to end pass; also model time share = (images / model-alone rate) / end-to-end seconds
  decode          what one decode thread does per image (JPEG decode, RGB, resize + crop to the model's input:
                  the decode pool's work) on one thread (img/s per core) and on the --decode-threads pool
  model alone     pre-decoded uint8 batches on the device and pre-tokenized captions -> normalize ->
                  encode_image + encode_text (the device's share of Scorer._launch)
  gpu decode      with --gpu-decode, the end to end pass again with clip.gpu_decode (nvJPEG + resize on the device)
  limit           decode or model, whichever is slower alone; "main thread" when end to end stays under 80% of
                  that bound (Arrow columns, tokenizer, the first batch of each call waiting for its decode)
and, when decode is the limit, how many CPU cores per GPU the target needs (targets: >= 6,000 img/s ViT-B-32 and
>= 1,500 img/s ViT-L-14 per H100, end to end). ``--device cpu --models l5s-tiny --images 128`` is the smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

TARGETS = {"ViT-B-32": 6000, "ViT-L-14": 1500}  # img/s per H100, end to end (issue 5)
ROWS_PER_FILE = 4096
ROW_GROUP = 1000  # DownloadJob.row_group_size (not imported: the download stage's packages are not on a GPU box)
COLUMNS = ["uid", "url", "text", "language", "width", "height", "jpg"]  # what the clip job reads


def _photo(rng, size: int = 256):
    """Smooth colour fields plus noise: decodes like a photo, not like a flat test card."""
    import numpy as np
    from PIL import Image, ImageFilter

    small = rng.integers(0, 255, (size // 32 + 1, size // 32 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    arr = np.asarray(im, dtype=np.int16) + rng.integers(-12, 12, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def make_lake(path: str, n: int, distinct: int = 512, seed: int = 0) -> None:
    """``n`` images rows in files of ROWS_PER_FILE, the JPEGs drawn from ``distinct`` generated ones (decode cost
    does not depend on repeats; generating 16k would cost more than the benchmark)."""
    import numpy as np
    import pyarrow as pa

    from laion5b_spark import schemas
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample import shapes

    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    pool = []
    for k in range(min(n, distinct)):
        c, s = shapes.sample(rng)
        im = shapes.draw(c, s, rng, size=256) if k % 2 == 0 else _photo(nrng)
        pool.append((shapes.jpeg(im, quality=90), shapes.caption(c, s, rng)))
    t = Lake(path).table("images")
    entries = []
    for f, start in enumerate(range(0, n, ROWS_PER_FILE)):
        m = min(ROWS_PER_FILE, n - start)
        pick = [pool[(start + i) % len(pool)] for i in range(m)]
        cols = {fld.name: pa.nulls(m, fld.type) for fld in schemas.IMAGES}
        cols.update(uid=pa.array(range(start, start + m), pa.int64()),
                    url=pa.array([f"http://img.test/{start + i}.jpg" for i in range(m)]),
                    text=pa.array([c for _, c in pick]), language=pa.array(["en"] * m),
                    key=pa.array([f"{start + i:09d}" for i in range(m)]), status=pa.array(["success"] * m),
                    width=pa.array([256] * m, pa.int32()), height=pa.array([256] * m, pa.int32()),
                    jpg=pa.array([b for b, _ in pick], pa.binary()))
        rows = pa.table(cols, schema=schemas.IMAGES)
        entries.append(t.write_unit("bench", f"bench{f:04d}", f"b{f}", rows, row_group_size=ROW_GROUP))
    t.commit(entries, "bench")


class GpuBusy:
    """nvidia-smi's utilization.gpu every 200 ms in a background process, for one GPU index."""

    def __init__(self, index: int):
        self.index, self.proc, self.samples = index, None, []

    def __enter__(self) -> "GpuBusy":
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "-i", str(self.index), "--query-gpu=utilization.gpu",
                                          "--format=csv,noheader,nounits", "-lms", "200"],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
            time.sleep(0.5)  # its first line comes after start-up; the pass must not begin before sampling does
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append((time.perf_counter(), int(line.strip())))

    def mark(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.t1 = time.perf_counter()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)

    def fraction(self) -> float | None:
        inside = [u for t, u in self.samples if self.t0 <= t <= self.t1]
        return round(sum(inside) / len(inside) / 100, 3) if inside else None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _decode_one(data: bytes, clip):
    """What a decode thread does per image: JPEG decode, RGB, resize + crop to the model's input (uint8)."""
    import io

    from PIL import Image

    return clip.prepare(Image.open(io.BytesIO(data)).convert("RGB"))


def _end_to_end(scorer, images, entries, args, device) -> tuple[int, float, float | None]:
    """What a clip task does with its images files: whole row groups read ahead, Scorer.score_tables."""
    import torch

    gpu_index = torch.device(device).index or 0
    with GpuBusy(gpu_index) if device.startswith("cuda") else _NoBusy() as busy:
        busy.mark()
        t = time.perf_counter()
        scored = 0
        for e in entries:
            chunks = images.iter_row_chunks(e.path, args.read_rows, COLUMNS, read_ahead=True)
            for _, out in scorer.score_tables(chunks):
                scored += out.num_rows
        _sync(device)
        seconds = time.perf_counter() - t
    return scored, seconds, busy.fraction()


def bench_model(name: str, lake: str, device: str, args) -> dict:
    from laion5b_spark.clip.score import ClipSettings, Scorer
    from laion5b_spark.lake import Lake

    images = Lake(lake).table("images")
    entries = images.entries()
    n = sum(e.rows for e in entries)
    t = time.perf_counter()
    settings = ClipSettings(model=name, pretrained="", threshold=0.0, batch_size=args.batch_size,
                            decode_threads=args.decode_threads)
    scorer = Scorer(settings, device)
    load_s = time.perf_counter() - t
    clip = scorer.main
    print(f"{name}: loaded on {device} in {load_s:.1f} s", flush=True)

    # warm-up: CUDA context, cuBLAS handles, autocast kernels - out of the numbers
    first = images.read_rows(entries[0].path, 0, min(entries[0].rows, args.batch_size * 2), COLUMNS)
    scorer.score(first)
    _sync(device)
    scored, e2e_s, busy = _end_to_end(scorer, images, entries, args, device)
    assert scored == n
    gpu_decode = None
    if args.gpu_decode and device.startswith("cuda"):  # the same pass with nvJPEG decoding on the device
        dev = Scorer(ClipSettings(**{**settings.__dict__, "gpu_decode": True}), device)
        dev.score(first)
        _sync(device)
        g_n, g_s, g_busy = _end_to_end(dev, images, entries, args, device)
        gpu_decode = {"img_per_s_end_to_end": round(g_n / g_s, 1), "gpu_busy_fraction": g_busy,
                      "active": dev.gpu_decoder is not None}
        dev.close()

    # decode + resize alone: the function the pool runs, on one thread and on the pool
    sample = images.read_rows(entries[0].path, 0, min(entries[0].rows, args.decode_sample), ["jpg"])
    jpgs = sample.column("jpg").to_pylist()
    t = time.perf_counter()
    for b in jpgs:
        _decode_one(b, clip)
    per_core = len(jpgs) / (time.perf_counter() - t)
    with ThreadPoolExecutor(args.decode_threads) as pool:
        t = time.perf_counter()
        list(pool.map(lambda b: _decode_one(b, clip), jpgs * max(1, args.decode_threads // 2)))
        pool_rate = len(jpgs) * max(1, args.decode_threads // 2) / (time.perf_counter() - t)

    # model alone: pre-decoded uint8 batches already on the device and pre-tokenized captions, both towers
    import numpy as np
    import torch

    texts = images.read_rows(entries[0].path, 0, len(jpgs), ["text"]).column("text").to_pylist()
    prepared = np.stack([_decode_one(b, clip) for b in jpgs])
    batches = [(torch.from_numpy(prepared[i:i + args.batch_size]).to(device), clip.tokenize(texts[i:i + args.batch_size]))
               for i in range(0, len(prepared) - args.batch_size + 1, args.batch_size)] \
        or [(torch.from_numpy(prepared).to(device), clip.tokenize(texts))]
    steps = max(len(batches), min(args.model_steps, -(-n // args.batch_size)))
    for px, tx in batches[:2]:
        (clip.encode_pixels(px) * clip.encode_tokens(tx)).sum(-1)
    _sync(device)
    t, done = time.perf_counter(), 0
    for k in range(steps):
        px, tx = batches[k % len(batches)]
        (clip.encode_pixels(px) * clip.encode_tokens(tx)).sum(-1)
        done += len(px)
    _sync(device)
    model_rate = done / (time.perf_counter() - t)
    t = time.perf_counter()
    for k in range(0, len(texts), args.batch_size):
        clip.tokenize(texts[k:k + args.batch_size])
    tokenize_us = 1e6 * (time.perf_counter() - t) / max(1, len(texts))
    scorer.close()

    e2e = n / e2e_s
    target = TARGETS.get(name)
    bound = min(pool_rate, model_rate)
    limit = "decode" if pool_rate < model_rate else "model"
    if e2e < 0.8 * bound:  # neither side explains it: the task's main thread (Arrow, launches, unoverlapped waits)
        limit = "main thread"
    r = {"images": n, "load_seconds": round(load_s, 1), "img_per_s_end_to_end": round(e2e, 1),
         "end_to_end_seconds": round(e2e_s, 2),
         "gpu_busy_fraction": busy, "model_time_share": round(min(1.0, (n / model_rate) / e2e_s), 3),
         "decode_img_per_s_per_core": round(per_core, 1), "decode_img_per_s_pool": round(pool_rate, 1),
         "model_img_per_s": round(model_rate, 1), "bound_img_per_s": round(bound, 1),
         "tokenize_us_per_caption": round(tokenize_us, 1),
         "efficiency": round(e2e / bound, 3), "limit": limit, "target_img_per_s": target,
         "meets_target": (e2e >= target) if target else None,
         # cores of decode the target needs at one thread's rate (threads scale at best linearly)
         "cores_per_gpu_for_target": round(target / per_core, 1) if target else None,
         "gpu_decode": gpu_decode}
    return r


class _NoBusy:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def mark(self):
        pass

    def fraction(self):
        return None


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    return "cuda:0" if choice == "cuda" else choice


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda:0 when torch sees one), cpu, cuda, cuda:N")
    ap.add_argument("--models", default="ViT-B-32,ViT-L-14", help="open_clip config names, comma-separated")
    ap.add_argument("--images", type=int, default=16384)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--decode-threads", type=int, default=8)
    ap.add_argument("--read-rows", type=int, default=1024, help="rows per read_rows + score call (clip.read_rows)")
    ap.add_argument("--decode-sample", type=int, default=1024, help="images timed for decode and model alone")
    ap.add_argument("--model-steps", type=int, default=64, help="at most this many batches for model alone")
    ap.add_argument("--gpu-decode", action="store_true", help="also the end to end pass with clip.gpu_decode")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)

    import torch

    device = resolve_device(args.device)
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    work = tempfile.mkdtemp(prefix="bench-clip-gpu-")
    try:
        lake = os.path.join(work, "lake")
        t = time.perf_counter()
        make_lake(lake, args.images)
        print(f"images table: {args.images} rows in {time.perf_counter() - t:.1f} s -> {lake}", flush=True)
        report = {
            "device": device, "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}, "
                       f"torch {torch.__version__}",
            "precision": "bf16 autocast" if device.startswith("cuda") else "fp32",
            "busy_method": ("nvidia-smi utilization.gpu sampled every 200 ms during the end to end pass"
                            if device.startswith("cuda") else None),
            "batch_size": args.batch_size, "decode_threads": args.decode_threads, "read_rows": args.read_rows,
            "weights": "random (pretrained '')", "models": {}}
        for name in [m for m in args.models.split(",") if m]:
            r = bench_model(name, lake, device, args)
            report["models"][name] = r
            busy = f"{100 * r['gpu_busy_fraction']:.0f}%" if r["gpu_busy_fraction"] is not None else "n/a"
            print(f"{name}: {r['img_per_s_end_to_end']:,.0f} img/s end to end | GPU busy {busy} (nvidia-smi), "
                  f"model time {100 * r['model_time_share']:.0f}% | decode {r['decode_img_per_s_per_core']:,.0f} "
                  f"img/s per core, {r['decode_img_per_s_pool']:,.0f} on {args.decode_threads} threads | model "
                  f"alone {r['model_img_per_s']:,.0f} img/s | limit: {r['limit']}", flush=True)
            if r["gpu_decode"]:
                g = r["gpu_decode"]
                gb = f"{100 * g['gpu_busy_fraction']:.0f}%" if g["gpu_busy_fraction"] is not None else "n/a"
                print(f"  with clip.gpu_decode: {g['img_per_s_end_to_end']:,.0f} img/s end to end | GPU busy {gb}",
                      flush=True)
            if r["target_img_per_s"]:
                verdict = "meets" if r["meets_target"] else "misses"
                line = f"  target {r['target_img_per_s']:,} img/s per H100 end to end: {verdict} it on {device}"
                if r["limit"] == "decode":
                    line += (f"; decode is the limit: {r['cores_per_gpu_for_target']} CPU cores per GPU at "
                             f"{r['decode_img_per_s_per_core']:,.0f} img/s per core")
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
