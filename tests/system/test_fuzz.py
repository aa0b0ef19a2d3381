"""Hypothesis fuzzing of the letterbox maths and the post-processing with NaN, inf and huge values.

Bounded (a few dozen examples each, small models) so the suite stays fast; the properties are the
product's promises: nothing non-finite, empty or outside the image ever comes out as a face.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.postprocess import PostprocessConfig, postprocess
from facemask_sdk.preprocess import Letterbox, preprocess
from facemask_sdk.spec import ModelSpec

SPEC = ModelSpec("tf_efficientdet_lite0", (128, 128))
ANCHORS = generate_anchors(SPEC)
WILD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e6, -1e6, 0.0]),
    st.floats(-8, 8, width=32),
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(height=st.integers(1, 5000), width=st.integers(1, 5000), size=st.sampled_from([128, 256, 512]))
def test_letterbox_fits_inside_the_input_and_maps_back(height, width, size):
    letterbox = Letterbox.fit((height, width), (size, size))
    resized_h, resized_w = letterbox.resized_hw
    assert 1 <= resized_h <= size and 1 <= resized_w <= size and np.isfinite(letterbox.scale) and letterbox.scale > 0
    corners = np.array([[0, 0, width, height]], np.float32)
    back = letterbox.to_original(letterbox.to_input(corners))
    np.testing.assert_allclose(back, corners, rtol=1e-5, atol=1e-3 * max(height, width))


@FAST
@given(values=arrays(np.float32, (3, 4), elements=WILD), height=st.integers(1, 2000), width=st.integers(1, 2000))
def test_letterbox_clips_wild_boxes_into_the_image(values, height, width):
    letterbox = Letterbox.fit((height, width), (128, 128))
    with np.errstate(all="ignore"):
        out = letterbox.to_original(values)
    finite = np.isfinite(out)
    assert (out[finite][..., None] >= 0).all()
    assert (out[:, 0::2][np.isfinite(out[:, 0::2])] <= width).all()
    assert (out[:, 1::2][np.isfinite(out[:, 1::2])] <= height).all()


@FAST
@given(
    data=st.data(),
    score_threshold=st.sampled_from([0.0, 0.05, 0.4]),
    class_agnostic=st.booleans(),
    frame=st.tuples(st.integers(1, 1500), st.integers(1, 1500)),
)
def test_postprocess_never_returns_non_finite_empty_or_outside_boxes(data, score_threshold, class_agnostic, frame):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(-3, 3, (len(ANCHORS), SPEC.num_classes)).astype(np.float32)
    box_codes = rng.normal(0, 1, (len(ANCHORS), 4)).astype(np.float32)
    for target in (logits, box_codes):  # sprinkle wild values over random cells
        cells = data.draw(st.lists(st.integers(0, target.size - 1), max_size=60))
        wild = data.draw(st.lists(WILD, min_size=len(cells), max_size=len(cells)))
        target.reshape(-1)[cells] = np.asarray(wild, np.float32)
    letterbox = Letterbox.fit(frame, SPEC.image_size)
    config = PostprocessConfig(score_threshold, top_k=500, max_detections=50, class_agnostic=class_agnostic)
    with np.errstate(all="ignore"):
        boxes, scores, classes = postprocess(logits, box_codes, ANCHORS, letterbox, config)
    height, width = frame
    assert np.isfinite(boxes).all() and np.isfinite(scores).all()
    assert ((scores >= score_threshold) | (score_threshold == 0)).all() and (scores <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
    assert len(boxes) <= 50 and set(classes.tolist()) <= {0, 1, 2} and np.all(np.diff(scores) <= 0)


@FAST
@given(image=arrays(np.uint8, st.tuples(st.integers(1, 300), st.integers(1, 300), st.just(3))))
def test_preprocess_output_is_finite_for_any_image(image):
    tensor, letterbox = preprocess(image, SPEC)
    assert tensor.shape == (3, 128, 128) and tensor.dtype == np.float32 and np.isfinite(tensor).all()
