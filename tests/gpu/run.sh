#!/usr/bin/env bash
# GPU checks of the CUDA kernels, for a machine with an NVIDIA GPU and possibly no network.
#
#   tests/gpu/run.sh [WHEEL_DIR]        (from anywhere; WHEEL_DIR defaults to .whl in the repo root)
#
# 1. If pycuda is not importable, installs it from WHEEL_DIR without an index
#    (pip install --no-index --find-links WHEEL_DIR pycuda; tests/gpu/prepare_wheels.sh fills it): pycuda's wheel or sdist, with
#    its dependencies (pytools, platformdirs, mako, markupsafe, typing-extensions, siphash24). An sdist
#    builds against the CUDA toolkit (nvcc on PATH or in /usr/local/cuda/bin) with this environment's
#    setuptools and numpy (--no-build-isolation).
# 2. Where TensorRT is installed, builds an engine from models/facemask.fp16.onnx (facemask-sdk
#    build-engine) and points FACEMASK_TEST_ENGINE at it.
# 3. Runs the GPU tests (tests/gpu, marked `gpu`: the kernels, and every stage combination of `Detector`
#    against the NumPy pipeline, around the engine too) and the CPU kernel, backend and stage tests.
# 4. Times every kernel with CUDA events (tests/gpu/bench_kernels.py, $BENCH_ITERATIONS iterations,
#    default 300) and prints the table.
# With $OUT set, the pytest log and the timing table (kernel_timings.md / .json) are written there too.
# Exit status: 0 when the tests pass, else the first failure's status.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
WHEELS="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
export PATH="$PATH:/usr/local/cuda/bin"
LOG_DIR="${OUT:-}"
[ -n "$LOG_DIR" ] && mkdir -p "$LOG_DIR"

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null \
    || echo "(nvidia-smi not available)"
command -v nvcc >/dev/null && nvcc --version | tail -n 1 || echo "warning: nvcc not found: pycuda compiles the kernels with it"

if ! "$PY" -c "import pycuda.driver" 2>/dev/null; then
    echo "== installing pycuda from $WHEELS"
    if [ ! -d "$WHEELS" ]; then
        echo "pycuda is not installed and $WHEELS does not exist; see the header of $0" >&2
        exit 3
    fi
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation pycuda || exit 3
fi
"$PY" -c "import numpy, cv2, pytest" || { echo "needs numpy, opencv-python-headless and pytest" >&2; exit 3; }
# the tooling (facemask_tools.*) and its entry points (train, dev, ...) exist only installed: an editable
# install of this checkout, made here (offline: no dependencies, no build isolation) when another one is in the way
"$PY" -c "import sys, importlib.metadata as m, facemask_tools.training as t
sys.exit(not (t.__file__.startswith('$ROOT/') and m.entry_points(group='facemask_sdk.commands', name='dev')))" 2>/dev/null \
    || "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >/dev/null

# TensorRT present: build an engine from the shipped FP16 ONNX, so the stage tests run TensorRT with the
# CUDA kernels and with the NumPy stages (tests/gpu/test_stages.py::test_stage_combinations_around_tensorrt)
if "$PY" -c "import tensorrt" 2>/dev/null; then
    echo "== TensorRT engine from models/facemask.fp16.onnx"
    ENGINE_DIR="${LOG_DIR:-$(mktemp -d)}"
    if "$PY" -m facemask_sdk.cli.main build-engine --onnx "$ROOT/models/facemask.fp16.onnx" --fp16 --force \
            --out "$ENGINE_DIR/facemask.fp16.engine"; then
        export FACEMASK_TEST_ENGINE="$ENGINE_DIR/facemask.fp16.engine"
    else
        echo "engine build failed" >&2
        build_failed=1
    fi
else
    echo "== TensorRT is not installed: the engine tests skip (the kernels are still tested)"
fi

echo "== tests"
status=0
"$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu tests/facemask_sdk/cuda tests/facemask_sdk/backends/test_tensorrt.py \
    tests/facemask_sdk/test_stages.py \
    2>&1 | tee ${LOG_DIR:+"$LOG_DIR/pytest.log"}
status=${PIPESTATUS[0]}
[ "${build_failed:-0}" = 1 ] && [ "$status" -eq 0 ] && status=4

echo "== kernel timings"
"$PY" tests/gpu/bench_kernels.py --iterations "${BENCH_ITERATIONS:-300}" ${LOG_DIR:+--out "$LOG_DIR"}
bench=$?
[ "$status" -eq 0 ] && status=$bench
exit "$status"
