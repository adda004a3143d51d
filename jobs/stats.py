"""python jobs/stats.py --lake LAKE: the funnel, drop reasons and plots of a lake -> LAKE/_reports/stats/."""

import sys

from laion5b_spark.stats.job import StatsJob

if __name__ == "__main__":
    sys.exit(StatsJob().main())
