#!/usr/bin/env bash
# Everything a lent GPU machine (no network) is for, as one command: the GPU tests, then one training stint
# of the shipped recipe from the shipped weights; every result under $OUT.
#
#   OUT=/results tests/gpu/device_session.sh [MINUTES] [train options...]
#
# The defaults (240 s of GPU tests, 4 minutes of training) keep one call under 10 minutes, the most a lent
# machine gives a single command.
#
# Prepared here, once, with network (both paths are git-ignored and travel with the working tree: 13.3 + 3 MiB, with the tracked 47 MiB under 64):
#   tests/gpu/prepare_wheels.sh     # .whl/: pycuda's sdist, effdet and their dependencies, for Python 3.12
#   facemask-sdk dev compact-data ../shared/datasets/face-mask-detection runs/compact-data --quality 55   # 13.3 MiB JPEG copy
#
# 1. tests/gpu/run.sh (pycuda from .whl, the kernel and stage tests, kernel timings; at most $GPU_TESTS_TIMEOUT
#    seconds, default 240)                                                                 -> $OUT/gpu-tests/
# 2. facemask_tools/training/gpu_run.sh: MINUTES (default 4) of training on $DATA (default runs/compact-data)
#    from the shipped weights with their recorded recipe (train --recipe-from), options given here on top
#                                                                                          -> $OUT/train/
# A failure of step 1 does not stop step 2 (a missing pycuda must not waste the machine's training time).
# $OUT/status.txt gives each step's exit status. Exit status: 0 when both steps succeeded, else 1.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"  # absolute: tests/gpu/run.sh works from the repo root
MINUTES="${1:-4}"
[ $# -ge 1 ] && shift
if ! [[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "error: MINUTES must be a number, got '$MINUTES' (usage: OUT=DIR $0 [MINUTES] [train options...])" >&2
    exit 2
fi
# the shipped model's recipe, as its checkpoint records it (RECIPE names another); options given here override it
set -- --recipe-from "${RECIPE:-$ROOT/models/facemask.pt}" "$@"
DATA="${DATA:-$ROOT/runs/compact-data}"
mkdir -p "$OUT/gpu-tests" "$OUT/train"
started=$(date +%s)

echo "== 1/2 GPU tests -> $OUT/gpu-tests"
# bounded, so that a hung kernel cannot spend the training's device time (GPU_TESTS_TIMEOUT seconds, default 240)
OUT="$OUT/gpu-tests" timeout "${GPU_TESTS_TIMEOUT:-240}" bash "$ROOT/tests/gpu/run.sh" "${WHEELS:-$ROOT/.whl}"
tests_status=$?

echo "== 2/2 training stint ($MINUTES min) -> $OUT/train"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import effdet" 2>/dev/null; then  # the GPU machines lack effdet: from the wheel folder, offline
    "$PY" -m pip install -q --no-index --find-links "${WHEELS:-$ROOT/.whl}" --no-build-isolation effdet \
        || echo "error: effdet is missing and could not be installed from ${WHEELS:-$ROOT/.whl} (tests/gpu/prepare_wheels.sh)" >&2
fi
if [ -d "$DATA" ]; then
    # the run's checkpoints stay outside OUT: a device call brings back at most 8 files of 16 MiB
    OUT="$OUT/train" RUN_DIR="${RUN_DIR:-$(mktemp -d)/run}" bash "$ROOT/facemask_tools/training/gpu_run.sh" \
        "$DATA" "$MINUTES" "$@"
    train_status=$?
else
    echo "error: no data at $DATA (make it with: facemask-sdk dev compact-data ../shared/datasets/face-mask-detection runs/compact-data --quality 55)" >&2
    train_status=3
fi

printf 'gpu-tests %s\ntrain %s\nseconds %s\n' "$tests_status" "$train_status" "$(( $(date +%s) - started ))" \
    | tee "$OUT/status.txt"
[ "$tests_status" -eq 0 ] && [ "$train_status" -eq 0 ]
