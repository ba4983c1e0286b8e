#!/usr/bin/env bash
# Creates (or completes) the virtual environment that `make test` and `make demo` use.
#
#   tools/setup_venv.sh                        # .venv with torch 2.14.1 + torchvision 0.29.1
#   TORCH_SPEC="torch==2.13.0" TORCHVISION_SPEC="" tools/setup_venv.sh   # another torch
#
# mmcv 2.1.0 has no wheels for recent torch on PyPI: it is built from source once per torch
# version and the wheel is kept in $MMGC_WHEEL_CACHE/torch-<version>/ (default
# ~/.cache/mmgc/wheels), so another clone on the same machine installs it in seconds.
# Idempotent: a stamp records what was installed; a second run with the same inputs does nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC-torchvision==0.29.1}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
MMGC_WHEEL_CACHE=${MMGC_WHEEL_CACHE:-$HOME/.cache/mmgc/wheels}
CONSTRAINTS=$ROOT/requirements/constraints.txt

log() { printf '[setup_venv] %s\n' "$*"; }

inputs_hash() {
  cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "${BASH_SOURCE[0]}" |
    { cat; echo "$TORCH_SPEC $TORCHVISION_SPEC $MMCV_VERSION"; } | sha256sum | cut -c1-16
}
STAMP=$VENV/.mmgc-setup-$(inputs_hash)
if [[ -f $STAMP ]]; then
  log "up to date ($VENV)"
  exit 0
fi

start=$(date +%s)
[[ -x $VENV/bin/python ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PY=$VENV/bin/python
# Every install names torch too, so that no resolver step swaps the chosen torch for another.
# shellcheck disable=SC2086  # an empty TORCHVISION_SPEC must vanish
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS" $TORCH_SPEC $TORCHVISION_SPEC "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

log "installing $TORCH_SPEC $TORCHVISION_SPEC"
pip_install -r "$ROOT/requirements/runtime.txt"

torch_version=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
wheel_dir=$MMGC_WHEEL_CACHE/torch-$torch_version
if ! "$PY" -c "import mmcv, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  if ! compgen -G "$wheel_dir/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    log "building mmcv $MMCV_VERSION for torch $torch_version (about 13 minutes on 2 cores)"
    # mmcv's setup.py imports pkg_resources and needs an old setuptools (plus wheel) to build;
    # the pinned setuptools that torch wants is put back right after.
    pip_install -r "$ROOT/requirements/build.txt"
    "$PY" -m pip install --disable-pip-version-check -q --no-deps setuptools==69.5.1
    src=$(mktemp -d)
    "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      --no-build-isolation "mmcv==$MMCV_VERSION" -d "$src"
    tar -xzf "$src"/mmcv-"$MMCV_VERSION".tar.gz -C "$src"
    # torch >= 2.6 headers require C++20; mmcv's setup.py hard-codes -std=c++17.
    if "$PY" -c 'import torch, sys; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 6))'; then
      sed -i 's/-std=c++17/-std=c++20/g' "$src/mmcv-$MMCV_VERSION/setup.py"
    fi
    mkdir -p "$wheel_dir"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --disable-pip-version-check \
      -q --no-deps --no-build-isolation -w "$wheel_dir" "$src/mmcv-$MMCV_VERSION"
    rm -rf "$src"
    pip_install setuptools
  fi
  log "installing mmcv from $wheel_dir"
  "$PY" -m pip install --disable-pip-version-check -q --no-deps "$wheel_dir"/mmcv-"$MMCV_VERSION"-*.whl
fi

log "installing mmdet, mmpretrain, test requirements and mmgc (editable)"
pip_install -r "$ROOT/requirements/detection.txt" -r "$ROOT/requirements/classification.txt" \
  -r "$ROOT/requirements/tests.txt"
pip_install --no-build-isolation --no-deps -e "$ROOT"
"$PY" -m pip check >/dev/null || { "$PY" -m pip check; exit 1; }

rm -f "$VENV"/.mmgc-setup-*
touch "$STAMP"
log "done in $(( $(date +%s) - start )) s"
