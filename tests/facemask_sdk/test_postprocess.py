"""NumPy post-processing == effdet/torchvision: box decoding, NMS, and the whole DetBenchPredict pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import (
    PostprocessConfig,
    batched_nms,
    decode_boxes,
    nms,
    postprocess,
    top_k_indices,
)
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]
DATASET_IMAGES = REPO.parent / "shared" / "datasets" / "face-mask-detection" / "images"
IMAGE_DIRS = (REPO / "samples" / "images", REPO / "samples", DATASET_IMAGES)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def random_boxes(rng: np.random.Generator, n: int, extent: float = 200.0) -> np.ndarray:
    """Random xyxy boxes, many overlapping, some degenerate-thin."""
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(0.5, extent / 3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def unique_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random float32 scores with no ties (torchvision's order among equal scores is unspecified)."""
    scores = rng.permutation(n).astype(np.float32) / n + rng.uniform(0, 0.5 / n, n).astype(np.float32)
    assert np.unique(scores).size == n
    return scores


# --- box decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_boxes_matches_effdet(seed: int) -> None:
    torch = pytest.importorskip("torch")
    anchors_mod = pytest.importorskip("effdet.anchors")
    rng = np.random.default_rng(seed)
    anchors = generate_anchors(ModelSpec("tf_efficientdet_d0", (256, 384)))
    codes = rng.normal(0, 1, size=(len(anchors), 4)).astype(np.float32)

    expected = anchors_mod.decode_box_outputs(
        torch.from_numpy(codes), torch.from_numpy(anchors[:, [1, 0, 3, 2]].copy()), output_xyxy=True
    ).numpy()

    got = decode_boxes(codes, anchors)
    assert got.dtype == np.float32 and got.shape == anchors.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_decode_zero_codes_gives_anchors() -> None:
    anchors = generate_anchors(ModelSpec("tf_efficientdet_d0", (128, 128)))
    np.testing.assert_allclose(decode_boxes(np.zeros_like(anchors), anchors), anchors, atol=1e-4)


# --- NMS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", range(4))
def test_nms_matches_torchvision(seed: int, iou_threshold: float) -> None:
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 400), unique_scores(rng, 400)

    expected = ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold).numpy()

    got = nms(boxes, scores, iou_threshold)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


# 500 boxes take torchvision's coordinate-offset path on CPU, 1500 its per-class loop.
@pytest.mark.parametrize("n", [500, 1500])
@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_torchvision(seed: int, n: int) -> None:
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, n), unique_scores(rng, n)
    class_ids = rng.integers(0, 3, n)

    expected = ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(class_ids), 0.5
    ).numpy()

    got = batched_nms(boxes, scores, class_ids, 0.5)
    np.testing.assert_array_equal(got, expected)
    assert np.all(np.diff(scores[got]) <= 0)
    np.testing.assert_array_equal(batched_nms(boxes, scores, class_ids, 0.5, max_keep=7), expected[:7])


def test_nms_ties_keep_lower_index_and_classes_do_not_suppress_each_other() -> None:
    boxes = np.array([[0, 0, 10, 10]] * 3, dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.9], dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 1, 1]), 0.5), [1, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 1, 2]), 0.5), [1, 2, 0])


def test_nms_empty_and_touching_boxes() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    touching = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=np.float32)
    np.testing.assert_array_equal(nms(touching, np.array([0.9, 0.8]), 0.0), [0, 1])  # IoU 0 is not > 0


def test_top_k_indices_orders_ties_by_index() -> None:
    values = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(top_k_indices(values, 4), [1, 3, 2, 4])
    np.testing.assert_array_equal(top_k_indices(values, 10), [1, 3, 2, 4, 5, 0])


# --- config and the whole pipeline ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, None),
        ({"score_threshold": 0.0, "iou_threshold": 1.0}, None),
        ({"score_threshold": -0.1}, "score_threshold"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"score_threshold": math.nan}, "score_threshold"),
        ({"iou_threshold": "0.5"}, "iou_threshold"),
        ({"max_detections": 0}, "max_detections"),
        ({"top_k": -5}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
    ],
)
def test_postprocess_config_validation(kwargs: dict, error: str | None) -> None:
    if error is None:
        PostprocessConfig(**kwargs)
    else:
        with pytest.raises(FacemaskError, match=error):
            PostprocessConfig(**kwargs)


