"""The stats job: a driver-side report over a lake's manifests, run records and a few column scans.

It needs no Spark, but it is a job like the others: ``--lake``, ``--config`` / ``--set`` (for the lake's
storage options), ``--dry-run``, the same error handling (a broken config or an unusable lake stops it with
what to do), and a summary printed at the end.
"""

from __future__ import annotations

import argparse

from ..job import EXIT_OK, Job
from ..lake import LakeError
from .report import compute, write_report


class StatsJob(Job):
    name = "stats"
    output_table = ""
    description = ("The lake's funnel - pairs -> pairs_unique -> downloaded -> passed CLIP -> release - with the\n"
                   "reasons rows left each stage, run durations and throughput per stage, plots of the release\n"
                   "(similarity with the clip threshold, image width/height/aspect, punsafe/pwatermark,\n"
                   "languages, top image hosts) and sample thumbnails per bucket (english / multilingual /\n"
                   "nolang), written to LAKE/_reports/stats/ with one self-contained report.html. No Spark: it\n"
                   "reads manifests, run records, a few narrow columns and the sample rows' images.")
    epilog = """examples:
  python jobs/stats.py --lake demo-lake
  python jobs/stats.py --lake s3://bucket/lake --config conf/pipeline/laion5b.toml
  python jobs/stats.py --lake ./lake --dry-run          # print the funnel, write nothing
  python jobs/stats.py --lake ./lake --top-domains 50

release = dataset minus the rows dedup_images marks duplicate (jobs/index.py writes that table; without it the
report says so and the release equals the dataset). Reasons and their meanings: laion5b_spark/accounting.py.
"""

    uses_spark = False
    writes = False  # checked below, once the lake is known to hold tables (a typo'd path is not created)
    dry_run_help = "print the funnel and stop: no plots, no report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top-domains", type=int, default=20, help="image hosts in the domains plot (default 20)")
        parser.add_argument("--bins", type=int, default=50, help="bins of the similarity histogram (default 50)")
        parser.add_argument("--samples", type=int, default=16, metavar="N",
                            help="sample thumbnails per bucket, the lowest uids (default 16; 0: none)")

    def run(self, args, cfg, lake, log, argv) -> int:
        if not lake.tables():
            raise LakeError(f"no lake at {lake.url} (no tables there): check the path (or run the pipeline: make demo)")
        stats = compute(lake, top_domains=args.top_domains, bins=args.bins, with_plots=not args.dry_run,
                        samples_per_bucket=args.samples)
        print(stats.funnel.text())
        if args.dry_run:
            return EXIT_OK
        lake.check_usable()
        run = self.start_run(lake, cfg, argv, log)
        try:
            out = write_report(lake, stats)
        except Exception as exc:  # noqa: BLE001 - recorded with its trace
            return run.fail(exc)
        print()
        for name, url in out["plots"].items():
            log(f"plot {name}: {url}")
        log(f"funnel as JSON: {out['json']}")
        log(f"report: {out['report']}")
        return run.finish(done=1, failed=0, report=out["report"])

    def output_tables(self) -> tuple[str, ...]:
        return ()  # it writes a report, no table
