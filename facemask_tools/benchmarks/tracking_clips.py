"""Test videos with known people: labelled faces of the CC0 samples moved over a background.

Each clip is a list of BGR frames and, per frame, the ground truth: the box and class of every person
in view (a person hidden behind something is not in view). People walk across, cross each other, pass
behind a pillar, walk towards the camera; a panned and zoomed view over a real photo keeps that photo's
own faces. The tracker's tests and its benchmark read the same clips.

    facemask-sdk dev tracking-clips --out runs/clips   # writes them as .mp4, to look at
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click
import cv2
import numpy as np

from facemask_sdk.postprocess import box_iou_one_to_many
from facemask_sdk.spec import CLASSES
from facemask_sdk.voc import VocDataset
from facemask_tools.paths import SAMPLES

CLIP_FACES = SAMPLES / "clip-faces"
"""One more CC0 photo of the same dataset, for a large unmasked face (the four samples' are small or cut)."""
FRAME_W, FRAME_H = 640, 480
FPS = 15.0
FACE_MARGIN = 0.35
"""Share of the face box added on every side of a pasted face (hair, neck, some background)."""
FACES = {
    "with_mask": (SAMPLES, "maksssksksss7", 0),
    "with_mask_2": (SAMPLES, "maksssksksss29", 0),
    "without_mask": (CLIP_FACES, "maksssksksss540", 0),
    "mask_weared_incorrect": (SAMPLES, "maksssksksss29", 1),
}
"""The sample faces the clips are made of: (folder, image stem, box index), each named by its class."""


@dataclass
class Clip:
    """Frames of one scene and, per frame, {person: (xyxy box, class name)} of the people in view."""

    name: str
    frames: list[np.ndarray] = field(default_factory=list)
    truth: list[dict[int, tuple[np.ndarray, str]]] = field(default_factory=list)
    fps: float = FPS

    @property
    def people(self) -> dict[int, str]:
        """Every person of the clip and their class."""
        return {person: label for frame in self.truth for person, (_, label) in frame.items()}

    def people_per_class(self) -> dict[str, int]:
        counts = {name: 0 for name in CLASSES}
        for label in self.people.values():
            counts[label] += 1
        return counts

    def write(self, path: Path) -> Path:
        """The clip as a video: `.mkv` lossless (FFV1: the frames the ground truth describes, exactly),
        anything else MPEG-4 Part 2 (`mp4v`, lossy, as a cheap camera would record it)."""
        codec = "FFV1" if Path(path).suffix.lower() == ".mkv" else "mp4v"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), self.fps, (FRAME_W, FRAME_H))
        for image in self.frames:
            writer.write(image)
        writer.release()
        return path


def face_patch(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(patch, face box inside the patch, class) of one of `FACES`, with `FACE_MARGIN` around the face."""
    folder, stem, index = FACES[name]
    record = next(r for r in VocDataset(folder) if r.stem == stem)
    image = record.load()
    x1, y1, x2, y2 = record.boxes[index].astype(float)
    grow_x, grow_y = (x2 - x1) * FACE_MARGIN, (y2 - y1) * FACE_MARGIN
    left, top = int(max(0, x1 - grow_x)), int(max(0, y1 - grow_y))
    right, bottom = int(min(image.shape[1], x2 + grow_x)), int(min(image.shape[0], y2 + grow_y))
    face = np.array([x1 - left, y1 - top, x2 - left, y2 - top])
    return image[top:bottom, left:right].copy(), face, CLASSES[int(record.class_ids[index])]


def background(seed: int = 0) -> np.ndarray:
    """A plain wall-and-floor scene with some texture, so no part of it looks like a face."""
    rng = np.random.default_rng(seed)
    image = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    image[: FRAME_H * 2 // 3] = (150, 170, 185)
    image[FRAME_H * 2 // 3 :] = (90, 95, 105)
    noise = rng.normal(0, 6, image.shape)
    return np.clip(cv2.GaussianBlur(image + noise, (5, 5), 0), 0, 255).astype(np.uint8)


class _Scene:
    """Pastes face patches at a given face size and centre; remembers the ground truth of the frame."""

    def __init__(self, names: list[str]) -> None:
        self.patches = {name: face_patch(name) for name in set(names)}

    def paste(self, canvas: np.ndarray, name: str, centre: tuple[float, float], face_height: float) -> np.ndarray:
        """Pastes the patch so its face is `face_height` px tall at `centre`; returns the face's box."""
        patch, face, _ = self.patches[name]
        scale = face_height / (face[3] - face[1])
        resized = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        fx1, fy1, fx2, fy2 = face * scale
        left = int(round(centre[0] - (fx1 + fx2) / 2))
        top = int(round(centre[1] - (fy1 + fy2) / 2))
        h, w = resized.shape[:2]
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, min(h, w) / 20))[..., None]
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + w, FRAME_W), min(top + h, FRAME_H)
        if x1 <= x0 or y1 <= y0:
            return np.array([0, 0, 0, 0], np.float32)
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        part = resized[y0 - top : y1 - top, x0 - left : x1 - left].astype(np.float32)
        alpha = mask[y0 - top : y1 - top, x0 - left : x1 - left]
        canvas[y0:y1, x0:x1] = (alpha * part + (1 - alpha) * region).astype(np.uint8)
        box = np.array([left + fx1, top + fy1, left + fx2, top + fy2], np.float32)
        return np.clip(box, 0, [FRAME_W, FRAME_H, FRAME_W, FRAME_H]).astype(np.float32)

    def label(self, name: str) -> str:
        return self.patches[name][2]


