"""INT8 calibration: the FP32 range of every tensor to quantise, measured on pre-processed images,
and its JSON cache.

Methods (all symmetric, as TensorRT's INT8 is):
- `minmax`: max |x| over the images (ONNX Runtime's `MinMaxCalibrater`).
- `percentile`: the 99.99th percentile of |x| (ONNX Runtime's `PercentileCalibrater`, 2048 bins).
- `entropy`: the threshold minimising the KL divergence between the |x| histogram (2048 bins, from
  the same histogram collector) and its 128-level quantisation: TensorRT's entropy calibration as
  NVIDIA published it (pytorch-quantization's `_compute_amax_entropy`), vectorised here. ONNX
  Runtime's own `EntropyCalibrater` takes minutes per model in Python loops and, with its default
  bins (128 = the number of quantised bins), returns the full range, i.e. max calibration.

The cache (one JSON file per key) holds the ranges and what they were computed from; the key is a
sha256 of the model bytes, the images' bytes in order, the method and its settings, the op types
and the pre-processing spec (and the onnxruntime version), so any change recalibrates.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemask_sdk.errors import InternalError
from facemask_sdk.files import file_sha256, write_atomically
from facemask_sdk.image_io import read_image
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "percentile"
"""Chosen by measurement (`facemask-sdk dev measure-precision`) on the 384 px reference model of commit
1a96079: within 1 mAP point of FP32 on both val (-0.77) and train (-0.19), where minmax lost 1.05 on
train and entropy 1.28 on val; it also changes the outputs less than minmax does."""
CALIBRATOR_SETTINGS: dict[str, dict] = {
    # every value is part of the cache key
    "minmax": {"symmetric": True},
    "entropy": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128, "start_bin": 128},
    "percentile": {"symmetric": True, "num_bins": 2048, "percentile": 99.99},
}
CHUNK = 8
"""Images per ONNX Runtime calibration pass (bounds the memory held for intermediate outputs)."""
CACHE_FORMAT = 1


def calibration_key(
    onnx_path: Path, images: list[Path], method: str, op_types: tuple[str, ...], spec: ModelSpec
) -> tuple[str, dict]:
    """(sha256 hex key, the data it hashes): model bytes, image bytes in order, method, settings, spec."""
    import onnxruntime

    data = {
        "format": CACHE_FORMAT,
        "onnx_sha256": file_sha256(onnx_path),
        "images_sha256": [file_sha256(p) for p in images],
        "method": method,
        "settings": CALIBRATOR_SETTINGS[method],
        "op_types": list(op_types),
        "preprocess": {
            "image_size": list(spec.image_size),
            "mean": list(spec.mean),
            "std": list(spec.std),
            "letterbox": "top-left, cv2.INTER_LINEAR, BGR->RGB",
        },
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest(), data


def calibrate(
    prepared: Path, images: list[Path], spec: ModelSpec, method: str, op_types: tuple[str, ...], workdir: Path
) -> dict[str, tuple[float, float]]:
    """FP32 range (low, high) of every input/output tensor of `op_types` nodes in `prepared`."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    settings = CALIBRATOR_SETTINGS[method]
    if method == "minmax":
        ort_method, options = CalibrationMethod.MinMax, {"symmetric": True}
    else:  # entropy works on the |x| histograms the percentile calibrator collects
        ort_method = CalibrationMethod.Percentile
        options = {"symmetric": True, "num_bins": settings["num_bins"], "percentile": settings.get("percentile", 99.99)}
    log.info("calibrating (%s) on %d images", method, len(images))
    calibrator = create_calibrator(
        str(prepared),
        list(op_types),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=ort_method,
        providers=["CPUExecutionProvider"],
        extra_options=options,
    )
    input_name = calibrator.infer_session.get_inputs()[0].name
    chatter = io.StringIO()  # ONNX Runtime's histogram calibrators print progress to stdout
    # minutes at 768 px on two cores: a bar on stderr (tqdm, off when stderr is not a terminal)
    with (
        contextlib.redirect_stdout(chatter),
        tqdm(total=len(images), desc=f"calibrating ({method})", unit="img", disable=None, leave=False) as bar,
    ):
        for start in range(0, len(images), CHUNK):
            chunk = images[start : start + CHUNK]
            calibrator.collect_data(_ImageReader(chunk, spec, input_name))
            bar.update(len(chunk))
        if method == "entropy":
            histograms = calibrator.collector.get_histogram_dict()
            ranges = {}
            for name in sorted(histograms):
                hist, edges = histograms[name][0], histograms[name][1]
                amax = entropy_amax(hist, edges, settings["num_quantized_bins"], settings["start_bin"])
                ranges[name] = (-amax, amax)
            return ranges
        tensors = calibrator.compute_data()
    log.debug("%s", chatter.getvalue())
    ranges = {}
    for name, data in sorted(tensors.data.items()):
        low, high = (np.asarray(v, dtype=np.float32).reshape(-1) for v in data.range_value)
        if low.size != 1 or high.size != 1:
            raise InternalError(f"calibration gave a per-channel range for activation {name!r}")
        ranges[name] = (float(low[0]), float(high[0]))
    return ranges


