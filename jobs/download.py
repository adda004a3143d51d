"""spark-submit jobs/download.py --lake LAKE [--denylist PATH...] [--config conf/pipeline/X.toml]"""

import sys

from laion5b_spark.download.job import DownloadJob

if __name__ == "__main__":
    sys.exit(DownloadJob().main())
