"""`TrainConfig`: every knob of a training run, as data (effdet's habit: config apart from code).

Its field defaults are the product recipe and the one home of every default: `facemask-sdk train` reads
its option defaults from here. Importing it imports no torch, so the CLI's help stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RARE_CLASS = "mask_weared_incorrect"
"""The rare class: what copy-paste adds faces of and `dev class-offset` moves by default (11% of train
images hold it, 27 val boxes)."""


@dataclass
class TrainConfig:
    """Every knob of a run; recorded in each checkpoint and in metrics.json. Defaults = product recipe."""

    data: str
    out: str
    model: str = "tf_efficientdet_lite0"
    image_size: int | None = None  # None: the architecture's own (512 for D0 and Lite0)
    batch_size: int = 16
    epochs: int = 5
    optimizer: str = "adamw"
    lr: float | None = None  # None: chosen by what initialised the network (default_lr)
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 disables clipping
    pretrained: str = "auto"
    augment: str = "medium"
    repeat_threshold: float = 0.3  # LVIS repeat-factor sampling for rare classes; 0 disables
    crop_size: int | None = 384  # train on random crops of the model-size canvas; None: full canvas
    mosaic: float = 0.5  # chance of a four-image mosaic per sample
    zoom: float = 0.0  # chance that a sample which is no mosaic is rescaled around one face (every face size)
    photometric: float = 0.0  # chance of blur, JPEG artefacts or sensor noise per sample
    multi_scale: tuple[int, ...] = ()  # input sizes whose face scales samples are drawn from; (): image_size's only
    zoom_balance: bool = False  # zoom picks its face with weights 1 / class frequency (close-ups of every class)
    zoom_max_upscale: float = 8.0  # zoom enlarges a face at most this much over its photo's pixels (blur it sees)
    zoom_balance_power: float = 1.0  # those weights ** power: 1 every class equally often, 0.5 part of the way
    copy_paste: float = 0.3  # chance of pasting 1-3 mask_weared_incorrect faces into a sample
    rare_class_weight: float = 1.0  # class-loss weight of anchors matched to mask_weared_incorrect faces
    anchor_scale: float | None = None  # None: effdet's (3.0 for Lite0, 4.0 for D0)
    ema_decay: float = 0.999  # 0 disables the weight average (then the raw weights are evaluated)
    ema_ramp_steps: int = 200
    amp: str = "auto"  # auto | off | bf16 | fp16 (fp16 on CUDA only)
    channels_last: bool = True
    checkpoint_every: int = 50  # optimiser steps between last.pt checkpoints
    seed: int = 0
    val_fraction: float = 0.2
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests)
    max_val_images: int | None = None
    eval_batch_size: int = 8
    extra: dict = field(default_factory=dict)


RUNTIME_FIELDS = ("out", "device", "workers", "threads")
"""Fields a resumed run may change: where and how it runs, never what it computes."""

NOT_RECIPE_FIELDS = (
    *RUNTIME_FIELDS,
    "data",
    "pretrained",
    "seed",
    "amp",
    "max_steps",
    "max_val_images",
    "checkpoint_every",
    "eval_batch_size",
    "extra",
)
"""What `train --recipe-from` does not take from a checkpoint: where the data and weights are, the seed, and how
this machine runs it (a CPU recipe's `--amp off` must not stop a GPU from using AMP)."""


def recipe_of(train_config: dict) -> dict:
    """The recipe part of a recorded `train_config`: every option that shapes what the run computes."""
    return {
        k: v for k, v in train_config.items() if k in TrainConfig.__dataclass_fields__ and k not in NOT_RECIPE_FIELDS
    }
