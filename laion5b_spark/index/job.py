"""The index job: ``scored`` embeddings -> knn indices (``LAKE/index/{image,text}``) -> ``dedup_images``.

Steps, each with its own unit of resume:

1. export (Spark, one task per scored file): embeddings of the indexed rows as .npy parts plus ids parquet,
   into this build's folder, per modality. A part whose receipt exists is not exported again.
2. build (driver, or the executors with ``index.distributed = "pyspark"``): autofaiss per modality, then recall
   against exact search. autofaiss restarts from zero when interrupted, so a build is all or nothing; an index
   whose pointer (``_index.json``) names this build and these settings is skipped.
3. near-duplicates (Spark, one task per part): candidates from the image index, confirmed with exact cosine,
   grouped on the executors (``neardup.group``); ``dedup_images`` is replaced whole, its manifest naming the
   build, the image index run and the near-duplicate settings.

A build is named by the scored files it covers, the source rows and the CLIP model: new scored files make a new
build (a full rebuild: autofaiss indices are not appended to); a rerun after a crash finds the same build and
resumes it. Folders of builds nothing points to any more (crashed runs over older inputs) are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from ..accounting import Ledger, ledgers_from_dict, sum_ledgers
from ..clip.label import model_label, mclip_label
from ..config import ConfigError
from ..exchange import OnSpark, tagged
from ..job import EXIT_OK, Job, SparkProgress
from ..lake import FileEntry, Lake, LakeError, utcnow
from ..spark import get_session
from . import neardup
from .build import IndexSettings, Vectors, build, load, recall
from .export import SOURCES, export_part, read_npy
from .layout import (MODALITIES, BuildLayout, Part, builds, open_knn, parts_of, read_pointer, remove_build,
                     write_pointer)

# settings that change what an index is (a pointer with other values is rebuilt); recall/seed only measure it
_BUILD_SETTINGS = ("max_index_memory_usage", "current_memory_available", "index_key", "index_param",
                   "max_index_query_time_ms", "min_nearest_neighbors_to_retrieve")
_NEAR_SETTINGS = ("near_dup_threshold", "near_dup_k", "near_dup_margin", "near_dup_index_param")


class IndexJob(Job):
    name = "index"
    input_table = "scored"
    output_table = "dedup_images"
    dry_run_help = "show the build that would run (parts to export, indices to build), then stop"
    description = ("scored -> knn indices of image and text embeddings (autofaiss) in LAKE/index/{image,text}, "
                   "with recall measured against exact search, and dedup_images: near-duplicate groups from the "
                   "image index plus exact duplicates by image sha256.\n\n"
                   "Rerunning with nothing new does nothing; new scored files make a new build. After a crash it "
                   "resumes the export per part and rebuilds only what is not committed. Changed index settings "
                   "rebuild the index; changed near_dup settings redo only the near-duplicate pass.")
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/index.py --lake ./lake
  spark-submit jobs/index.py --lake ./lake --set index.max_index_memory_usage=4G \\
      --set index.current_memory_available=16G --set index.near_dup_threshold=0.95
  spark-submit --properties-file conf/spark/cluster-10n-gpu.conf jobs/index.py --lake s3://bucket/lake \\
      --config conf/pipeline/laion5b.toml

query it: laion5b_spark.index.search(lake, text="a red circle", k=10) (or image=..., uid=...)
"""

    def run(self, args, cfg, lake, log, argv) -> int:
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
        if settings.distributed and (settings.distributed != "pyspark" or not lake.is_local):
            raise ConfigError("index.distributed = 'pyspark' needs a lake on a file system every executor mounts "
                              "(autofaiss writes its shards there without the lake's storage options); "
                              "use '' for an object-store lake")
        clip = _clip_model(lake, cfg, icfg["model"])
        scored = lake.table(self.input_table)
        if not scored.entries():
            raise LakeError(f"{scored.root} has no committed rows: run jobs/clip.py on this lake first")
        all_parts = parts_of(scored.entries(), lake.table("images").current_files())
        parts = [p for p in all_parts if p.images_file]
        stale = [p for p in all_parts if not p.images_file]
        if stale:  # download --retry-failed replaced their images files; clip scores the new ones under new keys
            log(f"{len(stale)} scored files cover images files that are no longer listed (download --retry-failed "
                f"replaced them): left out; rerun jobs/clip.py so the new images files are scored")
        build_id = _build_id(parts, settings.source, clip["label"])
        layout = BuildLayout(lake, build_id)
        build_cfg = {k: getattr(settings, k) for k in _BUILD_SETTINGS}
        near_cfg = {k: icfg[k] for k in _NEAR_SETTINGS}
        pointers = {n: read_pointer(lake, n) for n in MODALITIES}
        todo_index = [n for n in names if not _current(pointers[n], build_id, build_cfg)]
        out = lake.table(self.output_table)
        image_run = (pointers["image"] or {}).get("run_id") if "image" not in todo_index else None
        todo_near = bool(icfg["near_dup"]) and (
            image_run is None or out.meta().get("near_dup") != dict(near_cfg, build=build_id, image_run=image_run))
        needed = sorted(set(todo_index) | ({"image"} if todo_near else set()), key=MODALITIES.index)
        exported = {n: layout.exported(n) for n in needed}
        todo_parts = [(p, [n for n in needed if p.name not in exported[n]]) for p in parts]
        todo_parts = [(p, ns) for p, ns in todo_parts if ns]
        log(f"{len(parts)} scored files ({sum(p.rows for p in parts):,} rows), source {settings.source}, model "
            f"{clip['label']}, build {build_id}: {len(todo_parts)} parts to export, indices to build: "
            f"{', '.join(todo_index) or 'none'}, near-duplicates: "
            f"{'to do' if todo_near else 'done' if icfg['near_dup'] else 'off'}")
        if args.dry_run:
            for p, ns in todo_parts:
                print(f"{p.name}\t{p.rows}\t{p.scored_path}\t{','.join(ns)}")
            return EXIT_OK
        _remove_stale_builds(lake, {n: {build_id, (pointers[n] or {}).get("build")} for n in MODALITIES})
        if not todo_index and not todo_near:
            log(f"nothing to do: the indices and {self.output_table} already cover every scored file")
            return EXIT_OK
        run = self.start_run(lake, cfg, argv, log, build=build_id, model=clip["label"],
                             inputs={"scored_files": len(all_parts), "stale_scored_files": len(stale),
                                     "rows": sum(p.rows for p in all_parts), "parts_to_export": len(todo_parts)})
        run_id = run.run_id
        built, near = {}, None
        try:
            spark = get_session(f"laion5b-spark {self.name}", args.spark_profile) \
                if todo_parts or todo_near or settings.distributed else None
            if spark is not None:
                run.spark(spark)
            with SparkProgress(spark.sparkContext, log, float(cfg["run"]["progress_interval_s"]), run) if spark \
                    else contextlib.nullcontext() as progress:
                receipts = _export(spark, lake, layout, parts, todo_parts, settings.source, clip["labels"],
                                   needed[0], progress)
                export = sum_ledgers([ledgers_from_dict(r["counts"]) for r in receipts]).get("index", Ledger("index"))
                for p in stale:
                    export.rows_in += p.rows
                    export.fail("stale_scored_file", p.rows)
                with_rows = [p for p, r in zip(parts, receipts) if r["rows"]]
                for name in todo_index:
                    log(f"building the {name} index: {export.rows_out:,} vectors (autofaiss)")
                    built[name] = _build_one(lake, layout, name, with_rows, settings, build_cfg, run_id, clip)
                    log(f"{name} index: {built[name]['index_key']} ({built[name]['size_bytes'] / 1e6:,.1f} MB) in "
                        f"{built[name]['build_seconds']}s; recall@{built[name]['recall']['k']} "
                        f"{built[name]['recall']['recall_at_k']} on {built[name]['recall']['queries']} queries")
                    layout.remove_other_runs(name, run_id)
                    if pointers[name] and pointers[name]["build"] != build_id:
                        remove_build(lake, name, pointers[name]["build"])  # nothing points to it any more
                if todo_near:
                    near = _near_duplicates(spark, lake, layout, near_cfg, run_id, progress, log)
        except Exception as exc:  # noqa: BLE001 - recorded with its trace
            run.update(indices=built)
            log("exported parts and committed indices are kept: rerun the same command to resume")
            return run.fail(exc)
        finally:
            out.clean_staging(run_id)
        counts = {"index": export}
        if near is not None:
            counts["near_dup"] = near
        code = run.finish(done=1, failed=0, counts={k: v.to_dict() for k, v in counts.items()}, indices=built,
                          table_rows=out.num_rows())
        log(f"run {run_id} succeeded in {run.record['seconds']}s")
        self.print_outcome(log, run.record, counts, lake)
        return code


