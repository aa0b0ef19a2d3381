"""Where the tooling finds the checkout's own files and the project's data: one home for these paths."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
"""The repository root (the folder holding `facemask_sdk/` and `facemask_tools/`)."""

SAMPLES = CHECKOUT / "samples"
"""The CC0 sample images and their VOC annotations, in every clone."""

DATASET = CHECKOUT.parent / "shared" / "datasets" / "face-mask-detection"
"""The Kaggle face-mask set beside the checkout (`../shared/datasets/face-mask-detection`), read-only."""

DATASET_HELP = "../shared/datasets/face-mask-detection, beside the checkout"
"""How `DATASET` is shown as a command's default."""
