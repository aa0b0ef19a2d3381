"""Time every CUDA kernel with CUDA events; print a table and write it (markdown + JSON) to --out / $OUT.

    python tests/gpu/bench_kernels.py [--iterations 300] [--out DIR]

Workloads (issue targets on an H100: pre-processing <= 0.1 ms, decoding + NMS <= 0.2 ms):
- letterbox of a 1920x1080 BGR frame to D0's 512x512 input, float32 and float16, from a frame already
  in device memory, from mapped host memory (zero-copy; over PCIe on a discrete GPU), and the upload of
  the frame itself (pinned host -> device);
- decoding + top-K + NMS of D0's 49,104 anchors x 3 classes, default settings (threshold 0.4, top_k
  5000, 100 detections), once with realistic head outputs (a few hundred candidates) and once with
  random logits (~100k candidates: the worst case, radix select and a full 5000-box NMS);
- the whole `preprocess()` + `decode_nms()` from Python, wall clock, to show launch overhead.
Each row: median and 90th percentile over the iterations, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "tests" / "helpers"):  # the checkout, and the test helpers (cuda_topk_probe)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import cuda_topk_probe as probe  # noqa: E402

from facemask_sdk.cuda.kernels import CudaKernels  # noqa: E402
from facemask_sdk.cuda.plans import plan_decode, plan_letterbox  # noqa: E402
from facemask_sdk.postprocess import PostprocessConfig  # noqa: E402
from facemask_sdk.preprocess import Letterbox  # noqa: E402
from facemask_sdk.spec import ModelSpec  # noqa: E402

D0 = ModelSpec("tf_efficientdet_d0", (512, 512))
FRAME_HW = (1080, 1920)


def time_enqueues(kernels: CudaKernels, steps: list, iterations: int) -> list[list[float]]:
    """Run `steps` (callables that enqueue on kernels.stream) repeatedly; per step, the times in ms."""
    import pycuda.driver as cuda

    warmup = min(20, iterations)

    with kernels.active():
        events = [cuda.Event() for _ in range(len(steps) + 1)]
        times: list[list[float]] = [[] for _ in steps]
        for i in range(warmup + iterations):
            events[0].record(kernels.stream)
            for step, event in zip(steps, events[1:]):
                step()
                event.record(kernels.stream)
            events[-1].synchronize()
            if i >= warmup:
                for k in range(len(steps)):
                    times[k].append(events[k + 1].time_since(events[k]))
    return times


def stats(samples: list[float]) -> tuple[float, float]:
    return float(np.median(samples)), float(np.percentile(samples, 90))


def bench_letterbox(iterations: int) -> list[dict]:
    import pycuda.driver as cuda

    rows = []
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
    for dtype in (np.float32, np.float16):
        mapped = CudaKernels(D0, mapped=True, input_dtype=dtype)
        copied = CudaKernels(D0, mapped=False, input_dtype=dtype)
        try:
            frame = mapped.frame_buffer(*FRAME_HW)
            frame[:] = image
            pinned = copied.frame_buffer(*FRAME_HW)
            pinned[:] = image
            with copied.active():
                device_frame = cuda.mem_alloc(image.nbytes)
                cuda.memcpy_htod(device_frame, image)
            name = np.dtype(dtype).name
            on_device, _ = plan_letterbox(int(device_frame), FRAME_HW, 3 * FRAME_HW[1], copied.input_ptr, dtype, D0)
            with mapped.active():
                zero_copy, _ = plan_letterbox(
                    frame.base.get_device_pointer(), FRAME_HW, 3 * FRAME_HW[1], mapped.input_ptr, dtype, D0
                )
            (t,) = time_enqueues(
                copied, [lambda copied=copied, on_device=on_device: copied.launch(on_device)], iterations
            )
            rows.append(row(f"letterbox 1920x1080 -> 512x512 {name}, frame in device memory", t, 0.1))
            (t,) = time_enqueues(
                mapped, [lambda mapped=mapped, zero_copy=zero_copy: mapped.launch(zero_copy)], iterations
            )
            rows.append(row(f"letterbox 1920x1080 -> 512x512 {name}, mapped host frame (zero-copy)", t, None))
            if dtype == np.float32:
                (t,) = time_enqueues(
                    copied,
                    [
                        lambda frame=int(device_frame), src=pinned, kernels=copied: cuda.memcpy_htod_async(
                            frame, src, kernels.stream
                        )
                    ],
                    iterations,
                )
                rows.append(row("frame upload 1920x1080x3 (6.2 MB) pinned host -> device", t, None))
            with copied.active():
                device_frame.free()
        finally:
            mapped.close()
            copied.close()
    return rows


def head_outputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    if kind == "random":
        logits = rng.normal(0.0, 1.0, (49104, 3)).astype(np.float32)
    else:
        logits = rng.normal(-6.0, 1.0, (49104, 3)).astype(np.float32)
        hot = rng.choice(logits.size, 300, replace=False)
        logits.reshape(-1)[hot] = rng.uniform(-1.0, 6.0, 300).astype(np.float32)
    return logits, rng.normal(0.0, 0.3, (49104, 4)).astype(np.float32)


def bench_decode(iterations: int) -> list[dict]:
    rows = []
    kernels = CudaKernels(D0, PostprocessConfig())
    try:
        letterbox = Letterbox.fit(FRAME_HW, D0.image_size)
        for kind in ("realistic", "random"):
            logits, box_codes = head_outputs(kind)
            kernels.upload_head(logits, box_codes)
            launches = plan_decode(
                kernels.pointers,
                kernels.num_anchors,
                kernels.num_classes,
                letterbox,
                kernels.settings,
                kernels.head_dtype,
            )
            times = time_enqueues(
                kernels, [lambda launch=launch: kernels.launch(launch) for launch in launches], iterations
            )
            kernels.synchronize()
            state = probe.candidates(kernels)
            label = f"{kind}: {state['num_candidates']} candidates, {len(kernels.results()[0])} kept"
            for launch, t in zip(launches, times):
                rows.append(row(f"  {launch.kernel} ({label})", t, None))
            total = [sum(parts) for parts in zip(*times)]
            rows.append(row(f"decode + top-K + NMS, D0 49104x3 ({label})", total, 0.2 if kind == "realistic" else None))
    finally:
        kernels.close()
    return rows


def bench_python_path(iterations: int) -> list[dict]:
    kernels = CudaKernels(D0, PostprocessConfig())
    try:
        rng = np.random.default_rng(2)
        frame = kernels.frame_buffer(*FRAME_HW)
        frame[:] = rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
        kernels.upload_head(*head_outputs("realistic"))
        samples = []
        warmup = min(20, iterations)
        for i in range(warmup + iterations):
            start = time.perf_counter()
            letterbox = kernels.preprocess(frame)
            kernels.decode_nms(letterbox)
            kernels.synchronize()
            kernels.results()
            if i >= warmup:
                samples.append((time.perf_counter() - start) * 1e3)
    finally:
        kernels.close()
    return [row("preprocess() + decode_nms() + synchronize() + results(), wall clock from Python", samples, None)]


def row(name: str, samples: list[float], target: float | None) -> dict:
    median, p90 = stats(samples)
    return {
        "stage": name,
        "median_ms": round(median, 4),
        "p90_ms": round(p90, 4),
        "target_ms": target,
        "meets_target": None if target is None else median <= target,
    }


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| stage | median ms | p90 ms | target ms |", "|---|---:|---:|---:|"]
    for r in rows:
        target = "" if r["target_ms"] is None else f"{r['target_ms']} ({'ok' if r['meets_target'] else 'MISSED'})"
        lines.append(f"| {r['stage']} | {r['median_ms']:.4f} | {r['p90_ms']:.4f} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="directory for kernel_timings.{md,json}")
    args = parser.parse_args()

    import pycuda
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    header = (
        f"# CUDA kernel timings: {device.name()} (compute {major}.{minor}), CUDA driver "
        f"{cuda.get_driver_version()}, pycuda {pycuda.VERSION_TEXT}, Python {platform.python_version()}; "
        f"{args.iterations} iterations, CUDA events"
    )
    rows = bench_letterbox(args.iterations) + bench_decode(args.iterations) + bench_python_path(args.iterations)
    text = table(rows, header)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernel_timings.md").write_text(text)
        (out / "kernel_timings.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
        print(f"written to {out / 'kernel_timings.md'} and kernel_timings.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
