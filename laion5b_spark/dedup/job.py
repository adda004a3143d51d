"""The dedup job: ``pairs`` -> ``pairs_unique``, one committed batch per run, incremental across crawls.

A run takes the ``pairs`` files that ``pairs_unique`` has not consumed yet, keeps one row per dedup key (the
earliest; rows already in the table always win), drops denylisted and opted-out rows, and commits the new files
and the consumed inputs in one manifest write. Until that write nothing is visible, so a run killed at any
point is simply run again, and gives the same rows in the same files.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..accounting import Ledger, ledgers_to_dict
from ..config import ConfigError
from ..exchange import identity_partition
from ..job import EXIT_OK, Job, SparkProgress, language_line
from ..lake import Lake, LakeError
from ..spark import get_session
from .lists import describe_lists, list_paths, load_denylists, load_opt_out
from .passes import (gather_positions, key_blobs, route_positions, select_rows, survivor_blobs,
                     survivors_per_rank)
from .plan import Plan, make_layout, make_plan
from .rows import KEY_MODES, RowRules


class DedupJob(Job):
    name = "dedup"
    input_table = "pairs"
    output_table = "pairs_unique"
    dry_run_help = "show the batch that would run (input files, rows, tasks, key buckets), then stop"
    description = (
        "pairs -> pairs_unique: exact dedup by normalized URL + text (or URL), denylists and domain opt-outs.\n\n"
        "Each run deduplicates the pairs files not yet consumed against pairs_unique and commits one batch;\n"
        "rows already in pairs_unique never change. Running again with no new pairs adds nothing."
    )
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/dedup.py --lake ./lake
  spark-submit jobs/dedup.py --lake s3://bucket/lake --key url --denylist lists/csam-url-sha256.csv \\
      --opt-out-domains lists/opt-out.txt --set dedup.file_mb=1024

key modes: url_text (default; LAION-400M) keeps one row per (normalized URL, text) - the uid; url (LAION-5B)
keeps one row per normalized URL. The survivor is the earliest crawl, then source file, then offset.
lists: see laion5b_spark/dedup/lists.py or docs/DEDUP.md for the formats. A bad entry stops the job before
any work, naming the file and line.
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--key", choices=KEY_MODES, help="dedup key (default: dedup.key, url_text)")
        parser.add_argument("--denylist", nargs="+", default=[], metavar="PATH",
                            help="URL / URL-hash / image-hash lists: parquet, CSV or text (adds to dedup.denylist)")
        parser.add_argument("--opt-out-domains", nargs="+", default=[], metavar="PATH",
                            help="domain opt-out lists: one host or .suffix per line (adds to dedup.opt_out_domains)")

    def run(self, args, cfg, lake, log, argv) -> int:
        dcfg = cfg["dedup"]
        if args.key:
            dcfg["key"] = args.key
        if dcfg["key"] not in KEY_MODES:
            raise ConfigError(f"dedup.key = {dcfg['key']!r}: choose one of {', '.join(KEY_MODES)}")
        deny = load_denylists(list_paths(dcfg["denylist"], args.denylist))
        opt_out = load_opt_out(list_paths(dcfg["opt_out_domains"], args.opt_out_domains))
        rules = RowRules(dcfg["key"], int(dcfg["max_text_chars"]), deny, opt_out)
        source, table = lake.table(self.input_table), lake.table(self.output_table)
        source_entries = source.entries()
        if not source_entries and not source.runs():
            raise LakeError(f"{source.root} has no committed files: run jobs/extract.py on this lake first")
        table.check_meta({"dedup.key": dcfg["key"]}, " (two kinds of uniqueness must not mix in one table)")
        consumed, existing = table.consumed(self.input_table), table.entries()
        plan = make_plan(source_entries, consumed, existing, cfg)
        log(f"{len(plan.inputs)} new {self.input_table} files ({plan.rows:,} rows) against "
            f"{plan.existing_rows:,} rows already in {self.output_table}; key {plan.mode}; "
            f"lists: {describe_lists(deny, opt_out)}")
        if deny.image_sha256 or deny.image_md5:
            log(f"{len(deny.image_sha256) + len(deny.image_md5):,} image hashes are applied by the download "
                "stage (give it the same --denylist)")
        if args.dry_run:
            log(f"{len(plan.tasks)} key tasks (more on a wider cluster), {plan.buckets} key buckets; input files:")
            for f in plan.inputs:
                print(f"{f.rank}\t{f.rows}\t{f.path}\t{f.key}")
            return EXIT_OK
        if not plan.inputs:
            log(f"nothing to do: every {self.input_table} file is already in {self.output_table} "
                f"({table.num_rows():,} rows)")
            return EXIT_OK
        run = self.start_run(lake, cfg, argv, log, batch=plan.batch_id, key=plan.mode,
                             lists={"denylist": deny.files, "opt_out": opt_out.files, "entries": deny.sizes()},
                             inputs={"files": len(plan.inputs), "rows": plan.rows,
                                     "existing_rows": plan.existing_rows, "tasks": len(plan.tasks),
                                     "buckets": plan.buckets})
        try:
            spark = get_session(f"laion5b-spark {self.name}", args.spark_profile)
            run.spark(spark)
            cores = spark.sparkContext.defaultParallelism
            if len(plan.tasks) < 2 * cores:  # small batch: smaller tasks so that every core works
                plan = make_plan(source_entries, consumed, existing, cfg, 2 * cores)
            run.record["inputs"]["tasks"] = len(plan.tasks)
            with SparkProgress(spark.sparkContext, log, float(cfg["run"]["progress_interval_s"]), run) as progress:
                files, stats, layout = _run_batch(spark, plan, rules, cfg, lake, run.run_id, progress)
            ledgers, info = _summarize(stats, int(dcfg["top_domains"]))
            total = ledgers.pop("_total")
            if total.rows_in != plan.rows or total.rows_out != sum(f.rows for f in files) or not total.balanced():
                raise AssertionError(f"dedup accounting does not balance: {total.to_dict()} for {plan.rows} rows")
            table.commit(files, run.run_id, consumed={self.input_table: [f.path for f in plan.inputs]},
                         meta={"dedup.key": plan.mode})
        except Exception as exc:  # noqa: BLE001 - recorded with its trace; nothing was committed
            log("nothing was committed; rerun the same command")
            return run.fail(exc)
        finally:
            table.clean_staging(run.run_id)
        code = run.finish(done=1, failed=0, counts={"pairs": total.to_dict()}, info=info,
                          table_rows=table.num_rows(),
                          output={"files": len(files), "shuffle": layout.shuffle, "seed": layout.seed},
                          per_input_file=ledgers_to_dict(ledgers))
        log(f"run {run.run_id} succeeded in {run.record['seconds']}s: {len(plan.inputs)} input files -> "
            f"{len(files)} new files, {total.rows_out:,} new unique rows")
        self.print_outcome(log, run.record, {"pairs": total}, lake)
        return code

    def describe_info(self, info: dict) -> list[str]:
        lines = language_line("new rows", info.get("languages", {}))
        doms = info.get("dup_domains", {})
        if doms:
            top = list(doms.items())[:10]
            lines.append("image hosts with the most duplicates: " + ", ".join(f"{d or '?'} {n:,}" for d, n in top))
        if "peak_task_rss_mb" in info:
            lines.append(f"peak task memory (Python worker RSS): {info['peak_task_rss_mb']:,.0f} MB")
        return lines


def _run_batch(spark, plan: Plan, rules: RowRules, cfg: dict, lake: Lake, run_id: str, progress: SparkProgress):
    from pyspark import StorageLevel, TaskContext

    sc = spark.sparkContext
    lake_ref, source_name, out_name = lake.ref, DedupJob.input_table, DedupJob.output_table
    tasks, buckets = plan.tasks, plan.buckets
    task_of_rank = plan.task_of_rank()
    specs = [(False, t) for t in plan.tasks] + [(True, t) for t in plan.existing]

    def keys_step(spec):
        existing, task = spec
        t = lake_ref.open().table(out_name if existing else source_name)
        return key_blobs(task, existing, t.read_file, rules, buckets)

    def survivors_step(it):
        return survivor_blobs((blob for _, blob in it), task_of_rank)

    progress.step(f"1/2 keys: {len(specs)} tasks -> {buckets} buckets -> survivors")
    sc.setJobDescription("dedup 1/2: keys and survivors")
    survivors = (sc.parallelize(specs, len(specs)).flatMap(keys_step)
                 .partitionBy(buckets, identity_partition).mapPartitions(survivors_step)
                 .partitionBy(len(tasks), identity_partition).persist(StorageLevel.MEMORY_AND_DISK))
    try:
        def count_step(i, it):
            yield i, survivors_per_rank(tasks[i], gather_positions(blob for _, blob in it))

        per_rank = np.zeros(len(plan.inputs), dtype=np.int64)
        for i, counts in survivors.mapPartitionsWithIndex(count_step).collect():
            first = tasks[i].files[0].rank
            per_rank[first:first + len(counts)] = counts
        layout = make_layout(plan, per_rank, cfg)
        group_of_rank = layout.group_of_rank()
        groups = [tuple(plan.inputs[lo:hi]) for lo, hi in layout.groups]

        def regroup_step(it):  # positions of a key task -> the output files they belong to
            return route_positions(gather_positions(blob for _, blob in it), group_of_rank)

        def write_step(i, it):
            rows, ledgers, info = select_rows(groups[i], gather_positions(blob for _, blob in it),
                                              lake_ref.open().table(source_name).read_file, rules, layout)
            entry = None
            if rows is not None:
                ctx = TaskContext.get()
                entry = lake_ref.open().table(out_name).write_unit(
                    run_id, f"{plan.batch_id}-{i:05d}", f"batch {plan.batch_id} file {i + 1}/{len(groups)}", rows,
                    attempt=ctx.attemptNumber() if ctx else 0)
            yield {"group": i, "file": entry, "ledgers": ledgers, "info": info}

        progress.step(f"2/2 rows: {int(per_rank.sum()):,} unique rows -> {len(groups)} files "
                      f"({'shuffled, seed %d' % layout.seed if layout.shuffle else 'in input order'})")
        sc.setJobDescription("dedup 2/2: rows")
        out = (survivors.mapPartitions(regroup_step).partitionBy(len(groups), identity_partition)
               .mapPartitionsWithIndex(write_step).collect())
    finally:
        survivors.unpersist()
    files = sorted((r["file"] for r in out if r["file"]), key=lambda e: e.unit)
    return files, out, layout


def _summarize(stats: list[dict], top: int) -> tuple[dict[str, Ledger], dict]:
    """Per-input-file ledgers plus ``_total``, and the info the summary shows."""
    ledgers: dict[str, Ledger] = {}
    total = Ledger("pairs")
    langs: Counter = Counter()
    doms: Counter = Counter()
    peak = 0.0
    for s in sorted(stats, key=lambda s: s["group"]):
        for path, d in s["ledgers"].items():
            ledgers[path] = Ledger.from_dict("pairs", d)
            total.add(ledgers[path])
        langs.update(s["info"]["languages"])
        doms.update(s["info"]["dup_domains"])
        peak = max(peak, s["info"]["peak_rss_mb"])
    ledgers["_total"] = total
    def ranked(c: Counter, n: int | None = None) -> dict:  # ties by name, so reruns print the same
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n])

    info = {"languages": ranked(langs), "dup_domains": ranked(doms, top),
            "peak_task_rss_mb": peak}
    return ledgers, info
