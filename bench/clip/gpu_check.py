"""bench/clip/gpu_check: the clip stage's device path on a real GPU gives what the CPU path gives.

    python bench/clip/gpu_check.py [--rows 3000] [--device cuda:0] [--json OUT]

The ring of pinned buffers, the copy events, batches across tables and results fetched once per table only really
run on CUDA (on CPU every copy is synchronous), so this checks them where they run: the project's trained tiny
model (l5s-tiny with its checkpoint) scores the same rows - several tables, decode errors and missing images
among them, three language buckets - on ``cuda`` and on ``cpu``, with the CPU decode pool and with
``clip.gpu_decode`` (nvJPEG). Statuses and models must be equal, and similarities within bf16's error (the device
runs bf16 autocast). Exits non-zero on a mismatch. Not a test: tests never need a GPU (``--device cpu`` is its
smoke run: tests/test_bench_clip_gpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import numpy as np
    import pyarrow as pa
    import torch

    from laion5b_spark.clip.score import ClipSettings, Scorer
    from laion5b_spark.sample import shapes

    asset = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes")
    meta = json.load(open(asset + ".json"))
    pairs = shapes.pairs(args.rows, seed=99)
    jpgs = [b for b, _, _ in pairs]
    for k in range(0, args.rows, 97):
        jpgs[k] = None if k % 2 else b"\xff\xd8\xff\xe0 broken"
    langs = np.array(["en", "de", "nolang", "ja"])[np.arange(args.rows) % 4].tolist()
    rows = pa.table({"uid": pa.array(range(args.rows), pa.int64()), "jpg": pa.array(jpgs, pa.binary()),
                     "text": [c for _, c, _ in pairs], "language": langs})
    tables = [rows.slice(a, 700) for a in range(0, args.rows, 700)]
    base = dict(model="l5s-tiny", pretrained=asset + ".safetensors", threshold=meta["threshold"], batch_size=128,
                decode_threads=8, multilingual_model="l5s-tiny", multilingual_pretrained="",
                multilingual_threshold=0.0)
    on_gpu = args.device.startswith("cuda")
    report, ok = {"rows": args.rows, "gpu": torch.cuda.get_device_name(args.device) if on_gpu else None}, True
    want = pa.concat_tables([s for _, s in Scorer(ClipSettings(**base), "cpu").score_tables(tables)])
    for label, extra in ((args.device, {}), (f"{args.device}+gpu_decode", {"gpu_decode": True})):
        t = time.perf_counter()
        got = pa.concat_tables([s for _, s in Scorer(ClipSettings(**base, **extra), args.device).score_tables(tables)])
        seconds = time.perf_counter() - t
        same = {c: got.column(c).to_pylist() == want.column(c).to_pylist() for c in ("uid", "status", "model")}
        a = np.array([np.nan if v is None else v for v in got.column("similarity").to_pylist()], dtype=float)
        b = np.array([np.nan if v is None else v for v in want.column("similarity").to_pylist()], dtype=float)
        diff = np.abs(a - b)
        passed_agree = float(np.mean(np.array(got.column("passed").to_pylist()) ==
                                     np.array(want.column("passed").to_pylist())))
        r = {"equal_columns": same, "max_abs_sim_diff": float(np.nanmax(diff)), "mean_abs_sim_diff":
             float(np.nanmean(diff)), "passed_agreement": passed_agree, "seconds": round(seconds, 2)}
        good = all(same.values()) and r["max_abs_sim_diff"] < (0.03 if "decode" in label else 0.02)
        r["ok"] = bool(good)
        ok &= good
        report[label] = r
        print(label, json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
