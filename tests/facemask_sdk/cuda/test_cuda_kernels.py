"""`CudaKernels` (facemask_sdk.cuda.kernels) without a GPU: memory choice, buffers, mapped and copied frames,
pitched crops, launch order, results and lifecycle against the NumPy pipeline, on a stand-in pycuda whose
kernels run on the CPU emulator (`fake_cuda`: tests/facemask_sdk/conftest.py). tests/gpu runs the real one."""

from __future__ import annotations

from pathlib import Path

import cuda_topk_probe as probe  # tests/helpers (pytest's pythonpath)
import cv2
import numpy as np
import pytest

from facemask_sdk.anchors import generate_anchors
from facemask_sdk.errors import FacemaskError
from facemask_sdk.postprocess import PostprocessConfig, postprocess
from facemask_sdk.preprocess import preprocess
from facemask_sdk.spec import ModelSpec

REPO = Path(__file__).resolve().parents[3]
SAMPLE_IMAGES = sorted((REPO / "samples" / "images").glob("*.png"))
SPEC_128 = ModelSpec("tf_efficientdet_d0", (128, 128))
SPEC_256 = ModelSpec("tf_efficientdet_d0", (256, 256))


@pytest.mark.parametrize(
    ("requested", "integrated", "can_map", "expected"),
    [
        (None, True, True, True),
        (None, False, True, False),
        (None, True, False, False),
        (True, False, True, True),
        (False, True, True, False),
    ],
)
def test_mapped_memory_on_integrated_gpus_copies_on_discrete(requested, integrated, can_map, expected) -> None:
    from facemask_sdk.cuda.kernels import use_mapped_memory

    assert use_mapped_memory(requested, integrated, can_map) is expected


def test_mapped_memory_refused_where_the_device_cannot_map() -> None:
    from facemask_sdk.cuda.kernels import use_mapped_memory

    with pytest.raises(FacemaskError, match="cannot map host memory; use mapped=False"):
        use_mapped_memory(True, True, False, "Old GPU")


@pytest.mark.parametrize("integrated", [True, False])
def test_cuda_kernels_picks_memory_by_the_devices_integrated_attribute(fake_cuda, integrated: bool) -> None:
    from facemask_sdk.cuda import CudaKernels

    fake_cuda.attributes["INTEGRATED"] = int(integrated)
    with CudaKernels(SPEC_256) as gpu:
        assert gpu.mapped is integrated


@pytest.mark.parametrize("mapped", [True, False])
def test_cuda_kernels_matches_numpy(fake_cuda, mapped: bool, assert_same_detections, head_outputs) -> None:
    from facemask_sdk.cuda import CudaKernels

    config = PostprocessConfig(score_threshold=0.3)
    rng = np.random.default_rng(1)
    image = cv2.imread(str(SAMPLE_IMAGES[0]), cv2.IMREAD_COLOR)
    with CudaKernels(SPEC_256, config, mapped=mapped) as gpu:
        # a frame that is not ours: copied once into a pinned staging buffer
        letterbox = gpu.preprocess(image)
        gpu.synchronize()
        reference, ref_letterbox = preprocess(image, SPEC_256)
        assert letterbox == ref_letterbox
        np.testing.assert_array_equal(gpu.download_input(), reference)

        # a crop of a frame_buffer(): read in place (pitched), no staging copy
        frame = gpu.frame_buffer(*image.shape[:2])
        frame[:] = image
        staged = len(gpu._staging)
        crop = frame[10:-20, 30:-5]
        gpu.preprocess(crop)
        gpu.synchronize()
        assert len(gpu._staging) == staged
        np.testing.assert_array_equal(gpu.download_input(), preprocess(np.ascontiguousarray(crop), SPEC_256)[0])

        logits, box_codes = head_outputs(rng, gpu.num_anchors, gpu.num_classes, 400)
        gpu.upload_head(logits, box_codes)
        gpu.decode_nms(letterbox)
        with pytest.raises(FacemaskError, match="before synchronize"):
            gpu.results()
        gpu.synchronize()
        got = gpu.results()
        anchors = generate_anchors(SPEC_256)
        assert_same_detections(got, postprocess(logits, box_codes, anchors, letterbox, config))
        assert 0 < len(got[0]) <= config.max_detections
        assert probe.candidates(gpu)["num_candidates"] == int((logits > config.logit_threshold).sum())
        np.testing.assert_array_equal(gpu.download_head()[0], logits)
    assert not fake_cuda.live, "close() left device memory allocated"
    assert not fake_cuda.stack, "a context was left pushed"
    assert fake_cuda.launches[:1] == ["fm_letterbox_f32"]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda gpu: gpu.preprocess(np.zeros((10, 10), np.uint8)), "BGR uint8 HxWx3"),
        (lambda gpu: gpu.preprocess(np.zeros((10, 10, 3), np.float32)), "float32"),
        (lambda gpu: gpu.preprocess(np.zeros((0, 10, 3), np.uint8)), "(0, 10, 3)"),
        (lambda gpu: gpu.preprocess([[1, 2, 3]]), "numpy array"),
        (lambda gpu: gpu.frame_buffer(0, 10), "positive"),
        (lambda gpu: gpu.upload_head(np.zeros((5, 3)), np.zeros((5, 4))), "logits must have shape"),
        (lambda gpu: gpu.upload_input(np.zeros((3, 10, 10))), "input must have shape"),
    ],
)
def test_cuda_kernels_refuses_bad_input(fake_cuda, call, words: str) -> None:
    from facemask_sdk.cuda import CudaKernels

    with CudaKernels(SPEC_128) as gpu:
        with pytest.raises(FacemaskError) as info:
            call(gpu)
        assert words in str(info.value)


def test_cuda_kernels_lifecycle_and_threads(fake_cuda, error_of) -> None:
    import threading

    from facemask_sdk.cuda import CudaKernels

    with pytest.raises(FacemaskError, match="top_k"):
        CudaKernels(SPEC_128, PostprocessConfig(top_k=20000))
    gpu = CudaKernels(SPEC_128)
    errors = []
    blank = np.zeros((4, 4, 3), np.uint8)
    thread = threading.Thread(target=lambda: errors.append(error_of(lambda: gpu.preprocess(blank))))
    thread.start()
    thread.join()
    assert errors and "thread that created it" in errors[0]
    gpu.close()
    gpu.close()  # idempotent
    with pytest.raises(FacemaskError, match="closed"):
        gpu.preprocess(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FacemaskError, match="closed"):
        gpu.results()
    assert not fake_cuda.live and not fake_cuda.stack
