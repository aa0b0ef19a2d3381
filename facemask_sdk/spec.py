"""Model settings as data: everything the runtime needs travels with every checkpoint, ONNX and engine.

Nothing here is re-derived by guesswork at run time: the training code writes a `ModelSpec`, export
stores it as JSON in the ONNX `metadata_props`, and the runtime reads it back from the model file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from facemask_sdk.errors import FacemaskError, ModelFileError

CLASSES: tuple[str, ...] = ("with_mask", "without_mask", "mask_weared_incorrect")
"""The dataset's classes, in the fixed order every model uses (class id = index)."""

SPEC_FORMAT_VERSION = 1
"""Bumped when the meaning of a field changes; models with another version are refused."""

METADATA_KEY = "facemask_sdk.spec"
"""Key of the JSON-encoded spec in ONNX `metadata_props` and in engine sidecars."""

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "boxes")
"""The exported network's tensors: `images` [N, 3, H, W] in; class logits [N, A, C] and box codes
[N, A, 4] out. The export writes these names and every runner reads them by name."""

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
INCEPTION_MEAN_255 = (127.5, 127.5, 127.5)
INCEPTION_STD_255 = (127.5, 127.5, 127.5)


@dataclass(frozen=True)
class AnchorSpec:
    """effdet's anchor settings: levels P3..P7, 3 scales x 3 aspect ratios per location."""

    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    anchor_scale: float = 4.0

    @property
    def anchors_per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


@dataclass(frozen=True)
class ModelSpec:
    """What a detector model is: architecture, classes, input geometry, normalisation, anchors.

    `image_size` is (height, width) of the network input. `mean`/`std` are per RGB channel on the
    0..255 scale: the network sees `(rgb - mean) / std`. Letterbox padding uses `mean`, so padded
    pixels are exactly 0 after normalisation.
    """

    architecture: str
    image_size: tuple[int, int]
    classes: tuple[str, ...] = CLASSES
    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    anchors: AnchorSpec = field(default_factory=AnchorSpec)
    max_detection_points: int = 5000
    code_version: str = ""
    format_version: int = SPEC_FORMAT_VERSION

    def __post_init__(self) -> None:
        height, width = self.image_size
        stride = 2**self.anchors.max_level
        if height <= 0 or width <= 0 or height % stride or width % stride:
            raise ModelFileError(
                f"image_size must be positive multiples of {stride} (2**max_level); got {self.image_size}"
            )
        if not self.classes:
            raise ModelFileError("a model needs at least one class")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelFileError(f"mean/std need 3 values each and std > 0; got {self.mean}, {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def at_input_size(self, size: int) -> ModelSpec:
        """The same model read at `size` x `size` (a model exported with a dynamic input size): anchors and
        letterbox follow the size. `FacemaskError` unless `size` is a positive multiple of 2**max_level."""
        stride = 2**self.anchors.max_level
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % stride:
            raise FacemaskError(
                f"input size must be a positive multiple of {stride} (512, 640, 768, ...), got {size!r}"
            )
        return replace(self, image_size=(size, size))

    def read_at(self, size: int | None, dynamic: bool, source: object) -> ModelSpec:
        """This spec at the input size a user asked for (None: the trained one), for a model file `source`
        whose graph takes any size (`dynamic`) or only its own; one error for every backend otherwise."""
        if size is None or (size, size) == tuple(self.image_size):
            return self
        if not dynamic:
            height, width = self.image_size
            raise FacemaskError(
                f"{source} reads {height}x{width} images only; re-export it with `facemask-sdk export "
                f"--dynamic-size` to use another input size (asked for {size})"
            )
        return self.at_input_size(size)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        if not isinstance(data, dict):
            raise ModelFileError(f"model spec must be a mapping, got {type(data).__name__}")
        version = data.get("format_version")
        if version != SPEC_FORMAT_VERSION:
            raise ModelFileError(
                f"model spec format_version {version!r} is not supported by this facemask-sdk "
                f"(expects {SPEC_FORMAT_VERSION}); re-export the model with this version"
            )
        try:
            anchors = data.get("anchors", {})
            anchor_spec = AnchorSpec(
                min_level=int(anchors["min_level"]),
                max_level=int(anchors["max_level"]),
                num_scales=int(anchors["num_scales"]),
                aspect_ratios=tuple(tuple(float(v) for v in ar) for ar in anchors["aspect_ratios"]),
                anchor_scale=float(anchors["anchor_scale"]),
            )
            return cls(
                architecture=str(data["architecture"]),
                image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
                classes=tuple(str(c) for c in data["classes"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                anchors=anchor_spec,
                max_detection_points=int(data.get("max_detection_points", 5000)),
                code_version=str(data.get("code_version", "")),
                format_version=int(version),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ModelFileError(f"model spec is incomplete or malformed: {exc!r}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def spec_from_metadata(metadata: Mapping[str, str], path: str | os.PathLike) -> ModelSpec:
    """The `ModelSpec` a model file carries under `METADATA_KEY` (ONNX `metadata_props`, ONNX Runtime's
    custom metadata, OpenVINO's rt_info), or one `ModelFileError` naming the file and the fix: the one
    reader every loader and the builder share."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise ModelFileError(
            f"{path} is a model without facemask-sdk metadata (no '{METADATA_KEY}' entry); export it with "
            f"`facemask-sdk export --checkpoint CKPT --out {Path(path).name}`"
        )
    try:
        return ModelSpec.from_json(text)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
