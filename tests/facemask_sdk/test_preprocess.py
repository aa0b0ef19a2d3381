"""facemask_sdk.preprocess: letterbox geometry (hypothesis properties), the `preprocess` output it feeds the
network, and the letterbox as a tensor (how the serving ensemble hands it on)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facemask_sdk.image_io import decode_image
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import IMAGENET_MEAN_255, IMAGENET_STD_255, ModelSpec

sides = st.integers(min_value=1, max_value=4000)
input_sides = st.integers(min_value=1, max_value=12).map(lambda k: 128 * k)


@st.composite
def geometry_and_boxes(draw) -> tuple[Letterbox, np.ndarray]:
    letterbox = Letterbox.fit((draw(sides), draw(sides)), (draw(input_sides), draw(input_sides)))
    height, width = letterbox.original_hw
    n = draw(st.integers(min_value=1, max_value=8))
    unit = st.floats(min_value=0.0, max_value=1.0)
    corners = np.array([[draw(unit) for _ in range(4)] for _ in range(n)])
    xs = np.sort(corners[:, [0, 2]], axis=1) * width
    ys = np.sort(corners[:, [1, 3]], axis=1) * height
    return letterbox, np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1).astype(np.float32)


@settings(max_examples=200, deadline=None)
@given(geometry_and_boxes())
def test_boxes_round_trip(case: tuple[Letterbox, np.ndarray]) -> None:
    letterbox, boxes = case
    back = letterbox.to_original(letterbox.to_input(boxes))
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-3)


@settings(max_examples=300, deadline=None)
@given(sides, sides, input_sides, input_sides)
def test_resized_fits_and_fills_one_side(height: int, width: int, input_h: int, input_w: int) -> None:
    letterbox = Letterbox.fit((height, width), (input_h, input_w))
    resized_h, resized_w = letterbox.resized_hw
    assert 1 <= resized_h <= input_h and 1 <= resized_w <= input_w
    assert resized_h == input_h or resized_w == input_w  # aspect kept, as large as fits


@settings(max_examples=200, deadline=None)
@given(geometry_and_boxes())
def test_input_boxes_lie_inside_the_content(case: tuple[Letterbox, np.ndarray]) -> None:
    letterbox, boxes = case
    inside = letterbox.to_input(boxes)
    input_h, input_w = letterbox.input_hw
    assert np.all(inside >= 0)
    assert np.all(inside[:, 0::2] <= min(letterbox.original_hw[1] * letterbox.scale, input_w) + 1e-3)
    assert np.all(inside[:, 1::2] <= min(letterbox.original_hw[0] * letterbox.scale, input_h) + 1e-3)


def test_to_original_clips_to_the_image() -> None:
    letterbox = Letterbox.fit((100, 200), (256, 256))
    np.testing.assert_array_equal(letterbox.to_original([[-10, -10, 300, 300]]), [[0, 0, 200, 100]])


SPEC = ModelSpec("tf_efficientdet_d0", (512, 512), mean=IMAGENET_MEAN_255, std=IMAGENET_STD_255)


def test_preprocess_padding_is_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 700, 3), dtype=np.uint8)
    canvas, letterbox = preprocess(image, SPEC)
    assert canvas.dtype == np.float32 and canvas.shape == (3, 512, 512)
    height, width = letterbox.resized_hw
    assert (height, width) == (219, 512)  # round(300 * 512 / 700)
    assert np.all(canvas[:, height:, :] == 0.0)
    assert np.any(canvas[:, height - 1, :] != 0.0)


@pytest.mark.parametrize(("y", "x"), [(0, 0), (17, 230), (511, 255)])
def test_preprocess_is_rgb_normalised(y: int, x: int) -> None:
    """A 512x256 image needs no resize, so every pixel maps exactly: channel c = (RGB[c] - mean) / std."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(512, 256, 3), dtype=np.uint8)
    canvas, letterbox = preprocess(image, SPEC)
    assert letterbox.scale == 1.0 and letterbox.resized_hw == (512, 256)
    blue, green, red = image[y, x].astype(np.float32)
    expected = [(v - m) / s for v, m, s in zip((red, green, blue), IMAGENET_MEAN_255, IMAGENET_STD_255)]
    np.testing.assert_allclose(canvas[:, y, x], expected, rtol=1e-6)
    assert np.all(canvas[:, :, 256:] == 0.0)


def test_preprocess_channel_order_on_a_pure_colour() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[..., 2] = 255  # pure red in BGR
    canvas, _ = preprocess(image, SPEC)
    red, green, blue = canvas[:, 10, 10]
    assert red == pytest.approx((255 - IMAGENET_MEAN_255[0]) / IMAGENET_STD_255[0])
    assert green == pytest.approx(-IMAGENET_MEAN_255[1] / IMAGENET_STD_255[1])
    assert blue == pytest.approx(-IMAGENET_MEAN_255[2] / IMAGENET_STD_255[2])


def test_letterbox_geometry_as_a_tensor_maps_boxes_the_same(sample_images) -> None:
    image = decode_image(sample_images[0].read_bytes())
    letterbox = Letterbox.fit(image.shape[:2], (640, 640))
    again = Letterbox.from_array(letterbox.as_array())
    boxes = np.array([[10.0, 20.0, 300.0, 200.0], [0.0, 0.0, 640.0, 640.0]], np.float32)
    np.testing.assert_array_equal(again.to_original(boxes), letterbox.to_original(boxes))
    assert again.original_hw == letterbox.original_hw and again.input_hw == letterbox.input_hw
