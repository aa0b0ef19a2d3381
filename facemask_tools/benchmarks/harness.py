"""Run every available runner on the same images and compute the figures of `facemask-sdk bench`.

    >>> config = BenchConfig(model=Path("models/facemask.onnx"), checkpoint=Path("models/facemask.pt"),
    ...                      data=Path("../shared/datasets/face-mask-detection"))
    >>> result = run_benchmark(config)          # a JSON-ready dict; facemask_tools.benchmarks.report renders it

How it measures (also written into the result under `protocol`):
- the images are the first `images` records of the split, in the dataset's order, the same for all;
- decoding (`facemask_sdk.image_io.read_image`) is timed here once per image, apart from the runners;
- each runner runs in its own subprocess (`facemask_tools.benchmarks.worker`): warm-up, then timed passes at batch 1
  (wall time per call = end-to-end, plus the runner's own pre-processing / inference /
  post-processing times), then batched passes where the runner supports `--batch`; the timed passes
  use the deployment score threshold (`score_threshold`, the SDK's default 0.4);
- accuracy: a separate pass with score threshold 0.001, NMS IoU 0.5, at most 100 detections per
  image for every runner, scored with `facemask_sdk.metrics.evaluate_detections` (COCO mAP); its
  wall times are reported too (`accuracy_pass_ms`), since a low threshold makes NMS costlier;
- FPS at batch 1 = 1000 / mean end-to-end ms; speed-up = baseline mean ms / runner mean ms;
- peak RSS is `VmHWM` of the runner's own process (it includes Python, NumPy, OpenCV and the decoded
  images, measured apart as `rss_before_load_mb`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.files import file_sha256
from facemask_sdk.image_io import read_image
from facemask_sdk.metrics import evaluate_detections
from facemask_sdk.spec import CLASSES
from facemask_sdk.stages import STAGE_TIMINGS
from facemask_sdk.validation import whole_number
from facemask_sdk.voc import VocDataset
from facemask_tools.benchmarks.machine import git_commit, library_versions, machine_info
from facemask_tools.benchmarks.runners import (
    BASELINE,
    EVAL_IOU_THRESHOLD,
    EVAL_MAX_DETECTIONS,
    EVAL_SCORE_THRESHOLD,
    SPEED_SCORE_THRESHOLD,
    BenchRunner,
    discover_runners,
    runner_notes,
)
from facemask_tools.benchmarks.worker import load_predictions
from facemask_tools.paths import CHECKOUT

SCHEMA_VERSION = 1

GOALS_FILE = Path(__file__).with_name("goals.json")


def load_goals(path: Path = GOALS_FILE) -> dict[str, float]:
    """The goal thresholds by name (`goals.json`: each entry's `minimum` or `maximum`)."""
    table = json.loads(Path(path).read_text())
    return {
        name: float(entry.get("minimum", entry.get("maximum")))
        for name, entry in table.items()
        if not name.startswith("_")
    }


GOALS = load_goals()
BUSY_LOAD_FRACTION = 0.5


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how; `images=None` means the whole split, `runners=None` all of them."""

    model: Path
    checkpoint: Path | None
    data: Path
    split: str = "val"
    images: int | None = None
    warmup: int = 10
    iterations: int = 1
    batch: int = 8
    threads: int | None = None
    runners: tuple[str, ...] | None = None
    score_threshold: float = SPEED_SCORE_THRESHOLD
    input_sizes: tuple[int, ...] = ()
    """Input sizes to run the CPU runners at (a dynamic-size ONNX); empty: the trained size only."""

    def __post_init__(self) -> None:
        value = self.score_threshold
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise FacemaskError(f"score_threshold must be a number in [0, 1], got {value!r}")
        for name, low in (("warmup", 0), ("iterations", 1), ("batch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FacemaskError(f"{name} must be an integer >= {low}, got {value!r}")
        for size in self.input_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 128:
                raise FacemaskError(f"input sizes must be positive multiples of 128, got {size!r}")
        for name in ("images", "threads"):
            if getattr(self, name) is not None:
                whole_number(name, getattr(self, name))


def run_benchmark(config: BenchConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Measure every selected runner (see the module docs); returns the result dict of `bench.json`."""
    started = time.time()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None  # before we add load ourselves
    dataset = VocDataset(config.data, config.split)
    records = dataset.records[: config.images] if config.images else dataset.records
    ground_truth = [r.ground_truth(CLASSES) for r in records]
    decode_ms = _decode_times([r.image_path for r in records])

    candidates = discover_runners(
        config.model.resolve(),
        config.checkpoint.resolve() if config.checkpoint else None,
        config.threads,
        config.input_sizes,
    )
    selected = _select(candidates, config.runners)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facemask-bench-") as tmp:
        for runner in selected:
            ok, reason = runner.available()
            if not ok:
                rows.append(_row(runner, {"status": "skipped", "reason": reason}))
                continue
            result, predictions = _run_worker(runner, [r.image_path for r in records], config, Path(tmp), progress)
            if result["status"] == "ok" and runner.spec.speed_only:
                result["accuracy"] = None
            elif result["status"] == "ok":
                try:
                    result["accuracy"] = _accuracy(ground_truth, predictions, result["info"])
                except FacemaskError as exc:
                    result = {"status": "failed", "reason": str(exc)}
            if result["status"] != "ok":
                log(f"{result['status']} {runner.name}: {result['reason']}")
            rows.append(_row(runner, result))

    _summarise(rows)
    machine = {**machine_info(), "load_average_at_start": [round(v, 2) for v in load_start] if load_start else None}
    return {
        "schema": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "protocol": {
            "warmup_calls": config.warmup,
            "timed_passes": config.iterations,
            "batch": config.batch,
            "threads": config.threads if config.threads else "library defaults",
            "speed_score_threshold": config.score_threshold,
            "accuracy_score_threshold": EVAL_SCORE_THRESHOLD,
            "nms_iou": EVAL_IOU_THRESHOLD,
            "max_detections": EVAL_MAX_DETECTIONS,
            "isolation": "one subprocess per runner; peak RSS is that process's VmHWM",
            "end_to_end": "wall time of runner(image) on a decoded image: pre-processing + inference + post-processing",
        },
        "dataset": {
            "root": str(config.data),
            "split": config.split,
            "images": len(records),
            "ground_truth_boxes": int(sum(len(r.boxes) for r in records)),
            "classes": list(CLASSES),
        },
        "decode_ms": latency_stats(decode_ms),
        "machine": machine,
        "busy_warning": busy_warning(machine),
        "libraries": library_versions(),
        "git_commit": git_commit(CHECKOUT) if (CHECKOUT / ".git").exists() else None,
        "baseline": BASELINE,
        "runners": rows,
        "goals": evaluate_goals(rows),
    }


# -- running ---------------------------------------------------------------------------------------


def _select(candidates: list[BenchRunner], names: tuple[str, ...] | None) -> list[BenchRunner]:
    if not names:
        return candidates
    known = [r.name for r in candidates]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FacemaskError(f"unknown runner(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [r for r in candidates if r.name in names]


def _decode_times(paths: list[Path]) -> list[float]:
    """ms to read and decode each image once (after one untimed read that warms the file cache)."""
    times = []
    for path in paths:
        read_image(path)
        t0 = time.perf_counter()
        read_image(path)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _run_worker(runner: BenchRunner, image_paths: list[Path], config: BenchConfig, tmp: Path, progress: bool):
    """Run `facemask_tools.benchmarks.worker` for one runner; (result, predictions); a crash becomes status 'failed'."""
    job_path, result_path = tmp / f"{runner.name}.job.json", tmp / f"{runner.name}.result.json"
    predictions_path, stderr_path = tmp / f"{runner.name}.npz", tmp / f"{runner.name}.stderr"
    job = {
        "spec": runner.spec.to_dict(),
        "images": [str(p.resolve()) for p in image_paths],
        "warmup": config.warmup,
        "iterations": config.iterations,
        "batch": config.batch,
        "speed_score_threshold": config.score_threshold,
        "eval_score_threshold": EVAL_SCORE_THRESHOLD,
        "result": str(result_path),
        "predictions": str(predictions_path),
    }
    job_path.write_text(json.dumps(job))
    bar = tqdm(desc=runner.name, unit="call", disable=not progress, leave=True, dynamic_ncols=True)
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "facemask_tools.benchmarks.worker", str(job_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            for line in process.stdout:
                word, _, value = line.strip().partition(" ")
                if word == "total" and value.isdigit():
                    bar.reset(total=int(value))
                elif word == "progress" and value.isdigit():
                    bar.update(int(value))
            process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            bar.close()
    if process.returncode != 0 or not result_path.is_file():
        lines = [line for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"worker exited with code {process.returncode}"
        return {"status": "failed", "reason": f"worker crashed: {reason}", "stderr_tail": lines[-20:]}, []
    result = json.loads(result_path.read_text())
    predictions = load_predictions(predictions_path) if result["status"] == "ok" else []
    if result["status"] == "ok" and len(predictions) != len(image_paths):
        return {"status": "failed", "reason": f"{len(predictions)} predictions for {len(image_paths)} images"}, []
    return result, predictions


def _accuracy(ground_truth: list[Detections], predictions: list, info: dict) -> dict:
    classes = tuple(info.get("classes") or CLASSES)
    if classes != CLASSES:
        raise FacemaskError(f"the model's classes {classes} differ from the dataset's {CLASSES}")
    boxes = [Detections(xyxy, scores, class_ids, CLASSES) for xyxy, scores, class_ids in predictions]
    return evaluate_detections(ground_truth, boxes, CLASSES, max_detections=EVAL_MAX_DETECTIONS)


# -- figures ---------------------------------------------------------------------------------------


def _row(runner: BenchRunner, result: dict) -> dict:
    spec = runner.spec
    row = {
        "name": spec.name,
        "backend": spec.backend,
        "precision": spec.precision,
        "device": spec.device,
        "baseline": spec.baseline,
        "path": spec.path,
        "notes": runner_notes(spec),
        **result,
    }
    if result["status"] == "ok" and not spec.speed_only:  # a peer's path is ours, the size it runs at
        row["file"] = _file_facts(Path(spec.path))
    return row


def _summarise(rows: list[dict]) -> None:
    """Stats, FPS, speed-ups and accuracy differences, in place; raw samples kept under `samples_ms`."""
    for row in rows:
        if row["status"] != "ok":
            continue
        single = row.pop("single")
        single.pop("images_per_call")
        row["samples_ms"] = {k: [round(v, 4) for v in values] for k, values in single.items()}
        row["accuracy_pass_ms"] = latency_stats(row["accuracy_pass_ms"])
        latency = {"end_to_end": latency_stats(single["end_to_end_ms"])}
        latency.update({stage.removesuffix("_ms"): latency_stats(single[stage]) for stage in STAGE_TIMINGS})
        row["latency_ms"] = latency
        mean = latency["end_to_end"]["mean"]
        row["fps"] = 1000.0 / mean
        stage_sum = sum(latency[s.removesuffix("_ms")]["mean"] for s in STAGE_TIMINGS)
        row["overhead_ms"] = mean - stage_sum
        row["pre_post_share"] = (latency["preprocess"]["mean"] + latency["postprocess"]["mean"]) / mean
        batched = row.pop("batched")
        if batched:
            images, total = sum(batched["images_per_call"]), sum(batched["end_to_end_ms"])
            row["batch"] = {
                "batch": batched["batch"],
                "calls": len(batched["end_to_end_ms"]),
                "images": images,
                "latency_per_image_ms": total / images,
                "fps": 1000.0 * images / total,
                **{
                    stage.removesuffix("_ms") + "_per_image_ms": sum(batched[stage]) / images for stage in STAGE_TIMINGS
                },
            }

    by_name = {row["name"]: row for row in rows if row["status"] == "ok"}
    base = by_name.get(BASELINE)
    cuda_ref = by_name.get("pytorch-cuda-fp32")
    for row in by_name.values():
        row["speedup"] = (
            base["latency_ms"]["end_to_end"]["mean"] / row["latency_ms"]["end_to_end"]["mean"] if base else None
        )
        if row.get("batch") and base and base.get("batch"):
            row["batch"]["speedup"] = row["batch"]["fps"] / base["batch"]["fps"]
        if row["device"] == "cuda" and cuda_ref:
            row["speedup_vs_pytorch_cuda"] = (
                cuda_ref["latency_ms"]["end_to_end"]["mean"] / row["latency_ms"]["end_to_end"]["mean"]
            )
        acc = row["accuracy"]
        if acc is None:  # a speed-only peer
            continue
        if base:
            acc["delta_map_pt"] = 100.0 * (acc["map"] - base["accuracy"]["map"])
            acc["delta_map50_pt"] = 100.0 * (acc["map50"] - base["accuracy"]["map50"])
        else:
            acc["delta_map_pt"] = acc["delta_map50_pt"] = None


def evaluate_goals(rows: list[dict], goals_table: dict[str, float] | None = None) -> list[dict]:
    """The goals of `goals.json` on this run: met / missed (by how much) / not evaluated (why)."""
    limits = GOALS if goals_table is None else goals_table
    GOAL_SPEEDUP, GOAL_EQUAL_MAP_PT = limits["fp32_speedup_over_baseline"], limits["fp32_map_difference_pt"]
    GOAL_INT8_MAP_PT, GOAL_PRE_POST_SHARE = limits["int8_map_drop_pt"], limits["pre_post_share_of_latency"]
    by_name = {row["name"]: row for row in rows}

    def missing(*names: str) -> str | None:
        for name in names:
            row = by_name.get(name)
            if row is None:
                return f"{name} was not selected"
            if row["status"] != "ok":
                return f"{name} {row['status']}: {row.get('reason', '')}"
        return None

    goals = []
    text = f"ort-cpu-fp32 end-to-end FPS >= {GOAL_SPEEDUP:g}x the baseline at equal mAP@0.5:0.95 (+-{GOAL_EQUAL_MAP_PT} pt)"
    why = missing(BASELINE, "ort-cpu-fp32")
    if why:
        goals.append({"goal": text, "status": "not evaluated", "detail": why})
    else:
        row = by_name["ort-cpu-fp32"]
        speedup, delta = row["speedup"], row["accuracy"]["delta_map_pt"]
        speed_ok, map_ok = speedup >= GOAL_SPEEDUP, abs(delta) <= GOAL_EQUAL_MAP_PT
        parts = [
            f"speed-up {speedup:.2f}x" + ("" if speed_ok else f" (missed by {GOAL_SPEEDUP - speedup:.2f}x)"),
            f"mAP {delta:+.2f} pt" + ("" if map_ok else f" (missed by {abs(delta) - GOAL_EQUAL_MAP_PT:.2f} pt)"),
        ]
        goals.append(
            {
                "goal": text,
                "status": "met" if speed_ok and map_ok else "missed",
                "value": {"speedup": speedup, "delta_map_pt": delta},
                "detail": "; ".join(parts),
            }
        )

    text = f"ort-cpu-int8 mAP@0.5:0.95 within {GOAL_INT8_MAP_PT} pt of the baseline"
    why = missing(BASELINE, "ort-cpu-int8")
    if why:
        goals.append({"goal": text, "status": "not evaluated", "detail": why})
    else:
        row = by_name["ort-cpu-int8"]
        delta = row["accuracy"]["delta_map_pt"]
        ok = delta >= -GOAL_INT8_MAP_PT
        detail = f"mAP {delta:+.2f} pt" + ("" if ok else f" (missed by {-delta - GOAL_INT8_MAP_PT:.2f} pt)")
        fp32 = by_name.get("ort-cpu-fp32")
        if fp32 and fp32["status"] == "ok":
            detail += f"; {100 * (row['accuracy']['map'] - fp32['accuracy']['map']):+.2f} pt vs ort-cpu-fp32"
        goals.append(
            {"goal": text, "status": "met" if ok else "missed", "value": {"delta_map_pt": delta}, "detail": detail}
        )

    text = f"ort-cpu-fp32 pre- plus post-processing <= {GOAL_PRE_POST_SHARE:.0%} of end-to-end latency"
    why = missing("ort-cpu-fp32")
    if why:
        goals.append({"goal": text, "status": "not evaluated", "detail": why})
    else:
        row = by_name["ort-cpu-fp32"]
        share = row["pre_post_share"]
        ok = share <= GOAL_PRE_POST_SHARE
        detail = (
            f"{share:.1%} (pre {row['latency_ms']['preprocess']['mean']:.2f} ms + post "
            f"{row['latency_ms']['postprocess']['mean']:.2f} ms of {row['latency_ms']['end_to_end']['mean']:.2f} ms)"
        )
        if not ok:
            detail += f"; missed by {100 * (share - GOAL_PRE_POST_SHARE):.1f} points"
        goals.append({"goal": text, "status": "met" if ok else "missed", "value": {"share": share}, "detail": detail})
    return goals


def busy_warning(machine: dict) -> str | None:
    """A warning when other work kept the CPUs busy as the run started (1-minute load above half the
    usable CPUs; the load at the end includes the benchmark itself, so it is reported but not judged)."""
    cpus = machine.get("usable_cpus") or 1
    load = (machine.get("load_average_at_start") or [0.0])[0]
    if load > BUSY_LOAD_FRACTION * cpus:
        return (
            f"the machine was busy (1-minute load average {load:.1f} on {cpus} CPUs as the run started): timings "
            f"include contention with other processes; rerun on an idle machine for figures to publish"
        )
    return None


def latency_stats(values: list[float]) -> dict:
    """n, mean, p50, p90, p99, min, max and std of some latencies (any unit): one definition for every report."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(data, [50, 90, 99])
    return {
        "n": int(data.size),
        "mean": float(data.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(data.min()),
        "max": float(data.max()),
        "std": float(data.std()),
    }


def _file_facts(path: Path) -> dict:
    return {"size_mb": path.stat().st_size / 1e6, "sha256": file_sha256(path)[:16]}
