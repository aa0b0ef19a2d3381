"""`facemask-sdk bench`: accuracy and speed of every backend and precision against the PyTorch baseline.

- `benchmarks.runners`: one adapter over every runner (PyTorch baseline, ONNX Runtime CPU/CUDA,
  TensorRT engines): `available()`, `open()`/`close()`, `runner(image) -> (boxes, scores, class_ids)`
  and per-stage timings in `last_timing`.
- `benchmarks.harness`: runs each available runner on the same decoded images, each in its own
  subprocess (`benchmarks.worker`), and computes mAP, latency percentiles, FPS, speed-ups and goals.
- `benchmarks.report`: terminal table, `bench.json`, `bench.md` and `bench.png`.
- `benchmarks.cli`: the click command `bench`.

Nothing here is imported by the runtime package `facemask_sdk`; torch is imported only inside the
worker that runs a PyTorch runner.
"""
