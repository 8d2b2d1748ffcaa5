#!/usr/bin/env bash
# RSRefSeg-b bf16 inference / LoRA training throughput and MFU on a lent GPU
# machine (python3 with torch + CUDA, but no OpenMMLab packages and no
# network). Prepare here:   bash tools/analysis_tools/make_gpu_site.sh
# then carry gpu_site/ and run there (repo root):
#   bash tools/analysis_tools/gpu_benchmark.sh [gpu_benchmark.py options]
# Results: markdown on stdout and $OUT/gpu_benchmark.{md,json}.
# Budget: ~1-2 min on an H100 (model build included); a hard limit of
# GPU_BENCH_TIMEOUT s (default 330) keeps it under 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -f gpu_site/.gpu_site ]; then
  echo "gpu_site/ missing: run tools/analysis_tools/make_gpu_site.sh here" \
       "and carry gpu_site" >&2
  exit 2
fi
# pure-python OpenMMLab stack + this repo; mmcv.ops replaced by the shim
export PYTHONPATH="$PWD/gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RSREFSEG_MMCV_OPS_SHIM=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONWARNINGS=ignore
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-work_dirs/gpu_benchmark}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  2>/dev/null || true
timeout "${GPU_BENCH_TIMEOUT:-330}" "$PY" \
  tools/analysis_tools/gpu_benchmark.py --out "$OUT_DIR" "$@" \
  2>&1 | tee "$OUT_DIR/gpu_benchmark.log"
