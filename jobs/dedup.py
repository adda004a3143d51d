"""spark-submit jobs/dedup.py --lake LAKE [--key url_text|url] [--denylist PATH...] [--config conf/pipeline/X.toml]"""

import sys

from laion5b_spark.dedup.job import DedupJob

if __name__ == "__main__":
    sys.exit(DedupJob().main())
