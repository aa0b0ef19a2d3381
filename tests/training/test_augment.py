"""Augmentation (facemask_tools.training.augment): seeded, boxes kept inside, crops keep the evaluation face scale,
mosaic and copy-paste keep boxes valid."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_tools.training.augment import AugmentConfig, augment  # noqa: E402
from facemask_tools.training.model import make_spec  # noqa: E402


def test_augmentation_is_seeded_and_keeps_boxes_inside():
    import numpy as np

    spec = make_spec("tf_efficientdet_lite0", 256)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [300, 200, 390, 290]], np.float32)
    classes = np.array([0, 2])
    a = augment(image, boxes, classes, spec, AugmentConfig.strength("strong"), np.random.default_rng(5))
    b = augment(image, boxes, classes, spec, AugmentConfig.strength("strong"), np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (3, 256, 256)
    assert (a[1] >= 0).all() and (a[1] <= 256).all()
    plain = augment(image, boxes, classes, spec, AugmentConfig.strength("none"), np.random.default_rng(5))
    np.testing.assert_allclose(plain[1], boxes * 256 / 400, atol=1e-3)  # no jitter: pure letterbox scale


def test_multi_scale_gives_faces_the_scale_of_the_drawn_input_size():
    from dataclasses import replace

    import numpy as np

    spec = make_spec("tf_efficientdet_lite0", 256)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [300, 200, 390, 290]], np.float32)
    none = AugmentConfig.strength("none")
    halved = replace(none, canvas_scales=(0.5,))  # a 128 px input for the 256 px model
    _, out_boxes, _ = augment(image, boxes, np.array([0, 2]), spec, halved, np.random.default_rng(1))
    np.testing.assert_allclose(out_boxes, boxes * 128 / 400, atol=1e-3)
    # the size is drawn per sample from the list: both scales occur
    mixed = replace(none, canvas_scales=(0.5, 1.0))
    widths = {
        round(float(augment(image, boxes, np.array([0, 2]), spec, mixed, np.random.default_rng(seed))[1][0, 2]), 2)
        for seed in range(12)
    }
    assert widths == {round(60 * 128 / 400, 2), round(60 * 256 / 400, 2)}


def test_crop_training_keeps_the_evaluation_face_scale():
    import numpy as np

    spec = make_spec("tf_efficientdet_lite0", 256)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [300, 200, 390, 290]], np.float32)
    none = AugmentConfig.strength("none")
    tensor, out_boxes, _ = augment(image, boxes, np.array([0, 2]), spec, none, np.random.default_rng(1), (128, 128))
    assert tensor.shape == (3, 128, 128)
    widths = out_boxes[:, 2] - out_boxes[:, 0]
    full_width = (boxes[:, 2] - boxes[:, 0]) * 256 / 400
    # every box kept whole inside the crop has the width it has at the 256 px input
    whole = (out_boxes[:, 0] > 0) & (out_boxes[:, 2] < 128) & (out_boxes[:, 1] > 0) & (out_boxes[:, 3] < 128)
    assert np.isin(np.round(widths[whole], 3), np.round(full_width, 3)).all()


def test_mosaic_and_copy_paste_keep_boxes_valid():
    import numpy as np

    from facemask_tools.training.augment import mosaic, paste_patches

    spec = make_spec("tf_efficientdet_lite0", 256)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [300, 200, 390, 290]], np.float32)
    patch = np.full((30, 20, 3), 7, np.uint8)
    pasted, new_boxes, new_classes = paste_patches(image, boxes, np.array([0, 1]), [(patch, 2)], rng)
    assert len(new_boxes) == 3 and new_classes.tolist() == [0, 1, 2] and not np.shares_memory(pasted, image)
    x0, y0, x1, y1 = new_boxes[2].astype(int)
    assert (pasted[y0:y1, x0:x1] == 7).all() and (image != pasted).any()
    canvas, m_boxes, m_classes = mosaic([(pasted, new_boxes, new_classes)] * 4, spec, AugmentConfig(), rng, (256, 256))
    assert canvas.shape == (3, 256, 256) and len(m_boxes) == len(m_classes) > 0
    assert (m_boxes >= 0).all() and (m_boxes <= 256).all()
    assert (m_boxes[:, 2] > m_boxes[:, 0]).all() and (m_boxes[:, 3] > m_boxes[:, 1]).all()


def test_zoom_spreads_one_face_over_every_size_bucket_and_keeps_it_whole():
    import numpy as np

    from facemask_sdk.metrics import FACE_SIZE_BUCKETS, face_sizes
    from facemask_tools.training.augment import ZOOM_LARGEST_SHARE, zoom_on_face

    spec = make_spec("tf_efficientdet_lite0", 768)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
    boxes = np.array([[300, 160, 500, 420]], np.float32)  # one 200x260 face, taller than wide
    sizes = []
    for _ in range(200):
        tensor, out, classes = zoom_on_face(image, boxes, np.array([1]), spec, AugmentConfig(), rng, (384, 384))
        assert tensor.shape == (3, 384, 384) and (out >= 0).all() and (out <= 384).all()
        assert len(out) == 1 and classes.tolist() == [1]  # the chosen face is never cut away
        height = out[0, 3] - out[0, 1]
        assert height == pytest.approx((out[0, 2] - out[0, 0]) * 1.3, rel=1e-3), "the face was cut"
        assert height <= ZOOM_LARGEST_SHARE * 384 + 1e-3
        sizes.append(face_sizes(out, (768, 768))[0])
    sizes = np.array(sizes)
    reachable = [b for b in FACE_SIZE_BUCKETS if b[0] < ZOOM_LARGEST_SHARE * 384 / 768 / 1.3**0.5]
    counts = [int(((sizes >= lo) & (sizes < hi)).sum()) for lo, hi in reachable]
    assert min(counts) >= 200 / len(FACE_SIZE_BUCKETS) / 2, counts  # every reachable bucket seen, none starved


@pytest.mark.parametrize("face_side", [20, 60, 300])  # enlarged, about the same, shrunk through INTER_AREA
def test_zoom_puts_the_face_pixels_exactly_under_their_box(face_side):
    import numpy as np

    from facemask_tools.training.augment import zoom_on_face

    spec = make_spec("tf_efficientdet_lite0", 768)
    height = int(face_side * 1.3)
    image = np.zeros((700, 900, 3), np.uint8)
    image[200 : 200 + height, 300 : 300 + face_side] = 255  # a white face on black
    boxes = np.array([[300, 200, 300 + face_side, 200 + height]], np.float32)
    config = AugmentConfig(hsv=0.0, hflip=0.0)
    rng = np.random.default_rng(2)
    for _ in range(10):
        tensor, out, _ = zoom_on_face(image, boxes, np.array([0]), spec, config, rng, (384, 384))
        value = tensor[0]  # normalised: white +1, black -1, padding exactly 0
        share = np.where(value == 0.0, 0.0, (value + 1.0) / 2.0)  # how much of each pixel is face
        row, col = int((out[0, 1] + out[0, 3]) / 2), int((out[0, 0] + out[0, 2]) / 2)
        across, down = share[row], share[:, col]  # through the middle of the box
        assert across.sum() == pytest.approx(out[0, 2] - out[0, 0], abs=0.75)
        assert down.sum() == pytest.approx(out[0, 3] - out[0, 1], abs=0.75)
        # the face's middle, in pixel-corner coordinates (pixel i spans i..i+1), is the box's middle
        assert (across * (np.arange(384) + 0.5)).sum() / across.sum() == pytest.approx(
            (out[0, 0] + out[0, 2]) / 2, abs=0.25
        )
        assert (down * (np.arange(384) + 0.5)).sum() / down.sum() == pytest.approx(
            (out[0, 1] + out[0, 3]) / 2, abs=0.25
        )


def test_zoom_never_enlarges_a_face_more_than_its_cap():
    import numpy as np

    from facemask_tools.training.augment import ZOOM_MAX_UPSCALE, zoom_on_face

    spec = make_spec("tf_efficientdet_lite0", 768)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[100, 100, 120, 120]], np.float32)  # 20 px: at most 160 px after zoom
    for _ in range(50):
        _, out, _ = zoom_on_face(image, boxes, np.array([0]), spec, AugmentConfig(), rng, (384, 384))
        sides = np.sqrt((out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1]))
        assert (sides <= 20 * ZOOM_MAX_UPSCALE + 1e-3).all()
    # --zoom-max-upscale 16: the same face now reaches sizes beyond 8x (the blur of strongly enlarged faces)
    wider = AugmentConfig(zoom_max_upscale=16.0)
    largest = 0.0
    for _ in range(50):
        _, out, _ = zoom_on_face(image, boxes, np.array([0]), spec, wider, rng, (384, 384))
        sides = np.sqrt((out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1]))
        assert (sides <= 20 * 16.0 + 1e-3).all()
        largest = max(largest, float(sides.max(initial=0.0)))
    assert largest > 20 * ZOOM_MAX_UPSCALE + 1.0


def test_photometric_degrades_pixels_only_and_draws_nothing_when_off():
    import numpy as np

    from facemask_tools.training.augment import _photometric

    spec = make_spec("tf_efficientdet_lite0", 256)
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 80], [300, 200, 390, 290]], np.float32)
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    assert _photometric(image, AugmentConfig(hsv=0.0, photometric=0.0), rng) is image
    assert rng.bit_generator.state == before  # chance 0 draws nothing: earlier runs replay exactly
    plain = AugmentConfig(hsv=0.0, hflip=0.0)
    changed = 0
    for seed in range(6):
        clean = augment(image, boxes, np.array([0, 2]), spec, plain, np.random.default_rng(seed))
        worn = augment(
            image,
            boxes,
            np.array([0, 2]),
            spec,
            AugmentConfig(hsv=0.0, hflip=0.0, photometric=1.0),
            np.random.default_rng(seed),
        )
        np.testing.assert_array_equal(clean[1], worn[1])  # without a flip to draw after it, the boxes do not move
        changed += int(not np.array_equal(clean[0], worn[0]))
    assert changed == 6


def test_zoom_balance_picks_rare_class_faces_as_often_as_common_ones():
    import numpy as np

    from facemask_sdk.voc import ImageRecord
    from facemask_tools.training.augment import zoom_on_face
    from facemask_tools.training.data import inverse_class_frequencies

    spec = make_spec("tf_efficientdet_lite0", 768)
    image = np.zeros((600, 800, 3), np.uint8)
    # four masked faces and one unmasked in one photo, all 100 px
    boxes = np.array([[20 + 150 * i, 200, 120 + 150 * i, 300] for i in range(5)], np.float32)
    classes = np.array([0, 0, 0, 0, 1])
    weights = inverse_class_frequencies([ImageRecord("a", None, 800, 600, boxes, classes)], 3)
    assert weights == (1.25, 5.0, 0.0)
    halfway = inverse_class_frequencies([ImageRecord("a", None, 800, 600, boxes, classes)], 3, power=0.5)
    assert halfway == pytest.approx((1.25**0.5, 5.0**0.5, 0.0))
    picked = {"plain": [], "balanced": []}
    for name, config in (("plain", AugmentConfig()), ("balanced", AugmentConfig(zoom_class_weights=weights))):
        rng = np.random.default_rng(0)
        for _ in range(400):
            _, out, kept = zoom_on_face(image, boxes, classes, spec, config, rng, (384, 384))
            sides = np.sqrt((out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1]))
            picked[name].append(int(kept[np.argmax(sides)]) if len(kept) == 1 else -1)  # alone: it is the chosen one
    alone = {name: [c for c in values if c >= 0] for name, values in picked.items()}
    share = {name: np.mean(np.array(values) == 1) for name, values in alone.items()}
    assert share["plain"] == pytest.approx(0.2, abs=0.08) and share["balanced"] == pytest.approx(0.5, abs=0.1), share
