"""Measure one runner in a process of its own: `python -m facemask_tools.benchmarks.worker JOB.json`.

A fresh process per runner gives each one its own peak RSS (`VmHWM` is process-wide), its own thread
pools, and an ONNX Runtime process that never imported torch. The job file names the runner
(`RunnerSpec`), the images and the protocol; the worker writes `result` (JSON) and `predictions`
(npz) where the job says, and prints `total N` then `progress K` lines for the parent's progress bar.

Protocol, all on images already decoded in memory (decoding is not timed here):
1. `open()` the runner at the speed score threshold (timed as `load_s`);
2. `warmup` calls at batch 1, cycling over the images (not timed);
3. `iterations` timed passes over all images at batch 1: the wall time of each call (end-to-end)
   and the runner's own three stage times;
4. with `batch` > 1 where the runner supports it: one untimed batch call, then `iterations` timed
   passes over the images in chunks of `batch`; peak RSS is read here;
5. the accuracy pass: one pass over all images at the mAP score threshold (re-opening the runner when
   the two thresholds differ); its outputs are the predictions, its wall times are kept too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import read_image
from facemask_sdk.stages import STAGE_TIMINGS
from facemask_tools.benchmarks.machine import gpu_memory_of_process, memory_mb
from facemask_tools.benchmarks.runners import RunnerSpec, RunnerUnavailable, make_runner


def run_job(job: dict, emit=print) -> tuple[dict, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(result, predictions) of one runner; `emit` receives the progress lines."""
    spec = RunnerSpec.from_dict(job["spec"])
    images = [read_image(path) for path in job["images"]]
    warmup, iterations, batch = int(job["warmup"]), int(job["iterations"]), int(job["batch"])
    speed_threshold, eval_threshold = float(job["speed_score_threshold"]), float(job["eval_score_threshold"])
    memory_before = memory_mb()
    runner = make_runner(spec)
    started = time.perf_counter()
    try:
        runner.open(score_threshold=speed_threshold)
    except RunnerUnavailable as exc:
        return {"status": "skipped", "reason": str(exc)}, []
    except (FacemaskError, FileNotFoundError) as exc:
        return {"status": "failed", "reason": f"could not load {spec.path}: {exc}"}, []
    load_s = time.perf_counter() - started

    with runner:
        batch_ok, batch_reason = (False, "--batch is 1") if batch <= 1 else runner.supports_batch(batch)
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)] if batch_ok else []
        emit(f"total {warmup + (iterations + 1) * len(images) + (1 + iterations * len(chunks) if chunks else 0)}")
        for i in range(warmup):
            runner(images[i % len(images)])
            emit("progress 1")
        single = _timed(runner, [[image] for image in images] * iterations, emit)
        batched = None
        if chunks:
            runner.detect_batch(chunks[0])
            emit("progress 1")
            batched = {"batch": batch, **_timed(runner, chunks * iterations, emit)}
        memory_after = memory_mb()
        gpu_mb = gpu_memory_of_process(os.getpid())
        info = runner.info()
        if eval_threshold != speed_threshold:
            runner.close()
            runner.open(score_threshold=eval_threshold)
        predictions: list = []
        accuracy_pass = _timed(runner, [[image] for image in images], emit, predictions)

    result = {
        "status": "ok",
        "load_s": load_s,
        "info": info,
        "single": single,
        "batched": batched,
        "batch_skip_reason": None if batch_ok else batch_reason,
        "accuracy_pass_ms": accuracy_pass["end_to_end_ms"],
        "torch_imported": "torch" in sys.modules,
        "memory": {
            "rss_before_load_mb": memory_before["rss_mb"],
            "peak_rss_mb": memory_after["peak_rss_mb"],
            "gpu_process_mb": gpu_mb,
            "torch_cuda_peak_allocated_mb": _torch_cuda_peak(spec),
        },
    }
    return result, predictions


def _timed(runner, calls: list[list[np.ndarray]], emit, outputs: list | None = None) -> dict[str, list]:
    """Wall time (end-to-end) and stage times of `runner.detect_batch(call)` for each call, in ms."""
    times: dict[str, list] = {"images_per_call": [], "end_to_end_ms": [], **{stage: [] for stage in STAGE_TIMINGS}}
    for call in calls:
        t0 = time.perf_counter()
        result = runner.detect_batch(call)
        times["end_to_end_ms"].append((time.perf_counter() - t0) * 1e3)
        times["images_per_call"].append(len(call))
        for stage in STAGE_TIMINGS:
            times[stage].append(runner.last_timing[stage])
        if outputs is not None:
            outputs.extend(result)
        emit("progress 1")
    return times


def save_predictions(path: Path, predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """All images' predictions in one npz: concatenated arrays plus per-image counts."""
    counts = np.asarray([len(scores) for _, scores, _ in predictions], dtype=np.int64)
    boxes = np.concatenate([b for b, _, _ in predictions]) if predictions else np.zeros((0, 4), np.float32)
    scores = np.concatenate([s for _, s, _ in predictions]) if predictions else np.zeros(0, np.float32)
    class_ids = np.concatenate([c for _, _, c in predictions]) if predictions else np.zeros(0, np.int64)
    np.savez(path, counts=counts, boxes=boxes.reshape(-1, 4), scores=scores, class_ids=class_ids)


def load_predictions(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Inverse of `save_predictions`."""
    with np.load(path) as data:
        ends = np.cumsum(data["counts"])
        starts = ends - data["counts"]
        return [(data["boxes"][a:b], data["scores"][a:b], data["class_ids"][a:b]) for a, b in zip(starts, ends)]


def _torch_cuda_peak(spec: RunnerSpec) -> float | None:
    torch = sys.modules.get("torch")  # only where the runner itself imported torch
    if torch is None or spec.device != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m facemask_tools.benchmarks.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())

    def emit(line: str) -> None:
        print(line, flush=True)

    result, predictions = run_job(job, emit)
    if predictions:
        save_predictions(Path(job["predictions"]), predictions)
    Path(job["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
