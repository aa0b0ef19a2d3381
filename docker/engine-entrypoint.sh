#!/bin/sh
# Entry point of the GPU images: on the first start build the TensorRT engine from the shipped FP16 ONNX
# on this very device (engines are not portable across GPUs or TensorRT versions), then run
# `facemask-sdk detect ARGS` with it. Keep ENGINE_DIR on a volume so the build happens once.
set -eu
case "${1:-}" in
    ""|-h|--help) exec facemask-sdk detect --help ;;  # no GPU work just to print the usage
esac
ENGINE_DIR="${ENGINE_DIR:-/engines}"
ENGINE="$ENGINE_DIR/facemask.fp16.engine"
if [ ! -f "$ENGINE" ]; then
    SHIPPED="$(python3 -c 'from facemask_sdk.models import shipped_model_dir; print(shipped_model_dir() / "facemask.fp16.onnx")')"
    echo "first start: building $ENGINE from $SHIPPED on this device (a few minutes, once)" >&2
    mkdir -p "$ENGINE_DIR"
    facemask-sdk build-engine --onnx "$SHIPPED" --fp16 --out "$ENGINE"
fi
export FACEMASK_SDK_MODEL="$ENGINE"
exec facemask-sdk detect "$@"
