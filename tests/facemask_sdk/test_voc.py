"""The VOC reader (facemask_sdk.voc) on hand-made bad data: every problem is reported with its file, nothing
crashes (`make_dataset` and `write_xml`: tests/facemask_sdk/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.errors import DataError
from facemask_sdk.voc import VocDataset

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "face-mask-detection"


def test_reads_boxes_and_classes(tmp_path, make_dataset, write_xml):
    root = make_dataset(tmp_path / "d", 2)
    write_xml(
        root / "annotations" / "img1.xml",
        "img1.png",
        (80, 60),
        [("without_mask", (1, 2, 20, 25)), ("mask_weared_incorrect", (40, 5, 70, 50))],
    )
    data = VocDataset(root)
    record = data.records[1]
    np.testing.assert_array_equal(record.boxes, [[1, 2, 20, 25], [40, 5, 70, 50]])
    np.testing.assert_array_equal(record.class_ids, [1, 2])
    assert record.load().shape == (60, 80, 3)


@pytest.mark.parametrize(
    "objects, clipped, dropped, problem",
    [
        ([("with_mask", (-5, 10, 30, 30))], 1, 0, "outside the 80x60 image; clipped"),
        ([("with_mask", (10, 10, 95, 70))], 1, 0, "outside the 80x60 image; clipped"),
        ([("with_mask", ("nan", 10, 20, 30))], 0, 1, "non-finite bndbox"),
        ([("with_mask", (10, 10, "inf", 30))], 0, 1, "non-finite bndbox"),
        ([("with_mask", (10, "-inf", 20, 30))], 0, 1, "non-finite bndbox"),
        ([("with_mask", (10, 10, 10, 30))], 0, 1, "degenerate box"),
        ([("with_mask", (90, 10, 120, 30))], 1, 1, "degenerate box"),
        ([("with_mask", ("a", 10, 20, 30))], 0, 1, "non-numeric bndbox"),
    ],
)
def test_bad_boxes_are_clipped_or_dropped_and_counted(
    tmp_path, objects, clipped, dropped, problem, make_dataset, write_xml
):
    root = make_dataset(tmp_path / "d", 1)
    write_xml(root / "annotations" / "img0.xml", "img0.png", (80, 60), objects + [("with_mask", (1, 1, 9, 9))])
    data = VocDataset(root)
    assert data.report.clipped_boxes == clipped
    assert data.report.dropped_boxes == dropped
    boxes = data.records[0].boxes
    assert (boxes[:, [0, 2]] <= 80).all() and (boxes[:, [1, 3]] <= 60).all() and (boxes >= 0).all()
    if problem:
        assert any(problem in p and "img0.xml" in p for p in data.report.problems)


def test_unknown_class_names_file_and_known_classes(tmp_path, make_dataset, write_xml):
    root = make_dataset(tmp_path / "d", 1)
    write_xml(root / "annotations" / "img0.xml", "img0.png", (80, 60), [("helmet", (1, 1, 9, 9))])
    with pytest.raises(
        DataError, match=r"img0\.xml.*unknown class 'helmet'.*with_mask, without_mask, mask_weared_incorrect"
    ):
        VocDataset(root)


def test_malformed_xml_and_missing_image_are_skipped_with_a_message(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", 3)
    (root / "annotations" / "img0.xml").write_text("<annotation><object>")
    (root / "images" / "img1.png").unlink()
    data = VocDataset(root)
    assert [r.stem for r in data.records] == ["img2"]
    assert data.report.skipped_images == 2
    text = "\n".join(data.report.problems)
    assert "img0.xml: malformed XML" in text and "no image file for 'img1'" in text


def test_an_unreadable_image_is_left_out_and_named(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", 2)
    (root / "images" / "img1.png").write_bytes(b"not a png")
    data = VocDataset(root)
    assert [r.stem for r in data.records] == ["img0"]  # left out from its header, before anything decodes it
    info = data.summary()
    assert [p for p in info["problems"] if p.startswith("unreadable image: cannot decode image")] == [
        f"unreadable image: cannot decode image (corrupt, not an image, or not one of JPEG, PNG, BMP, WebP, TIFF, "
        f"PNM): {root / 'images' / 'img1.png'}; skipped"
    ]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="expected a VOC dataset with images/ and annotations/"):
        VocDataset(tmp_path / "nope")


def test_seeded_split_is_deterministic_and_disjoint(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", 10)
    train = [r.stem for r in VocDataset(root, "train", seed=3, val_fraction=0.3)]
    val = [r.stem for r in VocDataset(root, "val", seed=3, val_fraction=0.3)]
    assert len(val) == 3 and len(train) == 7 and not set(train) & set(val)
    assert val == [r.stem for r in VocDataset(root, "val", seed=3, val_fraction=0.3)]
    with pytest.raises(DataError, match="--val-fraction"):
        VocDataset(root, "val", val_fraction=1.5)


def test_split_files_are_used_when_present(tmp_path, make_dataset):
    root = make_dataset(tmp_path / "d", 4)
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("img3\nimg0\nghost\n")
    data = VocDataset(root, "val")
    assert [r.stem for r in data] == ["img3", "img0"]
    assert any("'ghost' has no annotation file" in p for p in data.report.problems)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/datasets/face-mask-detection")
def test_shared_dataset_counts_match_its_readme():
    train, val = VocDataset(SHARED, "train"), VocDataset(SHARED, "val")
    assert (len(train), len(val)) == (683, 170)
    assert val.summary(check_images=False)["boxes_per_class"] == {
        "with_mask": 659,
        "without_mask": 223,
        "mask_weared_incorrect": 27,
    }


def test_a_malformed_pixel_budget_is_named_not_taken_for_unreadable_images(tmp_path, make_dataset, monkeypatch):
    """Every image's header is checked against the budget while reading: a bad FACEMASK_MAX_IMAGE_PIXELS must
    surface as itself, not as 'no usable annotated images'."""
    from facemask_sdk.errors import FacemaskError

    root = make_dataset(tmp_path / "d", 2)
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "abc")
    with pytest.raises(FacemaskError, match="FACEMASK_MAX_IMAGE_PIXELS must be a positive whole number"):
        VocDataset(root)
