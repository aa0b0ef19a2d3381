"""One factory for the detector: a `ModelSpec` in, effdet's bare `EfficientDet` network out.

The network is the plain nn.Module (class logits and box codes per pyramid level); anchors,
decoding and NMS stay outside it (effdet's benches for training and the PyTorch baseline, the NumPy
reference in `facemask_sdk.postprocess` for the runtime).
"""

from __future__ import annotations

import torch
from effdet import DetBenchPredict, DetBenchTrain, EfficientDet, get_efficientdet_config
from torch import nn

import facemask_sdk
from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import (
    CLASSES,
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    INCEPTION_MEAN_255,
    INCEPTION_STD_255,
    AnchorSpec,
    ModelSpec,
)

ARCHITECTURES: dict[str, dict] = {
    # effdet's own per-variant normalisation: D0's backbone was trained on ImageNet mean/std,
    # the Lite backbones on inception-style mean = std = 0.5. Lite0 runs at 512, not effdet's 320
    # (faces are small; measured in the model card): sizes here are multiples of 2**max_level so
    # every pyramid level tiles the input exactly.
    "tf_efficientdet_d0": {"image_size": 512, "mean": IMAGENET_MEAN_255, "std": IMAGENET_STD_255},
    "tf_efficientdet_lite0": {"image_size": 512, "mean": INCEPTION_MEAN_255, "std": INCEPTION_STD_255},
}


def make_spec(
    architecture: str = "tf_efficientdet_d0",
    image_size: int | None = None,
    classes: tuple[str, ...] = CLASSES,
    anchor_scale: float | None = None,
) -> ModelSpec:
    """The spec of a new model: anchors and normalisation come from effdet's config for the variant.

    `anchor_scale` overrides effdet's (smallest anchor = anchor_scale * 8 px at P3).
    """
    if architecture not in ARCHITECTURES:
        raise FacemaskError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    defaults = ARCHITECTURES[architecture]
    size = int(image_size or defaults["image_size"])
    config = get_efficientdet_config(architecture)
    anchors = AnchorSpec(
        min_level=int(config.min_level),
        max_level=int(config.max_level),
        num_scales=int(config.num_scales),
        aspect_ratios=tuple(tuple(float(v) for v in ar) for ar in config.aspect_ratios),
        anchor_scale=float(anchor_scale or config.anchor_scale),
    )
    if anchor_scale is not None and anchor_scale <= 0:
        raise FacemaskError(f"--anchor-scale must be positive, got {anchor_scale}")
    if size % 2**anchors.max_level:
        raise FacemaskError(f"--image-size must be a multiple of {2**anchors.max_level}, got {size}")
    return ModelSpec(
        architecture=architecture,
        image_size=(size, size),
        classes=tuple(classes),
        mean=tuple(defaults["mean"]),
        std=tuple(defaults["std"]),
        anchors=anchors,
        max_detection_points=int(config.max_detection_points),
        code_version=facemask_sdk.__version__,
    )


def effdet_config(spec: ModelSpec):
    """effdet's config for a spec (image size, classes and anchors overridden from the spec)."""
    config = get_efficientdet_config(spec.architecture)
    config.image_size = tuple(spec.image_size)
    config.num_classes = spec.num_classes
    config.min_level = spec.anchors.min_level
    config.max_level = spec.anchors.max_level
    config.num_levels = spec.anchors.max_level - spec.anchors.min_level + 1
    config.num_scales = spec.anchors.num_scales
    config.aspect_ratios = [tuple(ar) for ar in spec.anchors.aspect_ratios]
    config.anchor_scale = spec.anchors.anchor_scale
    config.max_detection_points = spec.max_detection_points
    return config


def create_network(spec: ModelSpec) -> EfficientDet:
    """The bare network, randomly initialised; `facemask_tools.training.pretrained` loads weights into it."""
    return EfficientDet(effdet_config(spec), pretrained_backbone=False)


