"""Checkpoints: weights plus everything needed to rebuild, evaluate and export the model.

A checkpoint is a dict with `state_dict`, `spec` (ModelSpec as a dict), `train_config`, `metrics`,
`epoch`, `history`, `init` (how the weights were initialised) and `code_version`; `last.pt` also
carries optimiser, EMA, RNG and step for `--resume`. Everything is tensors and plain Python values, so
every load is `weights_only=True` (a file that would run code is refused). Written atomically: a
crash never leaves half a file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from facemask_sdk.errors import FacemaskError, ModelFileError
from facemask_sdk.files import write_atomically
from facemask_sdk.spec import ModelSpec
from facemask_tools.training.model import add_level_offsets, create_network, level_offsets_tensor

CHECKPOINT_KEYS = ("state_dict", "spec")
MAX_UNPACKED_BYTES = 2 << 30
"""A checkpoint's archive may unpack to at most 2 GiB (ours: 13-40 MB): a zip bomb is refused unopened."""
MAX_PICKLE_BYTES = 64 << 20
"""Its pickle (the structure; tensors are separate members) at most 64 MiB (ours: under 1 MB)."""


DERIVED_KEPT = ("spec", "train_config", "code_version", "weights_dtype", "class_logit_offsets", "level_logit_offsets")
"""What a checkpoint made from another without training (a mean, a logit offset) keeps of its source; val
metrics are not kept: they describe the source's weights."""


def derived_checkpoint(source: dict, state_dict: dict[str, torch.Tensor], init: dict) -> dict:
    """A checkpoint of `state_dict`, made from the checkpoint `source` without training; `init` records how."""
    return {**{key: source[key] for key in DERIVED_KEPT if key in source}, "state_dict": state_dict, "init": init}


def refuse_resume_checkpoint(path: str | Path, payload: dict) -> None:
    """A resume checkpoint's `state_dict` is the raw network, not the EMA that is evaluated and shipped."""
    if payload.get("ema"):
        raise FacemaskError(f"{path} is a resume checkpoint: ship its EMA first (facemask-sdk dev ship)")


def save_checkpoint(path: str | Path, payload: dict, overwrite: bool = True) -> Path:
    """Write `payload` to `path` atomically (temp file in the same folder, then rename); with
    `overwrite=False` an existing `path` is refused (`FacemaskError`)."""
    return write_atomically(path, lambda handle: torch.save(payload, handle), overwrite=overwrite)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict on the CPU; `ModelFileError` for anything that is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    payload = load_weights_file(path)
    if not isinstance(payload, dict) or any(k not in payload for k in CHECKPOINT_KEYS):
        raise ModelFileError(f"{path} is not a facemask-sdk checkpoint (expected keys {CHECKPOINT_KEYS})")
    return payload


def load_weights_file(path: str | Path) -> object:
    """`torch.load` with `weights_only=True`: tensors and plain Python values only, so a pickle that
    would run code is refused before anything of it runs. `ModelFileError` (one line) otherwise."""
    _check_archive_size(Path(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported global[^\n]*", str(exc), re.IGNORECASE)
        if found:  # the weights-only unpickler met an object it would have to construct by running code
            raise ModelFileError(
                f"{path} was refused: it holds objects other than tensors and plain values, and loading it could "
                f"run code ({found.group(0).strip()[:160]})"
            ) from None
        raise ModelFileError(f"{path} is not a readable PyTorch checkpoint (not a torch.save file)") from None
    except Exception as exc:  # torch raises many types for a bad file (zip, EOF, ...)
        raise ModelFileError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _check_archive_size(path: Path) -> None:
    """Refuse, from the zip directory alone, an archive that would unpack to more than the limits."""
    if not zipfile.is_zipfile(path):
        return  # a legacy torch.save file: its unpickled size is bounded by the file's own
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load names what is wrong with it
    unpacked = sum(member.file_size for member in members)
    pickled = max((member.file_size for member in members if member.filename.endswith(".pkl")), default=0)
    if unpacked > MAX_UNPACKED_BYTES or pickled > MAX_PICKLE_BYTES or len(members) > 100_000:
        raise ModelFileError(
            f"{path} was refused: it would unpack to {unpacked / 2**20:,.0f} MiB in {len(members)} members "
            f"(pickle {pickled / 2**20:,.0f} MiB); a checkpoint is at most {MAX_UNPACKED_BYTES >> 20:,} MiB "
            f"with a pickle of at most {MAX_PICKLE_BYTES >> 20} MiB"
        )


def load_network(path: str | Path):
    """(network in eval mode, spec, payload) from a checkpoint file."""
    payload = read_checkpoint(path)
    spec = ModelSpec.from_dict(payload["spec"])
    return network_of(payload, spec, path), spec, payload


def network_of(payload: dict, spec: ModelSpec, path: str | Path = "checkpoint"):
    """The checkpoint's network built for `spec` (its own, or another input size), in eval mode, with its
    per-level class-logit offsets (`level_logit_offsets`) where it has them."""
    network = create_network(spec)
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match {spec.architecture}: {exc}") from None
    if payload.get("level_logit_offsets"):
        add_level_offsets(network, level_offsets_tensor(spec, payload["level_logit_offsets"]))
    return network.eval()
