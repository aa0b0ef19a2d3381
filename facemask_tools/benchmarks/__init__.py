"""`facemask-sdk bench`: accuracy and speed of every backend and precision against the PyTorch baseline.

- `facemask_tools.benchmarks.runners`: one adapter over every runner (PyTorch baseline, ONNX Runtime CPU/CUDA,
  TensorRT engines): `available()`, `open()`/`close()`, `runner(image) -> (boxes, scores, class_ids)`
  and per-stage timings in `last_timing`.
- `facemask_tools.benchmarks.harness`: runs each available runner on the same decoded images, each in its own
  subprocess (`facemask_tools.benchmarks.worker`), and computes mAP, latency percentiles, FPS, speed-ups and goals.
- `facemask_tools.benchmarks.report`: terminal table, `bench.json`, `bench.md` and `bench.png`.
- `facemask_tools.benchmarks.cli`: the click command `bench`.

Nothing here is imported by the runtime package `facemask_sdk`; torch is imported only inside the
worker that runs a PyTorch runner.
"""
