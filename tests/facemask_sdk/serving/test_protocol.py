"""The serving contract (facemask_sdk.serving.protocol): detections survive the wire padded to its fixed length,
and what it cannot carry is refused."""

from __future__ import annotations

import numpy as np

from facemask_sdk.detections import Detections
from facemask_sdk.serving import protocol


def test_detections_survive_the_wire_padded_to_the_fixed_length() -> None:
    found = [
        Detections(
            np.array([[1, 2, 30, 40], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.5], np.float32), np.array([2, 0])
        ),
        Detections.empty(),
    ]
    outputs = protocol.pack_detections(found)
    assert outputs[protocol.BOXES.name].shape == (2, protocol.MAX_DETECTIONS, 4)
    assert outputs[protocol.NUM_DETECTIONS.name].tolist() == [[2], [0]]
    assert not outputs[protocol.SCORES.name][0, 2:].any()
    back = protocol.unpack_detections(outputs)
    assert [len(d) for d in back] == [2, 0]
    np.testing.assert_array_equal(back[0].xyxy, found[0].xyxy)
    np.testing.assert_array_equal(back[0].class_ids, [2, 0])


def test_the_wire_refuses_what_it_cannot_carry(error_of) -> None:
    assert "at least one image" in error_of(lambda: protocol.encode_request([]))
    assert "non-empty encoded bytes" in error_of(lambda: protocol.encode_request([b""]))
    outputs = protocol.pack_detections([Detections.empty()])
    assert "lacks the output(s) detection_scores" in error_of(
        lambda: protocol.unpack_detections({k: v for k, v in outputs.items() if k != protocol.SCORES.name})
    )
    outputs[protocol.NUM_DETECTIONS.name][0, 0] = 101
    assert "outside [0, 100]" in error_of(lambda: protocol.unpack_detections(outputs))
    batch = protocol.encode_request([b"\x89PNG", b"abc"])
    assert batch.shape == (2, 1) and protocol.request_images(batch) == [b"\x89PNG", b"abc"]


def test_a_refused_row_answers_alone_and_the_client_reads_its_reason(sample_images, error_of) -> None:
    good = sample_images[0].read_bytes()
    rows = protocol.decode_rows(protocol.encode_request([good, b"these bytes are no image", good]))
    assert isinstance(rows[0], np.ndarray) and isinstance(rows[2], np.ndarray)
    assert isinstance(rows[1], str) and rows[1].startswith("cannot decode image") and "\n" not in rows[1]
    found = Detections(np.array([[1, 2, 30, 40]], np.float32), np.array([0.9], np.float32), np.array([1]))
    outputs = protocol.pack_detections([found, rows[1], found])
    assert outputs[protocol.NUM_DETECTIONS.name].tolist() == [[1], [0], [1]]
    assert outputs[protocol.ERROR.name][0, 0] == b"" and outputs[protocol.ERROR.name][1, 0].startswith(b"cannot")
    message = error_of(lambda: protocol.unpack_detections(outputs))
    assert message.startswith("the server refused image 1 of the request: cannot decode image")
    assert [len(d) for d in protocol.unpack_detections(protocol.pack_detections([found, found]))] == [1, 1]