def _walk(name: str, frames: int, people: list[tuple[str, callable]], occluders: tuple = ()) -> Clip:
    """A clip where each person is (face name, t -> (cx, cy, face height) or None when not in view);
    later people are drawn in front of earlier ones, occluders (x1, y1, x2, y2) in front of everyone."""
    scene = _Scene([face for face, _ in people])
    clip = Clip(name)
    base = background()
    for t in range(frames):
        canvas = base.copy()
        truth = {}
        for person, (face, path) in enumerate(people, start=1):
            where = path(t)
            if where is None:
                continue
            box = scene.paste(canvas, face, where[:2], where[2])
            hidden = any(_covered(box, o) > 0.5 for o in occluders)
            if box[2] - box[0] >= 8 and not hidden:
                truth[person] = (box, scene.label(face))
        for x1, y1, x2, y2 in occluders:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), (60, 70, 80), -1)
        clip.frames.append(canvas)
        clip.truth.append(truth)
    return clip


def _covered(box: np.ndarray, occluder: tuple) -> float:
    """Share of `box` behind `occluder`."""
    w = max(0.0, min(box[2], occluder[2]) - max(box[0], occluder[0]))
    h = max(0.0, min(box[3], occluder[3]) - max(box[1], occluder[1]))
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    return float(w * h / area)


def crossing(frames: int = 40) -> Clip:
    """Two people walk towards each other and cross, the second passing in front of the first."""
    return _walk(
        "crossing",
        frames,
        [
            ("with_mask", lambda t: (90 + 12 * t, 220, 110)),
            ("without_mask", lambda t: (560 - 12 * t, 250, 110)),
        ],
    )


def pillar(frames: int = 40) -> Clip:
    """One person walks behind a pillar (hidden for several frames) and out again; another stands still."""
    return _walk(
        "pillar",
        frames,
        [
            ("without_mask", lambda t: (60 + 13 * t, 230, 100)),
            ("mask_weared_incorrect", lambda t: (520, 160, 100)),
        ],
        occluders=((260, 120, 360, 400),),
    )


def approach(frames: int = 40) -> Clip:
    """One person walks towards the camera: the face grows from 70 to 300 px; one more passes behind."""
    return _walk(
        "approach",
        frames,
        [
            ("with_mask_2", lambda t: (100 + 11 * t, 160, 90) if t < 36 else None),
            ("without_mask", lambda t: (330, 250, 70 + 230 * t / (frames - 1))),
        ],
    )


def pan_over_photo(frames: int = 40, stem: str = "maksssksksss7") -> Clip:
    """A camera panning and zooming over one real photo: its labelled faces are the people."""
    record = next(r for r in VocDataset(SAMPLES) if r.stem == stem)
    image = record.load()
    clip = Clip("pan")
    for t in range(frames):
        zoom = 1.6 + 0.6 * t / (frames - 1)  # the view narrows from 1/1.6 to 1/2.2 of the photo's width
        view_w, view_h = image.shape[1] / zoom, image.shape[1] / zoom * FRAME_H / FRAME_W
        cx = view_w / 2 + (image.shape[1] - view_w) * (0.15 + 0.7 * t / (frames - 1))
        cy = min(max(image.shape[0] / 2, view_h / 2), image.shape[0] - view_h / 2)
        x0, y0 = cx - view_w / 2, cy - view_h / 2
        scale = FRAME_W / view_w
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
        clip.frames.append(
            cv2.warpAffine(image, matrix, (FRAME_W, FRAME_H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        )
        truth = {}
        for person, (box, class_id) in enumerate(zip(record.boxes, record.class_ids), start=1):
            moved = (box - [x0, y0, x0, y0]) * scale
            clipped = np.clip(moved, 0, [FRAME_W, FRAME_H, FRAME_W, FRAME_H])
            inside = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) / max(np.prod(moved[2:] - moved[:2]), 1e-6)
            if inside > 0.6:
                truth[person] = (clipped.astype(np.float32), CLASSES[int(class_id)])
        clip.truth.append(truth)
    return clip


CLIPS = {"crossing": crossing, "pillar": pillar, "approach": approach, "pan": pan_over_photo}


def identity_switches(clip: Clip, tracked_per_frame: list, least_iou: float = 0.5) -> tuple[int, dict[int, set[int]]]:
    """(ID switches, tracker ids seen per true person): a switch is a person's matched tracker id
    changing from one frame where they are matched to the next (MOT's IDSW, without the re-match rule)."""
    seen: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    switches = 0
    for truth, tracked in zip(clip.truth, tracked_per_frame):
        for person, (box, _) in truth.items():
            if not len(tracked):
                continue
            ious = np.nan_to_num(box_iou_one_to_many(box, tracked.xyxy), nan=0.0)
            best = int(np.argmax(ious))
            tracker_id = int(tracked.tracker_id[best])
            if ious[best] < least_iou or tracker_id < 1:
                continue
            seen.setdefault(person, set()).add(tracker_id)
            if person in last and last[person] != tracker_id:
                switches += 1
            last[person] = tracker_id
    return switches, seen


@click.command("tracking-clips")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(out: Path) -> None:
    """Write the tracker's test clips as .mp4 files (NAME.mp4 in --out), to look at."""
    out.mkdir(parents=True, exist_ok=True)
    for name, make in CLIPS.items():
        clip = make()
        path = clip.write(out / f"{name}.mp4")
        click.echo(f"{path}: {len(clip.frames)} frames, people {clip.people_per_class()}")
