#!/usr/bin/env bash
# RSRefSeg-b on a CUDA machine with this project's environment (`make
# install`, or any environment with the pinned stack and a CUDA build of
# torch): bf16 inference / LoRA training throughput and MFU next to the
# authors' transformers SAM + SigLIP path; the paper's SigLIP config; then
# the SAM ViT-B blocks (windowed / global, per implementation, with the
# profiler's top kernels). Run from anywhere:
#   bash tools/analysis_tools/gpu_benchmark.sh [gpu_benchmark.py options]
# Default options: --compile (Inductor, default mode) and --find-max-batch
# both (80 GiB cap). Results: markdown on stdout and
# $OUT/gpu_benchmark.{md,json,log}, $OUT/siglip/ + siglip.log,
# $OUT/sam_blocks_{default,mask}.{md,json} (OUT defaults to
# work_dirs/gpu_benchmark). GPU_BENCH_TIMEOUT (s, default 390),
# SIGLIP_BENCH_TIMEOUT (120) and BLOCK_BENCH_TIMEOUT (40) bound the parts.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
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
# authors' path at the same sizes) with a SentencePiece model trained here
SIGLIP_CFG=configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py
"$PY" tools/misc/train_spiece.py "$OUT_DIR/spiece" > /dev/null
timeout "${SIGLIP_BENCH_TIMEOUT:-120}" "$PY" \
  tools/analysis_tools/gpu_benchmark.py --config "$SIGLIP_CFG" \
  --cfg-options model.backbone.tokenizer="$OUT_DIR/spiece/spiece.model" \
  --rel-pos-modes auto --skip-stock --warmup 2 --repeats 5 \
  --out "$OUT_DIR/siglip" 2>&1 | tee "$OUT_DIR/siglip.log" || status=$?
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
