"""``python -m laion5b_spark.describe LAKE [--check]``: what a lake holds - tables, rows, runs, a few rows of each.

``--check`` then verifies the lake contract (``laion5b_spark.fsck.check``) and exits 1 when it finds a problem.
"""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .lake import Lake, LakeError

_SHOWN = ["url", "text", "language", "similarity", "width", "height", "status"]


def describe(lake: Lake | str, sample_rows: int = 5, out=None, storage_options: dict | None = None) -> None:
    out = sys.stdout if out is None else out  # looked up at the call: a caller (or pytest) may have replaced it
    lake = lake if isinstance(lake, Lake) else Lake(lake, storage_options)
    tables = lake.tables()
    print(f"lake {lake.url}: {len(tables)} table(s)", file=out)
    for name in tables:
        t = lake.table(name)
        try:
            m = t.manifest()
            units, files = t.all_entries(m), t.entries(m)
        except (LakeError, TypeError) as exc:
            print(f"\n{name}: manifest unreadable: {exc}", file=out)
            continue
        size = sum(e.bytes for e in files) / 1e6
        print(f"\n{name}: {sum(e.rows for e in units):,} rows in {len(files)} files ({size:,.1f} MB), "
              f"{len(units)} units, {len(m.get('runs', []))} run(s), updated {m.get('updated', '?')}", file=out)
        if files and sample_rows:
            import pandas as pd

            try:
                ds = t.dataset()
                shown = [c for c in _SHOWN if c in ds.schema.names] or None
                df = ds.head(sample_rows, columns=shown).to_pandas()
            except Exception as exc:  # noqa: BLE001 - a missing or torn file: --check says which
                print(f"(cannot read sample rows: {type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                      file=out)
                continue
            with pd.option_context("display.width", 160, "display.max_colwidth", 48, "display.max_columns", 8):
                print(df.to_string(index=False), file=out)
    for job in lake.jobs():
        try:
            runs = lake.runs(job)
        except LakeError as exc:
            print(f"\n{job}: a run record is unreadable: {exc}", file=out)
            continue
        if runs:
            r = runs[-1]
            flows = ", ".join(f"{name} {c['rows_in']:,} in -> {c['rows_out']:,} out"
                              for name, c in (r.get("counts") or {}).items()
                              if isinstance(c, dict) and "rows_in" in c and "rows_out" in c)
            print(f"\nlast {job} run {r.get('run_id', '?')}: {r.get('status', '?')}" + (f"; {flows}" if flows else ""),
                  file=out)


def main(argv: list[str] | None = None) -> int:
    from .fsck import add_lake_arguments, check, lake_from_args

    ap = argparse.ArgumentParser(prog="python -m laion5b_spark.describe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lake_arguments(ap)
    ap.add_argument("--rows", type=int, default=5, help="sample rows per table (0: none)")
    ap.add_argument("--check", action="store_true",
                    help="verify the lake contract after the summary; exit 1 when a problem is found")
    args = ap.parse_args(argv)
    try:
        lake = lake_from_args(ap, args)
        describe(lake, args.rows)
        if not args.check:
            return 0
        report = check(lake)
    except (LakeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
