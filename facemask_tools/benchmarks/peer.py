"""A peer in the bench table: Ultralytics YOLO11n exported to ONNX Runtime at the same input size.

Speed only. The peer is another task's detector (COCO classes), so its boxes are not scored against
this data; what the row answers is whether our end-to-end time per frame is competitive with a small
modern detector on the same machine and runtime. Its network is built from Ultralytics' own
`yolo11n.yaml` and exported with its own exporter (`opset` 17, fixed size, batch 1); where no trained
`yolo11n.pt` is on disk (this workplace cannot download one) the weights are its random initialisation,
which changes no operator and so not the network's time, while fewer of its boxes pass the score
threshold, so its post-processing time is a lower bound. `ultralytics` is never a dependency of the
product: without it the row is skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError

PEER_NAME = "yolo11n"
PEER_WEIGHTS_ENV = "FACEMASK_BENCH_YOLO11N"
"""A trained `yolo11n.pt` to use instead of the architecture's random initialisation (same speed)."""


def peer_available() -> tuple[bool, str]:
    """(True, "") when the peer can be exported and run here, else (False, why)."""
    missing = [name for name in ("ultralytics", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return (
            False,
            f"the YOLO11n peer row needs {' and '.join(missing)} (pip install ultralytics; never a product dependency)",
        )
    return True, ""


def export_peer(size: int, folder: Path) -> tuple[Path, str]:
    """YOLO11n at `size` px as ONNX in `folder`; (path, where its weights came from)."""
    from ultralytics import YOLO

    weights = os.environ.get(PEER_WEIGHTS_ENV)
    source = weights if weights and Path(weights).is_file() else f"{PEER_NAME}.yaml"
    previous = Path.cwd()
    os.chdir(folder)  # Ultralytics writes an architecture-only export next to the working directory
    try:
        exported = YOLO(source).export(
            format="onnx", imgsz=size, opset=17, simplify=False, dynamic=False, verbose=False
        )
    finally:
        os.chdir(previous)
    path = Path(exported) if Path(exported).is_absolute() else folder / exported
    return path, (
        "trained weights " + source
    ) if source != f"{PEER_NAME}.yaml" else "random initialisation (no yolo11n.pt here)"


class PeerDetector:
    """YOLO11n on ONNX Runtime with the usual pre- and post-processing of such a deployment: letterbox to
    the square input (grey 114 padding, RGB, /255), then class-agnostic score filtering and OpenCV NMS.
    `detect_batch` and `last_timing` follow `Detector`, so the bench times it the same way."""

    def __init__(
        self, size: int, score_threshold: float, iou_threshold: float = 0.5, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.size, self.score_threshold, self.iou_threshold = size, score_threshold, iou_threshold
        self._folder = tempfile.TemporaryDirectory(prefix="facemask-peer-")
        self.path, self.weights = export_peer(size, Path(self._folder.name))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.last_timing: dict[str, float] = {}

    def _preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        height, width = image_bgr.shape[:2]
        scale = min(self.size / height, self.size / width)
        new_w, new_h = round(width * scale), round(height * scale)
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        pad_x, pad_y = (self.size - new_w) // 2, (self.size - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        return np.ascontiguousarray(tensor), scale, pad_x, pad_y

    def _postprocess(self, output: np.ndarray, scale: float, pad_x: float, pad_y: float) -> Detections:
        rows = output[0].T  # [anchors, 4 + classes]: cx, cy, w, h, class scores
        scores = rows[:, 4:].max(axis=1)
        keep = scores > self.score_threshold
        rows, scores = rows[keep], scores[keep]
        if not len(rows):
            return Detections.empty()
        class_ids = rows[:, 4:].argmax(axis=1)
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        xyxy = np.stack([cx - w / 2 - pad_x, cy - h / 2 - pad_y, cx + w / 2 - pad_x, cy + h / 2 - pad_y], 1) / scale
        xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])
        kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.score_threshold, self.iou_threshold, top_k=100)
        kept = np.asarray(kept, np.int64).reshape(-1)
        names = tuple(f"coco{i}" for i in range(rows.shape[1] - 4))
        return Detections(xyxy[kept].astype(np.float32), scores[kept].astype(np.float32), class_ids[kept], names)

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        if self._session is None:
            raise FacemaskError("the peer detector is closed")
        totals = {"preprocess_ms": 0.0, "inference_ms": 0.0, "postprocess_ms": 0.0}
        results = []
        for image in images:
            t0 = time.perf_counter()
            tensor, scale, pad_x, pad_y = self._preprocess(image)
            t1 = time.perf_counter()
            (output,) = self._session.run(None, {self._input: tensor})
            t2 = time.perf_counter()
            results.append(self._postprocess(output, scale, pad_x, pad_y))
            t3 = time.perf_counter()
            for stage, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2)):
                totals[stage] += seconds * 1e3
        self.last_timing = totals
        return results

    def close(self) -> None:
        self._session = None
        self._folder.cleanup()
