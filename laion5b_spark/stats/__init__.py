"""Lake statistics: the funnel across stages, why rows left each one, run durations and throughput per stage,
plots and sample images of the release, as a report in the lake.

``jobs/stats.py --lake LAKE`` runs it (no Spark: manifests, run records and a few narrow column scans);
in a notebook: ``stats.compute(lake)`` then ``.funnel.frame()`` / ``.plots``, and ``stats.write_report``.
"""

from .funnel import Funnel, Stage, funnel
from .report import Stats, compute, write_report

__all__ = ["Funnel", "Stage", "Stats", "compute", "funnel", "write_report"]
