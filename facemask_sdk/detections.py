"""`Detections`: the one validated result type of the SDK (supervision-style dataclass of arrays).

>>> import numpy as np
>>> names = ("with_mask", "without_mask")
>>> dets = Detections(np.array([[10, 20, 50, 80]]), np.array([0.9]), np.array([0]), names)
>>> len(dets), dets.labels
(1, ['with_mask'])
>>> dets.summary()
{'faces': 1, 'per_class': {'with_mask': 1, 'without_mask': 0}, 'compliance_rate': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from facemask_sdk.errors import FacemaskError
from facemask_sdk.spec import CLASSES

COMPLIANT_CLASS = "with_mask"
"""The class that counts as wearing a mask correctly in `Detections.summary()`."""


def compliance_rate(per_class: Mapping[str, int]) -> float | None:
    """The share of faces whose class is `with_mask` (masks worn incorrectly are non-compliant), from
    counts per class: one frame's or a whole run's. `None` without faces or without that class."""
    faces = sum(per_class.values())
    if not faces or COMPLIANT_CLASS not in per_class:
        return None
    return per_class[COMPLIANT_CLASS] / faces


class Detection(NamedTuple):
    """One detection, as yielded by iterating over `Detections` (unpacks as a 4-tuple)."""

    xyxy: np.ndarray
    score: float
    class_id: int
    label: str


@dataclass(eq=False)
class Detections:
    """N detections of one image: xyxy float32 `[N, 4]` boxes (original-image pixels), float32 `[N]`
    scores in [0, 1], int64 `[N]` class ids indexing `class_names`, and, from a tracker
    (`facemask_sdk.tracking`), int64 `[N]` person ids in `tracker_id` (-1: on no person's track).

    Inputs are coerced to those dtypes; wrong shapes, mismatched lengths or unknown class ids raise
    `FacemaskError` saying what was expected and what was found.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = CLASSES
    tracker_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.class_names = tuple(str(name) for name in self.class_names)
        self.xyxy = _as_array("xyxy", self.xyxy, np.float32)
        self.scores = _as_array("scores", self.scores, np.float32)
        self.class_ids = _as_class_ids(self.class_ids)
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            if self.xyxy.size == 0 and self.scores.size == 0 and self.class_ids.size == 0:
                self.xyxy = self.xyxy.reshape(0, 4)
            else:
                raise FacemaskError(f"xyxy must have shape [N, 4], got {list(self.xyxy.shape)}")
        n = len(self.xyxy)
        if self.tracker_id is not None:
            self.tracker_id = _as_class_ids(self.tracker_id, "tracker_id")
        for name in ("scores", "class_ids") + (("tracker_id",) if self.tracker_id is not None else ()):
            array = getattr(self, name)
            if array.shape != (n,):
                raise FacemaskError(f"{name} must have shape [{n}] to match xyxy [{n}, 4], got {list(array.shape)}")
        if n and (self.class_ids.min() < 0 or self.class_ids.max() >= len(self.class_names)):
            raise FacemaskError(
                f"class_ids must be in [0, {len(self.class_names)}) for classes {self.class_names}, "
                f"got values from {self.class_ids.min()} to {self.class_ids.max()}"
            )

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = CLASSES) -> Detections:
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), class_names)

    @property
    def labels(self) -> list[str]:
        """The class name of every detection."""
        return [self.class_names[i] for i in self.class_ids.tolist()]

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[Detection]:
        for i in range(len(self)):
            class_id = int(self.class_ids[i])
            yield Detection(self.xyxy[i], float(self.scores[i]), class_id, self.class_names[class_id])

    def __getitem__(self, index: int | slice | np.ndarray | list) -> Detections:
        """A subset as `Detections`: an int (one detection), a slice, a boolean mask or an index array."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"detection index {index} out of range for {n} detections")
            index = [int(index)]
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise FacemaskError(f"boolean mask must have shape [{len(self)}], got {list(index.shape)}")
            elif index.size == 0:
                index = index.astype(np.int64)
            elif not np.issubdtype(index.dtype, np.integer):
                raise FacemaskError(f"index with an int, a slice, a boolean mask or integers, got {index.dtype}")
        tracker_id = None if self.tracker_id is None else self.tracker_id[index]
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index], self.class_names, tracker_id)

    def to_dict(self) -> list[dict]:
        """JSON-ready list, one `{"box": [x1, y1, x2, y2], "score", "class_id", "label"}` per detection,
        plus `"tracker_id"` when the detections come from a tracker."""
        records = [
            {
                "box": [float(v) for v in box.tolist()],
                "score": float(score),
                "class_id": int(class_id),
                "label": label,
            }
            for box, score, class_id, label in self
        ]
        if self.tracker_id is not None:
            for record, tracker_id in zip(records, self.tracker_id.tolist()):
                record["tracker_id"] = tracker_id
        return records

    def summary(self) -> dict:
        """Counts for a report.

        `faces`: number of detections; `per_class`: detections per class name (every class listed, zeros
        included); `compliance_rate`: the share of faces whose class is `with_mask` (masks worn
        incorrectly count as non-compliant), in [0, 1]; `None` when there are no faces or the model has
        no `with_mask` class.
        """
        counts = np.bincount(self.class_ids, minlength=len(self.class_names))
        per_class = {name: int(counts[i]) for i, name in enumerate(self.class_names)}
        return {"faces": len(self), "per_class": per_class, "compliance_rate": compliance_rate(per_class)}


def _as_array(name: str, value: object, dtype: type) -> np.ndarray:
    try:
        return np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise FacemaskError(f"{name} must be a numeric array convertible to {np.dtype(dtype)}: {exc}") from None


def _as_class_ids(value: object, name: str = "class_ids") -> np.ndarray:
    array = np.asarray(value)
    if array.size and not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        floats = _as_array(name, array, np.float64)
        if not np.all(np.isfinite(floats)) or np.any(floats != np.round(floats)):
            raise FacemaskError(f"{name} must be whole numbers, got {array.dtype} values like {floats.ravel()[:3]}")
    return _as_array(name, array, np.int64)
