"""The PyTorch baseline: effdet's own `DetBenchPredict` on a checkpoint, same inputs and outputs as `Detector`.

It sees exactly the runtime's letterboxed tensor (`facemask_sdk.preprocess`) and gets effdet's
`img_info` for it (`img_scale = 1 / letterbox.scale`, `img_size = [orig_w, orig_h]`), so effdet itself
maps boxes back to original pixels and clips them. Its output (1-based classes, zero-padded to
`max_det_per_image` rows) becomes `Detections` with 0-based class ids, filtered with the same score
threshold and cut at `max_detections`. effdet's NMS IoU is fixed at 0.5 and its top-k at the spec's
`max_detection_points`. Used by the benchmarks and the runtime parity tests; never imported by
`facemask_sdk`.

    >>> runner = TorchRunner("runs/train/exp1/best.pt")
    >>> detections = runner(image_bgr)
    >>> runner.last_timing
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from facemask_sdk.detections import Detections
from facemask_sdk.detector import ImageInput, load_image
from facemask_sdk.postprocess import PostprocessConfig
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.validation import unit_interval, whole_number
from facemask_tools.training.checkpoint import load_network
from facemask_tools.training.model import predict_bench

EFFDET_IOU_THRESHOLD = 0.5
"""effdet's `generate_detections` hard-codes this NMS IoU."""


class TorchRunner:
    """effdet's `DetBenchPredict` on a checkpoint; `runner(image)` / `runner.detect_batch(images)` -> `Detections`."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        score_threshold: float = PostprocessConfig.score_threshold,
        max_detections: int = PostprocessConfig.max_detections,
    ) -> None:
        unit_interval("score_threshold", score_threshold)
        whole_number("max_detections", max_detections)
        network, spec, payload = load_network(checkpoint)
        self.checkpoint = Path(checkpoint)
        self.spec = spec
        self.payload_info = {k: payload.get(k) for k in ("epoch", "metrics", "init")}
        self.device = torch.device(device)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.bench = predict_bench(network).to(self.device).eval()
        self.bench.max_det_per_image = self.max_detections
        self.last_timing: dict[str, float] = {}

    def __call__(self, image: ImageInput) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Iterable[ImageInput]) -> list[Detections]:
        """One effdet batch for all images; timings in `last_timing` (CUDA work synchronised)."""
        start = time.perf_counter()
        frames = [load_image(image, f"images[{i}]") for i, image in enumerate(images)]
        if not frames:
            return []
        t_load = time.perf_counter()
        prepared = [preprocess(frame, self.spec) for frame in frames]
        batch = torch.from_numpy(np.stack([chw for chw, _ in prepared])).to(self.device)
        img_info = _img_info([letterbox for _, letterbox in prepared], self.device)
        self._sync()
        t_pre = time.perf_counter()
        with torch.no_grad():
            output = self.bench(batch, img_info=img_info)
        self._sync()
        t_inf = time.perf_counter()
        results = [self._to_detections(rows) for rows in output.cpu().numpy()]
        t_post = time.perf_counter()
        self.last_timing = {
            "load_ms": (t_load - start) * 1e3,
            "preprocess_ms": (t_pre - t_load) * 1e3,
            # effdet's forward includes its own top-k, decoding and NMS.
            "inference_ms": (t_inf - t_pre) * 1e3,
            "postprocess_ms": (t_post - t_inf) * 1e3,
            "total_ms": (t_post - start) * 1e3,
            "images": len(frames),
        }
        return results

    def _to_detections(self, rows: np.ndarray) -> Detections:
        """effdet rows `[x1, y1, x2, y2, score, class (1-based, 0 = padding)]` -> Detections."""
        real = rows[:, 5] > 0
        # Same rule as facemask_sdk.postprocess: score > threshold, and threshold 0 keeps everything.
        keep = real if self.score_threshold == 0.0 else real & (rows[:, 4] > np.float32(self.score_threshold))
        rows = rows[keep][: self.max_detections]
        return Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64) - 1, self.spec.classes)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _img_info(letterboxes: Sequence[Letterbox], device: torch.device) -> dict[str, torch.Tensor]:
    """effdet's per-image `img_scale` (input px -> original px) and `img_size` ([width, height])."""
    scale = torch.tensor([1.0 / letterbox.scale for letterbox in letterboxes], dtype=torch.float32, device=device)
    size = torch.tensor(
        [[lb.original_hw[1], lb.original_hw[0]] for lb in letterboxes], dtype=torch.float32, device=device
    )
    return {"img_scale": scale, "img_size": size}
