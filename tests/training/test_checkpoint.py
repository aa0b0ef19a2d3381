"""Checkpoints load with weights_only: a pickle that runs code is refused before any of it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

ROOT = Path(__file__).resolve().parents[2]


class _RunsCode:
    """Unpickling this calls `Path.touch(marker)`: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "spec": {}, "payload": _RunsCode(marker)}, path)
    assert not marker.exists()
    return path, marker


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--checkpoint", "{ckpt}", "--data", "{samples}", "--out", "{tmp}/eval"],
        ["export", "--checkpoint", "{ckpt}", "--out", "{tmp}/model.onnx"],
        ["train", "--data", "{samples}", "--out", "{tmp}/run", "--pretrained", "{ckpt}", "--image-size", "128"],
        ["train", "--out", "{tmp}/run", "--resume", "{ckpt}"],
    ],
    ids=["eval", "export", "train-pretrained", "train-resume"],
)
def test_code_running_pickle_runs_nothing(evil_checkpoint, tmp_path, command, refusal):
    path, marker = evil_checkpoint
    line = refusal([a.format(ckpt=path, tmp=tmp_path, samples=ROOT / "samples") for a in command]).stderr
    assert not marker.exists(), "unpickling ran code"
    assert "could run code" in line


def test_own_checkpoints_load_with_weights_only(tiny_checkpoint):
    from facemask_tools.training.checkpoint import load_network

    network, spec, payload = load_network(tiny_checkpoint)
    assert spec.architecture and isinstance(payload["train_config"], dict)


def test_a_raw_pickle_calling_os_system_is_named_as_code_not_as_a_bad_file(tmp_path):
    """A bare pickle (no torch.save zip) that calls os.system: refused before anything runs, and said so."""
    from bad_checkpoints import pickle_running

    from facemask_sdk.errors import ModelFileError
    from facemask_tools.training.checkpoint import load_weights_file

    marker = tmp_path / "ran"
    path = pickle_running(tmp_path / "evil.pt", f"touch {marker}")
    with pytest.raises(ModelFileError, match="could run code") as refused:
        load_weights_file(path)
    assert "system" in str(refused.value) and not marker.exists()


def test_a_zip_bomb_checkpoint_is_refused_from_its_directory(tmp_path):
    """300 MiB of zeros as the pickle, deflated to a few hundred KB: refused without unpacking."""
    import tracemalloc

    from bad_checkpoints import zip_bomb

    from facemask_sdk.errors import ModelFileError
    from facemask_tools.training.checkpoint import load_weights_file

    path = zip_bomb(tmp_path / "bomb.pt", 300)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="would unpack to 300 MiB"):
        load_weights_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20
