"""The ensemble's Python models (facemask_sdk.serving.triton_models), run here against a stand-in for Triton's
stub module: chained, they give the `Detector`'s detections, and a bad request fails alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.serving import protocol
from facemask_sdk.serving.repository import NETWORK, POSTPROCESS, PREPROCESS, RepositoryOptions, write_repository
from facemask_sdk.spec import INPUT_NAME


class _Tensor:
    def __init__(self, name: str, array) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors: list, error=None) -> None:
        self.outputs, self.error = {t.name(): t.as_numpy() for t in output_tensors}, error


class _TritonError(Exception):
    """The stub's TritonError: a message and, since Triton 23.09, a code (INTERNAL when none is given)."""

    INTERNAL, INVALID_ARG = 1, 3

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        super().__init__(message)
        self.code = code

    def message(self) -> str:
        return str(self)


@pytest.fixture
def stub_utils(monkeypatch):
    """`triton_python_backend_utils` as the stub provides it: just the calls the models make."""
    import types

    utils = types.SimpleNamespace(
        Tensor=_Tensor,
        InferenceResponse=_Response,
        TritonError=_TritonError,
        get_input_tensor_by_name=lambda request, name: request[name],
    )
    monkeypatch.setitem(__import__("sys").modules, "triton_python_backend_utils", utils)
    return utils


def _load(model_class, repository: Path, name: str):
    import json

    model = model_class()
    config = {"parameters": {"threads": {"string_value": "1"}}} if name == NETWORK else {}
    model.initialize(
        {"model_repository": str(repository / name), "model_version": "1", "model_config": json.dumps(config)}
    )
    return model


def test_ensemble_steps_chained_give_the_detector_detections(
    stub_utils, tiny_dynamic_onnx, sample_images, tmp_path
) -> None:
    from facemask_sdk import Detector
    from facemask_sdk.serving.triton_models import NetworkModel, PostprocessModel, PreprocessModel

    options = RepositoryOptions(backend="python", score_threshold=0.05)  # the tiny untrained model scores low
    repository = write_repository(tmp_path / "repo", tiny_dynamic_onnx, options).path
    pre, net, post = (
        _load(cls, repository, name)
        for cls, name in ((PreprocessModel, PREPROCESS), (NetworkModel, NETWORK), (PostprocessModel, POSTPROCESS))
    )
    # two requests as the dynamic batcher hands them over: one with 1 image, one with 3
    requests = [
        {"image": _Tensor("image", protocol.encode_request([p.read_bytes() for p in group]))}
        for group in (sample_images[:1], sample_images[1:])
    ]
    prepared = pre.execute(requests)
    assert [r.error for r in prepared] == [None, None]
    heads = net.execute([{INPUT_NAME: _Tensor(INPUT_NAME, r.outputs[INPUT_NAME])} for r in prepared])
    finished = post.execute(
        [
            {
                **{k: _Tensor(k, v) for k, v in head.outputs.items()},
                "letterbox": _Tensor("letterbox", r.outputs["letterbox"]),
            }
            for head, r in zip(heads, prepared)
        ]
    )
    served = [d for response in finished for d in protocol.unpack_detections(response.outputs)]
    net.finalize()
    with Detector(tiny_dynamic_onnx, score_threshold=0.05) as detector:
        local = [detector(path) for path in sample_images]
    assert sum(len(d) for d in local) > 0
    for got, expected in zip(served, local):
        assert len(got) == len(expected)
        np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_ids, expected.class_ids)

    bad = pre.execute([{"image": _Tensor("image", protocol.encode_request([b"junk"]))}, requests[0]])
    assert "cannot decode image (corrupt, not an image" in str(bad[0].error) and "image 0 of the request" in str(
        bad[0].error
    )
    assert bad[0].error.code == _TritonError.INVALID_ARG, "the client's own mistake, not the server's"
    assert bad[1].error is None, "a bad request must not fail the others of its batch"
    assert not finished[0].outputs[protocol.ERROR.name].any(), "every row read: no row carries an error"
