#!/usr/bin/env bash
# spark-submit with this project's virtualenv: `deploy/submit.sh [spark-submit options] jobs/<stage>.py ...`
# The pip pyspark package's spark-submit finds Spark only inside its venv, and executors must run the venv's
# python; this wrapper sets both, so the README commands work without activating anything.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${L5S_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "error: no virtualenv at $venv: run 'make setup' first (or set L5S_VENV)." >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$venv/bin/python}
export PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$venv/bin/python}
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
export NO_ALBUMENTATIONS_UPDATE=1
# local mode's Python workers are the driver's children: GPUs numbered in PCI bus order, as nvidia-smi shows them
# (executors on a cluster get it from deploy/cluster.sh and spark.executorEnv.CUDA_DEVICE_ORDER)
export CUDA_DEVICE_ORDER=PCI_BUS_ID
export SPARK_CONF_DIR=${SPARK_CONF_DIR:-$here/conf/spark}  # for log4j2.properties (no spark-defaults there)
exec spark-submit "$@"
