"""Load benchmark of the serving paths on loopback: throughput, p50 and p99 latency at several client
concurrencies, for `facemask-sdk serve` (PyTriton), the generated repository on PyTriton's
tritonserver, and the in-process `Detector` shared by the same number of threads.

    facemask-sdk dev serving-load --onnx facemask.dynamic.onnx --python ENV/bin/python \\
        --concurrency 1,2,4,8 --seconds 15 --out facemask_tools/benchmarks/serving-load.json

`--python` is an environment with `facemask-sdk[serve]` (`facemask-sdk dev serve-env WHEEL` makes
one). Each level is a bounded closed loop: N client threads, each sending the next sample
as soon as its previous answer came, for `--seconds`; one gRPC client shared by the threads. Requests
are single images, so any batching is the server's dynamic batcher.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
from tqdm import tqdm

from facemask_sdk import Detector
from facemask_sdk.image_io import read_image
from facemask_sdk.serving.client import TritonClient
from facemask_sdk.serving.repository import NETWORK, RepositoryOptions, write_repository
from facemask_tools.benchmarks.harness import busy_warning, latency_stats
from facemask_tools.benchmarks.machine import machine_info
from facemask_tools.benchmarks.server_process import ServerProcess, bundled_server_argv, free_ports, serve_argv
from facemask_tools.options import comma_separated
from facemask_tools.paths import SAMPLES

SAMPLE_IMAGES = sorted((SAMPLES / "images").glob("*.png"))


def closed_loop(call: Callable[[int], object], concurrency: int, seconds: float) -> dict:
    """`concurrency` threads calling `call(i)` back to back for `seconds`: requests/s, p50, p99 (ms)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop_at = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        i = slot
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            call(i % len(SAMPLE_IMAGES))
            latencies[slot].append(time.perf_counter() - start)
            i += concurrency

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(concurrency)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    stats = latency_stats([1e3 * t for per_thread in latencies for t in per_thread])
    return {
        "concurrency": concurrency,
        "requests": stats["n"],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(stats["n"] / elapsed, 2),
        "p50_ms": round(stats["p50"], 1),
        "p99_ms": round(stats["p99"], 1),
    }


def _measure(
    name: str,
    call: Callable[[int], object],
    levels: list[int],
    seconds: float,
    rows: list[dict],
    batching: Callable[[], tuple[int, int]] | None = None,
) -> None:
    for _ in range(2):
        call(0)  # warm-up: first requests load lazily initialised state
    for level in tqdm(levels, desc=name, leave=False):
        before = batching() if batching else None
        row = {"target": name, **closed_loop(call, level, seconds)}
        if batching:
            images, executions = (after - start for after, start in zip(batching(), before))
            row["mean_batch"] = round(images / max(executions, 1), 2)
        rows.append(row)
        print(json.dumps(row))


def run(onnx: Path, python: Path, levels: list[int], seconds: float, threads: int, workdir: Path) -> dict:
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rows: list[dict] = []
    images = [read_image(path) for path in SAMPLE_IMAGES]
    encoded = [path.read_bytes() for path in SAMPLE_IMAGES]
    with Detector(onnx, threads=threads) as detector:
        _measure("in-process Detector", lambda i: detector(images[i]), levels, seconds, rows)

    http_port, grpc_port = free_ports(2)
    argv = serve_argv(python, onnx, http_port, grpc_port, "--threads", str(threads), "--access-token", "bench")
    with ServerProcess(argv, workdir / "serve.log", http_port, grpc_port) as server:
        server.wait_ready()
        with TritonClient(server.grpc_url, timeout_s=300, access_token="bench") as client:
            _measure(
                "facemask-sdk serve (PyTriton)",
                lambda i: client.detect(encoded[i]),
                levels,
                seconds,
                rows,
                batching=client.batching,
            )

    repository = write_repository(
        workdir / "repository", onnx, RepositoryOptions(backend="python", network_threads=threads), force=True
    ).path
    http_port, grpc_port = free_ports(2)
    argv = bundled_server_argv(python, repository, workdir, http_port, grpc_port)
    with ServerProcess(argv, workdir / "tritonserver.log", http_port, grpc_port) as server:
        server.wait_ready()
        with TritonClient(server.grpc_url, timeout_s=300) as client:
            _measure(
                "repository ensemble (tritonserver 2.51)",
                lambda i: client.detect(encoded[i]),
                levels,
                seconds,
                rows,
                batching=lambda: client.batching(NETWORK),
            )
    machine = {**machine_info(), "load_average_at_start": [round(v, 2) for v in load_start] if load_start else None}
    return {
        "machine": machine,
        "busy_warning": busy_warning(machine),
        "onnx": onnx.name,
        "seconds_per_level": seconds,
        "threads": threads,
        "samples": [p.name for p in SAMPLE_IMAGES],
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = ["| target | concurrency | requests/s | p50 ms | p99 ms | mean batch |", "|---|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['target']} | {row['concurrency']} | {row['requests_per_s']:.2f} | {row['p50_ms']:.0f} | "
            f"{row['p99_ms']:.0f} | {row.get('mean_batch', '')} |"
        )
    return "\n".join(lines)


@click.command("serving-load")
@click.option(
    "--onnx",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="ONNX with a dynamic batch axis.",
)
@click.option(
    "--python",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Python of an environment with facemask-sdk[serve] (facemask-sdk dev serve-env makes one).",
)
@click.option(
    "--concurrency",
    default="1,2,4,8",
    metavar="LEVELS",
    show_default=True,
    callback=comma_separated(int, minimum=1),
    help="Client threads of each level (comma-separated).",
)
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=15.0, show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=2, show_default=True, help="ONNX Runtime threads of every target."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON file for the figures.")
def main(onnx: Path, python: Path, concurrency: list[int], seconds: float, threads: int, out: Path | None) -> None:
    """Throughput, p50 and p99 latency of `facemask-sdk serve`, the generated repository on PyTriton's
    tritonserver and the in-process Detector, at each client concurrency (loopback); prints a Markdown table."""
    with tempfile.TemporaryDirectory(prefix="serving-load-") as workdir:
        result = run(onnx, python, concurrency, seconds, threads, Path(workdir))
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(markdown(result))
    if result["busy_warning"]:
        click.echo(f"warning: {result['busy_warning']}")
