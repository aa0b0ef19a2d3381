"""The ensemble's Python models (facemask_sdk.serving.triton_models), run here against a stand-in for Triton's
stub module: chained, they give the `Detector`'s detections (the close-up check's BLS request included), and a
bad request fails alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.serving import protocol
from facemask_sdk.serving.repository import NETWORK, POSTPROCESS, PREPROCESS, RepositoryOptions, write_repository
from facemask_sdk.spec import INPUT_NAME


class _Tensor:
    def __init__(self, name: str, array, on_cpu: bool = True) -> None:
        self._name, self._array, self._on_cpu = name, np.asarray(array), on_cpu

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return self._on_cpu

    def as_numpy(self) -> np.ndarray:
        if not self._on_cpu:
            raise RuntimeError("Tensor is stored in GPU and cannot be converted to NumPy")  # the stub's words
        return self._array


class _Response:
    def __init__(self, output_tensors: list, error=None) -> None:
        self.outputs, self._error = {t.name(): t.as_numpy() for t in output_tensors}, error

    def error(self):
        return self._error

    def has_error(self) -> bool:
        return self._error is not None


class _PreferredMemory:
    def __init__(self, memory_type: int, device_id: int = 0) -> None:
        self.memory_type, self.device_id = memory_type, device_id


class _TritonError(Exception):
    """The stub's TritonError: a message and, since Triton 23.09, a code (INTERNAL when none is given)."""

    INTERNAL, INVALID_ARG = 1, 3

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        super().__init__(message)
        self._code = code

    def code(self) -> int:
        return self._code

    def message(self) -> str:
        return str(self)


@pytest.fixture
def stub_utils(monkeypatch):
    """`triton_python_backend_utils` as the stub provides it: just the calls the models make. A BLS request
    (`InferenceRequest(...).exec()`) runs the model registered in `utils.models` under its name, as Triton
    would, and is logged in `utils.bls_calls`."""
    import types

    utils = types.SimpleNamespace(
        Tensor=_Tensor,
        InferenceResponse=_Response,
        TritonError=_TritonError,
        PreferredMemory=_PreferredMemory,
        TRITONSERVER_MEMORY_CPU=2,
        get_input_tensor_by_name=lambda request, name: request.get(name),  # None where the request has none
        get_output_tensor_by_name=lambda response, name: _Tensor(name, response.outputs[name], utils.outputs_on_cpu),
        models={},
        bls_calls=[],
        outputs_on_cpu=True,
    )

    class InferenceRequest:
        def __init__(self, model_name: str, requested_output_names: list, inputs: list, preferred_memory=None) -> None:
            self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs
            self.preferred_memory = preferred_memory

        def exec(self) -> _Response:
            utils.bls_calls.append(self)
            (response,) = utils.models[self.model_name].execute([{t.name(): t for t in self.inputs}])
            assert response.has_error() or set(self.outputs) <= set(response.outputs), "outputs the model has"
            return response

    utils.InferenceRequest = InferenceRequest
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


def _models(stub_utils, repository: Path):
    """The repository's three Python models, initialised as Triton would; the network registered for BLS."""
    from facemask_sdk.serving.triton_models import NetworkModel, PostprocessModel, PreprocessModel

    pre, net, post = (
        _load(cls, repository, name)
        for cls, name in ((PreprocessModel, PREPROCESS), (NetworkModel, NETWORK), (PostprocessModel, POSTPROCESS))
    )
    stub_utils.models[NETWORK] = net
    return pre, net, post


def _chain(pre, net, post, requests: list[dict]) -> list:
    """The ensemble's steps over `requests` as the dynamic batcher hands them over: each step's outputs
    mapped into the next step's inputs, the image passed on to the post-processing (the close-up check)."""
    prepared = pre.execute(requests)
    assert [r.error() for r in prepared] == [None] * len(requests)
    heads = net.execute([{INPUT_NAME: _Tensor(INPUT_NAME, r.outputs[INPUT_NAME])} for r in prepared])
    return post.execute(
        [
            {
                **{k: _Tensor(k, v) for k, v in head.outputs.items()},
                "letterbox": _Tensor("letterbox", r.outputs["letterbox"]),
                "image": request["image"],
            }
            for head, r, request in zip(heads, prepared, requests)
        ]
    )


def _request(images: list[bytes]) -> dict:
    return {"image": _Tensor("image", protocol.encode_request(images))}


def test_ensemble_steps_chained_give_the_detector_detections(
    stub_utils, tiny_dynamic_onnx, sample_images, tmp_path
) -> None:
    from facemask_sdk import Detector

    options = RepositoryOptions(backend="python", score_threshold=0.05)  # the tiny untrained model scores low
    pre, net, post = _models(stub_utils, write_repository(tmp_path / "repo", tiny_dynamic_onnx, options).path)
    # two requests as the dynamic batcher hands them over: one with 1 image, one with 3
    requests = [_request([p.read_bytes() for p in group]) for group in (sample_images[:1], sample_images[1:])]
    finished = _chain(pre, net, post, requests)
    served = [d for response in finished for d in protocol.unpack_detections(response.outputs)]
    net.finalize()
    with Detector(tiny_dynamic_onnx, score_threshold=0.05) as detector:
        local = [detector(path) for path in sample_images]
    assert sum(len(d) for d in local) > 0
    for got, expected in zip(served, local):
        assert len(got) == len(expected)
        np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_ids, expected.class_ids)

    bad = pre.execute([_request([b"junk"]), requests[0]])
    assert "cannot decode image (corrupt, not an image" in bad[0].error().message()
    assert "image 0 of the request" in bad[0].error().message()
    assert bad[0].error().code() == _TritonError.INVALID_ARG, "the client's own mistake, not the server's"
    assert bad[1].error() is None, "a bad request must not fail the others of its batch"
    assert not finished[0].outputs[protocol.ERROR.name].any(), "every row read: no row carries an error"


