"""Inference backends: each runs the exported network on a batch of pre-processed images.

- `facemask_sdk.backends.onnxrt.OnnxRuntimeRunner`: `.onnx` files on ONNX Runtime (CPU, or CUDA
  where the CUDA provider is available).
- `facemask_sdk.backends.tensorrt.TensorRTRunner`: `.engine` files on TensorRT (with the CUDA pre- and
  post-processing; its `run` gives raw head outputs too).

Both share one lifecycle, `facemask_sdk.backends.base.Runner`: open until `close()` or the end of a
`with` block, then refused; TensorRT runners also belong to their creating thread.

Backends are imported only when used (`facemask_sdk.detector.Detector` picks one by file type), so
importing this package loads neither onnxruntime nor tensorrt.
"""
