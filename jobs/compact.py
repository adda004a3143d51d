"""spark-submit jobs/compact.py --lake LAKE: images -> images without the bytes of rows below every threshold."""

import sys

from laion5b_spark.compact.job import CompactJob

if __name__ == "__main__":
    sys.exit(CompactJob().main())
