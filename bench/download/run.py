"""bench/download: this project's download job vs img2dataset.download, the same URLs from the same local nginx.

    make bench-download      # or: python bench/download/run.py [--images 20000] [--cores 2]

Needs nginx (Debian: apt-get install -y nginx-light); the script runs its own instance on 127.0.0.1 with one
worker. Generates 500 distinct JPEG photos-like images, 640-1024 px on the long side (cached in
bench/download/data/), and serves each under --images/500 URLs, so the client decodes --images full images.
Then, one after the other, each as its own process on the same cores, resize to 256 px (border, JPEG q95):

  ours          jobs/download.py (local[N], 32 threads per task, per-host cap 32: one host serves everything)
  img2dataset   img2dataset.download(..., processes_count=N, thread_count=32, output_format="parquet")
  ours-polite   ours with the default per-host cap (4 per task): what politeness costs against one host

and prints img/s per core and the ratio, and checks both stored the same number of images. Each tool also runs
on --small images (2,000): the difference of the two runs gives its rate once running and its fixed cost
(start-up, shut-down), reported apart - a real download runs for days, a benchmark for a minute. For ours it also
records, after the timed run, the bytes per image: fetched (full size), stored JPEG, and images-table parquet bytes
per row - the capacity model's byte terms; the 500 images are served equally often, so any --images gives the same
means (`--tools ours-polite --images 2000 --small 0 --json bench/download/bytes.json` records them alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(HERE, "data")
DISTINCT = 500


def ensure_images() -> str:
    import numpy as np
    from PIL import Image, ImageFilter

    folder = os.path.join(DATA, "img")
    if len(os.listdir(folder) if os.path.isdir(folder) else []) >= DISTINCT:
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    print(f"generating {DISTINCT} JPEG images into {folder} ...", flush=True)
    for i in range(DISTINCT):
        long = int(rng.integers(640, 1025))
        short = int(long * rng.uniform(0.56, 1.0))
        w, h = (long, short) if i % 3 else (short, long)
        # smooth colour fields plus noise: compresses like a photo (50-200 KB), not like a flat test card
        small = rng.integers(0, 255, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(small, "RGB").resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        arr = np.asarray(im, dtype=np.int16) + rng.integers(-12, 12, (h, w, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(os.path.join(folder, f"{i}.jpg"), "JPEG",
                                                                        quality=88)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(work: str, folder: str) -> tuple[subprocess.Popen, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx is needed: apt-get install -y nginx-light")
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
  keepalive_requests 100000;
  sendfile on;
  types {{ image/jpeg jpg; }}
  server {{
    listen 127.0.0.1:{port};
    location /i/ {{ rewrite ^/i/[0-9]+/([0-9]+\\.jpg)$ /$1 break; root {folder}; }}
    location = /status {{ stub_status; }}
  }}
}}
""")
    os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
    proc = subprocess.Popen([nginx, "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"nginx did not start; see {work}/error.log")


class ServerPeaks:
    """Polls nginx's stub_status while a tool runs: the most connections open at once - the server's own count,
    to check a per-host cap. (Its "Writing" count stays ~0: nginx answers a cached file within the poll interval.)"""

    def __init__(self, port: int, every_s: float = 0.05):
        import threading

        self.url, self.every = f"http://127.0.0.1:{port}/status", every_s
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "ServerPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import re
        import urllib.request

        while not self._stop.wait(self.every):
            with urllib.request.urlopen(self.url) as r:
                text = r.read().decode()
            active = int(re.search(r"Active connections:\s*(\d+)", text).group(1)) - 1  # less this poll's own
            self.connections = max(self.connections, active)


def urls_for(n: int, port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/i/{k}/{k % DISTINCT}.jpg" for k in range(n)]


def _env() -> dict:
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                SPARK_LOCAL_IP="127.0.0.1", L5S_SPARK_LOG_LEVEL="ERROR", NO_ALBUMENTATIONS_UPDATE="1")


def _profile(work: str, cores: int) -> str:
    """conf/spark/local.conf with local[cores]: the same Spark settings for every Spark tool in the run."""
    from laion5b_spark.spark import derive_profile

    return derive_profile("local", os.path.join(work, "bench.conf"), {"spark.master": f"local[{cores}]"})


def run_ours(urls: list[str], port: int, work: str, cores: int, per_host: int) -> tuple[float, int, dict]:
    import pyarrow as pa

    from laion5b_spark.keys import pair_uid
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample.pairs import generate_rows, write_pairs

    lake = os.path.join(work, f"ours-{per_host}")
    rows = generate_rows(len(urls), 0, source_file="bench")
    texts = rows.column("text").to_pylist()
    rows = rows.set_column(1, "url", pa.array(urls)).set_column(
        0, "uid", pa.array([pair_uid(u, t) for u, t in zip(urls, texts)], pa.int64()))
    write_pairs(Lake(lake), {"bench": rows}, table="pairs_unique")
    shard = max(1, len(urls) // (4 * cores))
    t0 = time.time()
    p = subprocess.run([sys.executable, "jobs/download.py", "--lake", lake, "--spark-profile", _profile(work, cores),
                        "--set", f'download.allow=["127.0.0.1:{port}"]', "--set", f"download.shard_rows={shard}",
                        "--set", "download.threads=32", "--set", f"download.max_per_host={per_host}",
                        "--set", "run.progress_interval_s=600"], env=_env(), capture_output=True, text=True, cwd=ROOT)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"ours failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    print("\n".join("    " + line for line in p.stdout.splitlines() if " in -> " in line or "failed " in line))
    images = Lake(lake).table("images")
    out = images.read_arrow(columns=["status", "url", "jpg"])
    ok = sum(1 for s in out.column("status").to_pylist() if s == "success")
    return dt, ok, stored_bytes(out, sum(e.bytes for e in images.entries()))


def stored_bytes(images, table_bytes: int) -> dict:
    """Bytes per image, read after the timed run (the timing is untouched): what each success fetched (the served
    file behind its URL), its stored JPEG, and the images table's parquet bytes per row (metadata and compression
    included) - the capacity model's full-size and stored-size terms (bench/capacity/model.py)."""
    folder = os.path.join(DATA, "img")
    served = {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)}
    rows = [(u, j) for s, u, j in zip(*(images.column(c).to_pylist() for c in ("status", "url", "jpg")))
            if s == "success"]
    n = max(1, len(rows))
    return {"fetched_kb_per_image": round(sum(served[u.rsplit("/", 1)[1]] for u, _ in rows) / n / 1024, 1),
            "stored_jpg_kb_per_image": round(sum(len(j) for _, j in rows) / n / 1024, 2),
            "images_table_kb_per_row": round(table_bytes / max(1, images.num_rows) / 1024, 2),
            "images_table_rows": images.num_rows}


_I2D = """
import sys
from img2dataset import download
if __name__ == "__main__":
    src, out, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
    download(url_list=src, input_format="parquet", url_col="url", caption_col="caption", output_format="parquet",
             output_folder=out, processes_count=cores, thread_count=32, image_size=256, resize_mode="border",
             encode_quality=95, number_sample_per_shard=2500, distributor="multiprocessing", timeout=10, retries=0,
             enable_wandb=False, disallowed_header_directives=[])
"""


def run_img2dataset(urls: list[str], work: str, cores: int) -> tuple[float, int, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = os.path.join(work, "urls.parquet")
    pq.write_table(pa.table({"url": urls, "caption": [f"image {i}" for i in range(len(urls))]}), src)
    script = os.path.join(work, "i2d.py")
    with open(script, "w") as f:
        f.write(_I2D)
    out = os.path.join(work, "i2d-out")
    t0 = time.time()
    p = subprocess.run([sys.executable, script, src, out, str(cores)], env=_env(), capture_output=True, text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"img2dataset failed:\n{p.stderr[-3000:]}")
    ok = 0
    for name in os.listdir(out):
        if name.endswith("_stats.json"):
            with open(os.path.join(out, name)) as f:
                ok += json.load(f)["successes"]
    return dt, ok, {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--small", type=int, default=2_000,
                    help="also run each tool on this many images, to separate its fixed cost from its rate (0: skip)")
    ap.add_argument("--tools", default="ours,img2dataset,ours-polite")
    ap.add_argument("--json", help="write the figures here (bench/download/last.json)")
    args = ap.parse_args(argv)
    folder = ensure_images()
    sizes = [os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)]
    results = {}
    work = tempfile.mkdtemp(prefix="bench-download-")
    nginx, port = start_nginx(work, folder)

    def one(name: str, n: int) -> tuple[float, int, dict]:
        run_dir = tempfile.mkdtemp(dir=work)
        if name == "img2dataset":
            return run_img2dataset(urls_for(n, port), run_dir, args.cores)
        return run_ours(urls_for(n, port), port, run_dir, args.cores, 32 if name == "ours" else 4)

    try:
        for name in args.tools.split(","):
            print(f"{name} ...", flush=True)
            with ServerPeaks(port) as peaks:
                dt, ok, sizes_kb = one(name, args.images)
            r = {"seconds": round(dt, 1), "images": ok, "img_per_s_per_core": round(ok / dt / args.cores, 1),
                 "server_peak_connections": peaks.connections, **sizes_kb}
            print(f"  {name}: {dt:,.1f} s, {ok:,} images, {ok / dt / args.cores:,.1f} img/s per core end to end; "
                  f"nginx saw at most {peaks.connections} connections open at once",
                  flush=True)
            if sizes_kb:
                print(f"  {name}: {sizes_kb['fetched_kb_per_image']} KB fetched, "
                      f"{sizes_kb['stored_jpg_kb_per_image']} KB stored JPEG, "
                      f"{sizes_kb['images_table_kb_per_row']} KB of images table per row", flush=True)
            if args.small:
                # the same tool on a small input: the difference is the rate once running, without the fixed
                # start-up and shut-down cost (JVM + Spark session for ours, the process pool for img2dataset)
                dt_small, ok_small, _ = one(name, args.small)
                rate = (ok - ok_small) / max(dt - dt_small, 1e-9) / args.cores
                fixed = dt - (ok / args.cores) / rate if rate > 0 else float("nan")
                r.update(small_images=ok_small, small_seconds=round(dt_small, 1),
                         running_img_per_s_per_core=round(rate, 1), fixed_seconds=round(fixed, 1))
                print(f"  {name}: {args.small:,} images in {dt_small:,.1f} s -> {rate:,.1f} img/s per core once "
                      f"running, {fixed:,.1f} s fixed cost", flush=True)
            results[name] = r
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    report = {"images": args.images, "cores": args.cores, "mean_jpeg_kb": round(sum(sizes) / len(sizes) / 1024, 1),
              "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python {platform.python_version()}",
              "results": results}
    if "ours" in results and "img2dataset" in results:
        report["ours_vs_img2dataset"] = round(results["ours"]["img_per_s_per_core"]
                                              / results["img2dataset"]["img_per_s_per_core"], 2)
        report["same_images"] = results["ours"]["images"] == results["img2dataset"]["images"]
        print(f"ours / img2dataset: {report['ours_vs_img2dataset']}x img/s per core end to end; same number of "
              f"images: {report['same_images']}")
        if args.small:
            report["ours_vs_img2dataset_running"] = round(results["ours"]["running_img_per_s_per_core"]
                                                          / results["img2dataset"]["running_img_per_s_per_core"], 2)
            print(f"ours / img2dataset once running: {report['ours_vs_img2dataset_running']}x img/s per core")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
