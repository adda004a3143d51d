"""spark-submit jobs/index.py --lake LAKE [--config conf/pipeline/X.toml]: scored -> knn indices + dedup_images."""

import sys

from laion5b_spark.index.job import IndexJob

if __name__ == "__main__":
    sys.exit(IndexJob().main())
