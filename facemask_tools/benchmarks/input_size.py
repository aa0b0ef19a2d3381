"""Val mAP of one checkpoint's weights evaluated at several input sizes (the network is fully
convolutional; anchors follow the size). It measured the 640 px lever in `docs/training-log.md`:

    python -m facemask_tools.benchmarks.input_size runs/stageC-e28-ema.pt --sizes 512,640,768

Scored as every figure of the project: the product's post-processing, COCO mAP on the `val` split.
A resume checkpoint (`last.pt`) is evaluated with its EMA weights.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from facemask_sdk.spec import ModelSpec
from facemask_sdk.voc import VocDataset
from facemask_tools.paths import DATASET

DEFAULT_DATA = DATASET


def evaluate_sizes(checkpoint: Path, sizes: list[int], data: Path, split: str = "val") -> list[dict]:
    import torch

    from facemask_tools.training.checkpoint import read_checkpoint
    from facemask_tools.training.evaluate import evaluate_network
    from facemask_tools.training.model import create_network

    state = read_checkpoint(checkpoint)
    weights = state["ema"]["weights"] if state.get("ema") else state["state_dict"]
    trained = ModelSpec.from_dict(state["spec"])
    rows = []
    for size in sizes:
        spec = replace(trained, image_size=(size, size))
        network = create_network(spec)
        network.load_state_dict(weights)
        records = VocDataset(data, split, spec.classes).records
        with torch.no_grad():
            metrics, _ = evaluate_network(network.eval(), spec, records, 8, "cpu", progress=False)
        rows.append({"size": size, "map": metrics["map"], "map50": metrics["map50"]})
        print(f"{size:>5} px  mAP {metrics['map']:.4f}  mAP@.5 {metrics['map50']:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sizes", default="512,640,768", help="comma-separated input sizes (multiples of 128)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    evaluate_sizes(args.checkpoint, [int(s) for s in args.sizes.split(",")], args.data, args.split)


if __name__ == "__main__":
    main()
