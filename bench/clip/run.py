"""bench/clip: the clip job (Spark, Arrow UDF) vs a bare open_clip loop over the same images, on CPU.

    python bench/clip/run.py [--images 2000] [--small 400] [--model ViT-B-32] [--cores 2] [--json bench/clip/last.json]

Input: an images table of --images 256 px JPEGs (the download stage's output format; coloured shapes with
captions), written once. Both paths decode, preprocess (open_clip's eval transform), encode images and texts
with the same model (random weights: throughput does not depend on them) in fp32, batch 64:

  bare   one process, torch using every core: PIL decode -> preprocess -> encode_image / encode_text
  ours   jobs/clip.py on local[N]: N tasks, each with one core's torch threads and its decode pool

The job also runs on --small images: the difference is its rate once running, apart from Spark's fixed start-up
(as bench/download). Reports img/s and the overhead ratio bare/ours (target <= 1.15 once running).
GPU figures need a GPU machine: bench/README.md says which exist.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)


def make_lake(path: str, n: int, seed: int = 0) -> None:
    import random

    import pyarrow as pa

    from laion5b_spark import schemas
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample import shapes
    from laion5b_spark.sample.pairs import write_pairs

    rng = random.Random(seed)
    jpg, text = [], []
    for _ in range(n):
        c, s = shapes.sample(rng)
        jpg.append(shapes.jpeg(shapes.draw(c, s, rng, size=256), quality=95))
        text.append(shapes.caption(c, s, rng))
    cols = {f.name: pa.nulls(n, f.type) for f in schemas.IMAGES}
    cols.update(uid=pa.array(range(n), pa.int64()), url=pa.array([f"http://img.test/{i}.jpg" for i in range(n)]),
                text=pa.array(text), language=pa.array(["en"] * n), key=pa.array([f"{i:09d}" for i in range(n)]),
                status=pa.array(["success"] * n), jpg=pa.array(jpg, pa.binary()))
    table = pa.table(cols, schema=schemas.IMAGES)
    per = max(1, n // 4)  # four files: four units, two waves on two cores
    write_pairs(Lake(path), {f"b{i}": table.slice(i * per, per if i < 3 else n - 3 * per) for i in range(4)},
                table="images")


def run_bare(lake: str, model: str, batch: int) -> tuple[float, int]:
    import torch
    from PIL import Image

    from laion5b_spark.clip import models
    from laion5b_spark.lake import Lake

    t = Lake(lake).table("images").read_arrow(columns=["jpg", "text"])
    jpgs, texts = t.column("jpg").to_pylist(), t.column("text").to_pylist()
    m = models.load(model, "", "cpu")
    t0 = time.time()
    with torch.inference_mode():
        for i in range(0, len(jpgs), batch):
            pix = torch.stack([m.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpgs[i:i + batch]])
            img = torch.nn.functional.normalize(m.model.encode_image(pix), dim=-1)
            txt = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer(texts[i:i + batch])), dim=-1)
            (img * txt).sum(-1).numpy()
    return time.time() - t0, len(jpgs)


def run_ours(lake: str, model: str, batch: int, cores: int) -> tuple[float, int]:
    from laion5b_spark.spark import derive_profile

    conf = derive_profile("local", os.path.join(lake, "..", f"bench-{os.path.basename(lake)}.conf"),
                          {"spark.master": f"local[{cores}]"})
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1", L5S_SPARK_LOG_LEVEL="ERROR")
    t0 = time.time()
    p = subprocess.run([sys.executable, "jobs/clip.py", "--lake", lake, "--spark-profile", conf,
                        "--set", f"clip.model={model}", "--set", "clip.pretrained=", "--set", f"clip.batch_size={batch}",
                        "--set", "clip.read_rows=256", "--set", "run.progress_interval_s=600"],
                       env=env, capture_output=True, text=True, cwd=ROOT)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"clip job failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    from laion5b_spark.lake import Lake

    return dt, Lake(lake).table("scored").num_rows()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--small", type=int, default=400)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-clip-")
    big, small = os.path.join(work, "big"), os.path.join(work, "small")
    make_lake(big, args.images)
    make_lake(small, args.small, seed=1)
    print(f"bare open_clip loop, {args.images} images ...", flush=True)
    bare_s, n = run_bare(big, args.model, args.batch)
    bare = n / bare_s
    print(f"  bare: {bare_s:.1f} s, {bare:.1f} img/s", flush=True)
    print("clip job ...", flush=True)
    ours_s, n_big = run_ours(big, args.model, args.batch, args.cores)
    small_s, n_small = run_ours(small, args.model, args.batch, args.cores)
    running = (n_big - n_small) / (ours_s - small_s)
    print(f"  ours: {ours_s:.1f} s for {n_big} ({n_big / ours_s:.1f} img/s end to end); {small_s:.1f} s for "
          f"{n_small} -> {running:.1f} img/s once running, {ours_s - n_big / running:.1f} s fixed", flush=True)
    report = {"images": args.images, "small": args.small, "model": args.model, "batch": args.batch,
              "cores": args.cores, "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python "
              f"{platform.python_version()}", "bare_img_per_s": round(bare, 1),
              "ours_img_per_s_end_to_end": round(n_big / ours_s, 1), "ours_img_per_s_running": round(running, 1),
              "ours_fixed_seconds": round(ours_s - n_big / running, 1),
              "overhead_running": round(bare / running, 3), "overhead_end_to_end": round(bare / (n_big / ours_s), 3)}
    print(f"overhead (bare / ours): {report['overhead_running']}x once running, "
          f"{report['overhead_end_to_end']}x end to end (target <= 1.15)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
