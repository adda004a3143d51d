"""What ``l5s JOB`` hands to spark-submit: ``submit_entry.py JOB ARGS...`` runs that job's ``main`` in the driver."""

import sys

from laion5b_spark.cli import job

if __name__ == "__main__":
    sys.exit(job(sys.argv[1]).main(sys.argv[2:]))
