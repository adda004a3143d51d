"""Run durations and throughput per stage, from the run records in ``LAKE/_runs/<job>/*.json``.

Per job: its runs, their seconds summed, the rows its main ledger took in (summed: a resumed run counts only the
units it did, so the sum is each unit once), rows per second, and the latest run's status. A job's main ledger
is the one its input rows are counted in (``MAIN_LEDGER``); a job not listed there (a stage added later) uses
the first of its records' ledgers by name, so it shows up without a change here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..lake import Lake

PIPELINE = ("extract", "dedup", "download", "clip", "index")  # listed first, in this order; then the others
MAIN_LEDGER = {"extract": "records", "dedup": "pairs", "download": "images", "clip": "clip", "index": "index"}
SKIP = {"stats"}  # this report's own runs


@dataclass
class StageRuns:
    job: str
    runs: int
    seconds: float  # of the runs that have a duration (a run still going, or killed without an end, has none)
    ledger: str | None  # whose rows: the job's main ledger
    rows_in: int | None
    rows_out: int | None
    last_status: str
    last_seconds: float | None
    last_started: str | None

    @property
    def rows_per_s(self) -> float | None:
        return self.rows_in / self.seconds if self.rows_in is not None and self.seconds > 0 else None

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


def stage_runs(lake: Lake) -> list[StageRuns]:
    import pandas as pd

    from ..notebook import run_history

    df = run_history(lake)
    if df.empty:
        return []
    jobs = [j for j in PIPELINE if j in set(df.job)] + sorted(set(df.job) - set(PIPELINE) - SKIP)
    out = []
    for job in jobs:
        runs = df[df.job == job]  # sorted by start
        ledger = _ledger(job, runs)
        last = runs.iloc[-1]
        rows_in = rows_out = None
        if ledger:
            rows_in = int(runs[f"{ledger}.rows_in"].sum())
            rows_out = int(runs[f"{ledger}.rows_out"].sum())
        started = None if pd.isna(last.started) else last.started.isoformat()
        out.append(StageRuns(job, len(runs), round(float(runs.seconds.sum()), 1), ledger, rows_in, rows_out,
                             str(last.status), None if pd.isna(last.seconds) else float(last.seconds), started))
    return out


def _ledger(job: str, runs) -> str | None:
    named = MAIN_LEDGER.get(job)
    if named and f"{named}.rows_in" in runs.columns and runs[f"{named}.rows_in"].notna().any():
        return named
    for c in runs.columns:
        if c.endswith(".rows_in") and runs[c].notna().any():
            return c[: -len(".rows_in")]
    return None
