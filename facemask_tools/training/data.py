"""torch datasets over `facemask_sdk.voc` records, and the repeat-factor sampler for rare classes."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec
from facemask_sdk.voc import ImageRecord
from facemask_tools.training.augment import AugmentConfig, augment, mosaic, paste_patches, zoom_on_face

MIN_PASTE_SIZE = 8.0
"""Faces smaller than this (pixels, either side) are not used as copy-paste patches."""


class DetectionDataset(Dataset):
    """Training samples: (image [3,H,W], boxes yxyx in input pixels, classes 1-based) for effdet.

    Each sample's augmentation draws from its own generator seeded by (seed, epoch, index), so a run is
    reproducible (and resumable at any step) whatever the number of loader workers. With `crop_hw`
    the samples are crops of the model-size canvas (faces at their evaluation scale); `mosaic` is the
    chance of a four-image mosaic, `zoom` the chance that a sample which is no mosaic is rescaled around
    one face to a size drawn evenly over the face-size buckets, `copy_paste` the chance of pasting 1-3
    faces of `paste_class`.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        spec: ModelSpec,
        augment_config: AugmentConfig | None,
        seed: int = 0,
        crop_hw: tuple[int, int] | None = None,
        mosaic: float = 0.0,
        copy_paste: float = 0.0,
        paste_class: int = 2,
        zoom: float = 0.0,
    ):
        self.records = records
        self.spec = spec
        self.augment_config = augment_config
        self.seed = seed
        self.crop_hw = tuple(crop_hw) if crop_hw else tuple(spec.image_size)
        self.mosaic = mosaic
        self.zoom = zoom
        self.copy_paste = copy_paste
        self.epoch = 0
        self._cache: dict[int, np.ndarray] = {}
        self._paste_sources = [
            (i, box)
            for i, r in enumerate(records)
            for box, c in zip(r.boxes, r.class_ids)
            if c == paste_class and min(box[2] - box[0], box[3] - box[1]) >= MIN_PASTE_SIZE
        ]
        self.paste_class = paste_class

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> np.ndarray:
        if index not in self._cache:
            self._cache[index] = self.records[index].load()
        return self._cache[index]

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image with its boxes, after copy-paste when drawn."""
        record = self.records[index]
        image, boxes, classes = self._image(index), record.boxes, record.class_ids
        if self._paste_sources and rng.random() < self.copy_paste:
            picks = rng.integers(0, len(self._paste_sources), int(rng.integers(1, 4)))
            patches = []
            for pick in picks:
                source, box = self._paste_sources[int(pick)]
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                patch = self._image(source)[y0:y1, x0:x1]
                if patch.size:
                    patches.append((patch, self.paste_class))
            image, boxes, classes = paste_patches(image, boxes, classes, patches, rng)
        return image, boxes, classes

    def __getitem__(self, index: int):
        if self.augment_config is None:
            record = self.records[index]
            tensor, letterbox = preprocess(self._image(index), self.spec)
            boxes, classes = letterbox.to_input(record.boxes), record.class_ids
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.mosaic:
                partners = [index] + [int(i) for i in rng.integers(0, len(self.records), 3)]
                samples = [self._sample(i, rng) for i in partners]
                tensor, boxes, classes = mosaic(samples, self.spec, self.augment_config, rng, self.crop_hw)
            elif self.zoom and rng.random() < self.zoom:  # no draw at zoom 0: earlier runs replay exactly
                tensor, boxes, classes = zoom_on_face(
                    *self._sample(index, rng), self.spec, self.augment_config, rng, self.crop_hw
                )
            else:
                tensor, boxes, classes = augment(
                    *self._sample(index, rng), self.spec, self.augment_config, rng, self.crop_hw
                )
        yxyx = boxes[:, [1, 0, 3, 2]] if len(boxes) else np.zeros((0, 4), np.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(tensor)),
            torch.from_numpy(yxyx.astype(np.float32)),
            torch.from_numpy(np.asarray(classes, np.int64) + 1),
        )


def inverse_class_frequencies(records: list[ImageRecord], num_classes: int, power: float = 1.0) -> tuple[float, ...]:
    """(1 / share of the boxes of each class) ** power: at power 1 every class is equally likely to be picked,
    at 0 each as often as it occurs, in between (0.5: square root) part of the way."""
    counts = np.bincount(
        np.concatenate([np.asarray(r.class_ids, np.int64) for r in records] or [np.zeros(0, np.int64)]),
        minlength=num_classes,
    ).astype(np.float64)
    return tuple(float((counts.sum() / c) ** power) if c else 0.0 for c in counts)


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
