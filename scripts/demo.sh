#!/usr/bin/env bash
# `make demo`: pretrain the tiny CLIP towers contrastively on synthetic
# scenes with captions ("the red circle"), then train the tiny RSRefSeg from
# them on synthetic referring scenes (CPU), with expressions that refer to
# nothing in the image (20 %) or to several objects (20 %) besides
# single-target ones, and on windows cut from larger scenes (one pair in
# three), with a presence output; test it on the single-target
# test split, on a generalized test split (20 % no-target, 10 %
# multi-target pairs), again with shuffled expressions (the words must
# drive the mask), draw the first 8 pairs of the generalized split, and run
# the image+text demo on one held-out scene.
# Outputs: work_dirs/demo/{clip_pretrain.pth, iter_*.pth, best_*.pth,
#          <timestamp>/ logs, test/ (+ test/overlays/), test_generalized/,
#          test_shuffled/, contact_sheet.png, image_demo/, the test steps' logs
#          test.log, test_generalized.log, test_shuffled.log, contact_sheet.log,
#          image_demo.log}
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=configs/rsrefseg/rsrefseg-tiny-gres_clip-tiny-sam-tiny_1xb16-adamw-1200it_synthetic-128x128.py
WORK=${DEMO_WORK_DIR:-work_dirs/demo}
# the generalized test split: the single-target test scenes' generator with
# the training set's shares of no-target and multi-target expressions
GENERALIZED=(test_dataloader.dataset.no_target_ratio=0.2
             test_dataloader.dataset.multi_target_ratio=0.1)
start=$(date +%s)

echo "== [1/7] pretrain the tiny CLIP towers -> $WORK/clip_pretrain.pth"
# SigLIP's sigmoid loss + CLIP's InfoNCE on object regions, 1,200 steps on
# scenes of the generator's own random stream (not the dataset's splits)
OMP_NUM_THREADS=${DEMO_TRAIN_THREADS:-2} \
    $PY tools/misc/pretrain_demo_clip.py "$CONFIG" "$WORK/clip_pretrain.pth"

echo "== [2/7] train $CONFIG -> $WORK"
# Two threads by default (the machine's two cores): a run is bitwise
# reproducible on a given CPU with a given thread count (the summation
# order changes with the count). .dev_scripts/demo_sweep.py runs this
# script for several seeds (--cfg-options randomness.seed=N) and
# DEMO_TRAIN_THREADS=1/2.
OMP_NUM_THREADS=${DEMO_TRAIN_THREADS:-2} \
    $PY tools/train.py "$CONFIG" --work-dir "$WORK" \
    --cfg-options model.backbone.checkpoint="$WORK/clip_pretrain.pth" "$@"
CKPT="$WORK/$(cat "$WORK/last_checkpoint" | xargs basename)"
# Testing a 128 x 128 scene takes ~0.1 s on one thread: the test steps run
# on one thread each, side by side (their logs in $WORK/*.log).
export OMP_NUM_THREADS=${DEMO_TEST_THREADS:-1}

# run_pair NAME1 CMD1... -- NAME2 CMD2... [-- ...]: the commands side by
# side, each logging to $WORK/NAME.log; fails (with the log's end) if any
# fails
run_pair() {
    local names=() pids=() cmd=() arg
    for arg in "$@" --; do
        if [ "$arg" = -- ]; then
            names+=("${cmd[0]}")
            "${cmd[@]:1}" > "$WORK/${cmd[0]}.log" 2>&1 &
            pids+=($!)
            cmd=()
        else
            cmd+=("$arg")
        fi
    done
    local i status=0
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            tail -20 "$WORK/${names[$i]}.log"
            echo "${names[$i]} failed (log: $WORK/${names[$i]}.log)"
            status=1
        fi
    done
    return $status
}

echo "== [3/7] test $CKPT on the held-out single-target test split"
echo "== [4/7] test on the generalized test split (20 % no-target, 10 % multi-target)"
run_pair test $PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/test" \
    --show-dir overlays \
    -- test_generalized $PY tools/test.py "$CONFIG" "$CKPT" \
    --work-dir "$WORK/test_generalized" --cfg-options "${GENERALIZED[@]}"
# step 7 as a function, run beside steps 5 and 6: a held-out scene like the
# config's (3-4 objects, colour / shape expressions) and its expression
image_demo() {
    $PY tools/dataset_converters/synthetic_to_rrsisd.py "$WORK/scenes" \
        --num-train 0 --num-val 0 --num-test 2 --num-objects 3 4 \
        --expression-types attribute > /dev/null
    local img text
    img=$(ls "$WORK"/scenes/images/rrsisd/JPEGImages/* | head -1)
    text=$($PY - "$WORK/scenes" "$img" <<'PYEOF'
import os.path as osp, sys
from rsrefseg_mm.utils import load_plain_pickle_file
refs = load_plain_pickle_file(osp.join(sys.argv[1], 'refs(unc).p'))
name = osp.basename(sys.argv[2])
print(next(r['sentences'][0]['sent'] for r in refs if r['file_name'] == name))
PYEOF
)
    $PY demo/image_demo.py "$img" "$text" "$CONFIG" "$CKPT" \
        --out-dir "$WORK/image_demo"
}

echo "== [5/7] test again with every image paired with another sample's expression"
echo "== [6/7] contact sheet of the generalized test split's first 8 pairs"
echo "== [7/7] image + text inference on one held-out scene"
# in dataset order, not chosen by score; pairs 0, 2 and 6 are no-target
run_pair test_shuffled $PY tools/test.py "$CONFIG" "$CKPT" \
    --work-dir "$WORK/test_shuffled" \
    --cfg-options test_dataloader.dataset.shuffle_expressions=True \
    -- contact_sheet $PY demo/contact_sheet.py "$CONFIG" "$CKPT" \
    --out "$WORK/contact_sheet.png" --num 8 --columns 4 \
    --cfg-options "${GENERALIZED[@]}" \
    -- image_demo image_demo
tail -n 12 "$WORK/contact_sheet.log"
tail -n 4 "$WORK/image_demo.log"

$PY - "$WORK" "$(( $(date +%s) - start ))" <<'PYEOF'
import glob, json, os.path as osp, sys
work, seconds = sys.argv[1], int(sys.argv[2])
def metrics(sub):
    files = sorted(glob.glob(osp.join(work, sub, '*', '*.json')))
    return json.load(open(files[-1]))
rows = [('test (single target)', metrics('test')),
        ('test, 20 % no-target, 10 % multi-target',
         metrics('test_generalized')),
        ('test, shuffled expressions', metrics('test_shuffled'))]
keys = ['refer/oIoU', 'refer/mIoU', 'refer/Pr@0.5', 'refer/Pr@0.7',
        'refer/Pr@0.9', 'refer/gIoU', 'refer/N-acc', 'refer/T-acc']
print('\n| split | ' + ' | '.join(k.split('/')[1] for k in keys) + ' |')
print('|---|' + '---|' * len(keys))
for name, m in rows:  # N-acc only where the split has no-target pairs
    print(f'| {name} | ' + ' | '.join(f'{m[k]:.2f}' if k in m else '-'
                                      for k in keys) + ' |')
ratio = rows[2][1]['refer/mIoU'] / max(rows[0][1]['refer/mIoU'], 1e-9)
print(f'\nshuffled / true mIoU = {ratio:.2f} (the words drive the mask when '
      f'well below 1); demo wall time {seconds} s; outputs in {work}/')
PYEOF
