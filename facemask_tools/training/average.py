"""Average the weights of shipped checkpoints of one model (a uniform "model soup").

    facemask-sdk dev average runs/stageH.pt runs/stageI.pt --out runs/soup.pt

Two fine-tunes from the same starting weights lie in one basin, and their mean often scores at least
as well as either; it costs one evaluation instead of a training run. Float tensors (BatchNorm
statistics included) are averaged; integer buffers (BatchNorm's step counters) are taken from the
first checkpoint. The inputs must share one `spec` (architecture, input size, anchors, classes), or
the mean is meaningless; the result keeps the first checkpoint's spec and training config, records
its sources under `init`, and carries no val metrics (they describe none of the inputs' weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import torch

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_tools.training.checkpoint import (
    derived_checkpoint,
    read_checkpoint,
    refuse_resume_checkpoint,
    save_checkpoint,
)


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of float tensors; integer tensors from the first state dict."""
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=2):
        if other.keys() != first.keys():
            missing = sorted(set(first) ^ set(other))[:3]
            raise ModelFileError(f"checkpoint {index} has other tensors than checkpoint 1 (for example {missing})")
    averaged = {}
    for name, tensor in first.items():
        shapes = {tuple(sd[name].shape) for sd in state_dicts}
        if len(shapes) > 1:
            raise ModelFileError(f"tensor {name} differs in shape between the checkpoints: {sorted(shapes)}")
        if tensor.is_floating_point():
            averaged[name] = torch.stack([sd[name].float() for sd in state_dicts]).mean(dim=0).to(tensor.dtype)
        else:
            averaged[name] = tensor.clone()
    return averaged


def average_checkpoints(sources: Sequence[Path], target: Path, overwrite: bool = False) -> Path:
    """Write the mean of `sources` (at least two weights-only checkpoints of one spec) to `target`;
    an existing `target` is kept unless `overwrite`."""
    if len(sources) < 2:
        raise FacemaskError("averaging needs at least two checkpoints")
    if Path(target).resolve() in {Path(path).resolve() for path in sources}:
        raise FacemaskError(f"the output {target} is one of the checkpoints to average; choose another path")
    payloads = [read_checkpoint(path) for path in sources]
    for path, payload in zip(sources, payloads):
        refuse_resume_checkpoint(path, payload)
        for key in ("class_logit_offsets", "level_logit_offsets"):  # a mean of other offsets is none of them
            if (payload.get(key) or {}) != (payloads[0].get(key) or {}):
                raise FacemaskError(
                    f"{path} has other logit offsets than {sources[0]} ({key}: {payload.get(key)} vs "
                    f"{payloads[0].get(key)}); average checkpoints with the same offsets"
                )
        if payload["spec"] != payloads[0]["spec"]:
            raise FacemaskError(
                f"{path} has another model spec than {sources[0]}: {payload['spec']} vs {payloads[0]['spec']}"
            )
    init = {
        "kind": "average",
        "sources": [str(path) for path in sources],
        "sources_init": [payload.get("init") for payload in payloads],
    }
    merged = derived_checkpoint(payloads[0], average_state_dicts([payload["state_dict"] for payload in payloads]), init)
    return save_checkpoint(target, merged, overwrite=overwrite)


@click.command("average")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The averaged checkpoint to write."
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def main(sources: tuple[Path, ...], out: Path, force: bool) -> None:
    """The uniform average of weights-only checkpoints of one model: SOURCES are two or more shipped
    checkpoints (`facemask-sdk dev ship` output)."""
    written = average_checkpoints(list(sources), out, overwrite=force)
    click.echo(f"wrote {written}: the mean of {len(sources)} checkpoints")
