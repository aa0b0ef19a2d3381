"""Faces keep one identity across the frames of a video: ByteTrack's association, in NumPy.

    >>> tracker = FaceTracker(detector.spec.classes)
    >>> for frame in frames:
    ...     tracked = tracker.update(detector(frame), frame_index, time_s)  # Detections with tracker_id
    ...     for person in tracker.confirmed_now: ...  # people confirmed in this frame (for an app to act on)
    >>> tracker.people                                 # everyone seen so far, each with a verdict

Each frame, confident detections (score >= `high_score`) are matched first to every live track, by IoU
with the box the track predicts; the tracks still unmatched then get a chance at the weaker detections
(a face turning away, motion blur). That second pass is ByteTrack's idea: identities survive the frames
where a face scores low without weak boxes ever opening tracks. A third pass lets a hidden person's
track take a confident detection near where it should be by now, by centre distance (a face coming out
from behind another is first seen in part, where IoU with the prediction is low). A confident detection nobody claims
opens a tentative track; it becomes a **person**, with an id, once matched in `min_frames` frames in a
row at a mean score of at least `min_score` (a one-frame false box never counts); a person's track
unseen for `lost_frames` frames ends. Matching ignores the class, so a face flickering between classes
stays one person, whose class is a vote over its frames (each weighted by its score).

Motion is a constant-velocity alpha-beta filter on box centre and size (the steady state of SORT's
Kalman filter); a hidden face's box keeps moving at its last velocity and keeps its last size.
Matching is greedy by IoU, highest first: an optimal assignment differs only when several faces overlap
their predictions about equally, and greedy needs no SciPy. All per-track state
lives in arrays, so one frame costs a handful of NumPy calls whatever the number of faces; memory
grows with the number of people, not of frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from facemask_sdk.detections import COMPLIANT_CLASS, Detections, compliance_rate
from facemask_sdk.errors import FacemaskError
from facemask_sdk.validation import in_range, unit_interval, whole_number

UNTRACKED = -1
"""`Detections.tracker_id` of a detection that belongs to no person (yet): weak, or a tentative track."""


@dataclass(frozen=True)
class TrackerConfig:
    """How faces are followed and when a track counts as a person (defaults for 10-30 FPS video)."""

    high_score: float = 0.5
    """Detections at or above this score are matched first and may open tracks."""
    match_iou: float = 0.2
    """Least IoU between a track's predicted box and a confident detection (ByteTrack: 0.2)."""
    low_match_iou: float = 0.5
    """Least IoU for the second pass, between still unmatched tracks and weaker detections."""
    min_frames: int = 3
    """Frames in a row a new track must be matched before it is a person."""
    min_score: float = 0.5
    """Least mean detection score over those frames."""
    lost_frames: int = 30
    """Frames a person's track survives unseen (occlusion, a missed detection) before it ends."""
    rematch_distance: float = 1.0
    """A hidden person's track takes an unclaimed confident detection of about its size whose centre is
    within this many face sizes of the predicted centre: a face coming out from behind something is
    first seen in part, away from where it went in, so IoU alone would make it a new person. 0: off."""
    position_gain: float = 0.8
    """Alpha: how far a matched box pulls the track's box from its prediction (1: all the way)."""
    velocity_gain: float = 0.15
    """Beta: how far the prediction's error corrects the velocity."""

    def __post_init__(self) -> None:
        for name in ("high_score", "match_iou", "low_match_iou", "min_score", "position_gain", "velocity_gain"):
            unit_interval(f"TrackerConfig.{name}", getattr(self, name))
        in_range("TrackerConfig.rematch_distance", self.rematch_distance, 0.0, 10.0)
        for name in ("min_frames", "lost_frames"):
            whole_number(f"TrackerConfig.{name}", getattr(self, name))


@dataclass(frozen=True)
class Person:
    """One person (a confirmed track) and their verdict: the class with the most score-weighted votes."""

    id: int
    label: str
    class_id: int
    share: float
    """Share of the person's frames whose detection had the verdict's class."""
    frames: int
    """Frames in which the person was detected (not counting frames where they were hidden)."""
    mean_score: float
    first_frame: int
    last_frame: int
    first_time_s: float | None
    last_time_s: float | None
    frames_per_class: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: one line of `people.jsonl`."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["share"] = round(self.share, 4)
        record["mean_score"] = round(self.mean_score, 4)
        for key in ("first_time_s", "last_time_s"):
            if record[key] is not None:
                record[key] = round(record[key], 3)
        return record

    @property
    def compliant(self) -> bool:
        return self.label == COMPLIANT_CLASS


