"""bench/index: build time, peak memory and recall of the index job's build step on generated embeddings.

    python bench/index/run.py [--vectors 1000000] [--dim 512] [--memory 64M] [--available 8G] [--index-key KEY]
                              [--json bench/index/last.json]

The embeddings are CLIP-like (clustered unit vectors, fp16) in .npy parts as the index job exports them
(bench/index/data/, made once and reused). The build runs in a child process - ``laion5b_spark.index.build``:
autofaiss with the job's settings, then the job's recall check against exact search - so its peak RSS is the
build's alone. Then the near-duplicate step's neighbour search rate (k=16) on a sample, which is what the
near-duplicate pass costs per row. ``--memory`` is ``index.max_index_memory_usage``: LAION-400M's 16 GB index
over 400M vectors is ~40 bytes per vector, so 64M for 1M vectors is the same budget per vector.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from laion5b_spark.sample.embeddings import clustered  # noqa: E402


def make_data(folder: str, vectors: int, dim: int, parts: int, seed: int = 0) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    stamp = os.path.join(folder, "_spec.json")
    spec = {"vectors": vectors, "dim": dim, "parts": parts, "seed": seed}
    files = [os.path.join(folder, f"part-{i:06d}.npy") for i in range(parts)]
    if os.path.exists(stamp) and json.load(open(stamp)) == spec and all(map(os.path.exists, files)):
        return files
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    rng = np.random.default_rng(seed)
    per = vectors // parts
    for i, f in enumerate(files):
        n = per if i < parts - 1 else vectors - per * (parts - 1)
        np.save(f, clustered(n, dim, rng, clusters=1024).astype(np.float16))
    json.dump(spec, open(stamp, "w"))
    return files


def child(args) -> None:
    """The measured process: build, recall, neighbour search rate; prints one JSON line."""
    from laion5b_spark.index.build import IndexSettings, Vectors, build, load, recall

    s = IndexSettings(max_index_memory_usage=args.memory, current_memory_available=args.available,
                      index_key=args.index_key, recall_queries=args.queries, recall_k=10, nb_cores=os.cpu_count() or 1)
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    infos = build(args.data, os.path.join(out, "knn.index"), os.path.join(out, "index_infos.json"), s)
    build_s = time.time() - t0
    rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    index = load(os.path.join(out, "knn.index"), infos.get("index_param"))
    files = sorted(os.path.join(args.data, f) for f in os.listdir(args.data) if f.endswith(".npy"))
    vectors = Vectors([np.load(f, mmap_mode="r") for f in files])
    rec = recall(index, vectors, s.recall_queries, s.recall_k)
    sample = np.asarray(vectors.get(np.arange(0, len(vectors), max(1, len(vectors) // 20000))), np.float32)
    t0 = time.time()
    index.search(sample, 17)
    search_rate = len(sample) / (time.time() - t0)
    print(json.dumps({"build_seconds": round(build_s, 1), "peak_rss_build_mb": round(rss_build),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "index_key": infos.get("index_key"), "index_param": infos.get("index_param"),
                      "index_mb": round(os.path.getsize(os.path.join(out, "knn.index")) / 1e6, 1),
                      "recall": rec, "neighbour_search_per_s": round(search_rate), "search_sample": len(sample)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--memory", default="64M", help="index.max_index_memory_usage (default 64M: ~LAION-400M's 40 B/vector)")
    ap.add_argument("--available", default="8G", help="index.current_memory_available")
    ap.add_argument("--index-key", default="", help="index.index_key (default: autofaiss chooses)")
    ap.add_argument("--queries", type=int, default=1000, help="recall queries (exact search over every vector)")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    data = os.path.join(HERE, "data", f"{args.vectors}x{args.dim}")
    t0 = time.time()
    make_data(data, args.vectors, args.dim, args.parts)
    print(f"data: {args.vectors:,} x {args.dim} fp16 in {args.parts} parts ({time.time() - t0:.0f}s)", flush=True)
    cmd = [sys.executable, __file__, "--child", "--data", data, "--memory", args.memory, "--available",
           args.available, "--index-key", args.index_key, "--queries", str(args.queries)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        return proc.returncode
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(vectors=args.vectors, dim=args.dim, max_index_memory_usage=args.memory, forced_index_key=args.index_key,
                  current_memory_available=args.available, wall_seconds=round(time.time() - t0, 1),
                  embeddings_mb=round(args.vectors * args.dim * 2 / 1e6), cores=os.cpu_count(),
                  machine=f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                  date=time.strftime("%Y-%m-%d"))
    r = result["recall"]
    print(f"build {result['build_seconds']}s ({result['index_key']}, {result['index_mb']} MB index), peak RSS "
          f"{result['peak_rss_build_mb']:,} MB for {result['embeddings_mb']:,} MB of fp16 embeddings; recall@{r['k']} "
          f"{r['recall_at_k']} (recall@1 {r['recall_at_1']}) on {r['queries']} queries; neighbour search "
          f"{result['neighbour_search_per_s']:,} queries/s (k=17, {result['cores']} cores)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
