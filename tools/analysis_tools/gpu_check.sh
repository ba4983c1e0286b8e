#!/usr/bin/env bash
# One GPU session's checks of mmgc, run from the repository root, meant to finish in under five
# minutes on one H200 (Triton's first compiles included):
#   env                 nvidia-smi, python / torch / torchvision / triton versions
#   deps                mmengine and its pure-Python needs from .whl/ when `import mmengine` fails
#   build               mmgc's C++ extension (it writes the Triton kernels' launch tables)
#   triton-tests        tests/test_ops/test_triton_kernels.py on CUDA tensors
#   bench-opt-float32   optimizer steps: fused kernels vs plain path vs torch (Faster R-CNN shapes)
#   profile-step        the same steps split into host time and kernel time
#   bench-train-fused   torchvision Mask R-CNN iterations, torch.optim.SGD vs mmgc.SGDGC, both
#                       fused=True (torch's fastest SGD as the baseline)
#   bench-opt-bfloat16  optimizer steps in bfloat16, fewer rounds
#   bench-train         Mask R-CNN iterations, each optimizer's default implementation
# A step that fails or runs out of time does not stop the next ones; the summary at the end says
# which passed. With $OUT set, each step's output also goes to $OUT/<step>.log, the summary to
# $OUT/summary.txt.
#
#   bash tools/analysis_tools/gpu_check.sh
#   make gpu-check                                   # GPU_PYTHON=... for another interpreter
#   PYTHON=/opt/torch/.venv/bin/python3 GPU_CHECK_BUDGET=240 bash tools/analysis_tools/gpu_check.sh
set -u
set -o pipefail
cd "$(dirname "$0")/../.." || exit 2

export PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-300}  # seconds for all the steps; later steps are cut short or skipped
SHAPES=tools/analysis_tools/shapes/faster-rcnn_r50_fpn.json
LOGS=${OUT:-}
[ -n "$LOGS" ] && mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

declare -a NAMES=() RESULTS=()

# run_step NAME CAP_SECONDS COMMAND...: runs COMMAND (a program, or a function of this script) for
# at most CAP_SECONDS (less when the budget is nearly spent), its output shown and, with $OUT,
# kept in $OUT/NAME.log.
run_step() {
    local name=$1 cap=$2 left status log
    shift 2
    left=$((BUDGET - SECONDS))
    NAMES+=("$name")
    if [ "$left" -lt 15 ]; then
        RESULTS+=("SKIPPED (out of time: ${SECONDS}s of ${BUDGET}s spent)")
        echo "=== $name: skipped, out of time"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    log=${LOGS:+$LOGS/$name.log}
    echo "=== $name (at most ${cap}s): $*"
    local begin=$SECONDS
    if declare -F "$1" >/dev/null; then  # timeout runs programs: a function runs in bash -c
        set -- bash -c "$(declare -f "$1"); $*"
    fi
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee ${log:+"$log"}
    status=$?
    local took=$((SECONDS - begin))
    if [ "$status" -eq 0 ]; then
        RESULTS+=("passed (${took}s)")
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        RESULTS+=("TIMED OUT after ${took}s (cap ${cap}s)")
    else
        RESULTS+=("FAILED, exit $status (${took}s)")
    fi
    echo "=== $name: ${RESULTS[-1]}"
}

env_info() {
    nvidia-smi || echo "nvidia-smi failed"
    "$PYTHON" - <<'EOF'
import sys
print('python', sys.version.split()[0], sys.executable)
for name in ('torch', 'torchvision', 'triton', 'numpy'):
    try:
        module = __import__(name)
        print(name, getattr(module, '__version__', '?'))
    except Exception as error:  # show what is missing and go on
        print(name, 'not importable:', error)
import torch
print('cuda available:', torch.cuda.is_available(), ' torch cuda:', torch.version.cuda,
      ' devices:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
EOF
}

deps() {
    if "$PYTHON" -c 'import mmengine' 2>/dev/null; then
        echo "mmengine already importable"
    else
        echo "installing .whl/*.whl into /tmp/site"
        ls .whl/*.whl || return 1
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl ||
            { echo "pip failed: unpacking the (pure-Python) wheels instead"
              "$PYTHON" -c 'import sys, zipfile
for wheel in sys.argv[1:]:
    zipfile.ZipFile(wheel).extractall("/tmp/site")' .whl/*.whl || return 1; }
    fi
    PYTHONPATH=/tmp/site:$PYTHONPATH "$PYTHON" -c 'import mmengine, mmgc
print("mmengine", mmengine.__version__, mmengine.__file__)
print("mmgc", mmgc.__version__, mmgc.__file__)'
}

run_step env 60 env_info
run_step deps 60 deps
if ! "$PYTHON" -c 'import mmengine' 2>/dev/null; then  # deps ran in a child: export here
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
echo "PYTHONPATH=$PYTHONPATH"
# The C++ side (it writes the Triton kernels' launch tables): built once, about a minute.
run_step build 120 "$PYTHON" -c 'import mmgc.ops as ops
kernels = ops.cpu_kernels()
print("mmgc C++ kernels and table builder:", "built" if kernels is not None else "NOT BUILT")
raise SystemExit(kernels is None)'

run_step triton-tests 150 env MMGC_TRITON_DEVICE=cuda \
    "$PYTHON" -m pytest -x -q -p no:cacheprovider tests/test_ops/test_triton_kernels.py
run_step bench-opt-float32 60 "$PYTHON" tools/analysis_tools/benchmark_optimizer.py \
    --device cuda --shapes "$SHAPES" --warmup 10 --repeats 100
run_step profile-step 40 "$PYTHON" tools/analysis_tools/profile_gc_step.py --shapes "$SHAPES"
# In order of need: a later step is the first to go when the budget runs short.
run_step bench-train-fused 45 "$PYTHON" tools/analysis_tools/benchmark_train_torchvision.py \
    --device cuda --warmup 3 --iters 20 --fused
run_step bench-opt-bfloat16 40 "$PYTHON" tools/analysis_tools/benchmark_optimizer.py \
    --device cuda --shapes "$SHAPES" --dtype bfloat16 --warmup 5 --repeats 40
run_step bench-train 40 "$PYTHON" tools/analysis_tools/benchmark_train_torchvision.py \
    --device cuda --warmup 3 --iters 20

summary() {
    echo "=== summary (${SECONDS}s in all, budget ${BUDGET}s)"
    local i failed=0
    for i in "${!NAMES[@]}"; do
        printf '  %-20s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"
        case ${RESULTS[$i]} in passed*) ;; *) failed=1 ;; esac
    done
    return $failed
}
summary | tee ${LOGS:+"$LOGS/summary.txt"}