def test_the_postprocessing_runs_the_closeup_check_by_bls_like_the_detector(
    stub_utils, shipped_dynamic_onnx, closeup_frame, sample_images, tmp_path
) -> None:
    import cv2

    from facemask_sdk import Detector

    closeup_png = cv2.imencode(".png", closeup_frame)[1].tobytes()
    request = _request([sample_images[0].read_bytes(), closeup_png])  # a photo of small faces and a close-up
    served = {}
    for check in (True, False):
        options = RepositoryOptions(backend="python", closeup_check=check)
        models = _models(stub_utils, write_repository(tmp_path / f"repo-{check}", shipped_dynamic_onnx, options).path)
        stub_utils.bls_calls.clear()
        (response,) = _chain(*models, [request])
        served[check] = protocol.unpack_detections(response.outputs)
        calls = list(stub_utils.bls_calls)
        models[1].finalize()
        if check:
            # one second pass, for the close-up's frame alone, its outputs asked for in CPU memory
            assert [(c.model_name, c.inputs[0].as_numpy().shape[0]) for c in calls] == [(NETWORK, 1)]
            assert calls[0].preferred_memory.memory_type == stub_utils.TRITONSERVER_MEMORY_CPU
        else:
            assert calls == []
    for check in (True, False):
        with Detector(shipped_dynamic_onnx, closeup_check=check) as detector:
            local = [detector(sample_images[0]), detector(closeup_frame)]
        for got, expected in zip(served[check], local):
            np.testing.assert_array_equal(got.class_ids, expected.class_ids)
            np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
            np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)
    assert served[False][1].labels[0] == "with_mask"  # the network alone gets the close-up wrong
    assert served[True][1].labels[0] == "mask_weared_incorrect"  # its label, as the Detector gives it


def test_a_failed_second_pass_fails_its_request_alone_as_the_servers_error(
    stub_utils, shipped_dynamic_onnx, closeup_frame, sample_images, tmp_path
) -> None:
    import cv2

    pre, net, post = _models(
        stub_utils, write_repository(tmp_path / "repo", shipped_dynamic_onnx, RepositoryOptions(backend="python")).path
    )
    closeup = _request([cv2.imencode(".png", closeup_frame)[1].tobytes()])
    small_faces = _request([sample_images[0].read_bytes()])

    class Unavailable:
        def execute(self, requests: list) -> list:
            return [_Response([], error=_TritonError("model 'facemask_network' is not ready"))]

    stub_utils.models[NETWORK] = Unavailable()
    failed, answered = _chain(pre, net, post, [closeup, small_faces])
    assert failed.error().message() == "the close-up check's second pass failed: model 'facemask_network' is not ready"
    assert failed.error().code() == _TritonError.INTERNAL, "the server's failure, not the client's mistake"
    assert answered.error() is None and len(protocol.unpack_detections(answered.outputs)[0]) > 0, (
        "the other is answered"
    )

    stub_utils.models[NETWORK], stub_utils.outputs_on_cpu = net, False  # a GPU network, a stub that cannot ask for CPU
    failed, answered = _chain(pre, net, post, [closeup, small_faces])
    assert "answered in GPU memory" in failed.error().message() and "--no-closeup-check" in failed.error().message()
    assert answered.error() is None

    stub_utils.outputs_on_cpu = True
    prepared = pre.execute([closeup])[0]
    (head,) = net.execute([{INPUT_NAME: _Tensor(INPUT_NAME, prepared.outputs[INPUT_NAME])}])
    (failed,) = post.execute(
        [
            {
                **{k: _Tensor(k, v) for k, v in head.outputs.items()},
                "letterbox": _Tensor("letterbox", prepared.outputs["letterbox"]),
            }
        ]
    )
    assert "needs the request's 'image' input" in failed.error().message()  # sent without its image
    net.finalize()


def test_a_repository_written_before_the_check_still_loads_and_runs_without_it(
    stub_utils, shipped_dynamic_onnx, closeup_frame, tmp_path
) -> None:
    import cv2

    from facemask_sdk.serving.triton_models import CLOSEUP_FILE

    repository = write_repository(tmp_path / "repo", shipped_dynamic_onnx, RepositoryOptions(backend="python")).path
    (repository / POSTPROCESS / "1" / CLOSEUP_FILE).unlink()  # what an older facemask-sdk wrote
    models = _models(stub_utils, repository)
    (response,) = _chain(*models, [_request([cv2.imencode(".png", closeup_frame)[1].tobytes()])])
    models[1].finalize()
    assert protocol.unpack_detections(response.outputs)[0].labels[0] == "with_mask"  # the network's own class
    assert stub_utils.bls_calls == []
