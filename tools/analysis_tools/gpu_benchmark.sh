#!/usr/bin/env bash
# The GPU benchmarks of docs/benchmark.md in one run, on a CUDA machine
# with this project's environment (`make install`, or any environment with
# the pinned OpenMMLab stack, transformers and a CUDA build of torch):
#   1. gpu_benchmark.py on RSRefSeg-b (CLIP-B/16 + SAM ViT-B) at 1024, bf16:
#      inference / LoRA training throughput and MFU, the authors'
#      transformers SAM + SigLIP path, the SAM encoder against stock, the
#      largest batches within 80 GiB, the compiled model;
#   2. the same eager runs for the paper's SigLIP so400m config (random
#      weights, a SentencePiece model trained by tools/misc/train_spiece.py);
#   3. sam_block_benchmark.py on single SAM ViT-B blocks (windowed / global,
#      per implementation, with the profiler's top kernels), with the
#      default rel-pos mode and with the full mask.
# Usage, from anywhere:
#   bash tools/analysis_tools/gpu_benchmark.sh [gpu_benchmark.py options]
# Without options step 1 runs with --compile --find-max-batch both.
# Results: Markdown on stdout; OUT_DIR/gpu_benchmark.{md,json,log},
# OUT_DIR/siglip/, OUT_DIR/sam_blocks_{default,mask}.{md,json}
# (OUT_DIR defaults to work_dirs/gpu_benchmark; PYTHON to the project's
# .venv/bin/python when present, else python).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
OUT_DIR=${OUT_DIR:-work_dirs/gpu_benchmark}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then
  ARGS=(--compile --find-max-batch both)
fi
status=0
"$PYTHON" tools/analysis_tools/gpu_benchmark.py --out "$OUT_DIR" \
  "${ARGS[@]}" 2>&1 | tee "$OUT_DIR/gpu_benchmark.log" || status=$?

SIGLIP_CFG=configs/rsrefseg/rsrefseg-b_siglip-so400m-p14-384-sam-vit-b_8xb4-lora-200e_rrsisd-1024x1024.py
"$PYTHON" tools/misc/train_spiece.py "$OUT_DIR/spiece" > /dev/null
"$PYTHON" tools/analysis_tools/gpu_benchmark.py --config "$SIGLIP_CFG" \
  --cfg-options model.backbone.tokenizer="$OUT_DIR/spiece/spiece.model" \
  --rel-pos-modes auto --skip-stock --warmup 2 --repeats 5 \
  --out "$OUT_DIR/siglip" 2>&1 | tee "$OUT_DIR/siglip.log" || status=$?

for mode in default mask; do
  extra=()
  [ "$mode" = mask ] && extra=(--rel-pos-mode mask)
  "$PYTHON" tools/analysis_tools/sam_block_benchmark.py --device cuda \
    --bf16 --batch 8 --repeats 10 --warmup 2 --profile "${extra[@]}" \
    --json "$OUT_DIR/sam_blocks_$mode.json" \
    2>&1 | tee "$OUT_DIR/sam_blocks_$mode.md" || status=$?
done
exit $status
