"""spark-submit jobs/ingest.py --lake LAKE --input LIST... [--url-col URL --caption-col TEXT] [--config X.toml]"""

import sys

from laion5b_spark.ingest.job import IngestJob

if __name__ == "__main__":
    sys.exit(IngestJob().main())
