"""The generated Triton model repository (facemask_sdk.serving.repository), parsed by Triton's own `ModelConfig`
message: configs that chain, the files written, what --force may replace, option checks. Real servers:
tests/system/test_triton_server.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemask_sdk.serving import protocol
from facemask_sdk.serving.repository import (
    MARKER,
    MODEL_NAME,
    NETWORK,
    POSTPROCESS,
    PREPROCESS,
    RepositoryOptions,
    model_configs,
    to_pbtxt,
    write_repository,
)

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_STATIC_ONNX = ROOT / "models" / "facemask.onnx"

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (the [client] extra)"
)
text_format = pytest.importorskip("google.protobuf.text_format")


def _parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # Triton's own schema: unknown fields fail


@pytest.mark.parametrize(
    "backend, platform, kind",
    [
        ("onnxruntime", "onnxruntime_onnx", "KIND_CPU"),
        ("tensorrt", "tensorrt_plan", "KIND_GPU"),
        ("python", "", "KIND_CPU"),
    ],
)
def test_configs_are_valid_triton_model_configs_that_chain(tiny_dynamic_onnx, backend, platform, kind) -> None:
    from facemask_sdk.backends.onnxrt import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_dynamic_onnx) as runner:
        spec = runner.spec
        logits, boxes = runner.run(np.zeros((2, 3, *spec.image_size), np.float32))
    configs = {
        name: _parse(to_pbtxt(config))
        for name, config in model_configs(spec, RepositoryOptions(backend=backend)).items()
    }
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


@pytest.mark.parametrize("check", [True, False])
def test_the_closeup_check_is_written_for_the_postprocessing_with_the_image_it_decodes(
    tiny_dynamic_onnx, tmp_path: Path, check: bool
) -> None:
    import json

    from facemask_sdk.closeups import DEFAULT_CLOSEUP_CHECK
    from facemask_sdk.serving.triton_models import CLOSEUP_FILE

    out = write_repository(tmp_path / "repo", tiny_dynamic_onnx, RepositoryOptions(closeup_check=check)).path
    written = json.loads((out / POSTPROCESS / "1" / CLOSEUP_FILE).read_text())
    assert written == {"check": DEFAULT_CLOSEUP_CHECK.__dict__ if check else None}
    post_inputs = [t.name for t in _parse((out / POSTPROCESS / "config.pbtxt").read_text()).input]
    assert ("image" in post_inputs) == check, "the image reaches the post-processing only for the check"


def test_tensorrt_repository_without_engine_says_where_to_build_it(tiny_dynamic_onnx, tmp_path: Path) -> None:
    written = write_repository(tmp_path / "gpu", tiny_dynamic_onnx, RepositoryOptions(backend="tensorrt"))
    assert written.missing_engine == tmp_path / "gpu" / NETWORK / "1" / "model.plan"
    assert not written.missing_engine.exists()
    assert _parse((tmp_path / "gpu" / NETWORK / "config.pbtxt").read_text()).default_model_filename == "model.plan"


def test_force_replaces_only_a_repository_it_wrote_and_never_another_folder(
    tiny_dynamic_onnx, tmp_path, error_of
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "exists; choose another folder or pass --force" in error_of(
        lambda: write_repository(mine, tiny_dynamic_onnx)
    )
    assert "not a model repository written by facemask-sdk" in error_of(
        lambda: write_repository(mine, tiny_dynamic_onnx, force=True)
    )
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


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"backend": "openvino"}, "backend must be one of onnxruntime, tensorrt, python"),
        ({"max_batch_size": 0}, "max_batch_size must be a whole number >= 1"),
        ({"preferred_batch_sizes": (16,)}, "preferred batch sizes must lie in [1, 8]"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"closeup_check": "yes"}, "closeup_check must be True or False"),
    ],
)
def test_repository_options_are_validated(options, expected, error_of) -> None:
    assert expected in error_of(lambda: RepositoryOptions(**options))
