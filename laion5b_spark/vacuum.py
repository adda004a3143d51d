"""``python -m laion5b_spark.vacuum LAKE [--apply] [--min-age-s N]``: remove what no manifest lists.

Dry run by default: prints what it would delete - files under a table's ``data/`` and side folders that no
manifest lists, staging folders of runs that are over, index builds no pointer names - with sizes per table.
``--apply`` first finishes commits a killed run left half done, then deletes them. A live run's files are never
touched; error samples (``_errors/``) and run records (``_runs/``) are kept. See docs/LAKE.md.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .fsck import add_lake_arguments, lake_from_args, vacuum
from .lake import LakeError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m laion5b_spark.vacuum", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lake_arguments(ap)
    ap.add_argument("--apply", action="store_true", help="delete (default: only list what would be deleted)")
    ap.add_argument("--min-age-s", type=float, default=3600.0, metavar="N",
                    help="a run whose heartbeat (or, without a run record, whose newest staged file) is older than "
                         "this is over: its staging folder goes (default 3600)")
    args = ap.parse_args(argv)
    if args.min_age_s < 0:
        ap.error("--min-age-s: must be >= 0")
    try:
        lake = lake_from_args(ap, args)
        report = vacuum(lake, apply=args.apply, min_age_s=args.min_age_s)
    except (LakeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
