"""`serve`'s batched inference function (facemask_sdk.serving.server.make_infer_function) in process: a
batch gathered from several clients answers every readable image as `Detector` does, a bad image only in
its own row, and a failure of the model as one line without the server's traceback."""

from __future__ import annotations

import numpy as np

from facemask_sdk import Detector
from facemask_sdk.serving import protocol
from facemask_sdk.serving.server import make_infer_function


def test_a_bad_image_answers_only_its_own_row(tiny_dynamic_onnx, sample_images, error_of) -> None:
    images = [path.read_bytes() for path in sample_images[:3]]
    batch = protocol.encode_request([images[0], b"these bytes are no image", images[1], images[2]])
    with Detector(tiny_dynamic_onnx, score_threshold=0.05) as detector:
        outputs = make_infer_function(detector)(image=batch)
        local = [detector(path) for path in sample_images[:3]]
    assert sum(len(found) for found in local) > 0, "the comparison needs detections to mean anything"
    errors = outputs[protocol.ERROR.name].reshape(-1)
    assert errors[0] == errors[2] == errors[3] == b"" and errors[1].startswith(b"cannot decode image")
    assert outputs[protocol.NUM_DETECTIONS.name][1, 0] == 0
    for row, expected in zip((0, 2, 3), local):
        served = protocol.unpack_detections({name: array[row : row + 1] for name, array in outputs.items()})[0]
        np.testing.assert_allclose(served.xyxy, expected.xyxy, atol=1e-4)
        np.testing.assert_array_equal(served.class_ids, expected.class_ids)
    assert "refused image 1 of the request: cannot decode image" in error_of(
        lambda: protocol.unpack_detections(outputs)
    )


def test_a_failing_model_reaches_the_clients_as_one_line(tiny_dynamic_onnx, sample_images, caplog) -> None:
    detector = Detector(tiny_dynamic_onnx)
    detector.close()  # a model that can no longer run: detect_batch raises
    infer = make_infer_function(detector)
    try:
        infer(image=protocol.encode_request([sample_images[0].read_bytes()]))
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("a closed detector must fail the batch")
    assert message == "the server failed to run the model; its log says why"
    assert "inference failed on a batch of 1 image(s)" in caplog.text and "Traceback" in caplog.text
