#!/usr/bin/env bash
# Start/stop a Spark standalone master or worker on this node.
#
#   deploy/cluster.sh master start [--host H] [--port 7077] [--webui-port 8080]
#   deploy/cluster.sh worker start spark://MASTER:7077 [--cores N] [--memory 24g] [--gpus N]
#                                  [--work-dir DIR] [--webui-port 8081]
#   deploy/cluster.sh master stop | worker stop | status
#
# Works with the pip pyspark package (whose sbin/ has no start-master/start-worker: we run the Master and Worker
# classes through spark-class) and with a full Spark distribution (set SPARK_HOME). Daemons run in their own
# process group; pid files and logs go to $L5S_CLUSTER_DIR (default build/cluster), so `stop` takes down the
# daemon and everything it started (executors, Python workers).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${L5S_CLUSTER_DIR:-$here/build/cluster}
mkdir -p "$dir"

# SPARK_HOME: a full distribution if set, else the pip pyspark package of the project's venv
if [ -z "${SPARK_HOME:-}" ] || [ ! -x "$SPARK_HOME/bin/spark-class" ]; then
  venv=${L5S_VENV:-$here/.venv}
  [ -x "$venv/bin/python" ] || { echo "error: no Spark: set SPARK_HOME or run 'make setup'" >&2; exit 1; }
  SPARK_HOME=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$venv/bin/python}
fi
export SPARK_HOME
spark_class="$SPARK_HOME/bin/spark-class"

start() {  # name, then the command
  local name=$1; shift
  local pidf="$dir/$name.pid"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pidf"))"; return 0
  fi
  setsid "$@" >"$dir/$name.log" 2>&1 < /dev/null &
  echo $! >"$pidf"
  echo "$name started (pid $!, log $dir/$name.log)"
}

stop() {  # name
  local pidf="$dir/$1.pid"
  [ -f "$pidf" ] || { echo "$1 not running"; return 0; }
  local pid; pid=$(cat "$pidf")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true  # the whole group: executors and Python workers too
  rm -f "$pidf"
  echo "$1 stopped"
}

role=${1:-}; action=${2:-}; shift 2 || true
case "$role:$action" in
  master:start)
    host=${SPARK_LOCAL_IP:-$(hostname -f)}; port=7077; ui=8080
    while [ $# -gt 0 ]; do case $1 in
      --host) host=$2; shift 2;; --port) port=$2; shift 2;; --webui-port) ui=$2; shift 2;;
      *) echo "unknown option $1" >&2; exit 2;; esac; done
    start master "$spark_class" org.apache.spark.deploy.master.Master --host "$host" --port "$port" --webui-port "$ui"
    echo "master URL: spark://$host:$port";;
  worker:start)
    master=${1:?worker start needs the master URL, e.g. spark://host:7077}; shift
    cores=$(nproc); memory=""; gpus=0; work="$dir/work"; ui=8081; name=worker
    while [ $# -gt 0 ]; do case $1 in
      --cores) cores=$2; shift 2;; --memory) memory=$2; shift 2;; --gpus) gpus=$2; shift 2;;
      --work-dir) work=$2; shift 2;; --webui-port) ui=$2; shift 2;; --name) name=$2; shift 2;;
      *) echo "unknown option $1" >&2; exit 2;; esac; done
    opts=(--cores "$cores" --work-dir "$work" --webui-port "$ui")
    [ -n "$memory" ] && opts+=(--memory "$memory")
    # executors inherit the worker's environment: CUDA numbers GPUs in PCI bus order there, as nvidia-smi and
    # gpu_discovery.sh do (CUDA's default, fastest first, would make address N a different GPU than nvidia-smi's N)
    export CUDA_DEVICE_ORDER=PCI_BUS_ID
    if [ "$gpus" != 0 ]; then  # Spark asks the discovery script which GPU addresses this worker has
      export SPARK_WORKER_OPTS="${SPARK_WORKER_OPTS:-} -Dspark.worker.resource.gpu.amount=$gpus \
-Dspark.worker.resource.gpu.discoveryScript=$here/deploy/gpu_discovery.sh"
    fi
    start "$name" "$spark_class" org.apache.spark.deploy.worker.Worker "${opts[@]}" "$master";;
  master:stop) stop master;;
  worker:stop) stop "${1:-worker}";;
  status:*|:)
    for f in "$dir"/*.pid; do [ -e "$f" ] || continue; n=$(basename "$f" .pid)
      if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$n running (pid $(cat "$f"))"; else echo "$n dead"; fi; done;;
  *) sed -n '2,12p' "$0"; exit 2;;
esac