def people_summary(people: list[Person], class_names: tuple[str, ...]) -> dict:
    """Unique people, people per class and compliance over people (not over frames)."""
    per_class = {name: 0 for name in class_names}
    for person in people:
        per_class[person.label] += 1
    return {"people": len(people), "per_class": per_class, "compliance_rate": compliance_rate(per_class)}


class FaceTracker:
    """Follows faces across frames; `update` once per frame, `new_scene` between unrelated videos."""

    def __init__(self, class_names: tuple[str, ...], config: TrackerConfig | None = None) -> None:
        self.class_names = tuple(class_names)
        self.config = config or TrackerConfig()
        self.confirmed_now: list[Person] = []
        """The people confirmed by the latest `update` (a new person appears once, here)."""
        self._next_id = 1
        self._ended: list[Person] = []
        self._clear_tracks()

    def _clear_tracks(self) -> None:
        classes = len(self.class_names)
        self._state = np.zeros((0, 4), np.float64)  # centre x, centre y, width, height
        self._velocity = np.zeros((0, 4), np.float64)  # per frame
        self._ids = np.zeros(0, np.int64)  # 0 while tentative
        self._hits = np.zeros(0, np.int64)
        self._missed = np.zeros(0, np.int64)  # frames since the last match
        self._votes = np.zeros((0, classes), np.int64)
        self._score_votes = np.zeros((0, classes), np.float64)
        self._first_frame = np.zeros(0, np.int64)
        self._last_frame = np.zeros(0, np.int64)
        self._first_time = np.zeros(0, np.float64)  # NaN without times
        self._last_time = np.zeros(0, np.float64)
        self._frame = -1

    @property
    def live_tracks(self) -> int:
        """Tracks held now, tentative ones included (bounded by the faces in view, not by time)."""
        return len(self._ids)

    @property
    def people(self) -> list[Person]:
        """Everyone confirmed so far, in the order they were confirmed, with their current verdict."""
        live = [self._person(i) for i in np.flatnonzero(self._ids > 0)]
        return sorted(self._ended + live, key=lambda person: person.id)

    def verdicts(self) -> dict[int, str]:
        """Person id to class so far, for the people being followed now (what annotations show)."""
        rows = np.flatnonzero(self._ids > 0)
        classes = np.argmax(self._score_votes[rows], axis=1) if len(rows) else []
        return {int(self._ids[r]): self.class_names[int(c)] for r, c in zip(rows, classes)}

    def hidden_people(self) -> Detections:
        """The people being followed whom the latest frame's detections missed (a face turned away, blurred,
        or simply not detected), at their predicted boxes with their classes so far: what privacy blurring
        should cover too, since a missed face may still be in the picture."""
        rows = np.flatnonzero((self._ids > 0) & (self._missed > 0))
        centre, size = self._state[rows, :2], self._state[rows, 2:]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        frames = np.maximum(self._votes[rows].sum(axis=1), 1)
        scores = np.clip(self._score_votes[rows].sum(axis=1) / frames, 0.0, 1.0)
        classes = np.argmax(self._score_votes[rows], axis=1) if len(rows) else np.zeros(0, np.int64)
        return Detections(boxes, scores, classes, self.class_names, self._ids[rows])

    def summary(self) -> dict:
        """`people_summary` of everyone so far."""
        return people_summary(self.people, self.class_names)

    def new_scene(self) -> None:
        """End every track (the next frames come from another video or camera); ids keep counting."""
        self._ended += [self._person(i) for i in np.flatnonzero(self._ids > 0)]
        self._clear_tracks()
        self.confirmed_now = []

    def update(self, detections: Detections, frame_index: int | None = None, time_s: float | None = None) -> Detections:
        """Match one frame's detections to the tracks; returns them with `tracker_id` (the person's id,
        or `UNTRACKED`). `frame_index` defaults to one more than the last; `time_s` (seconds into the
        video) is recorded on people when given."""
        if tuple(detections.class_names) != self.class_names:
            raise FacemaskError(f"detections have classes {detections.class_names}, the tracker {self.class_names}")
        self._frame = self._frame + 1 if frame_index is None else int(frame_index)
        now = np.nan if time_s is None else float(time_s)
        config = self.config
        predicted = self._state + self._velocity
        hidden = self._missed > 0  # a hidden face keeps moving but keeps its size: a face going out of
        predicted[hidden, 2:] = self._state[hidden, 2:]  # view shrinks its box, which must not shrink on
        predicted[:, 2:] = np.maximum(predicted[:, 2:], 1.0)
        boxes = detections.xyxy.astype(np.float64)
        scores = detections.scores.astype(np.float64)
        confident = scores >= config.high_score

        track_of = np.full(len(detections), -1, np.int64)  # row of the track each detection went to
        free_tracks = np.ones(len(predicted), bool)
        first = np.flatnonzero(confident)
        _greedy_match(_iou(predicted, boxes[first]), config.match_iou, free_tracks, first, track_of)
        weak = np.flatnonzero(~confident)
        followed = free_tracks & (self._missed == 0)  # ByteTrack: only tracks seen last frame take weak boxes
        _greedy_match(
            _iou(np.where(followed[:, None], predicted, np.nan), boxes[weak]),
            config.low_match_iou,
            free_tracks,
            weak,
            track_of,
        )
        if config.rematch_distance > 0:
            unclaimed = first[track_of[first] < 0]
            hidden_people = free_tracks & (self._missed > 0) & (self._ids > 0)
            closeness = 1.0 - _centre_distance(predicted, boxes[unclaimed]) / config.rematch_distance
            _greedy_match(np.where(hidden_people[:, None], closeness, np.nan), 0.0, free_tracks, unclaimed, track_of)

        matched = np.flatnonzero(track_of >= 0)
        rows = track_of[matched]
        measured = _xyxy_to_cxcywh(boxes[matched])
        error = measured - predicted[rows]
        self._state = predicted
        self._state[rows] = predicted[rows] + config.position_gain * error
        self._velocity[rows] += config.velocity_gain * error / (self._missed[rows, None] + 1)
        self._hits[rows] += 1
        self._missed += 1
        self._missed[rows] = 0
        classes = detections.class_ids[matched]
        np.add.at(self._votes, (rows, classes), 1)
        np.add.at(self._score_votes, (rows, classes), scores[matched])
        self._last_frame[rows] = self._frame
        self._last_time[rows] = now

        self._end_tracks(
            keep=(self._missed == 0) | ((self._ids > 0) & (self._missed <= config.lost_frames)), track_of=track_of
        )
        opened = np.flatnonzero(confident & (track_of < 0))
        self._open_tracks(boxes[opened], detections.class_ids[opened], scores[opened], now)
        track_of[opened] = len(self._ids) - len(opened) + np.arange(len(opened))
        self._confirm()

        tracker_id = np.full(len(detections), UNTRACKED, np.int64)
        on_track = track_of >= 0
        tracker_id[on_track] = self._ids[track_of[on_track]]
        tracker_id[tracker_id == 0] = UNTRACKED
        return Detections(detections.xyxy, detections.scores, detections.class_ids, detections.class_names, tracker_id)

    def _end_tracks(self, keep: np.ndarray, track_of: np.ndarray) -> None:
        """Drop the tracks not kept (tentative ones missed once, people unseen too long); renumber rows."""
        ending = np.flatnonzero(~keep & (self._ids > 0))
        self._ended += [self._person(i) for i in ending]
        new_row = np.cumsum(keep) - 1
        moved = track_of >= 0
        track_of[moved] = np.where(keep[track_of[moved]], new_row[track_of[moved]], -1)
        for name in _ARRAYS:
            setattr(self, name, getattr(self, name)[keep])

    def _open_tracks(self, boxes: np.ndarray, class_ids: np.ndarray, scores: np.ndarray, now: float) -> None:
        n, classes = len(boxes), len(self.class_names)
        votes = np.zeros((n, classes), np.int64)
        votes[np.arange(n), class_ids] = 1
        score_votes = np.zeros((n, classes), np.float64)
        score_votes[np.arange(n), class_ids] = scores
        new = {
            "_state": _xyxy_to_cxcywh(boxes),
            "_velocity": np.zeros((n, 4)),
            "_ids": np.zeros(n, np.int64),
            "_hits": np.ones(n, np.int64),
            "_missed": np.zeros(n, np.int64),
            "_votes": votes,
            "_score_votes": score_votes,
            "_first_frame": np.full(n, self._frame),
            "_last_frame": np.full(n, self._frame),
            "_first_time": np.full(n, now),
            "_last_time": np.full(n, now),
        }
        for name in _ARRAYS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name].astype(getattr(self, name).dtype)]))

    def _confirm(self) -> None:
        """Give an id to the tentative tracks that have earned one."""
        mean_score = self._score_votes.sum(axis=1) / np.maximum(self._hits, 1)
        ready = np.flatnonzero(
            (self._ids == 0) & (self._hits >= self.config.min_frames) & (mean_score >= self.config.min_score)
        )
        self._ids[ready] = self._next_id + np.arange(len(ready))
        self._next_id += len(ready)
        self.confirmed_now = [self._person(i) for i in ready]

    def _person(self, row: int) -> Person:
        votes, score_votes = self._votes[row], self._score_votes[row]
        class_id = int(np.argmax(score_votes))
        frames = int(votes.sum())
        first_time, last_time = float(self._first_time[row]), float(self._last_time[row])
        return Person(
            id=int(self._ids[row]),
            label=self.class_names[class_id],
            class_id=class_id,
            share=float(votes[class_id] / max(frames, 1)),
            frames=frames,
            mean_score=float(score_votes.sum() / max(frames, 1)),
            first_frame=int(self._first_frame[row]),
            last_frame=int(self._last_frame[row]),
            first_time_s=None if np.isnan(first_time) else first_time,
            last_time_s=None if np.isnan(last_time) else last_time,
            frames_per_class={name: int(votes[i]) for i, name in enumerate(self.class_names)},
        )