def _build_id(parts: list[Part], source: str, model: str) -> str:
    h = hashlib.sha1(f"{source}\n{model}".encode())
    for p in parts:
        h.update(f"\n{p.scored_path}\t{p.rows}".encode())
    return h.hexdigest()[:12]


def _current(pointer: dict | None, build_id: str, build_cfg: dict) -> bool:
    return bool(pointer) and pointer["build"] == build_id and pointer.get("settings") == build_cfg


def _remove_stale_builds(lake: Lake, keep: dict[str, set]) -> None:
    """Per modality, remove build folders other than the current build and the committed one."""
    for name in MODALITIES:
        for build in builds(lake, name):
            if build not in keep[name]:
                remove_build(lake, name, build)


def _export(spark, lake: Lake, layout: BuildLayout, parts: list[Part], todo: list[tuple[Part, list[str]]],
            source: str, model: str | tuple[str, ...], ledger_of: str, progress) -> list[dict]:
    """Export what is missing (one Spark task per part); every part's receipt, in part order."""
    if todo:
        lake_ref, build = lake.ref, layout.build

        def task(item) -> None:
            part, names = item
            lk = lake_ref.open()
            export_part(lk, BuildLayout(lk, build), part, source, model, names)

        progress.step(f"export: {len(todo)} parts -> {layout.root(ledger_of)}")
        spark.sparkContext.setJobDescription("index: export embeddings")
        spark.sparkContext.parallelize(todo, len(todo)).foreach(task)
    with ThreadPoolExecutor(16) as pool:  # one small GET each on an object store: in parallel
        receipts = list(pool.map(lambda p: lake.read_json(layout.receipt(ledger_of, p)), parts))
    for p, r in zip(parts, receipts):
        if r is None:
            raise LakeError(f"export part {p.name} has no receipt after the export step "
                            f"({layout.receipt(ledger_of, p)})")
    return receipts


