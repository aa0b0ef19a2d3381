"""The class-weighted detection loss: effdet's loss at weight 1, and the weight lands where it says."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_sdk.voc import VocDataset  # noqa: E402
from facemask_tools.training.augment import AugmentConfig  # noqa: E402
from facemask_tools.training.data import DetectionDataset, collate  # noqa: E402
from facemask_tools.training.loss import ClassWeightedDetectionLoss, class_weights_for  # noqa: E402
from facemask_tools.training.model import create_network, make_spec, train_bench  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def labelled_batch():
    """A real batch of the sample images, the network's outputs on it and effdet's anchor labels."""
    torch.manual_seed(0)
    spec = make_spec("tf_efficientdet_lite0", 256, anchor_scale=2)
    records = VocDataset(str(SAMPLES), "all", spec.classes).records
    dataset = DetectionDataset(records, spec, AugmentConfig.strength("none"), 0, (256, 256))
    images, target = collate([dataset[i] for i in range(len(dataset))])
    bench = train_bench(create_network(spec))
    with torch.no_grad():
        class_out, box_out = bench.model(images)
    labels = bench.anchor_labeler.batch_label_anchors(target["bbox"], target["cls"])
    return bench, spec, class_out, box_out, labels


def test_weight_one_is_effdets_loss(labelled_batch):
    bench, spec, class_out, box_out, labels = labelled_batch
    expected = bench.loss_fn(class_out, box_out, *labels)
    got = ClassWeightedDetectionLoss(bench.model.config, [1.0] * spec.num_classes)(class_out, box_out, *labels)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, rtol=1e-6), (e, g)


def test_weight_scales_only_the_anchors_of_that_class(labelled_batch):
    bench, spec, class_out, box_out, labels = labelled_batch
    cls_targets = labels[0]
    present = sorted({int(c) for level in cls_targets for c in level.unique() if c >= 0})
    assert present, "the samples must hold labelled faces"
    weighted = present[0]
    base = ClassWeightedDetectionLoss(bench.model.config, [1.0] * spec.num_classes)
    double = ClassWeightedDetectionLoss(
        bench.model.config, [2.0 if c == weighted else 1.0 for c in range(spec.num_classes)]
    )
    total_1, class_1, box_1 = base(class_out, box_out, *labels)
    total_2, class_2, box_2 = double(class_out, box_out, *labels)
    # the class loss of the anchors matched to that class, alone: its targets kept, all others ignored
    only = [torch.where(level == weighted, level, torch.full_like(level, -2)) for level in cls_targets]
    _, class_of_those, _ = base(class_out, box_out, only, *labels[1:])
    assert class_of_those > 0
    assert torch.isclose(class_2, class_1 + class_of_those, rtol=1e-5)
    assert torch.equal(box_1, box_2)


def test_class_weights_by_name():
    classes = ("with_mask", "without_mask", "mask_weared_incorrect")
    assert class_weights_for(classes, {"mask_weared_incorrect": 3}) == [1.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="unknown classes"):
        class_weights_for(classes, {"no_mask": 2})
    with pytest.raises(ValueError, match="positive"):
        ClassWeightedDetectionLoss(make_spec_config(), [1.0, 0.0, 1.0])


def make_spec_config():
    return create_network(make_spec("tf_efficientdet_lite0", 128)).config
