"""Inference backends: the network stage of `facemask_sdk.stages`, one runner per backend.

- `facemask_sdk.backends.onnxrt.OnnxRuntimeRunner`: `.onnx` files on ONNX Runtime (CPU, or CUDA
  where the CUDA provider is available), on the host: `run(batch)`.
- `facemask_sdk.backends.tensorrt.TensorRTRunner`: `.engine` files on TensorRT, on the device:
  `bind(kernels)`, then `enqueue()` (its `run` gives raw head outputs too, for parity checks).

All share one lifecycle, `facemask_sdk.lifecycle.Resource` (through `backends.base.Runner`): open until `close()` or the end of a
`with` block, then refused; TensorRT runners also belong to their creating thread.

Backends are imported only when used (`facemask_sdk.detector.Detector` picks one by file type), so
importing this package loads neither onnxruntime nor tensorrt.
"""