_ARRAYS = (
    "_state",
    "_velocity",
    "_ids",
    "_hits",
    "_missed",
    "_votes",
    "_score_votes",
    "_first_frame",
    "_last_frame",
    "_first_time",
    "_last_time",
)


def _greedy_match(
    iou: np.ndarray, least: float, free_tracks: np.ndarray, columns: np.ndarray, track_of: np.ndarray
) -> None:
    """Pair tracks (rows) with detections (`columns` of the frame) by IoU, highest first, each at most once."""
    if not iou.size:
        return
    iou = np.where(free_tracks[:, None], np.nan_to_num(iou, nan=-1.0), -1.0)
    rows, cols = np.nonzero(iou >= least)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used = np.zeros(iou.shape[1], bool)
    for row, col in zip(rows[order].tolist(), cols[order].tolist()):
        if free_tracks[row] and not used[col]:
            free_tracks[row] = False
            used[col] = True
            track_of[columns[col]] = row


def _iou(tracks_cxcywh: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """[T, D] IoU between predicted track boxes (centre, size) and detections (corners)."""
    half = tracks_cxcywh[:, None, 2:] / 2
    t1, t2 = tracks_cxcywh[:, None, :2] - half, tracks_cxcywh[:, None, :2] + half
    d1, d2 = boxes_xyxy[None, :, :2], boxes_xyxy[None, :, 2:]
    overlap = np.clip(np.minimum(t2, d2) - np.maximum(t1, d1), 0, None).prod(axis=2)
    union = tracks_cxcywh[:, None, 2:].prod(axis=2) + (d2 - d1).prod(axis=2) - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        return overlap / union


def _centre_distance(tracks_cxcywh: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """[T, D] distance between centres in face sizes (the larger of the two boxes' longer sides); NaN
    where the sizes (square roots of the areas) differ by more than 2x."""
    detections = _xyxy_to_cxcywh(boxes_xyxy)
    distance = np.linalg.norm(tracks_cxcywh[:, None, :2] - detections[None, :, :2], axis=2)
    size = np.maximum(tracks_cxcywh[:, None, 2:].max(axis=2), detections[None, :, 2:].max(axis=2))
    ratio = np.sqrt(tracks_cxcywh[:, None, 2:].prod(axis=2) / np.maximum(detections[None, :, 2:].prod(axis=2), 1e-9))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((ratio >= 0.5) & (ratio <= 2.0), distance / size, np.nan)


def _xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