def synthetic_outputs(seed: int, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    anchors = generate_anchors(spec)
    logits = rng.normal(-3, 2, size=(len(anchors), spec.num_classes)).astype(np.float32)
    box_codes = rng.normal(0, 0.5, size=(len(anchors), 4)).astype(np.float32)
    return logits, box_codes, anchors


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("score_threshold", [0.05, 0.4, 0.9])
def test_score_threshold_equals_filtering_the_unthresholded_result(seed: int, score_threshold: float) -> None:
    spec = ModelSpec("tf_efficientdet_d0", (256, 256))
    logits, box_codes, anchors = synthetic_outputs(seed, spec)
    letterbox = Letterbox.fit((300, 170), spec.image_size)

    config = PostprocessConfig(0.0, max_detections=10_000)
    everything = postprocess(logits, box_codes, anchors, letterbox, config)
    boxes, scores, class_ids = postprocess(
        logits, box_codes, anchors, letterbox, PostprocessConfig(score_threshold, max_detections=10_000)
    )

    above = everything[1] > score_threshold
    np.testing.assert_array_equal(boxes, everything[0][above])
    np.testing.assert_array_equal(scores, everything[1][above])
    np.testing.assert_array_equal(class_ids, everything[2][above])


def test_postprocess_output_types_limits_and_clipping() -> None:
    spec = ModelSpec("tf_efficientdet_d0", (256, 256))
    logits, box_codes, anchors = synthetic_outputs(0, spec)
    letterbox = Letterbox.fit((100, 400), spec.image_size)  # content is the top 64 rows of the input

    boxes, scores, class_ids = postprocess(
        logits, box_codes, anchors, letterbox, PostprocessConfig(0.0, max_detections=25, top_k=300)
    )

    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and class_ids.dtype == np.int64
    assert boxes.shape == (25, 4) and scores.shape == (25,) and class_ids.shape == (25,)
    assert np.all(np.diff(scores) <= 0)
    # the best score among candidates whose box is not clipped to nothing (rows below the content)
    decoded = letterbox.to_original(decode_boxes(box_codes, anchors))
    non_empty = (decoded[:, 2] > decoded[:, 0]) & (decoded[:, 3] > decoded[:, 1])
    top = np.sort(1 / (1 + np.exp(-logits[non_empty].astype(np.float64).ravel())))[::-1]
    assert scores[0] == pytest.approx(top[0], rel=1e-6)
    assert not non_empty.all(), "the case needs boxes clipped to nothing, which must be dropped"
    assert np.all(boxes[:, 0::2] >= 0) and np.all(boxes[:, 0::2] <= 400)
    assert np.all(boxes[:, 1::2] >= 0) and np.all(boxes[:, 1::2] <= 100)
    assert set(class_ids.tolist()) <= {0, 1, 2}


def test_one_box_per_face_by_default() -> None:
    """Two classes firing on the same anchor: class-agnostic NMS keeps one box, of the better class."""
    spec = ModelSpec("tf_efficientdet_d0", (128, 128))
    anchors = generate_anchors(spec)
    logits = np.full((len(anchors), 3), -20.0, np.float32)
    face = 1000
    logits[face] = [2.0, 1.0, -20.0]  # with_mask 0.88, without_mask 0.73 on the same box
    box_codes = np.zeros_like(anchors)
    letterbox = Letterbox.fit((128, 128), (128, 128))
    boxes, scores, classes = postprocess(logits, box_codes, anchors, letterbox, PostprocessConfig(0.5))
    assert classes.tolist() == [0] and len(boxes) == 1
    aware = postprocess(logits, box_codes, anchors, letterbox, PostprocessConfig(0.5, class_agnostic=False))
    assert aware[2].tolist() == [0, 1]
    with pytest.raises(FacemaskError, match="class_agnostic"):
        PostprocessConfig(class_agnostic="yes")


def test_non_finite_outputs_never_become_detections() -> None:
    spec = ModelSpec("tf_efficientdet_d0", (128, 128))
    anchors = generate_anchors(spec)
    logits = np.full((len(anchors), 3), -20.0, np.float32)
    box_codes = np.zeros_like(anchors)
    logits[10:20, 0] = 5.0
    logits[30, 1] = np.nan
    box_codes[10:13] = np.nan
    box_codes[13:15, 2] = np.inf
    letterbox = Letterbox.fit((128, 128), (128, 128))
    boxes, scores, _ = postprocess(logits, box_codes, anchors, letterbox, PostprocessConfig(0.1, iou_threshold=1.0))
    assert len(boxes) == 5 and np.isfinite(boxes).all() and np.isfinite(scores).all()


def test_postprocess_nothing_above_threshold() -> None:
    spec = ModelSpec("tf_efficientdet_d0", (128, 128))
    anchors = generate_anchors(spec)
    logits = np.full((len(anchors), 3), -10.0, dtype=np.float32)
    boxes, scores, class_ids = postprocess(
        logits, np.zeros_like(anchors), anchors, Letterbox.fit((50, 50), (128, 128)), PostprocessConfig()
    )
    assert boxes.shape == (0, 4) and scores.shape == (0,) and class_ids.shape == (0,)


@pytest.mark.parametrize(
    ("logits_shape", "box_codes_shape", "anchors_count", "match"),
    [
        ((10, 3, 1), (10, 4), 10, r"logits must be \[A, C\]"),
        ((10, 3), (9, 4), 10, r"box_codes must have shape \[10, 4\], got \[9, 4\]"),
        ((10, 3), (10, 5), 10, r"box_codes must have shape \[10, 4\]"),
        ((10, 3), (10, 4), 11, r"anchors_xyxy must have shape \[10, 4\], got \[11, 4\]"),
    ],
)
def test_postprocess_shape_errors(logits_shape, box_codes_shape, anchors_count, match) -> None:
    with pytest.raises(FacemaskError, match=match):
        postprocess(
            np.zeros(logits_shape),
            np.zeros(box_codes_shape),
            np.zeros((anchors_count, 4)),
            Letterbox.fit((10, 10), (128, 128)),
            PostprocessConfig(),
        )


# --- parity with effdet's DetBenchPredict ---------------------------------------------------------


def first_image() -> Path | None:
    for folder in IMAGE_DIRS:
        if folder.is_dir():
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                return images[0]
    return None


@pytest.fixture(scope="module")
def effdet_run():
    """One forward of a seeded random lite0@256 through effdet's DetBenchPredict on a real image.

    A forward hook on the network captures the raw head maps, so the NumPy reference sees exactly the
    tensors effdet post-processed. Returns (effdet detections [100, 6], logits, box_codes, spec, letterbox).
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("effdet")
    from facemask_sdk.image_io import read_image
    from facemask_sdk.preprocess import preprocess
    from facemask_tools.training.model import create_network, make_spec, predict_bench

    path = first_image()
    if path is None:
        pytest.skip(f"no image in {' or '.join(map(str, IMAGE_DIRS))}")
    image = read_image(path)
    spec = make_spec("tf_efficientdet_lite0", 256)
    torch.manual_seed(0)
    network = create_network(spec).eval()
    # Spread the random head outputs: default init gives near-identical scores everywhere.
    with torch.no_grad():
        network.class_net.predict.conv_pw.weight.mul_(4.0)
    bench = predict_bench(network).eval()

    captured = {}
    network.register_forward_hook(lambda module, inputs, output: captured.setdefault("heads", output))
    canvas, letterbox = preprocess(image, spec)
    height, width = letterbox.original_hw
    img_info = {
        "img_scale": torch.tensor([1.0 / letterbox.scale], dtype=torch.float32),
        "img_size": torch.tensor([[width, height]], dtype=torch.float32),  # effdet wants (w, h)
    }
    with torch.no_grad():
        detections = bench(torch.from_numpy(canvas)[None], img_info)[0].numpy()

    class_maps, box_maps = captured["heads"]
    logits = torch.cat([m.permute(0, 2, 3, 1).reshape(-1, spec.num_classes) for m in class_maps]).numpy()
    box_codes = torch.cat([m.permute(0, 2, 3, 1).reshape(-1, 4) for m in box_maps]).numpy()
    return detections, logits, box_codes, spec, letterbox


def sort_rows(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    rows = np.column_stack([boxes, scores, class_ids]).astype(np.float64)
    return rows[np.lexsort((rows[:, 0], rows[:, 1], rows[:, 5], -rows[:, 4]))]


@pytest.mark.parametrize("score_threshold", [0.0, 0.9])
def test_postprocess_matches_effdet_predict_bench(effdet_run, score_threshold: float) -> None:
    detections, logits, box_codes, spec, letterbox = effdet_run
    detections = detections[detections[:, 5] > 0]  # effdet pads with zero rows (class 0 = padding)
    detections = detections[detections[:, 4] > score_threshold]
    assert len(detections) > 5, "the test needs detections to compare"
    assert np.unique(detections[:, 4]).size == len(detections), "scores tie: comparison would be fragile"

    boxes, scores, class_ids = postprocess(
        logits,
        box_codes,
        generate_anchors(spec),
        letterbox,
        PostprocessConfig(score_threshold, iou_threshold=0.5, max_detections=100, top_k=5000, class_agnostic=False),
    )
    # effdet keeps boxes clipped to nothing; ours drops them (no face has zero width), and since an
    # empty box suppresses nothing, ours are effdet's non-empty ones followed by lower-scored others
    detections = detections[(detections[:, 2] > detections[:, 0]) & (detections[:, 3] > detections[:, 1])]
    boxes, scores, class_ids = boxes[: len(detections)], scores[: len(detections)], class_ids[: len(detections)]

    ours = sort_rows(boxes, scores, class_ids + 1)  # effdet's class ids are 1-based
    theirs = sort_rows(detections[:, :4], detections[:, 4], detections[:, 5])
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours[:, 5], theirs[:, 5])
    np.testing.assert_allclose(ours[:, :4], theirs[:, :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours[:, 4], theirs[:, 4], rtol=0, atol=1e-5)
