"""Inference backends: each runs the exported network on a batch of pre-processed images.

- `facemask_sdk.backends.onnxrt.OnnxRuntimeRunner`: `.onnx` files on ONNX Runtime (CPU, or CUDA
  where the CUDA provider is available).
- `facemask_sdk.backends.tensorrt.TensorRTRunner`: `.engine` files on TensorRT.

Backends are imported only when used (`facemask_sdk.detector.Detector` picks one by file type), so
importing this package loads neither onnxruntime nor tensorrt.
"""
