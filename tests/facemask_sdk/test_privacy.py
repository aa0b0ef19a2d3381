"""blur_faces on a real sample: which faces are blurred, how far around them, and that nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest

from facemask_sdk.detections import Detections
from facemask_sdk.errors import FacemaskError
from facemask_sdk.image_io import read_image
from facemask_sdk.privacy import BLUR_MARGIN, blur_faces, faces_to_blur


@pytest.fixture
def photo(sample_images):
    return read_image(sample_images[-1])  # maksssksksss7: four faces


def faces() -> Detections:
    return Detections([[40, 40, 100, 110], [200, 60, 260, 130]], [0.9, 0.8], [0, 1])


@pytest.mark.parametrize("method", ["pixelate", "gaussian"])
def test_selected_faces_change_inside_their_enlarged_box_and_nothing_else_does(photo, method):
    out = blur_faces(photo, faces(), "unmasked", method)
    changed = np.any(out != photo, axis=2)
    x1, y1, x2, y2 = 200, 60, 260, 130
    gx, gy = (x2 - x1) * BLUR_MARGIN, (y2 - y1) * BLUR_MARGIN
    inside = np.zeros_like(changed)
    inside[int(y1 - gy) : int(np.ceil(y2 + gy)), int(x1 - gx) : int(np.ceil(x2 + gx))] = True
    assert not changed[~inside].any()  # the masked face and the background are untouched
    assert changed[y1:y2, x1:x2].mean() > 0.9


def test_the_input_image_is_not_changed(photo):
    before = photo.copy()
    blur_faces(photo, faces(), "all")
    assert np.array_equal(photo, before)


def test_pixelation_leaves_a_few_flat_cells_across_the_face(photo):
    out = blur_faces(photo, faces()[1:], "all", "pixelate")
    row = out[95, 191:269].astype(int)  # across the enlarged box
    assert len(np.unique(row, axis=0)) <= 8


def test_verdicts_blur_a_tracked_unmasked_person_even_when_the_frame_says_masked():
    tracked = Detections([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.9], [0, 0], tracker_id=[4, 5])
    assert faces_to_blur(tracked, "unmasked").tolist() == [False, False]
    assert faces_to_blur(tracked, "unmasked", {4: "without_mask", 5: "with_mask"}).tolist() == [True, False]
    assert faces_to_blur(tracked, "all").tolist() == [True, True]
    assert faces_to_blur(tracked, "none").tolist() == [False, False]


def test_bad_choices_are_refused(photo):
    with pytest.raises(FacemaskError, match="blur must be one of"):
        blur_faces(photo, faces(), "some")
    with pytest.raises(FacemaskError, match="method"):
        blur_faces(photo, faces(), "all", "smudge")
    with pytest.raises(FacemaskError, match="BGR uint8"):
        blur_faces(photo.astype(np.float32), faces())


def test_boxes_partly_outside_the_image_are_blurred_where_they_overlap_it(photo):
    out = blur_faces(photo, Detections([[-30, -30, 40, 40]], [0.9], [1]), "all")
    assert np.any(out[:40, :40] != photo[:40, :40]) and np.array_equal(out[60:], photo[60:])
