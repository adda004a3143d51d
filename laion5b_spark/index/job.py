"""The index job: ``scored`` embeddings -> knn indices (``LAKE/index/{image,text}``) -> ``dedup_images``.

Steps, each with its own unit of resume:

1. export (Spark, one task per scored file): embeddings of the indexed rows as .npy parts plus ids parquet,
   into this build's folder. A part whose receipt exists is not exported again.
2. build (driver, or the executors with ``index.distributed = "pyspark"``): autofaiss per modality, then recall
   against exact search. autofaiss restarts from zero when interrupted, so a build is all or nothing; a
   committed index (its pointer ``_index.json`` names this build) is skipped.
3. near-duplicates (Spark, one task per part): candidates from the image index, confirmed with exact cosine,
   grouped on the driver; ``dedup_images`` is replaced whole, its manifest naming the build.

A build is named by the scored files it covers and its source rows: new scored files make a new build (a full
rebuild: autofaiss indices are not appended to); a rerun after a crash finds the same build and resumes it.
Folders of builds that nothing points to any more (crashed runs of older inputs) are removed at the start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from ..accounting import Ledger, ledgers_from_dict, sum_ledgers
from ..config import ConfigError, load_config
from ..job import Job, Log, SparkProgress
from ..lake import Lake, LakeError, new_run_id, utcnow
from ..spark import get_session
from . import neardup
from .build import IndexSettings, Vectors, build, load, recall
from .export import MODALITIES, SOURCES, BuildLayout, Part, export_part, read_ids, read_npy

POINTER = "_index.json"
POINTER_FORMAT = 1


class IndexJob(Job):
    name = "index"
    input_table = "scored"
    output_table = "dedup_images"
    dry_run_help = "show the build that would run (parts to export, indices to build), then stop"
    description = ("scored -> knn indices of image and text embeddings (autofaiss) in LAKE/index/{image,text}, "
                   "with recall measured against exact search, and dedup_images: near-duplicate groups from the "
                   "image index plus exact duplicates by image sha256.\n\n"
                   "Rerunning with no new scored files does nothing; after a crash it resumes the export per part "
                   "and rebuilds only the indices not committed yet.")
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/index.py --lake ./lake
  spark-submit jobs/index.py --lake ./lake --set index.max_index_memory_usage=4G \\
      --set index.current_memory_available=16G --set index.near_dup_threshold=0.95
  spark-submit --properties-file conf/spark/cluster-10n-gpu.conf jobs/index.py --lake s3://bucket/lake \\
      --config conf/pipeline/laion5b.toml

query it: laion5b_spark.index.search(lake, text="a red circle", k=10) (or image=..., uid=...)
"""

    def run(self, args, argv) -> int:
        cfg = load_config(args.config, args.set)
        icfg = cfg["index"]
        settings = IndexSettings.from_config(icfg)
        if settings.source not in SOURCES:
            raise ConfigError(f"index.source = {settings.source!r}: choose one of {', '.join(SOURCES)}")
        threshold = float(icfg["near_dup_threshold"])
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"index.near_dup_threshold = {threshold}: a cosine in (0, 1]")
        names = [n for n in MODALITIES if icfg[n]]
        if icfg["near_dup"] and "image" not in names:
            raise ConfigError("index.near_dup needs the image index (index.image = true)")
        log = Log(self.name)
        lake = Lake(args.lake, cfg["lake"]["storage_options"])
        scored = lake.table(self.input_table)
        entries = sorted(scored.entries(), key=lambda e: e["path"])
        if not entries:
            raise LakeError(f"{scored.root} has no committed rows: run jobs/clip.py on this lake first")
        parts = [Part(i, e["path"], e["key"], e["rows"]) for i, e in enumerate(entries)]
        build_id = _build_id(parts, settings.source)
        layout = BuildLayout(lake, build_id)
        pointers = {n: read_pointer(lake, n) for n in MODALITIES}
        todo_index = [n for n in names if (pointers[n] or {}).get("build") != build_id]
        out = lake.table(self.output_table)
        todo_near = bool(icfg["near_dup"]) and out.meta().get("build") != build_id
        todo_parts = [p for p in parts if not layout.exported(p)] if (todo_index or todo_near) else []
        log(f"{len(parts)} scored files ({sum(p.rows for p in parts):,} rows), source {settings.source}, build "
            f"{build_id}: {len(todo_parts)} parts to export, indices to build: {', '.join(todo_index) or 'none'}, "
            f"near-duplicates: {'to do' if todo_near else 'done' if icfg['near_dup'] else 'off'}")
        if args.dry_run:
            for p in todo_parts:
                print(f"{p.name}\t{p.rows}\t{p.scored_path}")
            return 0
        if not todo_index and not todo_near:
            log(f"nothing to do: the indices and {self.output_table} already cover every scored file")
            return 0
        lake.check_writable()
        run_id = new_run_id()
        record = self.new_record(run_id, argv, lake, cfg)
        record.update(build=build_id, inputs={"scored_files": len(parts), "rows": sum(p.rows for p in parts),
                                              "parts_to_export": len(todo_parts)})
        lake.write_run(self.name, run_id, record)
        t0 = time.time()
        try:
            _remove_stale_builds(lake, {build_id} | {p["build"] for p in pointers.values() if p})
            spark = get_session(f"laion5b-spark {self.name}", args.spark_profile) if todo_parts or todo_near else None
            with SparkProgress(spark.sparkContext, log, float(cfg["run"]["progress_interval_s"])) if spark \
                    else contextlib.nullcontext() as progress:
                receipts = _export(spark, lake, layout, parts, todo_parts, settings.source, progress)
                export = sum_ledgers([ledgers_from_dict(r["counts"]) for r in receipts])["index"]
                with_rows = [p for p, r in zip(parts, receipts) if r["rows"]]
                built = {}
                for name in todo_index:
                    log(f"building the {name} index: {export.rows_out:,} vectors (autofaiss)")
                    built[name] = _build_one(lake, layout, name, with_rows, settings, run_id, cfg, log)
                    log(f"{name} index: {built[name]['index_key']} ({built[name]['size_bytes'] / 1e6:,.1f} MB) in "
                        f"{built[name]['build_seconds']}s; recall@{built[name]['recall']['k']} "
                        f"{built[name]['recall']['recall_at_k']} on {built[name]['recall']['queries']} queries")
                near = None
                if todo_near:
                    near = _near_duplicates(spark, lake, layout, parts, receipts, icfg, run_id, progress, log)
        except BaseException as exc:
            record.update(status="failed", ended=utcnow(), seconds=round(time.time() - t0, 1),
                          error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            lake.write_run(self.name, run_id, record)
            log(f"the run failed: {record['error']}; exported parts and committed indices are kept - rerun the "
                "same command to resume")
            raise
        counts = {"index": export}
        if near is not None:
            counts["near_dup"] = near
        for name, p in pointers.items():
            if name in built and p and p["build"] != build_id:
                _remove_build(lake, name, p["build"])  # the old build: nothing points to it any more
        record.update(status="succeeded", ended=utcnow(), seconds=round(time.time() - t0, 1),
                      counts={k: v.to_dict() for k, v in counts.items()}, indices=built,
                      table_rows=out.num_rows())
        lake.write_run(self.name, run_id, record)
        log(f"run {run_id} succeeded in {record['seconds']}s")
        self.print_outcome(log, record, counts, out, lake)
        return 0

    def describe_info(self, info: dict) -> list[str]:
        return []


def _build_id(parts: list[Part], source: str) -> str:
    h = hashlib.sha1(source.encode())
    for p in parts:
        h.update(f"\n{p.scored_path}\t{p.rows}".encode())
    return h.hexdigest()[:12]


def read_pointer(lake: Lake, name: str) -> dict | None:
    """The committed build of index ``name`` (``LAKE/index/<name>/_index.json``), or None."""
    p = lake.read_json(lake.index_path(name, POINTER))
    if p is not None and p.get("format") != POINTER_FORMAT:
        raise LakeError(f"{lake.index_path(name, POINTER)} is not a laion5b-spark index pointer")
    return p


def _remove_build(lake: Lake, name: str, build: str) -> None:
    try:
        lake.fs.rm(lake.index_path(name, build), recursive=True)
    except FileNotFoundError:
        pass


def _remove_stale_builds(lake: Lake, keep: set[str]) -> None:
    for name in MODALITIES:
        try:
            found = lake.fs.ls(lake.index_path(name), detail=False)
        except FileNotFoundError:
            continue
        for path in found:
            build = posixpath.basename(path.rstrip("/"))
            if not build.startswith("_") and build not in keep and lake.fs.isdir(path):
                _remove_build(lake, name, build)


def _export(spark, lake: Lake, layout: BuildLayout, parts: list[Part], todo: list[Part], source: str,
            progress) -> list[dict]:
    """Export the parts not exported yet (one Spark task each); every part's receipt, in part order."""
    if todo:
        lake_ref, build = lake.ref, layout.build

        def task(part: Part) -> None:
            lk = lake_ref.open()
            lay = BuildLayout(lk, build)
            receipt = export_part(lk, lay, part, source)
            lk.write_json(lay.receipt(part), receipt)  # last: the part is complete

        progress.step(f"export: {len(todo)} parts -> {layout.root('image')}")
        spark.sparkContext.setJobDescription("index: export embeddings")
        spark.sparkContext.parallelize(todo, len(todo)).foreach(task)
    with ThreadPoolExecutor(16) as pool:  # one small GET each on an object store: in parallel
        receipts = list(pool.map(lambda p: lake.read_json(layout.receipt(p)), parts))
    for p, r in zip(parts, receipts):
        if r is None:
            raise LakeError(f"export part {p.name} has no receipt after the export step ({layout.receipt(p)})")
    return receipts


def _local_copy(lake: Lake, remote_dir: str, local_dir: str) -> str:
    """autofaiss reads a local folder: an object-store lake's parts are copied down first."""
    os.makedirs(local_dir, exist_ok=True)
    for path in lake.fs.ls(remote_dir, detail=False):
        if path.endswith(".npy"):
            lake.fs.get_file(path, os.path.join(local_dir, posixpath.basename(path)))
    return local_dir


def _build_one(lake: Lake, layout: BuildLayout, name: str, parts: list[Part], settings: IndexSettings,
               run_id: str, cfg: dict, log) -> dict:
    if not parts:
        raise LakeError(f"no {settings.source} rows to index: every scored row was dropped or failed")
    work = tempfile.mkdtemp(prefix=f"l5s-index-{name}-")
    try:
        if lake.is_local:
            emb_dir, index_file, infos_file = layout.embeddings_dir(name), layout.index_file(name), \
                layout.infos_file(name)
        else:
            emb_dir = _local_copy(lake, layout.embeddings_dir(name), os.path.join(work, "embeddings"))
            index_file, infos_file = os.path.join(work, "knn.index"), os.path.join(work, "index_infos.json")
        tmp_shards = layout.root(name) + "/_autofaiss_tmp" if settings.distributed else None
        infos = build(emb_dir, index_file, infos_file, settings, tmp_shards)
        index = load(index_file, infos.get("index_param"))
        vectors = Vectors([np.load(os.path.join(emb_dir, f"{p.name}.npy"), mmap_mode="r") for p in parts])
        rec = recall(index, vectors, settings.recall_queries, settings.recall_k, settings.seed)
        if not lake.is_local:
            lake.upload(index_file, layout.index_file(name))
            lake.upload(infos_file, layout.infos_file(name))
        size = lake.fs.size(layout.index_file(name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    def rel(path: str) -> str:  # the pointer names files relative to the index's folder
        return posixpath.relpath(path, lake.index_path(name))

    pointer = {
        "format": POINTER_FORMAT, "name": name, "build": layout.build, "run_id": run_id, "committed": utcnow(),
        "index": rel(layout.index_file(name)), "infos": rel(layout.infos_file(name)),
        "embeddings": rel(layout.embeddings_dir(name)), "ids": rel(posixpath.dirname(layout.ids(name, "x"))),
        "parts": [p.name for p in parts], "vectors": len(vectors), "dim": vectors.dim,
        "index_key": infos.get("index_key"), "index_param": infos.get("index_param"), "size_bytes": size,
        "build_seconds": infos["build_seconds"], "recall": rec, "source": settings.source,
        "clip": _clip_model(lake, cfg),
    }
    lake.write_json(lake.index_path(name, POINTER), pointer)  # the commit: readers follow the pointer
    return {k: pointer[k] for k in ("vectors", "dim", "index_key", "index_param", "size_bytes", "build_seconds",
                                    "recall")}


def _clip_model(lake: Lake, cfg: dict) -> dict:
    """The CLIP model that made the embeddings (the last clip run's settings): what a text query must use."""
    runs = [r for r in lake.runs("clip") if r.get("status") == "succeeded"]
    c = (runs[-1]["config"]["clip"] if runs else cfg["clip"])
    pretrained = c.get("pretrained", "")
    if pretrained and os.path.exists(pretrained):
        pretrained = os.path.abspath(pretrained)
    return {"model": c.get("model"), "pretrained": pretrained}


def _near_duplicates(spark, lake: Lake, layout: BuildLayout, parts: list[Part], receipts: list[dict], icfg: dict,
                     run_id: str, progress, log) -> Ledger:
    """Candidates per part from the committed image index, exact check, groups; dedup_images replaced whole."""
    pointer = read_pointer(lake, "image")
    if pointer is None or pointer["build"] != layout.build:
        raise LakeError("the image index of this build is not committed; near-duplicates need it")
    with_rows = [p for p, r in zip(parts, receipts) if r["rows"]]
    sizes = np.array([r["rows"] for p, r in zip(parts, receipts) if r["rows"]], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    threshold, k = float(icfg["near_dup_threshold"]), int(icfg["near_dup_k"])
    floor = threshold - float(icfg["near_dup_margin"])
    lake_ref, build, index_rel = lake.ref, layout.build, pointer["index"]
    param = icfg["near_dup_index_param"] or pointer.get("index_param")
    names = [p.name for p in with_rows]

    def search_step(i: int):
        lk = lake_ref.open()
        lay = BuildLayout(lk, build)
        index = _worker_index(lk, lk.index_path("image", index_rel), param)
        block = np.asarray(read_npy(lk, lay.embeddings("image", names[i])), dtype=np.float32)
        a, b = neardup.candidates(index, block, int(offsets[i]), k, floor)
        owner = np.searchsorted(offsets, b, side="right") - 1
        vec = block[a - offsets[i]].astype(np.float16)
        for p in np.unique(owner):  # to the part holding the neighbour, with the query's own vector
            sel = owner == p
            yield int(p), (a[sel], b[sel], vec[sel])

    def confirm_step(p: int, it):  # partition p holds the candidates whose neighbour is in part p
        got = [v for _, v in it]
        if not got:
            return
        lk = lake_ref.open()
        part = read_npy(lk, BuildLayout(lk, build).embeddings("image", names[p]))
        a = np.concatenate([g[0] for g in got])
        b = np.concatenate([g[1] for g in got])
        vi = np.concatenate([g[2] for g in got])
        yield neardup.confirm(a, b, vi, np.asarray(part[b - offsets[p]]), threshold)

    progress.step(f"near-duplicates: {len(with_rows)} parts, k={k}, cosine >= {threshold}")
    sc = spark.sparkContext
    sc.setJobDescription("index: near-duplicate candidates and exact check")
    edges = (sc.parallelize(range(len(with_rows)), max(1, len(with_rows))).flatMap(search_step)
             .partitionBy(max(1, len(with_rows)), lambda p: p).mapPartitionsWithIndex(confirm_step).collect())
    ea = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int64)
    eb = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
    ec = np.concatenate([e[2] for e in edges]) if edges else np.zeros(0, np.float32)
    ea, eb, ec = neardup.unique_pairs(ea, eb, ec)  # both ends may have found the pair: once each
    ids = pa.concat_tables([read_ids(lake, layout.ids("image", n)) for n in names])
    rows, ledger = neardup.groups(ids.column("uid").to_numpy(), ids.column("similarity").to_numpy(zero_copy_only=False),
                                  ids.column("sha256").to_pylist(), ea, eb, ec)
    log(f"{len(ea):,} near-duplicate pairs (cosine >= {threshold}); {ledger.rows_in - ledger.rows_out:,} of "
        f"{ledger.rows_in:,} rows are duplicates")
    table = lake.table(IndexJob.output_table)
    old = table.manifest()
    files = []
    for i, n in enumerate(names):
        chunk = rows.slice(int(offsets[i]), int(sizes[i]))
        rel = table.data_file(f"{build}-{n}", run_id, 0)
        files.append({"unit": f"{build}-{n}", "key": n, "path": rel, "rows": chunk.num_rows,
                      "bytes": table.write_parquet(rel, chunk), "counts": {}})
    stale = [f["path"] for f in old["files"] if f.get("path")]
    # the whole table is replaced: the new manifest lists only this build's files
    table.commit(files, run_id, dict(old, files=[]),
                 meta={"build": build, "near_dup_threshold": threshold, "near_dup_k": k})
    table.remove_files(stale)
    return ledger


_worker_indices: dict = {}


def _worker_index(lake: Lake, path: str, param: str | None):
    """The image index, loaded once per Python worker (copied down first from an object store)."""
    key = (path, param)
    if key not in _worker_indices:
        local = path
        if not lake.is_local:
            fd, local = tempfile.mkstemp(suffix=".index", prefix="l5s-knn-")
            os.close(fd)
            lake.fs.get_file(path, local)
        _worker_indices.clear()  # one index per worker: a new build replaces the last
        _worker_indices[key] = load(local, param)
    return _worker_indices[key]

