"""Scaling check: extract, download and clip on a real standalone cluster with 1 worker, then 2 workers.

    python bench/capacity/scaling.py [--stage extract|download|clip|all] [--cores-per-worker 1] [--driver-cores 1]
                                     [--files 24 --pages 2500] [--images 6000] [--clip-images 12000]

For each stage: starts a master and workers on 127.0.0.1 with deploy/cluster.sh, submits the same job over the same
input with deploy/submit.sh, times the job (cluster start excluded), checks that both runs wrote equal tables,
tears everything down and prints the speed-up. Inputs are made here, offline:

* extract: generated WAT files (the sample crawl; one file generated, linked under ``--files`` names);
* download: a ``pairs_unique`` table whose URLs point at many host names, all answered by an image server on
  127.0.0.1 (``download.connect_to``, as ``make demo`` does) that sends pictures drawn once up front by the sample
  image server's ``picture`` (200-1000 px JPEGs): drawing per request would make the server the bottleneck;
* clip: an ``images`` table of the sample shapes, scored by the project's tiny CLIP (``conf/pipeline/sample.toml``).

Driver cores excluded: with ``taskset``, the driver side (this script and its image server, the master,
spark-submit's JVM and the driver's Python) runs on the first ``--driver-cores`` CPUs and each worker (its daemon,
executor JVM and Python workers inherit the mask) on ``--cores-per-worker`` CPUs of its own. That needs
driver cores + 2 x cores per worker CPUs; with fewer, the workers keep their own CPUs if they fit and the driver
shares them, which the output and the json say (``driver_isolated: false``). Figures go to
bench/capacity/scaling.json, per stage, with the machine (nproc, CPU model, load average before and after).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "deploy", "cluster.sh")
SUBMIT = os.path.join(ROOT, "deploy", "submit.sh")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.json")
STAGES = ("extract", "download", "clip")
TINY_CLIP = os.path.join(ROOT, "laion5b_spark", "sample", "assets", "l5s-tiny-shapes")


# --- the machine and where each process runs -------------------------------------------------------------------

def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": model}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_plan(cpus: list[int], driver_cores: int, cores_per_worker: int, workers: int = 2) -> dict:
    """Which CPUs the driver side and each worker get. None: not pinned (shares every CPU)."""
    cpus = sorted(cpus)
    need = driver_cores + workers * cores_per_worker
    if len(cpus) >= need:
        return {"driver": cpus[:driver_cores],
                "workers": [cpus[driver_cores + i * cores_per_worker:driver_cores + (i + 1) * cores_per_worker]
                            for i in range(workers)],
                "driver_isolated": True, "workers_isolated": True,
                "note": (f"driver side on CPUs {cpus[:driver_cores]}, each worker on {cores_per_worker} CPU(s) "
                         "of its own")}
    if len(cpus) >= workers * cores_per_worker:
        return {"driver": None,
                "workers": [cpus[i * cores_per_worker:(i + 1) * cores_per_worker] for i in range(workers)],
                "driver_isolated": False, "workers_isolated": True,
                "note": (f"NOT ISOLATED: {len(cpus)} CPUs cannot hold {driver_cores} driver + {workers} x "
                         f"{cores_per_worker} worker cores apart ({need} needed); each worker has its own CPUs, the "
                         "driver side (driver JVM and Python, master, image server) shares them")}
    return {"driver": None, "workers": [None] * workers, "driver_isolated": False, "workers_isolated": False,
            "note": (f"NOT ISOLATED: {len(cpus)} CPUs cannot give {workers} workers {cores_per_worker} core(s) each; "
                     "nothing pinned, every process shares every CPU")}


def pinned(cmd: list[str], cpus: list[int] | None) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the cluster and one timed job --------------------------------------------------------------------------------

def run_job(n_workers: int, plan: dict, cores_per_worker: int, job: str, job_args: list[str], lake: str,
            work: str) -> dict:
    """Start a master and n workers, submit jobs/<job>.py, stop everything. Wall seconds of spark-submit (driver
    JVM and Python start included) and the run record's seconds (from the job's start, Spark session included)."""
    d = os.path.join(work, f"{job}-{n_workers}w")
    env = dict(os.environ, L5S_CLUSTER_DIR=d, SPARK_LOCAL_IP="127.0.0.1", NO_ALBUMENTATIONS_UPDATE="1",
               L5S_VENV=os.path.dirname(os.path.dirname(sys.executable)))
    port = free_port()
    master = f"spark://127.0.0.1:{port}"
    names = [f"w{i}" for i in range(n_workers)]
    try:
        subprocess.run(pinned([CLUSTER, "master", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--webui-port", str(free_port())], plan["driver"]),
                       env=env, check=True, capture_output=True)
        for i, name in enumerate(names):
            subprocess.run(pinned([CLUSTER, "worker", "start", master, "--cores", str(cores_per_worker),
                                   "--memory", "2g", "--name", name, "--work-dir", os.path.join(d, name),
                                   "--webui-port", str(free_port())], plan["workers"][i]),
                           env=env, check=True, capture_output=True)
        deadline = time.time() + 90
        while open(os.path.join(d, "master.log")).read().count("Registering worker") < n_workers:
            if time.time() > deadline:
                raise RuntimeError(f"workers did not register (see {d}/*.log)")
            time.sleep(0.5)
        conf, events = os.path.join(d, "bench.conf"), os.path.join(d, "events")
        os.makedirs(events)
        with open(conf, "w") as f:  # the event log gives the tasks' own times, apart from driver and executor start
            f.write(f"spark.master {master}\nspark.executor.memory 1g\nspark.executor.cores {cores_per_worker}\n"
                    f"spark.cores.max {n_workers * cores_per_worker}\nspark.driver.host 127.0.0.1\n"
                    "spark.driver.bindAddress 127.0.0.1\nspark.ui.enabled false\nspark.python.worker.reuse true\n"
                    "spark.eventLog.enabled true\nspark.eventLog.compress false\n"
                    f"spark.eventLog.dir file://{events}\n")
        t = time.perf_counter()
        done = subprocess.run(pinned([SUBMIT, "--properties-file", conf, os.path.join(ROOT, "jobs", f"{job}.py"),
                                      "--lake", lake, *job_args], plan["driver"]),
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"{job} with {n_workers} worker(s) exited {done.returncode}:\n{done.stderr[-3000:]}")
        from laion5b_spark.lake import Lake

        record = Lake(lake).runs(job)[-1]
        return {"wall_s": round(wall, 1), "job_s": record.get("seconds"), **task_times(events)}
    finally:
        for name in names:
            subprocess.run([CLUSTER, "worker", "stop", name], env=env, capture_output=True)
        subprocess.run([CLUSTER, "master", "stop"], env=env, capture_output=True)


def task_times(events_dir: str) -> dict:
    """From Spark's event log: tasks_s, the sum of the tasks' run times (the work, in core-seconds), and span_s,
    first task launch to last task end (the stage's wall time without driver, executor or Spark start)."""
    run_ms, launch, finish = 0, [], []
    paths = [os.path.join(d, n) for d, _, names in os.walk(events_dir) for n in names]  # Spark 4: a folder per app
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                e = json.loads(line)
                run_ms += (e.get("Task Metrics") or {}).get("Executor Run Time", 0)
                launch.append(e["Task Info"]["Launch Time"])
                finish.append(e["Task Info"]["Finish Time"])
    if not launch:
        return {"tasks_s": None, "span_s": None}
    return {"tasks_s": round(run_ms / 1000, 1), "span_s": round((max(finish) - min(launch)) / 1000, 1)}


def canonical(lake: str, table: str):
    """The table's rows in one order (sorted by every sortable column), for an equality check across runs."""
    import pyarrow as pa

    from laion5b_spark.lake import Lake

    t = Lake(lake).table(table).read_arrow()
    keys = [(f.name, "ascending") for f in t.schema
            if not (pa.types.is_binary(f.type) or pa.types.is_list(f.type) or pa.types.is_large_binary(f.type))]
    return t.sort_by(keys)


# --- inputs -------------------------------------------------------------------------------------------------------

class CachedImages(BaseHTTPRequestHandler):
    """Answers every path with one of a few pictures drawn up front (chosen by the path's hash)."""

    protocol_version = "HTTP/1.1"
    bodies: list[bytes] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = self.bodies[zlib.crc32(self.path.encode()) % len(self.bodies)]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_image_server(distinct: int) -> ThreadingHTTPServer:
    from laion5b_spark.sample.image_server import picture

    CachedImages.bodies = [picture(f"/p/{i}.jpg")[0] for i in range(distinct)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), CachedImages)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="image-server", daemon=True).start()
    return server


