#!/usr/bin/env bash
# Build gpu_site/: pure-python copies of the OpenMMLab stack and the other
# packages RSRefSeg and its GPU benchmark need that a lent GPU machine lacks
# (it has python3.12, torch, numpy, opencv, regex, pyyaml, rich, matplotlib,
# scipy, einops, but no mmcv/mmengine/mmseg/mmpretrain/segment_anything/
# ftfy/transformers), taken from the local venv. Compiled files (*.so but
# stable-ABI ones, mmcv._ext: built for cp311) and caches are dropped; mmcv.ops is then replaced by tools/analysis_tools/
# mmcv_ops_shim.py (RSREFSEG_MMCV_OPS_SHIM=1, set by gpu_benchmark.sh).
#
# Usage: bash tools/analysis_tools/make_gpu_site.sh [DEST=gpu_site] [PYTHON]
# gpu_site/ is git-ignored (.git/info/exclude); carry it to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-gpu_site}
PY=${2:-.venv/bin/python}
SITE=$("$PY" -c 'import mmengine, os; print(os.path.dirname(os.path.dirname(mmengine.__file__)))')

# import names; the first group is what rsrefseg_mm imports, the rest are
# their pure-python dependencies missing on the GPU image; the last line is
# transformers (gpu_benchmark.py times the authors' SAM + SigLIP path) and
# what it needs beyond torch's own dependencies (filelock, fsspec and
# typing_extensions come with torch and are not shadowed)
PACKAGES="mmcv mmengine mmseg mmpretrain segment_anything ftfy wcwidth
addict yapf yapf_third_party termcolor prettytable platformdirs mat4py
modelindex ordered_set importlib_metadata lazy_importer
transformers huggingface_hub safetensors tqdm requests urllib3 idna certifi
charset_normalizer packaging tokenizers"

rm -rf "$DEST"
mkdir -p "$DEST"
for pkg in $PACKAGES; do
  if [ -d "$SITE/$pkg" ]; then
    cp -r "$SITE/$pkg" "$DEST/"
  elif [ -f "$SITE/$pkg.py" ]; then
    cp "$SITE/$pkg.py" "$DEST/"
  else
    echo "make_gpu_site: $pkg not found in $SITE" >&2
    exit 1
  fi
  # keep the metadata (importlib.metadata.version) of the distribution
  for info in "$SITE"/*.dist-info; do
    if grep -qx "$pkg" "$info/top_level.txt" 2>/dev/null || \
       [ "$(basename "$info" | cut -d- -f1 | tr 'A-Z-' 'a-z_')" = \
         "$(echo "$pkg" | tr 'A-Z-' 'a-z_')" ]; then
      mkdir -p "$DEST/$(basename "$info")"
      for f in METADATA top_level.txt entry_points.txt; do
        [ -f "$info/$f" ] && cp "$info/$f" "$DEST/$(basename "$info")/"
      done
    fi
  done
done
# compiled extensions (cp311) cannot load on the GPU machine's python3.12,
# except stable-ABI ones (safetensors' *.abi3.so); charset_normalizer falls
# back to its pure-python modules; configs bundled for `mim` are not needed
find "$DEST" \( \( -name '*.so' ! -name '*.abi3.so' \) -o -name '*.pyd' \
  -o -name '*.pyc' \) -delete
find "$DEST" -type d \( -name __pycache__ -o -name .mim \) -prune \
  -exec rm -rf {} +
# mmcv's CUDA/C++ sources for its ops (not python, not needed)
rm -rf "$DEST/mmcv/ops/csrc"
# transformers: 42 of its 50 MB are model code; keep SAM, SigLIP and the
# auto classes, and only the (lazy) __init__.py of every other model, which
# transformers.models imports (the device tool carries 64 MiB at most).
# mmpretrain imports transformers' tokenizers only with pycocotools
# installed (WITH_MULTIMODAL), which the GPU image lacks.
for model_dir in "$DEST"/transformers/models/*/; do
  case "$(basename "$model_dir")" in
    sam | siglip | auto) ;;
    *) find "$model_dir" -mindepth 1 ! -name __init__.py -exec rm -rf {} + ;;
  esac
done
touch "$DEST/.gpu_site"
if [ "$DEST" = gpu_site ]; then  # keep it out of git (worktrees included)
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  grep -qx '/gpu_site/' "$EXCLUDE" 2>/dev/null || \
    echo '/gpu_site/' >> "$EXCLUDE"
fi
echo "make_gpu_site: $(du -sh "$DEST" | cut -f1) in $DEST from $SITE"
