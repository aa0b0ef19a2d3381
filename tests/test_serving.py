"""The serving contract, the generated Triton repository (parsed by Triton's own `ModelConfig`
message) and the client's errors, without a server. `test_triton_server.py` runs real servers."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.detections import Detections
from facemask_sdk.image_io import decode_image
from facemask_sdk.preprocess import Letterbox
from facemask_sdk.serving import protocol
from facemask_sdk.spec import INPUT_NAME
from facemask_sdk.serving.repository import (
    MARKER, MODEL_NAME, NETWORK, POSTPROCESS, PREPROCESS, RepositoryOptions, model_configs, to_pbtxt, write_repository,
)

from facemask_tools.benchmarks.server_process import free_ports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_STATIC_ONNX = ROOT / "models" / "facemask.onnx"


def test_detections_survive_the_wire_padded_to_the_fixed_length() -> None:
    found = [Detections(np.array([[1, 2, 30, 40], [5, 6, 7, 8]], np.float32), np.array([0.9, 0.5], np.float32),
                        np.array([2, 0])), Detections.empty()]
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
        lambda: protocol.unpack_detections({k: v for k, v in outputs.items() if k != protocol.SCORES.name}))
    outputs[protocol.NUM_DETECTIONS.name][0, 0] = 101
    assert "outside [0, 100]" in error_of(lambda: protocol.unpack_detections(outputs))
    batch = protocol.encode_request([b"\x89PNG", b"abc"])
    assert batch.shape == (2, 1) and protocol.request_images(batch) == [b"\x89PNG", b"abc"]


def test_letterbox_geometry_as_a_tensor_maps_boxes_the_same(sample_images) -> None:
    image = decode_image(sample_images[0].read_bytes())
    box = Letterbox.fit(image.shape[:2], (640, 640))
    again = Letterbox.from_array(box.as_array())
    boxes = np.array([[10.0, 20.0, 300.0, 200.0], [0.0, 0.0, 640.0, 640.0]], np.float32)
    np.testing.assert_array_equal(again.to_original(boxes), box.to_original(boxes))
    assert again.original_hw == box.original_hw and again.input_hw == box.input_hw


def test_undecodable_bytes_are_one_clear_error(error_of) -> None:
    assert "cannot decode image (corrupt or not an image): upload" in error_of(lambda: decode_image(b"junk", "upload"))


# --- the repository -----------------------------------------------------------------------------------

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (the [client] extra)")
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # Triton's own schema: unknown fields fail


@pytest.mark.parametrize("backend, platform, kind", [
    ("onnxruntime", "onnxruntime_onnx", "KIND_CPU"), ("tensorrt", "tensorrt_plan", "KIND_GPU"), ("python", "", "KIND_CPU"),
])
def test_configs_are_valid_triton_model_configs_that_chain(tiny_dynamic_onnx, backend, platform, kind) -> None:
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_dynamic_onnx) as runner:
        spec = runner.spec
        logits, boxes = runner.run(np.zeros((2, 3, *spec.image_size), np.float32))
    configs = {name: _parse(to_pbtxt(config)) for name, config in model_configs(spec, RepositoryOptions(backend=backend)).items()}
    network = configs[NETWORK]
    assert network.platform == platform and (network.backend == "python") == (backend == "python")
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(network.instance_group[0].kind) == kind
    assert network.max_batch_size == 8 and list(network.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [list(o.dims) for o in network.output] == [list(logits.shape[1:]), list(boxes.shape[1:])]  # the ONNX's own
    assert list(network.input[0].dims) == [3, *spec.image_size]

    # every ensemble step reads only tensors that exist by then, with the type and shape its model declares
    ensemble = configs[MODEL_NAME]
    assert ensemble.platform == "ensemble"
    available = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        declared_in = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        for key, value in step.input_map.items():
            assert available[value] == declared_in[key], (step.model_name, key)
        declared_out = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        available.update({value: declared_out[key] for key, value in step.output_map.items()})
    assert {t.name: (t.data_type, list(t.dims)) for t in ensemble.output}.items() <= available.items()
    assert [t.name for t in ensemble.output] == [spec_.name for spec_ in protocol.OUTPUTS]


def test_written_repository_has_every_model_and_the_sdk_adapters(tiny_dynamic_onnx, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    written = write_repository(out, tiny_dynamic_onnx, RepositoryOptions(backend="onnxruntime"))
    assert written.missing_engine is None
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, MODEL_NAME, PREPROCESS, NETWORK, POSTPROCESS])
    assert (out / NETWORK / "1" / "model.onnx").read_bytes() == tiny_dynamic_onnx.read_bytes()
    assert "PreprocessModel as TritonPythonModel" in (out / PREPROCESS / "1" / "model.py").read_text()
    for name in (MODEL_NAME, PREPROCESS, NETWORK, POSTPROCESS):
        assert _parse((out / name / "config.pbtxt").read_text()).name == name
    assert not list(tmp_path.glob(".repo.*")), "no staging folder left behind"


def test_tensorrt_repository_without_engine_says_where_to_build_it(tiny_dynamic_onnx, tmp_path: Path) -> None:
    written = write_repository(tmp_path / "gpu", tiny_dynamic_onnx, RepositoryOptions(backend="tensorrt"))
    assert written.missing_engine == tmp_path / "gpu" / NETWORK / "1" / "model.plan"
    assert not written.missing_engine.exists()
    assert _parse((tmp_path / "gpu" / NETWORK / "config.pbtxt").read_text()).default_model_filename == "model.plan"


def test_force_replaces_only_a_repository_it_wrote_and_never_another_folder(tiny_dynamic_onnx, tmp_path, error_of) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "exists; choose another folder or pass --force" in error_of(lambda: write_repository(mine, tiny_dynamic_onnx))
    assert "not a model repository written by facemask-sdk" in error_of(
        lambda: write_repository(mine, tiny_dynamic_onnx, force=True))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"

    out = tmp_path / "repo"
    write_repository(out, tiny_dynamic_onnx, RepositoryOptions(max_batch_size=4, preferred_batch_sizes=(4,)))
    write_repository(out, tiny_dynamic_onnx, force=True)
    assert _parse((out / NETWORK / "config.pbtxt").read_text()).max_batch_size == 8  # the new one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "repo"], "no staging or retired folder left"


def test_a_static_batch_model_is_refused_with_the_export_to_run(tmp_path, error_of) -> None:
    message = error_of(lambda: write_repository(tmp_path / "r", SHIPPED_STATIC_ONNX))
    assert "fixed batch of 1" in message and "--dynamic-batch" in message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("options, expected", [
    ({"backend": "openvino"}, "backend must be one of onnxruntime, tensorrt, python"),
    ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
    ({"preferred_batch_sizes": (16,)}, "preferred batch sizes must lie in [1, 8]"),
    ({"score_threshold": 1.5}, "score_threshold"),
])
def test_repository_options_are_validated(options, expected, error_of) -> None:
    assert expected in error_of(lambda: RepositoryOptions(**options))


def test_cli_writes_the_repository_or_one_error_line(run_cli, tiny_dynamic_onnx, tmp_path) -> None:
    result = run_cli(["triton-repository", "--onnx", tiny_dynamic_onnx, "--out", tmp_path / "gpu", "--backend", "tensorrt"])
    assert result.returncode == 0, result.stderr
    assert "facemask-sdk build-engine --onnx" in result.stdout and "--dynamic-batch 1,4,8" in result.stdout
    for args, expected in [
        (["--onnx", SHIPPED_STATIC_ONNX, "--out", tmp_path / "a"], "fixed batch of 1"),
        (["--onnx", tmp_path / "none.onnx", "--out", tmp_path / "b"], "ONNX model not found"),
        (["--onnx", tiny_dynamic_onnx, "--out", tmp_path / "gpu"], "exists; choose another folder"),
    ]:
        result = run_cli(["triton-repository", *args])
        assert result.returncode == 2 and result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# --- client and serve command without a server --------------------------------------------------------

def test_client_against_no_server_says_so_within_its_timeout(sample_images, error_of) -> None:
    from facemask_sdk.serving.client import TritonClient

    (closed,) = free_ports(1)
    with TritonClient(f"127.0.0.1:{closed}", timeout_s=3) as client:
        assert client.is_ready() is False
        message = error_of(lambda: client.detect(sample_images[0]))
    assert "does not answer (is it running?)" in message
    assert "timeout_s must be positive" in error_of(lambda: TritonClient(timeout_s=0))


def test_serve_refuses_a_port_in_use_and_bad_settings_in_one_line(run_cli, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (free,) = free_ports(1)
        for args, expected in [
            (["--grpc-port", str(port), "--http-port", str(free)], f"cannot listen on 127.0.0.1:{port} for gRPC"),
            (["--http-port", "9000", "--grpc-port", "9000"], "ports must differ"),
            (["--score-threshold", "2"], "score_threshold"),
            (["--model", tmp_path / "none.onnx"], "model file not found"),
        ]:
            result = run_cli(["serve", *args])
            assert result.returncode == 2 and result.stderr.startswith("error: ") and expected in result.stderr, result.stderr


def test_serve_without_pytriton_names_the_extra(run_cli) -> None:
    if importlib.util.find_spec("pytriton") is not None:
        pytest.skip("nvidia-pytriton is installed in this environment (test_triton_server.py runs it)")
    http_port, grpc_port = free_ports(2)
    result = run_cli(["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)])
    assert result.returncode == 2
    assert "pip install 'facemask-sdk[serve]'" in result.stderr and result.stderr.startswith("error: ")


# --- the ensemble's Python models, run here against a stand-in for Triton's stub module ----------------

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
    def message(self) -> str:
        return str(self)


@pytest.fixture
def stub_utils(monkeypatch):
    """`triton_python_backend_utils` as the stub provides it: just the calls the models make."""
    import types

    utils = types.SimpleNamespace(Tensor=_Tensor, InferenceResponse=_Response, TritonError=_TritonError,
                                  get_input_tensor_by_name=lambda request, name: request[name])
    monkeypatch.setitem(__import__("sys").modules, "triton_python_backend_utils", utils)
    return utils


def _load(model_class, repository: Path, name: str):
    import json

    model = model_class()
    config = {"parameters": {"threads": {"string_value": "1"}}} if name == NETWORK else {}
    model.initialize({"model_repository": str(repository / name), "model_version": "1",
                      "model_config": json.dumps(config)})
    return model


def test_ensemble_steps_chained_give_the_detector_detections(stub_utils, tiny_dynamic_onnx, sample_images, tmp_path) -> None:
    from facemask_sdk import Detector
    from facemask_sdk.serving.triton_models import NetworkModel, PostprocessModel, PreprocessModel

    options = RepositoryOptions(backend="python", score_threshold=0.05)  # the tiny untrained model scores low
    repository = write_repository(tmp_path / "repo", tiny_dynamic_onnx, options).path
    pre, net, post = (_load(cls, repository, name) for cls, name in
                      ((PreprocessModel, PREPROCESS), (NetworkModel, NETWORK), (PostprocessModel, POSTPROCESS)))
    # two requests as the dynamic batcher hands them over: one with 1 image, one with 3
    requests = [{"image": _Tensor("image", protocol.encode_request([p.read_bytes() for p in group]))}
                for group in (sample_images[:1], sample_images[1:])]
    prepared = pre.execute(requests)
    assert [r.error for r in prepared] == [None, None]
    heads = net.execute([{INPUT_NAME: _Tensor(INPUT_NAME, r.outputs[INPUT_NAME])} for r in prepared])
    finished = post.execute([{**{k: _Tensor(k, v) for k, v in head.outputs.items()},
                              "letterbox": _Tensor("letterbox", r.outputs["letterbox"])}
                             for head, r in zip(heads, prepared)])
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
    assert "cannot decode image (corrupt or not an image): image 0 of the request" in str(bad[0].error)
    assert bad[1].error is None, "a bad request must not fail the others of its batch"
