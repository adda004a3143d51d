#!/usr/bin/env bash
# bench/clip/gpu_check.py and bench/clip/gpu.py on a lent GPU machine (the device tool's nvidia-h200: 1 GPU, 16 cores, no network), both
# models in ~5 minutes, JSON and log to $OUT.
#
# That machine's python3 (3.12) has torch, torchvision, timm, pyarrow, fsspec, pillow, safetensors, regex,
# huggingface_hub and xxhash, but not open_clip_torch, ftfy (+ wcwidth) or orjson; they travel as wheels in .whl/.
#
#   1. here, in the repo root, on a machine that reaches PyPI:   bench/clip/gpu_device.sh wheels
#   2. through the device tool:  run(command="bash bench/clip/gpu_device.sh", carry=[".whl"], timeout_s=480)
#   3. copy files_at/gpu.json to bench/clip/gpu.json (the capacity model then uses it) and put the figures,
#      the GPU's name and the date in bench/README.md.
set -euo pipefail

if [[ "${1:-}" == "wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
    rm -rf .whl
    # the versions this project's venv runs; --no-deps: everything else is already on that machine
    "${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 orjson==3.13.0 tokenizers==0.23.3
    ls -l .whl
    exit 0
fi

: "${OUT:?run this through the device tool (it sets OUT); 'wheels' mode runs here}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv; nproc;
  python3 -c "import torch, open_clip, pyarrow, numpy; print('torch', torch.__version__, 'open_clip',
open_clip.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"

# the device path against the CPU path first: equal statuses, similarities within bf16's error
timeout 120 python3 bench/clip/gpu_check.py --json "$OUT/gpu_check.json" 2>&1 | grep -v "No pretrained weights" \
    | tee "$OUT/gpu_check.log" || echo "gpu_check: FAILED (see above)"

# 16 decode threads: the machine's cores, one task per GPU. 16,384 images: ~5 s of ViT-B-32 end to end at the
# target, ~11 s of ViT-L-14; model loads and the table add about a minute.
timeout 400 python3 bench/clip/gpu.py --device cuda --models ViT-B-32,ViT-L-14 --images 16384 \
    --batch-size 512 --decode-threads 16 --gpu-decode --json "$OUT/gpu.json" 2>&1 | grep -v "No pretrained weights" \
    | tee "$OUT/gpu.log"
