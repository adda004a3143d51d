#!/usr/bin/env bash
# spark.worker.resource.gpu.discoveryScript: prints this node's GPUs as Spark's resource JSON,
# e.g. {"name": "gpu", "addresses": ["0","1"]}. Without nvidia-smi or GPUs: an empty address list, so a worker
# started with --gpus 0 on a CPU node still starts (and one asked for GPUs fails with a clear Spark error).
#
# The addresses are the CUDA indices the executor's processes will see (device.py turns an address into cuda:N),
# and executors inherit the worker's environment:
# * CUDA_VISIBLE_DEVICES unset: nvidia-smi's GPUs. Its index is PCI bus order; CUDA's default order is "fastest
#   first", so deploy/cluster.sh and the GPU profile set CUDA_DEVICE_ORDER=PCI_BUS_ID for the executors, and
#   index N here is cuda:N there.
# * set: CUDA shows its k entries as cuda:0 .. cuda:k-1, so the addresses are 0 .. k-1, once each entry is checked
#   to name a GPU nvidia-smi lists: an index, a GPU UUID or a unique prefix of one ("GPU-8932f937"), or a MIG
#   device from `nvidia-smi -L` ("MIG-<uuid>", or the older "MIG-GPU-<uuid>/<gi>/<ci>"). As CUDA does, the list
#   ends at the first entry that names no device (a warning on stderr says which), so "", "-1" and "NoDevFiles"
#   mean no GPU; a GPU named twice lists none (CUDA showed none for "0,0"); and CUDA enumerates at most one MIG
#   device per process, so the list ends after one. (Checked against torch.cuda.device_count() on an H200.)
# nvidia-smi reports its own failures on stdout ("No devices were found", "NVIDIA-SMI has failed ..."): only a
# successful run's lines that are an index and a UUID count.
set -u

gpus=()   # "index uuid" of each GPU nvidia-smi lists, in its (PCI bus) order
smi_ok=0
if command -v nvidia-smi >/dev/null 2>&1 \
    && out=$(nvidia-smi --query-gpu=index,uuid --format=csv,noheader 2>/dev/null); then
  smi_ok=1
  while IFS= read -r line; do
    line=${line//[[:space:]]/}
    [[ $line =~ ^([0-9]+),(GPU-[0-9A-Za-z-]+)$ ]] && gpus+=("${BASH_REMATCH[1]} ${BASH_REMATCH[2]}")
  done <<<"$out"
fi

warn() { echo "gpu_discovery.sh: $*" >&2; }
[ "${CUDA_DEVICE_ORDER:-PCI_BUS_ID}" = PCI_BUS_ID ] || warn "CUDA_DEVICE_ORDER=$CUDA_DEVICE_ORDER: GPU indices" \
  "here are nvidia-smi's (PCI bus order); start the worker with deploy/cluster.sh or CUDA_DEVICE_ORDER=PCI_BUS_ID"

# the nvidia-smi index of the GPU an entry names, or nothing
gpu_of() {
  local entry=$1 g found="" n=0
  for g in "${gpus[@]}"; do
    case $entry in
      GPU-*) [[ ${g#* } == "$entry"* ]] && { found=${g%% *}; n=$((n + 1)); };;  # a UUID or a prefix of one
      *) [[ ${g%% *} == "$entry" ]] && { found=${g%% *}; n=1; };;
    esac
  done
  [ "$n" = 1 ] && echo "$found"  # an ambiguous UUID prefix names no device
}

# whether nvidia-smi -L lists the MIG device an entry names
mig_listed() {
  local entry=$1 listing
  listing=$(nvidia-smi -L 2>/dev/null) || return 1
  if [[ $entry =~ ^MIG-(GPU-[0-9A-Za-z-]+)/[0-9]+/[0-9]+$ ]]; then  # the older form: the parent GPU's UUID
    [ -n "$(gpu_of "${BASH_REMATCH[1]}")" ] && [[ $listing == *"MIG "* ]]
  else
    [[ $listing == *"UUID: $entry"* ]]  # a MIG UUID or a prefix of one, taken literally
  fi
}

addresses=()
if [ "${CUDA_VISIBLE_DEVICES+set}" = set ]; then
  if [ "$smi_ok" = 1 ] && [ ${#gpus[@]} -gt 0 ]; then
    seen=" "
    IFS=, read -r -a entries <<<"${CUDA_VISIBLE_DEVICES//[[:space:]]/}"
    for entry in "${entries[@]}"; do
      case $entry in
        MIG-*)
          if mig_listed "$entry"; then addresses+=("${#addresses[@]}"); else warn "CUDA_VISIBLE_DEVICES entry \
'$entry' is no MIG device nvidia-smi -L lists: CUDA sees no device from it on"; fi
          break;;
        -1|NoDevFiles) break;;
      esac
      index=$(gpu_of "$entry")
      if [ -z "$index" ]; then
        warn "CUDA_VISIBLE_DEVICES entry '$entry' names no GPU nvidia-smi lists (an index, GPU-<uuid> or a unique" \
          "prefix of one): CUDA sees no device from it on, so neither does Spark"
        break
      fi
      if [[ $seen == *" $index "* ]]; then  # CUDA 12 on an H200: "0,0" hid every GPU, "GPU-<uuid>,0" showed one
        warn "CUDA_VISIBLE_DEVICES names GPU $index twice: CUDA may then show no GPU at all, so none is listed;" \
          "name each GPU once"
        addresses=()
        break
      fi
      seen+="$index "
      addresses+=("${#addresses[@]}")
    done
  fi
else
  for g in "${gpus[@]}"; do addresses+=("${g%% *}"); done
fi

json=""
for a in "${addresses[@]}"; do json+="${json:+, }\"$a\""; done
echo "{\"name\": \"gpu\", \"addresses\": [${json}]}"
