#!/usr/bin/env bash
# One time-boxed training stint on a machine with an NVIDIA GPU: the same `facemask-sdk train` recipe,
# on CUDA with AMP (--device auto --amp auto), writing weights, metrics and the log to one folder.
#
#   OUT=/some/folder facemask_tools/training/gpu_run.sh DATA [MINUTES] [more `facemask-sdk train` options...]
#
# DATA: a VOC folder (the full dataset, or a compact copy from `facemask-sdk dev compact-data`,
# which fits the 64 MiB a device call carries). MINUTES (default 8) bounds the training loop; the stint
# ends with a checkpoint, so a later stint continues it with RESUME=1. Without OUT the folder is
# runs/gpu. Starts from models/facemask.pt unless PRETRAINED says otherwise (auto, none, a file). The run folder
# is OUT/run unless RUN_DIR names another; OUT gets the log, metrics and the weights-only best-weights.pt either way.
# Exit status: train's (0 when the stint ran).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA="${1:?usage: facemask_tools/training/gpu_run.sh DATA [MINUTES] [train options...]}"
MINUTES="${2:-8}"
shift $(( $# >= 2 ? 2 : 1 ))
FOLDER="${OUT:-$ROOT/runs/gpu}"
RUN="${RUN_DIR:-$FOLDER/run}"  # the full run (checkpoints of about 40 MB); RUN_DIR keeps it out of OUT
mkdir -p "$FOLDER"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
# the tooling (facemask_tools.*) and its entry points (train, dev, ...) exist only installed: an editable
# install of this checkout, made here (offline: no dependencies, no build isolation) when another one is in the way
"$PY" -c "import sys, importlib.metadata as m, facemask_tools.training as t
sys.exit(not (t.__file__.startswith('$ROOT/') and m.entry_points(group='facemask_sdk.commands', name='dev')))" 2>/dev/null \
    || "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" >/dev/null
"$PY" - <<'PY' | tee "$FOLDER/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PY
if [ "${RESUME:-0}" = 1 ] && [ -f "$RUN/last.pt" ]; then
    set -- --resume "$RUN" "$@"
else
    set -- --data "$DATA" --pretrained "${PRETRAINED:-$ROOT/models/facemask.pt}" "$@"
fi
"$PY" -m facemask_sdk.cli.main train --out "$RUN" --device auto --amp auto \
    --stop-after-minutes "$MINUTES" "$@" 2>&1 | tr '\r' '\n' | grep --line-buffered -v "it/s\]$" | tee "$FOLDER/train.log"
cp "$RUN/metrics.json" "$FOLDER/metrics.json" 2>/dev/null || true
if [ -f "$RUN/best.pt" ]; then  # weights-only copy of the best EMA weights: small enough to bring back
    "$PY" -m facemask_sdk.cli.main dev ship "$RUN/best.pt" "$FOLDER/best-weights.pt"
fi
