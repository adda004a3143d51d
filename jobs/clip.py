"""spark-submit jobs/clip.py --lake LAKE [--config conf/pipeline/X.toml]: images -> scored + dataset."""

import sys

from laion5b_spark.clip.job import ClipJob

if __name__ == "__main__":
    sys.exit(ClipJob().main())
