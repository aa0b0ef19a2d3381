"""`facemask-sdk bench`: FPS and mAP of every backend and precision against the PyTorch baseline.

A thin wrapper: parse the options, refuse to overwrite an earlier run, call
`facemask_tools.benchmarks.harness.run_benchmark`, print the table and write the reports.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from facemask_sdk.errors import FacemaskError
from facemask_tools.benchmarks.report import OUTPUT_NAMES, terminal_table, write_reports
from facemask_tools.benchmarks.runners import BASELINE
from facemask_tools.paths import DATASET, DATASET_HELP

DEFAULT_MODEL = Path("models") / "facemask.onnx"
DEFAULT_CHECKPOINT = Path("models") / "facemask.pt"
DEFAULT_OUT = Path("runs") / "bench"


@click.command("bench")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_MODEL,
    show_default=True,
    help="FP32 ONNX model; .fp16.onnx / .int8.onnx / .<precision>.engine variants are looked for beside it.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CHECKPOINT,
    show_default=True,
    help=f"PyTorch checkpoint of the same model, for the {BASELINE} baseline.",
)
@click.option(
    "--data", default=str(DATASET), show_default=DATASET_HELP, help="VOC folder (images/, annotations/, splits/)."
)
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="val", show_default=True)
@click.option(
    "--images", type=click.IntRange(min=1), default=None, help="Use the first N images of the split (default: all)."
)
@click.option(
    "--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed calls per runner first."
)
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Timed passes over the images per runner.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Also measure throughput at this batch size where the runner batches (1: skip).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Intra-op threads for ONNX Runtime and torch (default: each library's own choice).",
)
@click.option(
    "--score-threshold",
    type=click.FloatRange(0.0, 1.0),
    default=0.4,
    show_default=True,
    help="Score threshold of the timed passes (deployment setting); mAP always uses 0.001.",
)
@click.option(
    "--input-size",
    "input_sizes",
    default=None,
    metavar="SIZES",
    help="Comma-separated input sizes (multiples of 128) to run every CPU runner at, e.g. 512,640,768; "
    "needs a model exported with --dynamic-size. Default: the size the model was trained at.",
)
@click.option("--runners", default=None, help="Comma-separated runner names to run (default: all; see --list-runners).")
@click.option(
    "--list-runners", is_flag=True, help="List the runners, whether each is available here and why not, then exit."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUT,
    show_default=True,
    help="Folder for bench.json, bench.md and bench.png.",
)
@click.option("--force", is_flag=True, help="Overwrite the results of an earlier run in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def bench(
    model: Path,
    checkpoint: Path,
    data: str,
    split: str,
    images: int | None,
    warmup: int,
    iterations: int,
    batch: int,
    threads: int | None,
    score_threshold: float,
    input_sizes: str | None,
    runners: str | None,
    list_runners: bool,
    out: Path,
    force: bool,
    no_progress: bool,
) -> None:
    """Benchmark the baseline and every runner available here on the same images: mAP, latency
    p50/p90/p99 by stage, FPS, speed-up, memory. Example: facemask-sdk bench --images 8 --warmup 2"""
    from facemask_tools.benchmarks.harness import BenchConfig, run_benchmark
    from facemask_tools.benchmarks.runners import discover_runners

    sizes = _parse_sizes(input_sizes)
    if list_runners:
        for runner in discover_runners(model.resolve(), checkpoint.resolve(), threads, sizes):
            ok, reason = runner.available()
            click.echo(f"{runner.name:<18} {'available' if ok else 'unavailable: ' + reason}")
        return
    existing = [name for name in OUTPUT_NAMES if (out / name).exists()]
    if existing and not force:
        raise FacemaskError(
            f"{out} already holds {', '.join(existing)} from an earlier run; pass --force or choose another --out"
        )
    names = tuple(n.strip() for n in runners.split(",") if n.strip()) if runners else None
    config = BenchConfig(
        model=model,
        checkpoint=checkpoint,
        data=Path(data),
        split=split,
        images=images,
        warmup=warmup,
        iterations=iterations,
        batch=batch,
        threads=threads,
        runners=names,
        score_threshold=score_threshold,
        input_sizes=sizes,
    )
    result = run_benchmark(config, progress=not no_progress, log=lambda line: click.echo(line, err=True))
    result["command"] = "facemask-sdk " + shlex.join(sys.argv[1:]) if "bench" in sys.argv[1:] else "facemask-sdk bench"
    click.echo(terminal_table(result))
    paths = write_reports(result, out)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    if not any(row["status"] == "ok" for row in result["runners"]):
        raise FacemaskError("no runner could be measured; the reasons are listed above")


def _parse_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise FacemaskError(
            f"--input-size takes comma-separated whole numbers such as 512,640,768, got {text!r}"
        ) from None
    if not sizes or any(size <= 0 or size % 128 for size in sizes):
        raise FacemaskError(f"--input-size values must be positive multiples of 128, got {text!r}")
    return sizes
