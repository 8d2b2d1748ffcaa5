#!/usr/bin/env bash
# RSRefSeg-b bf16 inference / LoRA training throughput and MFU on a lent GPU
# machine (python3 with torch + CUDA, but no OpenMMLab packages and no
# network), next to the authors' transformers SAM + SigLIP path; the same
# for the paper's SigLIP config (when sentencepiece imports); then the SAM
# block benchmark (windowed / global blocks, per implementation, with
# the profiler's top kernels). Prepare here:
#   bash tools/analysis_tools/make_gpu_site.sh
# then carry gpu_site/ and run there (repo root):
#   bash tools/analysis_tools/gpu_benchmark.sh [gpu_benchmark.py options]
# Default options: --compile (Inductor, default mode) and --find-max-batch
# both (80 GiB cap). Results: markdown on stdout and
# $OUT/gpu_benchmark.{md,json,log}, $OUT/siglip/ + siglip.log,
# $OUT/sam_blocks_{default,mask}.{md,json}.
# Budget: hard limits of GPU_BENCH_TIMEOUT s (default 390) for the model
# benchmark (gpu_benchmark.json is written after each step),
# SIGLIP_BENCH_TIMEOUT s (120) for the paper's SigLIP config and
# BLOCK_BENCH_TIMEOUT s (40) per block run keep the script under 10 minutes.
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
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then
  ARGS=(--compile --find-max-batch both)
fi
status=0
timeout "${GPU_BENCH_TIMEOUT:-390}" "$PY" \
  tools/analysis_tools/gpu_benchmark.py --out "$OUT_DIR" "${ARGS[@]}" \
  2>&1 | tee "$OUT_DIR/gpu_benchmark.log" || status=$?
# the paper's SigLIP so400m config (eager, default rel-pos mode, against the
# authors' path at the same sizes); its tokenizer needs sentencepiece, which
# is compiled per Python version and not in gpu_site/
SIGLIP_CFG=configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py
if "$PY" -c 'import sentencepiece' 2>/dev/null; then
  "$PY" tools/misc/train_spiece.py "$OUT_DIR/spiece" > /dev/null
  timeout "${SIGLIP_BENCH_TIMEOUT:-120}" "$PY" \
    tools/analysis_tools/gpu_benchmark.py --config "$SIGLIP_CFG" \
    --cfg-options model.backbone.tokenizer="$OUT_DIR/spiece/spiece.model" \
    --rel-pos-modes auto --skip-stock --warmup 2 --repeats 5 \
    --out "$OUT_DIR/siglip" 2>&1 | tee "$OUT_DIR/siglip.log" || status=$?
else
  echo "SigLIP config NOT run: sentencepiece is not importable by $PY" \
    | tee "$OUT_DIR/siglip.log"
fi
# SAM ViT-B blocks at 1024, batch 8, bf16: stock / SDPA with stock's
# windows / SAMFastBlock 'padded' and 'real' qkv; default rel_pos_mode
# (folded on GPU) and the full mask
for mode in default mask; do
  extra=()
  [ "$mode" = mask ] && extra=(--rel-pos-mode mask)
  timeout "${BLOCK_BENCH_TIMEOUT:-40}" "$PY" \
    tools/analysis_tools/sam_block_benchmark.py --device cuda --bf16 \
    --batch 8 --repeats 10 --warmup 2 --profile "${extra[@]}" \
    --json "$OUT_DIR/sam_blocks_$mode.json" \
    2>&1 | tee "$OUT_DIR/sam_blocks_$mode.md" || status=$?
done
exit $status
