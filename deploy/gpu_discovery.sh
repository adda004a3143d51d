#!/usr/bin/env bash
# spark.worker.resource.gpu.discoveryScript: prints this node's GPUs as Spark's resource JSON,
# e.g. {"name": "gpu", "addresses": ["0","1"]}. Without nvidia-smi or GPUs: an empty address list, so a worker
# started with --gpus 0 on a CPU node still starts (and one asked for GPUs fails with a clear Spark error).
# nvidia-smi reports its own failures on stdout ("No devices were found", "NVIDIA-SMI has failed ..."): only a
# successful run's lines that are plain indices count.
set -u
addresses=""
if command -v nvidia-smi >/dev/null 2>&1 && out=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null); then
  addresses=$(printf '%s\n' "$out" | tr -d ' \r' | grep -E '^[0-9]+$' | sed 's/.*/"&"/' | paste -sd, -)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
