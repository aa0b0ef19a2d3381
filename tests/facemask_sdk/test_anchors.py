"""NumPy anchors == effdet's `Anchors` boxes (yxyx -> xyxy), in the same order."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.anchors import feature_sizes, generate_anchors
from facemask_sdk.spec import AnchorSpec, ModelSpec


@pytest.mark.parametrize(
    ("architecture", "image_size"),
    [("tf_efficientdet_d0", 512), ("tf_efficientdet_lite0", 384), ("tf_efficientdet_d0", (384, 640))],
)
def test_anchors_equal_effdet(architecture: str, image_size: int | tuple[int, int]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("effdet")
    from effdet.anchors import Anchors

    from facemask_tools.training.model import effdet_config, make_spec

    spec = make_spec(architecture, image_size if isinstance(image_size, int) else None)
    if not isinstance(image_size, int):
        spec = ModelSpec(spec.architecture, image_size, mean=spec.mean, std=spec.std, anchors=spec.anchors)
    expected_yxyx = Anchors.from_config(effdet_config(spec)).boxes.numpy()

    anchors = generate_anchors(spec)

    assert anchors.dtype == np.float32
    assert anchors.shape == expected_yxyx.shape
    np.testing.assert_allclose(anchors, expected_yxyx[:, [1, 0, 3, 2]], rtol=0, atol=1e-4)


def test_anchor_count_and_first_anchor() -> None:
    spec = ModelSpec("tf_efficientdet_d0", (512, 512))
    anchors = generate_anchors(spec)
    cells = sum(64**2 // 4**k for k in range(5))  # 64x64 (P3) .. 4x4 (P7)
    assert anchors.shape == (cells * 9, 4)
    # P3, stride 8, first cell centre (4, 4), octave 0, aspect (1, 1): 4 * 8 = 32 px wide.
    np.testing.assert_array_equal(anchors[0], [-12, -12, 20, 20])


def test_anchors_cached_and_read_only() -> None:
    spec = ModelSpec("tf_efficientdet_d0", (256, 256))
    same = ModelSpec("tf_efficientdet_d0", (256, 256), code_version="other")
    assert generate_anchors(spec) is generate_anchors(same)
    with pytest.raises(ValueError):
        generate_anchors(spec)[0, 0] = 1.0


def test_scalar_aspect_ratio_like_effdet() -> None:
    anchor_spec = AnchorSpec(min_level=3, max_level=3, num_scales=1, aspect_ratios=(4.0,))
    spec = ModelSpec("x", (128, 128), anchors=anchor_spec)
    box = generate_anchors(spec)[0]
    width, height = box[2] - box[0], box[3] - box[1]
    assert width == pytest.approx(64.0) and height == pytest.approx(16.0)  # 32 * sqrt(4), 32 / sqrt(4)


def test_feature_sizes_round_up() -> None:
    assert feature_sizes((100, 60), 3) == [(100, 60), (50, 30), (25, 15), (13, 8)]
