"""Ship a run's EMA weights: a weights-only checkpoint (no optimiser, no RNG) for `models/`.

    facemask-sdk dev ship runs/RUN/best.pt models/facemask.pt
    facemask-sdk dev ship runs/RUN/last.pt models/facemask.pt    # the last epoch's EMA
    facemask-sdk dev ship runs/RUN/best.pt models/next.pt --half  # float16 storage

From `last.pt` the EMA weights are shipped (never the raw training weights), with the last epoch's
val metrics.

The result loads with `facemask_tools.training.checkpoint.load_network` like any checkpoint and keeps what the model
card quotes: spec, training config, init, epoch and step reached, val metrics and history.
"""

from __future__ import annotations

from pathlib import Path

import click

from facemask_tools.training.checkpoint import read_checkpoint, save_checkpoint

KEPT = (
    "state_dict",
    "spec",
    "train_config",
    "init",
    "epoch",
    "step",
    "total_steps",
    "train_seconds",
    "metrics",
    "history",
    "best_map",
    "code_version",
    "evaluation",
    "class_logit_offsets",
    "level_logit_offsets",
)


def ship(source: Path, target: Path, half: bool = False) -> Path:
    """`half`: float tensors stored as float16 (half the file; loading casts them back to the network's
    float32), for a starting point of a next stage kept beside the shipped model, not for shipping."""
    payload = read_checkpoint(source)
    if payload.get("ema"):  # a resume checkpoint: its state_dict is the raw network, the EMA is shipped
        history = payload.get("history") or []
        # the last epoch's figures describe these weights only if no steps ran after that evaluation
        scored = bool(history) and history[-1].get("step") == payload.get("step")
        payload = {
            **payload,
            "state_dict": payload["ema"]["weights"],
            "metrics": history[-1]["val"] if scored else None,
        }
        payload.pop("best_map", None)  # the run's best, not necessarily these weights
    kept = {key: payload[key] for key in KEPT if key in payload}
    if half:
        kept["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in kept["state_dict"].items()}
        kept["weights_dtype"] = "float16"
    return save_checkpoint(target, kept)


@click.command("ship")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--half", is_flag=True, help="Store the weights in float16 (half the file).")
def main(source: Path, target: Path, half: bool) -> None:
    """A run's EMA weights as a weights-only checkpoint: SOURCE is RUN/best.pt or RUN/last.pt, TARGET for
    example models/facemask.pt."""
    written = ship(source, target, half=half)
    click.echo(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
