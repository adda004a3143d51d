"""spark-submit jobs/export.py --lake LAKE [--push-to-hub REPO]: dataset minus duplicates -> release (LAION parquet,
webdataset shards, a Hugging Face dataset folder)."""

import sys

from laion5b_spark.export.job import ExportJob

if __name__ == "__main__":
    sys.exit(ExportJob().main())
