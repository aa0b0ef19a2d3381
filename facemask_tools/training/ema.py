"""Exponential moving average of the weights: the weights that are evaluated and shipped.

The average lives in its own network, which may be built for a different input size than the one
that trains (crop training): parameters and buffers do not depend on the input size, so they pair up
by name. The decay ramps up as `decay * (1 - exp(-updates / ramp))` (the YOLO/timm habit), so early
averages are not dominated by the random start.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class WeightAverage:
    """EMA of `source`'s state kept in `target` (same architecture, any input size)."""

    def __init__(self, target: nn.Module, decay: float = 0.999, ramp_steps: int = 200, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.module = target.eval()
        self.decay = decay
        self.ramp_steps = max(1, ramp_steps)
        self.updates = updates
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.ramp_steps))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        self.updates += 1
        decay = self.current_decay()
        mine = self.module.state_dict()
        for name, value in source.state_dict().items():
            average = mine[name]
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(value.detach().to(average.dtype), alpha=1.0 - decay)
            else:
                average.copy_(value)

    def copy_from(self, source: nn.Module) -> None:
        """Start the average at `source`'s weights (a fresh run)."""
        self.module.load_state_dict(source.state_dict())

    def state_dict(self) -> dict:
        return {
            "weights": self.module.state_dict(),
            "updates": self.updates,
            "decay": self.decay,
            "ramp_steps": self.ramp_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