def class_channels(spec: ModelSpec, class_name: str) -> slice:
    """The channels of `class_name` in the class head's output: channel = anchor * C + class (effdet's layout,
    the one `FlatHeads` flattens)."""
    if class_name not in spec.classes:
        raise FacemaskError(f"{class_name!r} is not one of the model's classes {list(spec.classes)}")
    return slice(spec.classes.index(class_name), None, len(spec.classes))


def level_offsets_tensor(spec: ModelSpec, offsets: dict[str, dict[str, float]]) -> torch.Tensor:
    """`{class name: {pyramid level: logit offset}}` as float32 `[levels, anchors per location * C]` channel
    offsets of the class head's maps (`class_channels`)."""
    levels = spec.anchors.max_level - spec.anchors.min_level + 1
    table = torch.zeros(levels, spec.anchors.anchors_per_location * len(spec.classes))
    for name, by_level in offsets.items():
        channels = class_channels(spec, name)
        for level, offset in by_level.items():
            index = int(level) - spec.anchors.min_level
            if not 0 <= index < levels:
                raise FacemaskError(
                    f"level offsets name pyramid level {level}; the model has P{spec.anchors.min_level}-P{spec.anchors.max_level}"
                )
            table[index, channels] += float(offset)
    return table


def add_level_offsets(network: EfficientDet, offsets: torch.Tensor) -> EfficientDet:
    """Add `offsets[level]` (`level_offsets_tensor`) to the class head's map of each level in every forward, in
    place: a forward hook on the class head, so the weights and their state dict stay effdet's, and the
    exported graph carries the offsets as constants. Needed where an offset differs between levels: the
    head's last convolution is shared by every level, so only an offset for all levels fits into its bias."""
    head = network.class_net
    head.register_buffer("level_offsets", offsets.clone(), persistent=False)

    def shifted(module: nn.Module, inputs: tuple, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m + module.level_offsets[i].to(m.dtype).view(1, -1, 1, 1) for i, m in enumerate(maps)]

    head.register_forward_hook(shifted)
    return network


def train_bench(network: EfficientDet) -> DetBenchTrain:
    """effdet's training wrapper: anchor labelling and focal + box loss (targets are yxyx)."""
    return DetBenchTrain(network, create_labeler=True)


def predict_bench(network: EfficientDet) -> DetBenchPredict:
    """effdet's own post-processing: the PyTorch baseline the runtime is checked against."""
    return DetBenchPredict(network)


class FlatHeads(nn.Module):
    """The exported graph: per-level head maps flattened to `[B, A, C]` logits and `[B, A, 4]` boxes.

    The flattening is effdet's own (`bench._post_process`): level by level, each map permuted to
    NHWC, so anchor `a` here is anchor `a` of `effdet.anchors.Anchors` and of the NumPy reference.
    """

    def __init__(self, network: EfficientDet) -> None:
        super().__init__()
        self.network = network
        self.num_classes = int(network.config.num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        class_maps, box_maps = self.network(images)
        batch = images.shape[0]
        logits = torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes) for m in class_maps], 1)
        boxes = torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, 4) for m in box_maps], 1)
        return logits, boxes


def make_size_agnostic(network: EfficientDet) -> EfficientDet:
    """The same network for any input whose sides are multiples of 2**max_level, in place: effdet's
    BiFPN upsamples to sizes fixed from `config.image_size`; each becomes the equivalent integer scale
    factor (nearest upsampling to exactly twice the size is upsampling by 2), so an ONNX export with
    dynamic height and width runs at 512, 640 or 768 px from one file. Outputs are unchanged at the
    configured size (the export's parity check compares them)."""
    from effdet.efficientdet import Interpolate2d, ResampleFeatureMap

    for module in network.modules():
        if not isinstance(module, ResampleFeatureMap):
            continue
        for child in module.children():
            if isinstance(child, Interpolate2d) and child.size is not None:
                (in_h, in_w), (out_h, out_w) = module.input_size, module.output_size
                if out_h % in_h or out_w % in_w or out_h // in_h != out_w // in_w:
                    raise ValueError(f"cannot make {module.input_size} -> {module.output_size} size-agnostic")
                child.size, child.scale_factor = None, float(out_h // in_h)
    return network


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