def entropy_amax(hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int = 128, start_bin: int = 128) -> float:
    """The |x| clipping threshold with the least KL divergence between the histogram clipped there
    (outliers folded into the last bin) and its `num_quantized_bins`-level quantisation.

    NVIDIA's algorithm (pytorch-quantization `_compute_amax_entropy`, stride 1, last minimum wins;
    the first bin is set to the second to discount the zeros of ReLU-like outputs), evaluated for
    blocks of candidate thresholds at once.
    """
    hist = np.asarray(hist, dtype=np.float64).copy()
    edges = np.asarray(edges, dtype=np.float64)
    nbins = hist.size
    if nbins <= start_bin:
        return float(edges[-1])
    hist[0] = hist[1]
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    nonzero = hist > 0
    k = np.arange(nbins)
    candidates = np.arange(start_bin, nbins + 1)
    divergences = np.empty(candidates.size)
    block = max(1, (1 << 18) // nbins)
    for first in range(0, candidates.size, block):
        ends = candidates[first : first + block][:, None]  # [C, 1]
        inside = k[None, :] < ends  # [C, K]
        groups = np.where(inside, (k[None, :] * num_quantized_bins) // ends, num_quantized_bins)
        flat = groups + (num_quantized_bins + 1) * np.arange(ends.shape[0])[:, None]
        size = ends.shape[0] * (num_quantized_bins + 1)
        sums = np.bincount(flat.ravel(), weights=np.broadcast_to(hist, flat.shape).ravel(), minlength=size)
        counts = np.bincount(
            flat.ravel(), weights=np.broadcast_to(nonzero, flat.shape).ravel().astype(np.float64), minlength=size
        )
        spread = (sums / np.maximum(counts, 1.0))[flat]
        q = np.where(inside & nonzero[None, :], spread, 0.0)
        p = np.where(inside, hist[None, :], 0.0)
        p[np.arange(ends.shape[0]), ends[:, 0] - 1] += tail[ends[:, 0]]
        p /= p.sum(axis=1, keepdims=True)
        q_total = q.sum(axis=1, keepdims=True)
        q = np.divide(q, q_total, out=np.zeros_like(q), where=q_total > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        divergences[first : first + block] = terms.sum(axis=1)
    best = divergences.size - 1 - int(np.argmin(divergences[::-1]))
    return float(edges[candidates[best]])


class _ImageReader:
    """ONNX Runtime `CalibrationDataReader`: one pre-processed image `[1, 3, H, W]` per `get_next()`."""

    def __init__(self, paths: list[Path], spec: ModelSpec, input_name: str) -> None:
        self._paths = iter(paths)
        self._spec = spec
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._paths, None)
        if path is None:
            return None
        chw, _ = preprocess(read_image(path), self._spec)
        return {self._input_name: chw[None]}


def read_cache(path: Path, key: str) -> dict[str, tuple[float, float]] | None:
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable calibration cache %s (%s)", path, exc)
        return None
    if payload.get("key") != key or not isinstance(payload.get("ranges"), dict):
        log.warning("ignoring calibration cache %s: it was made for other inputs", path)
        return None
    return {name: (float(low), float(high)) for name, (low, high) in payload["ranges"].items()}


def write_cache(path: Path, key: str, key_data: dict, ranges: dict, seconds: float) -> None:
    payload = {
        "key": key,
        "inputs": key_data,
        "seconds": round(seconds, 1),
        "ranges": {name: [low, high] for name, (low, high) in ranges.items()},
    }
    write_atomically(path, json.dumps(payload, indent=1, sort_keys=True).encode(), overwrite=True)
