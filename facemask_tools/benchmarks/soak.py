"""Soak benchmark: resident memory over many frames of synthetic video, through `Detector` and `detect`.

Frames are a sample image shifted a little each frame (so every frame differs). RSS is read from
/proc every `--every` frames; the run passes when the last reading is within `--tolerance` of the
first one after warm-up. A benchmark, not a timed test: run it on a quiet machine.

    facemask-sdk dev soak --frames 10000 --every 500
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np

from facemask_tools.paths import SAMPLES

SAMPLE = SAMPLES / "images" / "maksssksksss7.png"


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/*/status")


def frames(count: int, size: tuple[int, int] = (360, 640)):
    base = cv2.resize(cv2.imread(str(SAMPLE)), (size[1], size[0]))
    for i in range(count):
        yield np.roll(base, (3 * i) % size[1], axis=1)


def soak_detector(count: int, every: int, model: str | None, threads: int | None = None) -> list[tuple[int, float]]:
    from facemask_sdk import Detector

    readings = []
    with Detector(model, threads=threads) as detector:
        for i, frame in enumerate(frames(count), 1):
            detector(frame)
            if i % every == 0:
                readings.append((i, round(rss_mib(), 1)))
    return readings


def soak_detect(count: int, every: int, workdir: Path, model: str | None) -> list[tuple[int, float]]:
    video = workdir / "soak.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 360))
    for frame in frames(count):
        writer.write(frame)
    writer.release()
    args = [
        sys.executable,
        "-m",
        "facemask_sdk.cli.main",
        "detect",
        str(video),
        "--out",
        str(workdir / "out"),
        "--force",
    ]
    if model:
        args += ["--model", model]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readings, jsonl = [], workdir / "out" / "detections.jsonl"
    while process.poll() is None:
        time.sleep(0.5)
        done = sum(1 for _ in jsonl.open()) if jsonl.exists() else 0
        if done and (not readings or done - readings[-1][0] >= every):
            try:
                readings.append((done, round(rss_mib(process.pid), 1)))
            except (FileNotFoundError, RuntimeError):
                break
    if process.returncode:
        raise click.ClickException(f"detect exited with {process.returncode}")
    return readings


def verdict(readings: list[tuple[int, float]], tolerance: float) -> dict:
    if len(readings) < 2:
        return {"ok": None, "reason": "too few readings"}
    first, last = readings[1][1] if len(readings) > 2 else readings[0][1], readings[-1][1]
    growth = (last - first) / first
    return {"ok": abs(growth) <= tolerance, "first_mib": first, "last_mib": last, "growth": round(growth, 4)}


@click.command("soak")
@click.option("--frames", "count", type=int, default=10_000, show_default=True)
@click.option("--every", type=int, default=500, show_default=True)
@click.option("--tolerance", type=float, default=0.05, show_default=True)
@click.option("--model", default=None, help="Model file (default: the shipped one).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads of the in-process pass.")
@click.option("--out", type=click.Path(dir_okay=False), default="runs/soak.json", show_default=True)
def main(count: int, every: int, tolerance: float, model: str | None, threads: int | None, out: str) -> None:
    """RSS every EVERY frames through Detector (in process) and detect (a subprocess reading a video)."""
    import tempfile

    report = {"frames": count, "every": every, "tolerance": tolerance, "threads": threads}
    started = time.time()
    report["detector"] = soak_detector(count, every, model, threads)
    report["detector_verdict"] = verdict(report["detector"], tolerance)
    with tempfile.TemporaryDirectory() as tmp:
        report["detect"] = soak_detect(count, every, Path(tmp), model)
    report["detect_verdict"] = verdict(report["detect"], tolerance)
    report["seconds"] = round(time.time() - started, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    for name in ("detector", "detect"):
        click.echo(f"{name}: RSS MiB at frames {report[name]} -> {report[name + '_verdict']}")
    click.echo(f"wrote {out}")