def make_pairs_unique(lake_path: str, rows: int, hosts: int = 256) -> None:
    """``rows`` unique pairs whose URLs spread over ``hosts`` host names (download's per-host limit is per host)."""
    import pyarrow as pa

    from laion5b_spark.keys import pair_uid
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample.pairs import generate_rows, write_pairs

    t = generate_rows(rows, 5, unique_share=1.0, heavy_share=0.0, source_file="crawl-data/bench/f.wat.gz")
    urls = [f"http://img{i % hosts}.sample.test/p/{i}.jpg" for i in range(rows)]
    texts = t.column("text").to_pylist()
    t = t.set_column(t.schema.get_field_index("url"), t.schema.field("url"), pa.array(urls))
    t = t.set_column(0, t.schema.field("uid"), pa.array([pair_uid(u, x) for u, x in zip(urls, texts)], pa.int64()))
    write_pairs(Lake(lake_path), {"bench": t}, table="pairs_unique")


def make_images(lake_path: str, rows: int, files: int, distinct: int = 512) -> None:
    """An ``images`` table of ``files`` files: sample shapes (128 px JPEGs) with captions, half of them fitting."""
    import pyarrow as pa

    from laion5b_spark import schemas
    from laion5b_spark.lake import Lake
    from laion5b_spark.sample import shapes
    from laion5b_spark.sample.pairs import write_pairs

    pool = shapes.pairs(distinct, 11)
    per_file = -(-rows // files)
    tables = {}
    for f in range(files):
        idx = range(f * per_file, min(rows, (f + 1) * per_file))
        n = len(idx)
        cols = {name: pa.nulls(n, schemas.IMAGES.field(name).type) for name in schemas.IMAGES.names}
        cols.update(uid=pa.array(list(idx), pa.int64()),
                    url=pa.array([f"http://img.sample.test/{i}.jpg" for i in idx]),
                    text=pa.array([pool[i % distinct][1] for i in idx]), language=pa.array(["en"] * n),
                    key=pa.array([f"{f:05d}{i:09d}" for i in idx]), status=pa.array(["success"] * n),
                    width=pa.array([128] * n, pa.int32()), height=pa.array([128] * n, pa.int32()),
                    jpg=pa.array([pool[i % distinct][0] for i in idx], pa.binary()))
        tables[f"shard-{f:05d}"] = pa.table(cols, schema=schemas.IMAGES)
    write_pairs(Lake(lake_path), tables, table="images")


# --- the stages ---------------------------------------------------------------------------------------------------

def bench_stage(stage: str, args, plan: dict, work: str) -> dict:
    base = os.path.join(work, f"{stage}-input")
    server = None
    try:
        if stage == "extract":
            from laion5b_spark.sample.crawl import make_sample_crawl

            # generating a WAT file takes ~13 ms a page: a few distinct files, linked under many names (one unit each)
            distinct = min(args.distinct_files, args.files)
            crawl = make_sample_crawl(os.path.join(work, "crawl"), files=distinct, pages_per_file=args.pages, seed=3)
            made = [os.path.join(crawl["root"], w) for w in crawl["wat"]]
            os.makedirs(os.path.join(work, "wat"))
            inputs = [os.path.join(work, "wat", f"{k:03d}-{os.path.basename(made[k % distinct])}")
                      for k in range(args.files)]
            for k, path in enumerate(inputs):
                os.link(made[k % distinct], path)
            job_args, table = ["--input", *inputs], "pairs"
            what = (f"{args.files} WAT files ({sum(os.path.getsize(p) for p in inputs) / 1e6:.1f} MB, "
                    f"{args.pages} pages each, {distinct} distinct)")
        elif stage == "download":
            make_pairs_unique(base, args.images)
            server = start_image_server(args.distinct_images)
            port = server.server_address[1]
            shard = -(-args.images // args.units)
            job_args = ["--config", os.path.join(ROOT, "conf", "pipeline", "sample.toml"),
                        "--set", f'download.connect_to=["*=127.0.0.1:{port}"]',
                        "--set", f'download.allow=["127.0.0.1:{port}"]', "--set", f"download.shard_rows={shard}"]
            table = "images"
            kb = sum(map(len, CachedImages.bodies)) / len(CachedImages.bodies) / 1e3
            what = (f"{args.images:,} URLs in {args.units} shards, {args.distinct_images} distinct 200-1000 px JPEGs "
                    f"(mean {kb:.0f} KB) from a server on 127.0.0.1")
        else:
            make_images(base, args.clip_images, args.units)
            threshold = json.load(open(TINY_CLIP + ".json"))["threshold"]
            job_args = ["--config", os.path.join(ROOT, "conf", "pipeline", "sample.toml"),
                        "--set", f"clip.pretrained={TINY_CLIP}.safetensors", "--set", f"clip.threshold={threshold}"]
            table = "scored"
            what = f"{args.clip_images:,} images (128 px shapes) in {args.units} files, the tiny CLIP (l5s-tiny) on CPU"
        load_before = loadavg()
        runs = {}
        for n in (1, 2):
            lake = os.path.join(work, f"{stage}-lake-{n}w")
            if os.path.isdir(base):
                shutil.copytree(base, lake)
            runs[n] = run_job(n, plan, args.cores_per_worker, stage, job_args, lake, work)
            runs[n]["table"] = canonical(lake, table)
        load_after = loadavg()
    finally:
        if server is not None:
            server.shutdown()
    one, two = runs[1].pop("table"), runs[2].pop("table")
    equal = one.equals(two)
    out = {"input": what, "table": table, "rows": one.num_rows, "equal_tables": equal,
           "seconds_1_worker": runs[1]["wall_s"], "seconds_2_workers": runs[2]["wall_s"],
           "speedup": round(runs[1]["wall_s"] / runs[2]["wall_s"], 2),
           "job_seconds_1_worker": runs[1]["job_s"], "job_seconds_2_workers": runs[2]["job_s"],
           "task_seconds_1_worker": runs[1]["tasks_s"], "task_seconds_2_workers": runs[2]["tasks_s"],
           "task_span_1_worker": runs[1]["span_s"], "task_span_2_workers": runs[2]["span_s"],
           "loadavg_before": load_before, "loadavg_after": load_after}
    if runs[1]["span_s"] and runs[2]["span_s"]:
        out["task_span_speedup"] = round(runs[1]["span_s"] / runs[2]["span_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=(*STAGES, "all"), default="all")
    ap.add_argument("--cores-per-worker", type=int, default=1)
    ap.add_argument("--driver-cores", type=int, default=1, help="CPUs kept for the driver side when there are enough")
    ap.add_argument("--files", type=int, default=24, help="extract: WAT input files (units of work)")
    ap.add_argument("--distinct-files", type=int, default=1, help="extract: WAT files generated; the others link them")
    ap.add_argument("--pages", type=int, default=2500, help="extract: pages per WAT file (8 MB at 2500)")
    ap.add_argument("--images", type=int, default=6000, help="download: URLs in pairs_unique")
    ap.add_argument("--distinct-images", type=int, default=300, help="download: pictures the server draws up front")
    ap.add_argument("--clip-images", type=int, default=12000, help="clip: rows of the images table")
    ap.add_argument("--units", type=int, default=16, help="download shards / clip images files (units of work)")
    ap.add_argument("--json", default=RESULTS, help="where the figures go ('' = nowhere)")
    args = ap.parse_args()
    if args.driver_cores < 1 or args.cores_per_worker < 1:
        ap.error("--driver-cores and --cores-per-worker must be at least 1")

    host = machine()
    plan = cpu_plan(sorted(os.sched_getaffinity(0)), args.driver_cores, args.cores_per_worker)
    if plan["driver"]:
        os.sched_setaffinity(0, plan["driver"])  # this process: input generation, image server, table checks
    layout = {"driver_cpus": plan["driver"], "worker_cpus": plan["workers"], "cores_per_worker": args.cores_per_worker,
              "driver_isolated": plan["driver_isolated"], "workers_isolated": plan["workers_isolated"],
              "note": plan["note"]}
    print(f"machine: {host['nproc']} CPUs ({host['cpu_model']}), load {loadavg()}")
    print(f"layout: {plan['note']}")
    command = "python bench/capacity/scaling.py " + shlex.join(sys.argv[1:])
    results = {}
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)
    results = results if "stages" in results else {"stages": {}}
    failed = False
    for stage in STAGES if args.stage == "all" else (args.stage,):
        work = tempfile.mkdtemp(prefix=f"l5s-scaling-{stage}-")
        try:
            r = bench_stage(stage, args, plan, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        failed |= not r["equal_tables"]
        print(f"{stage}: {r['input']}; {r['table']} {r['rows']:,} rows, "
              f"{'equal tables' if r['equal_tables'] else 'TABLES DIFFER'}: 1 worker {r['seconds_1_worker']} s, "
              f"2 workers {r['seconds_2_workers']} s, speed-up {r['speedup']:.2f}x (spark-submit wall time); tasks "
              f"first start to last end {r['task_span_1_worker']} s / {r['task_span_2_workers']} s, speed-up "
              f"{r.get('task_span_speedup', 0):.2f}x; task work {r['task_seconds_1_worker']} / "
              f"{r['task_seconds_2_workers']} core-s; load {r['loadavg_before']} -> {r['loadavg_after']}"
              + ("" if plan["driver_isolated"] else "; DRIVER NOT ISOLATED"), flush=True)
        results["stages"][stage] = {"driver_isolated": plan["driver_isolated"], "nproc": host["nproc"], **r,
                                    "machine": host, "layout": layout, "command": command,
                                    "date": datetime.date.today().isoformat()}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
