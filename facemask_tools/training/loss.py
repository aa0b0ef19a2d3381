"""effdet's detection loss with one more knob: a weight per ground-truth class in the class loss.

Why: the product keeps one box per face with its best class, so a face wearing its mask incorrectly
counts only where `mask_weared_incorrect` outscores `with_mask` there. Weighting the class loss of the
anchors matched to such faces (every class column of those anchors: the rare class pushed up, the
others down) trains exactly that comparison. Background anchors keep weight 1; with every weight 1
this is effdet's `loss_fn` term for term (tested), built from effdet's own focal and box losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from effdet.loss import _box_loss, new_focal_loss, one_hot
from torch import nn


class ClassWeightedDetectionLoss(nn.Module):
    """`DetBenchTrain.loss_fn`'s signature and result: (total, class, box) losses."""

    def __init__(self, config, class_weights: Sequence[float]) -> None:
        super().__init__()
        if len(class_weights) != config.num_classes or min(class_weights) <= 0:
            raise ValueError(f"need {config.num_classes} positive class weights, got {list(class_weights)}")
        if config.legacy_focal:
            raise ValueError("the class-weighted loss is built on effdet's new focal loss; legacy_focal is set")
        self.config = config
        self.num_classes = int(config.num_classes)
        # Index 0 is background (-1 + 1), index c + 1 ground-truth class c; ignored anchors are masked.
        self.register_buffer("anchor_weights", torch.tensor([1.0, *class_weights], dtype=torch.float32))

    def forward(self, cls_outputs, box_outputs, cls_targets, box_targets, num_positives):
        config = self.config
        normalizer = (num_positives.sum() + 1.0).float()
        cls_losses, box_losses = [], []
        for level, targets in enumerate(cls_targets):
            bs, height, width, anchors = targets.shape
            targets_oh = one_hot(targets, self.num_classes).view(bs, height, width, -1)
            logits = cls_outputs[level].permute(0, 2, 3, 1).float()
            loss = new_focal_loss(
                logits,
                targets_oh,
                alpha=config.alpha,
                gamma=config.gamma,
                normalizer=normalizer,
                label_smoothing=config.label_smoothing,
            ).view(bs, height, width, anchors, self.num_classes)
            weights = self.anchor_weights.to(loss.device)[(targets + 1).clamp(min=0)]
            weights = weights * (targets != -2)
            cls_losses.append((loss * weights.unsqueeze(-1)).sum())
            box_losses.append(
                _box_loss(
                    box_outputs[level].permute(0, 2, 3, 1).float(),
                    box_targets[level],
                    normalizer,
                    delta=config.delta,
                )
            )
        cls_loss = torch.stack(cls_losses).sum()
        box_loss = torch.stack(box_losses).sum()
        return cls_loss + config.box_loss_weight * box_loss, cls_loss, box_loss


def class_weights_for(classes: Sequence[str], weighted: dict[str, float]) -> list[float]:
    """Per-class weights in the spec's class order: the named classes weighted, the rest 1."""
    unknown = set(weighted) - set(classes)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; the model's are {list(classes)}")
    return [float(weighted.get(name, 1.0)) for name in classes]
