"""Val mAP of one checkpoint's weights evaluated at several input sizes (the network is fully
convolutional; anchors follow the size). It measured the 640 px lever in `docs/training-log.md`:

    facemask-sdk dev input-size runs/stageC-e28-ema.pt --sizes 512,640,768

Scored as every figure of the project: the product's post-processing, COCO mAP on the `val` split.
A resume checkpoint (`last.pt`) is evaluated with its EMA weights.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from facemask_sdk.spec import ModelSpec
from facemask_sdk.voc import VocDataset
from facemask_tools.options import comma_separated
from facemask_tools.paths import DATASET, DATASET_HELP

DEFAULT_DATA = DATASET


def evaluate_sizes(checkpoint: Path, sizes: list[int], data: Path, split: str = "val") -> list[dict]:
    import torch

    from facemask_tools.training.checkpoint import network_of, read_checkpoint
    from facemask_tools.training.evaluate import evaluate_network

    payload = read_checkpoint(checkpoint)
    if payload.get("ema"):  # a resume checkpoint: its EMA weights are what is evaluated and shipped
        payload = {**payload, "state_dict": payload["ema"]["weights"]}
    trained = ModelSpec.from_dict(payload["spec"])
    rows = []
    for size in sizes:
        spec = replace(trained, image_size=(size, size))
        network = network_of(payload, spec, checkpoint)
        records = VocDataset(data, split, spec.classes).records
        with torch.no_grad():
            metrics, _ = evaluate_network(network.eval(), spec, records, 8, "cpu", progress=False)
        rows.append({"size": size, "map": metrics["map"], "map50": metrics["map50"]})
        print(f"{size:>5} px  mAP {metrics['map']:.4f}  mAP@.5 {metrics['map50']:.4f}", flush=True)
    return rows


@click.command("input-size")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--sizes",
    default="512,640,768",
    metavar="SIZES",
    show_default=True,
    callback=comma_separated(int, minimum=128, multiple_of=128),
    help="Comma-separated input sizes (multiples of 128).",
)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=DATASET_HELP)
@click.option("--split", default="val", show_default=True)
def main(checkpoint: Path, sizes: list[int], data: Path, split: str) -> None:
    """Val mAP of the weights of CHECKPOINT (the EMA weights of a resume checkpoint) evaluated at each input
    size, through the product's post-processing."""
    evaluate_sizes(checkpoint, sizes, data, split)
