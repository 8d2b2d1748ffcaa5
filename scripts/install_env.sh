#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv/.
#
# Idempotent: a stamp file records the hash of this script and the requirement
# files; when it matches, nothing is done. mmcv 2.1.0 has no wheel for
# torch 2.14, so it is built from its sdist once and cached outside the clone.
# Traps worked around: mmcv-lite lacks the compiled `mmcv._ext` that mmseg
# imports; mmcv's setup.py imports pkg_resources (setuptools < 70) and torch
# (no build isolation); torch 2.14's headers need C++20 (mmcv asks C++17).
# The sdist is fetched through pip (so pip's index configuration, mirrors and
# proxies apply) and checked against its sha256.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
MMCV_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
CACHE="${RSREFSEG_CACHE:-$HOME/.cache/rsrefseg-mm}"
PYTAG="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${PYTAG}_$(uname -m)"

stamp_hash() {
    cat scripts/install_env.sh requirements/*.txt setup.py | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.rsrefseg-installed"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_hash)" ]]; then
    echo "[install] .venv is up to date ($STAMP)"
    exit 0
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
echo "[install] torch ${TORCH_VERSION} + torchvision ${TORCHVISION_VERSION}"
"${PIP[@]}" install -q "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[install] no cached mmcv wheel in $WHEEL_DIR: building mmcv ${MMCV_VERSION} from source (~13 min on 2 cores)"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    # mmcv's setup.py imports pkg_resources (gone in setuptools>=81) and torch
    # (hence no build isolation). Downgrade for the build, restore afterwards.
    "${PIP[@]}" install -q "setuptools<70" wheel ninja
    "${PIP[@]}" download -q --no-binary :all: --no-deps --no-build-isolation \
        -d "$BUILD/sdist" "mmcv==${MMCV_VERSION}"
    echo "${MMCV_SHA256}  $BUILD/sdist/mmcv-${MMCV_VERSION}.tar.gz" | sha256sum -c -
    tar -xzf "$BUILD/sdist/mmcv-${MMCV_VERSION}.tar.gz" -C "$BUILD"
    # torch 2.14's headers need C++20; mmcv 2.1.0 asks for C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-${MMCV_VERSION}/setup.py"
    mkdir -p "$WHEEL_DIR"
    MAX_JOBS="${MAX_JOBS:-2}" MMCV_WITH_OPS=1 FORCE_CUDA=0 \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$BUILD/dist" "$BUILD/mmcv-${MMCV_VERSION}"
    mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR/"
fi
"${PIP[@]}" install -q "setuptools>=77"
echo "[install] mmcv from $WHEEL_DIR"
"${PIP[@]}" install -q "$WHEEL_DIR"/mmcv-*.whl
# sam2 (SAM 2.1) builds from its sdist: SAM2_BUILD_CUDA=0 skips its CUDA
# extension (video mask post-processing only; it needs nvcc), and torch must
# be the installed one (no build isolation, else pip fetches another torch
# into an isolated build environment). Installed first, so that the -r line
# below finds it satisfied.
export SAM2_BUILD_CUDA=0
SAM2_REQ="$(grep -E '^sam2==' requirements/runtime.txt | cut -d'#' -f1 | xargs)"
echo "[install] ${SAM2_REQ} (SAM2_BUILD_CUDA=0, no build isolation)"
"${PIP[@]}" install -q --no-build-isolation "${SAM2_REQ}"
# geo (rasterio) and web (gradio) are optional extras of the package; the
# test suite exercises both, so the development environment has them.
"${PIP[@]}" install -q -r requirements/mminstall.txt -r requirements/runtime.txt \
    -r requirements/geo.txt -r requirements/web.txt -r requirements/tests.txt \
    -r requirements/lint.txt
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import mmcv.ops, mmseg, mmpretrain, segment_anything, sam2.modeling, rasterio, rsrefseg_mm; print('[install] ok: mmcv', mmcv.__version__, 'mmseg', mmseg.__version__)"
stamp_hash > "$STAMP"
echo "[install] done in $(( $(date +%s) - start )) s"
