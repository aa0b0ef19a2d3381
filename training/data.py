"""torch datasets over `facemask_sdk.voc` records, and the repeat-factor sampler for rare classes."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec
from facemask_sdk.voc import ImageRecord
from training.augment import AugmentConfig, augment


class DetectionDataset(Dataset):
    """Training samples: (image [3,H,W], boxes yxyx in input pixels, classes 1-based) for effdet.

    Each sample's augmentation draws from its own generator seeded by (seed, epoch, index), so a run is
    reproducible whatever the number of loader workers.
    """

    def __init__(self, records: list[ImageRecord], spec: ModelSpec, augment_config: AugmentConfig | None, seed: int = 0):
        self.records = records
        self.spec = spec
        self.augment_config = augment_config
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = self.records[index].load()
        return self._cache[index]

    def __getitem__(self, index: int):
        record = self.records[index]
        image = self._image(index)
        if self.augment_config is None:
            tensor, box = preprocess(image, self.spec)
            boxes, classes = box.to_input(record.boxes), record.class_ids
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            tensor, boxes, classes = augment(image, record.boxes, record.class_ids, self.spec, self.augment_config, rng)
        yxyx = boxes[:, [1, 0, 3, 2]] if len(boxes) else np.zeros((0, 4), np.float32)
        return torch.from_numpy(np.ascontiguousarray(tensor)), torch.from_numpy(yxyx.astype(np.float32)), torch.from_numpy(
            np.asarray(classes, np.int64) + 1
        )


def collate(batch):
    """Stack images; pad boxes/classes to the largest count with -1 (effdet ignores class -1)."""
    images = torch.stack([b[0] for b in batch])
    most = max(1, max(len(b[1]) for b in batch))
    boxes = torch.full((len(batch), most, 4), -1.0)
    classes = torch.full((len(batch), most), -1.0)
    for i, (_, b, c) in enumerate(batch):
        boxes[i, : len(b)] = b
        classes[i, : len(c)] = c.float()
    return images, {"bbox": boxes, "cls": classes}


def repeat_factors(records: list[ImageRecord], num_classes: int, threshold: float) -> np.ndarray:
    """LVIS repeat-factor sampling: an image is repeated max over its classes of max(1, sqrt(t / f_c)),
    f_c the share of images containing class c. threshold 0 disables it (all ones)."""
    if threshold <= 0:
        return np.ones(len(records))
    presence = np.zeros((len(records), num_classes), bool)
    for i, r in enumerate(records):
        presence[i, np.unique(r.class_ids)] = True
    freq = presence.mean(0)
    class_factor = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-9)))
    return np.array([max([1.0] + [class_factor[c] for c in np.flatnonzero(p)]) for p in presence])


def epoch_indices(factors: np.ndarray, epoch: int, seed: int) -> list[int]:
    """Shuffled indices of one epoch, each image repeated floor(r) or ceil(r) times (stochastic rounding)."""
    rng = np.random.default_rng([seed, epoch, 7])
    repeats = np.floor(factors) + (rng.random(len(factors)) < (factors - np.floor(factors)))
    indices = np.repeat(np.arange(len(factors)), repeats.astype(int))
    rng.shuffle(indices)
    return indices.tolist()


def steps_per_epoch(factors: np.ndarray, batch_size: int) -> int:
    return max(1, math.ceil(float(factors.sum()) / batch_size))
