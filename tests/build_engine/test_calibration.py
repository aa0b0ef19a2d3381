"""INT8 calibration (facemask_tools.build_engine.calibration): deterministic and cached, a cache key that covers
its inputs, and the entropy threshold equal to NVIDIA's reference."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from facemask_sdk.spec import METADATA_KEY, ModelSpec  # noqa: E402
from facemask_tools.build_engine import calibration  # noqa: E402
from facemask_tools.build_engine.int8 import to_int8  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_calibration_is_deterministic_and_cached(tiny_onnx: Path, sample_images, tmp_path: Path, monkeypatch):
    first = to_int8(tiny_onnx, tmp_path / "a.onnx", sample_images, "percentile", tmp_path / "cache-a")
    second = to_int8(tiny_onnx, tmp_path / "b.onnx", sample_images, "percentile", tmp_path / "cache-b")
    assert not first.cache_hit and not second.cache_hit
    ranges_a = json.loads(first.cache_path.read_text())["ranges"]
    ranges_b = json.loads(second.cache_path.read_text())["ranges"]
    assert ranges_a == ranges_b and len(ranges_a) > 100
    assert sha256(first.path) == sha256(second.path)

    def no_calibration(*args, **kwargs):
        raise AssertionError("the calibration cache should have been used")

    monkeypatch.setattr("facemask_tools.build_engine.int8.calibrate", no_calibration)
    third = to_int8(tiny_onnx, tmp_path / "c.onnx", sample_images, "percentile", tmp_path / "cache-a")
    assert third.cache_hit and third.cache_path == first.cache_path
    assert sha256(third.path) == sha256(first.path)
    with pytest.raises(AssertionError, match="cache should have been used"):  # other images: new key
        to_int8(tiny_onnx, tmp_path / "d.onnx", sample_images[:2], "percentile", tmp_path / "cache-a")


@pytest.mark.parametrize(
    "change, same",
    [
        ({}, True),
        ({"method": "minmax"}, False),
        ({"images": 3}, False),
        ({"op_types": ("Conv",)}, False),
        ({"image_size": (128, 128)}, False),
    ],
)
def test_calibration_key_covers_its_inputs(tiny_onnx: Path, sample_images, change, same):
    spec = ModelSpec.from_json({p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}[METADATA_KEY])
    base, _ = calibration.calibration_key(tiny_onnx, sample_images, "percentile", ("Conv", "Add"), spec)
    changed_spec = dataclasses.replace(spec, image_size=change["image_size"]) if "image_size" in change else spec
    key, _ = calibration.calibration_key(
        tiny_onnx,
        sample_images[: change.get("images", len(sample_images))],
        change.get("method", "percentile"),
        change.get("op_types", ("Conv", "Add")),
        changed_spec,
    )
    assert (key == base) is same


def entropy_reference(hist: np.ndarray, edges: np.ndarray, nq: int = 128, start: int = 128) -> float:
    """Loop transcription of pytorch-quantization's `_compute_amax_entropy` (stride 1)."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    divergences = []
    for i in range(start, len(bins) + 1):
        groups = np.digitize(range(i), np.linspace(0, i, num=nq + 1)) - 1
        groups[bins[:i] == 0] = -1
        sums, counts = np.zeros(nq), np.zeros(nq)
        for index, group in enumerate(groups):
            if group != -1:
                sums[group] += bins[index]
                counts[group] += 1
        q = np.array([sums[g] / counts[g] if g != -1 else 0.0 for g in groups])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            divergences.append(np.where(p > 0, p * np.log(p / q), 0.0).sum())
    divergences = np.array(divergences)
    return float(edges[len(divergences) - 1 - np.argmin(divergences[::-1]) + start])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_threshold_matches_nvidia_reference(seed: int):
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_t(3 + seed, 20000)) if seed % 2 else np.maximum(rng.normal(0.5, 1.0, 20000), 0)
    hist, edges = np.histogram(values, bins=300)
    assert calibration.entropy_amax(hist, edges) == entropy_reference(hist, edges)
    assert 0 < calibration.entropy_amax(hist, edges) <= edges[-1]
