"""``python -m laion5b_spark.describe LAKE``: what a lake holds - tables, rows, runs, a few rows of each."""

from __future__ import annotations

import argparse
import sys

from .lake import Lake

_SHOWN = ["url", "text", "language", "similarity", "width", "height", "status"]


def describe(lake_url: str, sample_rows: int = 5, out=sys.stdout) -> None:
    lake = Lake(lake_url)
    tables = lake.tables()
    print(f"lake {lake.url}: {len(tables)} table(s)", file=out)
    for name in tables:
        t = lake.table(name)
        m = t.manifest()
        files = [f for f in m["files"] if f.get("path")]
        size = sum(f["bytes"] for f in files) / 1e6
        print(f"\n{name}: {t.num_rows():,} rows in {len(files)} files ({size:,.1f} MB), "
              f"{len(m['files'])} units, {len(m['runs'])} run(s), updated {m.get('updated', '?')}", file=out)
        if files and sample_rows:
            import pandas as pd

            ds = t.dataset()
            shown = [c for c in _SHOWN if c in ds.schema.names] or None
            df = ds.head(sample_rows, columns=shown).to_pandas()
            with pd.option_context("display.width", 160, "display.max_colwidth", 48, "display.max_columns", 8):
                print(df.to_string(index=False), file=out)
    for job in sorted(_jobs(lake)):
        runs = lake.runs(job)
        if runs:
            r = runs[-1]
            flows = ", ".join(f"{name} {c['rows_in']:,} in -> {c['rows_out']:,} out"
                              for name, c in (r.get("counts") or {}).items())
            print(f"\nlast {job} run {r['run_id']}: {r['status']}" + (f"; {flows}" if flows else ""), file=out)


def _jobs(lake: Lake) -> list[str]:
    try:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(lake.path("_runs"), detail=False)
                if lake.fs.isdir(p)]
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m laion5b_spark.describe", description=__doc__)
    ap.add_argument("lake")
    ap.add_argument("--rows", type=int, default=5, help="sample rows per table (0: none)")
    args = ap.parse_args(argv)
    describe(args.lake, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
