"""Ship a run's EMA weights: a weights-only checkpoint (no optimiser, no RNG) for `models/`.

    python -m facemask_tools.training.ship runs/RUN/best.pt models/facemask.pt
    python -m facemask_tools.training.ship runs/RUN/last.pt models/facemask.pt    # the last epoch's EMA

From `last.pt` the EMA weights are shipped (never the raw training weights), with the last epoch's
val metrics.

The result loads with `facemask_tools.training.checkpoint.load_network` like any checkpoint and keeps what the model
card quotes: spec, training config, init, epoch and step reached, val metrics and history.
"""

from __future__ import annotations

import sys
from pathlib import Path

from facemask_tools.training.checkpoint import read_checkpoint, save_checkpoint

KEPT = ("state_dict", "spec", "train_config", "init", "epoch", "step", "total_steps", "train_seconds",
        "metrics", "history", "best_map", "code_version", "evaluation")


def ship(source: Path, target: Path) -> Path:
    payload = read_checkpoint(source)
    if payload.get("ema"):  # a resume checkpoint: its state_dict is the raw network, the EMA is shipped
        history = payload.get("history") or []
        # the last epoch's figures describe these weights only if no steps ran after that evaluation
        scored = bool(history) and history[-1].get("step") == payload.get("step")
        payload = {**payload, "state_dict": payload["ema"]["weights"], "metrics": history[-1]["val"] if scored else None}
        payload.pop("best_map", None)  # the run's best, not necessarily these weights
    return save_checkpoint(target, {key: payload[key] for key in KEPT if key in payload})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m facemask_tools.training.ship RUN/best.pt models/facemask.pt")
    written = ship(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
