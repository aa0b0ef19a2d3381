#!/usr/bin/env bash
# Ship a trained checkpoint as the product's model: everything under models/ that the model card quotes.
#
#   facemask_tools/training/package_model.sh RUN_DIR/best.pt [RUN_DIR]     (RUN_DIR/last.pt ships the last epoch's EMA)
#
# 1. weights-only EMA checkpoint -> models/facemask.pt (facemask-sdk dev ship)
# 2. val evaluation through the runtime's post-processing -> models/facemask.eval.json + predictions PNG
# 3. the run's metrics.json and curves -> models/facemask.train-metrics.json, models/facemask.curves.png
# 4. ONNX export with a dynamic input size (parity against PyTorch at 512, 640 and 768 px printed)
#    -> models/facemask.onnx: Detector(input_size=...) chooses the size at deployment
# 5. FP16 and INT8 (percentile calibration on the train split) variants, ONNX only (TensorRT builds on
#    the device) -> models/facemask.fp16.onnx (any input size), models/facemask.int8.onnx (768 px only)
# DATA (default ../shared/datasets/face-mask-detection) is the VOC dataset; nothing else is touched.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHECKPOINT="$1"
RUN_DIR="${2:-$(dirname "$CHECKPOINT")}"
DATA="${DATA:-$ROOT/../shared/datasets/face-mask-detection}"
MODELS="$ROOT/models"
EVAL_DIR="$ROOT/runs/eval/shipped"
PY="${PYTHON:-python3}"
cli() { "$PY" -m facemask_sdk.cli.main "$@"; }

cli dev ship "$CHECKPOINT" "$MODELS/facemask.pt"
rm -rf "$EVAL_DIR"
cli eval --checkpoint "$MODELS/facemask.pt" --data "$DATA" --split val --out "$EVAL_DIR"
cp "$EVAL_DIR/eval.json" "$MODELS/facemask.eval.json"
cp "$EVAL_DIR/predictions.png" "$MODELS/facemask.val-predictions.png"
cp "$RUN_DIR/metrics.json" "$MODELS/facemask.train-metrics.json"
cp "$RUN_DIR/curves.png" "$MODELS/facemask.curves.png"
cli export --checkpoint "$MODELS/facemask.pt" --out "$MODELS/facemask.onnx" --force --dynamic-size
cli build-engine --onnx "$MODELS/facemask.onnx" --fp16 --onnx-only --force
rm -rf "$MODELS/.calib-cache"
# INT8 from a fixed-size (768 px) export: Q/DQ inserted into the dynamic-size graph breaks its Concats
STATIC="$(mktemp -d)/facemask.onnx"
cli export --checkpoint "$MODELS/facemask.pt" --out "$STATIC"
cli build-engine --onnx "$STATIC" --int8 --onnx-only --force --calib-data "$DATA" --out "$MODELS/facemask.int8.onnx"
