#!/usr/bin/env bash
# What a lent GPU machine lacks, downloaded here (with network) into .whl/ to travel with the working tree:
#
#   tests/gpu/prepare_wheels.sh [WHEEL_DIR]          (default: .whl in the repo root, git-ignored; about 3 MB)
#
# Those machines (Python 3.12, no network) have torch, torchvision, timm, onnx, onnxruntime, OpenCV, click and
# pytest, but not pycuda (its sdist, built there against their CUDA toolkit) with its dependencies, nor effdet
# with its own. tests/gpu/run.sh and tests/gpu/device_session.sh install them from here, offline.
# DEVICE_PYTHON (default 3.12) is the Python version the binary wheels are chosen for.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="${1:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$WHEELS"
"$PY" -m pip download -q --no-deps --no-binary pycuda -d "$WHEELS" pycuda
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
    pytools platformdirs mako siphash24 typing-extensions effdet omegaconf pycocotools
ls "$WHEELS"
