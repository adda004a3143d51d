"""The stats job: a driver-side report over a lake's manifests, run records and a few column scans.

It needs no Spark, but it is a job like the others: ``--lake``, ``--config`` / ``--set`` (for the lake's
storage options), ``--dry-run``, the same error handling (a broken config or an unusable lake stops it with
what to do), and a summary printed at the end.
"""

from __future__ import annotations

import argparse

from ..config import load_config
from ..job import Job, Log
from ..lake import Lake, LakeError
from .report import REPORT_DIR, compute, write_report


class StatsJob(Job):
    name = "stats"
    output_table = f"_reports/{REPORT_DIR}"
    description = ("The lake's funnel - pairs -> pairs_unique -> downloaded -> passed CLIP -> release - with the\n"
                   "reasons rows left each stage, and plots (similarity with the clip threshold, image sizes,\n"
                   "languages, top image hosts), written to LAKE/_reports/stats/ with one self-contained\n"
                   "report.html. No Spark: it reads manifests, run records and a few narrow columns.")
    epilog = """examples:
  python jobs/stats.py --lake demo-lake
  python jobs/stats.py --lake s3://bucket/lake --config conf/pipeline/laion5b.toml
  python jobs/stats.py --lake ./lake --dry-run          # print the funnel, write nothing
  python jobs/stats.py --lake ./lake --top-domains 50

release = dataset minus the rows dedup_images marks duplicate (jobs/index.py writes that table; without it the
report says so and the release equals the dataset). Reasons and their meanings: laion5b_spark/accounting.py.
"""

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="jobs/stats.py", description=self.description, epilog=self.epilog,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--lake", required=True, help="lake root: a local path or an fsspec URL such as s3://bucket/lake")
        p.add_argument("--config", help="pipeline profile, for lake.storage_options (defaults: built in)")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help='override one setting, e.g. --set lake.storage_options={endpoint_url="http://..."}')
        p.add_argument("--top-domains", type=int, default=20, help="image hosts in the domains plot (default 20)")
        p.add_argument("--bins", type=int, default=50, help="bins of the similarity histogram (default 50)")
        p.add_argument("--dry-run", action="store_true", help="print the funnel and stop: no plots, no report")
        return p

    def run(self, args: argparse.Namespace, argv: list[str]) -> int:
        cfg = load_config(args.config, args.set)
        lake = Lake(args.lake, cfg["lake"]["storage_options"])
        log = Log(self.name)
        try:
            exists = lake.fs.exists(lake.root)
        except Exception as exc:  # noqa: BLE001 - any failure here means the lake cannot be reached
            raise LakeError(f"cannot reach the lake at {lake.url}: {type(exc).__name__}: {exc}") from exc
        if not exists:
            raise LakeError(f"no lake at {lake.url}: check the path (or run the pipeline: make demo)")
        stats = compute(lake, top_domains=args.top_domains, bins=args.bins, with_plots=not args.dry_run)
        print(stats.funnel.text())
        if args.dry_run:
            return 0
        lake.check_writable()
        out = write_report(lake, stats)
        print()
        for name, url in out["plots"].items():
            log(f"plot {name}: {url}")
        log(f"funnel as JSON: {out['json']}")
        log(f"report: {out['report']}")
        return 0