def _build_one(lake: Lake, layout: BuildLayout, name: str, parts: list[Part], settings: IndexSettings,
               build_cfg: dict, run_id: str, clip: dict) -> dict:
    if not parts:
        raise LakeError(f"no {settings.source} rows of {clip['label']} to index: every scored row was dropped, "
                        "failed or scored by another model (the summary's index ledger says which)")
    work = tempfile.mkdtemp(prefix=f"l5s-index-{name}-")
    index_file, infos_file = layout.index_file(name, run_id), layout.infos_file(name, run_id)
    try:
        if lake.is_local:
            emb_dir, local_index, local_infos = layout.embeddings_dir(name), index_file, infos_file
        else:  # autofaiss reads a local folder: an object-store lake's parts are copied down first
            emb_dir = os.path.join(work, "embeddings")
            os.makedirs(emb_dir)
            for p in parts:
                lake.fs.get_file(layout.embeddings(name, p.name), os.path.join(emb_dir, f"{p.name}.npy"))
            local_index, local_infos = os.path.join(work, "knn.index"), os.path.join(work, "infos.json")
        shards = layout.autofaiss_shards(name) if settings.distributed else None
        infos = build(emb_dir, local_index, local_infos, settings, shards)
        index = load(local_index, infos.get("index_param"))
        vectors = Vectors([np.load(os.path.join(emb_dir, f"{p.name}.npy"), mmap_mode="r") for p in parts])
        if len(vectors) != index.ntotal:
            raise LakeError(f"autofaiss indexed {index.ntotal:,} vectors of {len(vectors):,} exported")
        rec = recall(index, vectors, settings.recall_queries, settings.recall_k, settings.seed)
        if not lake.is_local:
            lake.upload(local_index, index_file)
            lake.upload(local_infos, infos_file)
        size = lake.fs.size(index_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rel(path: str) -> str:  # the pointer names files relative to the index's folder
        return posixpath.relpath(path, lake.index_path(name))

    pointer = {
        "build": layout.build, "run_id": run_id, "committed": utcnow(), "settings": build_cfg,
        "index": rel(index_file), "infos": rel(infos_file), "embeddings": rel(layout.embeddings_dir(name)),
        "ids": rel(layout.ids_dir(name)), "parts": [p.name for p in parts], "part_rows": np.diff(vectors.offsets).tolist(),
        "vectors": len(vectors), "dim": vectors.dim, "index_key": infos.get("index_key"),
        "index_param": infos.get("index_param"), "size_bytes": size, "build_seconds": infos["build_seconds"],
        "recall": rec, "source": settings.source, "clip": clip,
    }
    write_pointer(lake, name, pointer)  # the commit: readers follow the pointer
    return {k: pointer[k] for k in ("vectors", "dim", "index_key", "index_param", "size_bytes", "build_seconds",
                                    "recall")}


def _clip_model(lake: Lake, cfg: dict, which: str) -> dict:
    """The CLIP model whose rows are indexed, as the last clip run was configured: what a text query must use."""
    if which not in ("main", "multilingual"):
        raise ConfigError(f"index.model = {which!r}: choose main or multilingual")
    recorded = lake.table("scored").meta()  # the clip stage records its models in the table it writes
    c = {k.split(".", 1)[1]: v for k, v in recorded.items() if k.startswith("clip.")} or cfg["clip"]
    mclip = c.get("multilingual_kind") == "mclip" and c.get("multilingual_model")
    if which == "multilingual" and mclip:
        raise ConfigError("index.model = multilingual, but the clip run's multilingual model is an mclip text tower "
                          "on clip.model's images: index.model = main indexes every row (one image tower)")
    model, pretrained = (c["model"], c["pretrained"]) if which == "main" else \
        (c.get("multilingual_model"), c.get("multilingual_pretrained"))
    if not model:
        raise ConfigError("index.model = multilingual, but the clip run had no clip.multilingual_model")
    label = model_label(model, pretrained)
    if pretrained and os.path.exists(pretrained):
        pretrained = os.path.abspath(pretrained)
    # the labels whose image embeddings come from this tower: an mclip text tower scores clip.model's images
    labels = (label, mclip_label(c["multilingual_model"])) if mclip else (label,)
    return {"model": model, "pretrained": pretrained or "", "label": label, "labels": labels}


def _near_duplicates(spark, lake: Lake, layout: BuildLayout, near_cfg: dict, run_id: str, progress, log) -> Ledger:
    """Candidates per part from the committed image index, exact check, groups; dedup_images replaced whole.
    Parts and their sizes come from the index's pointer: the ids the index returns are numbered by them."""
    pointer = read_pointer(lake, "image")
    if pointer is None or pointer["build"] != layout.build:
        raise LakeError("the image index of this build is not committed; near-duplicates need it")
    sizes = np.array(pointer["part_rows"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    threshold, k = float(near_cfg["near_dup_threshold"]), int(near_cfg["near_dup_k"])
    floor = threshold - float(near_cfg["near_dup_margin"])
    lake_ref, build, index_path = lake.ref, layout.build, lake.index_path("image", pointer["index"])
    param = near_cfg["near_dup_index_param"] or pointer.get("index_param")
    names = list(pointer["parts"])

    def search_step(i: int):
        if i >= len(names):  # a build of no rows still runs one (empty) task
            return
        lk = lake_ref.open()
        index = _worker_index(lk, index_path, param)
        block = np.asarray(read_npy(lk, BuildLayout(lk, build).embeddings("image", names[i])), dtype=np.float32)
        a, b = neardup.candidates(index, block, int(offsets[i]), k, floor)
        owner = np.searchsorted(offsets, b, side="right") - 1
        vec = block[a - offsets[i]].astype(np.float16)
        for p in np.unique(owner):  # to the part holding the neighbour, with the query's own vector
            sel = owner == p
            yield int(p), ("candidate", a[sel], b[sel], vec[sel])

    def confirm_step(p: int, blocks: list):  # partition p holds the candidates whose neighbour is in part p
        if not blocks:
            return
        lk = lake_ref.open()
        part = read_npy(lk, BuildLayout(lk, build).embeddings("image", names[p]))
        a, b, vi = tagged(blocks, "candidate", 3)
        a, b, cos = neardup.confirm(a, b, vi, np.asarray(part[b - offsets[p]]), threshold)
        yield p, ("near", a, b, cos)

    table = lake.table(IndexJob.output_table)
    out_name = IndexJob.output_table

    def rows_of(p: int) -> neardup.PartRows:
        lk = lake_ref.open()
        ids = lk.read_parquet(BuildLayout(lk, build).ids("image", names[p]), ["uid", "similarity", "passed", "sha256"])
        return neardup.PartRows(int(offsets[p]), ids.column("uid").to_numpy(),
                                ids.column("similarity").to_numpy(zero_copy_only=False),
                                ids.column("passed").to_numpy(zero_copy_only=False),
                                ids.column("sha256").combine_chunks())

    def finish(p: int, chunk: pa.Table) -> FileEntry:  # each part's rows are staged by the task that assembles them
        return lake_ref.open().table(out_name).write_unit(run_id, f"{build}-{names[p]}", names[p], chunk)

    progress.step(f"near-duplicates: {len(names)} parts, k={k}, cosine >= {threshold}")
    engine = OnSpark(spark.sparkContext, "index: near-duplicate candidates, exact check and groups")
    n_parts = max(1, len(names))
    near = engine.keep(engine.exchange(engine.parts(n_parts, search_step), n_parts, confirm_step))
    done = neardup.group(engine, offsets, rows_of, near, finish, log)
    engine.drop(near)
    ledger = neardup.ledger_of([counts for *_, counts in done])
    log(f"{ledger.rows_in - ledger.rows_out:,} of {ledger.rows_in:,} rows are duplicates")
    # the whole table is replaced: the new manifest lists only this build's files, the old ones are deleted after
    table.commit([entry for _, entry, _ in done], run_id, replace_all=True,
                 meta={"near_dup": dict(near_cfg, build=build, image_run=pointer["run_id"])})
    return ledger


_worker_indices: dict = {}


def _worker_index(lake: Lake, path: str, param: str | None):
    """The image index, loaded once per Python worker, searching with the task's cores."""
    key = (path, param)
    if key not in _worker_indices:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        _worker_indices.clear()  # one index per worker: a new build replaces the last
        _worker_indices[key] = open_knn(lake, path, param, threads=ctx.cpus() if ctx else None)
    return _worker_indices[key]
