"""Training-speed benchmark: images/s of a real training step, per precision, memory format and crop size.

A step here is what `facemask-sdk train` does: load + augment a batch (mosaic, copy-paste), label the
anchors, forward, focal + box loss, backward, AdamW. The first steps of each configuration warm up and
are not timed. Defaults of `train` come from this table (see `docs/training-log.md`).

    facemask-sdk dev train-speed --data ../shared/datasets/face-mask-detection --steps 3
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click

from facemask_tools.paths import DATASET, DATASET_HELP


@dataclass(frozen=True)
class SpeedCase:
    crop: int
    amp: str  # off | bf16
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{self.crop} px, {'bf16' if self.amp == 'bf16' else 'fp32'}{', channels_last' if self.channels_last else ''}"


def measure(case: SpeedCase, data: str, model: str, image_size: int, batch_size: int, steps: int, warmup: int) -> dict:
    import torch

    from facemask_sdk.voc import VocDataset
    from facemask_tools.training.augment import AugmentConfig
    from facemask_tools.training.data import DetectionDataset, collate
    from facemask_tools.training.device import resolve_amp
    from facemask_tools.training.model import create_network, make_spec, train_bench
    from facemask_tools.training.trainer import TrainConfig, _train_step

    spec = make_spec(model, image_size)
    train_spec = replace(spec, image_size=(case.crop, case.crop))
    records = VocDataset(data, "train", spec.classes).records
    dataset = DetectionDataset(records, spec, AugmentConfig(), 0, (case.crop, case.crop), mosaic=0.5, copy_paste=0.3)
    network = create_network(train_spec)
    bench = train_bench(network)
    if case.channels_last:
        network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    config = TrainConfig(data=data, out="", channels_last=case.channels_last, amp=case.amp)
    amp_dtype = resolve_amp(case.amp, "cpu")
    bench.train()
    timings = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = collate([dataset[(step * batch_size + i) % len(dataset)] for i in range(batch_size)])
        _train_step(bench, optimizer, batch[0], batch[1], "cpu", amp_dtype, config)
        if step >= warmup:
            timings.append(time.perf_counter() - started)
    seconds = sorted(timings)[len(timings) // 2]
    # images/s at equal face scale: a crop covers (crop / image_size)**2 of a full canvas
    return {
        "case": case.name,
        "crop": case.crop,
        "amp": case.amp,
        "channels_last": case.channels_last,
        "step_s": round(seconds, 3),
        "images_per_s": round(batch_size / seconds, 2),
        "canvas_equivalent_per_s": round(batch_size / seconds * (case.crop / image_size) ** 2, 2),
    }


@click.command("train-speed")
@click.option("--data", default=str(DATASET), show_default=DATASET_HELP)
@click.option("--model", default="tf_efficientdet_lite0", show_default=True)
@click.option("--image-size", type=int, default=512, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--steps", type=int, default=3, show_default=True, help="Timed steps per case (median reported).")
@click.option("--warmup", type=int, default=1, show_default=True)
@click.option("--crops", default="512,384,256", show_default=True)
@click.option(
    "--bf16/--no-bf16", default=None, help="Include bf16 autocast cases (default: where the CPU has native bf16)."
)
@click.option("--out", type=click.Path(dir_okay=False), default="runs/train-speed.json", show_default=True)
def main(
    data: str,
    model: str,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    crops: str,
    bf16: bool | None,
    out: str,
) -> None:
    """images/s of the real training step for every case; writes a JSON table and prints it."""
    import torch

    from facemask_tools.training.allocator import memory_allocator
    from facemask_tools.training.device import cpu_has_fast_bf16

    bf16 = cpu_has_fast_bf16() if bf16 is None else bf16
    cases = []
    for crop in (int(c) for c in crops.split(",")):
        cases += [SpeedCase(crop, "off", False), SpeedCase(crop, "off", True)]
        if bf16:
            cases.append(SpeedCase(crop, "bf16", True))
    click.echo(f"{_cpu_name()}, {torch.get_num_threads()} threads, malloc {memory_allocator()}")
    rows = []
    for case in cases:
        row = measure(case, data, model, image_size, batch_size, steps, warmup)
        rows.append(row)
        click.echo(
            f"{row['case']:<28} {row['step_s']:>7.2f} s/step {row['images_per_s']:>7.2f} img/s "
            f"{row['canvas_equivalent_per_s']:>6.2f} full-canvas img/s"
        )
    report = {
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "allocator": memory_allocator(),
        "model": model,
        "image_size": image_size,
        "batch_size": batch_size,
        "rows": rows,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
