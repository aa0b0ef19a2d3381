"""Averaging checkpoints: the element-wise mean of real network weights, refused across model specs."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("effdet")

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_tools.training.average import average_checkpoints  # noqa: E402
from facemask_tools.training.checkpoint import load_network, read_checkpoint, save_checkpoint  # noqa: E402


@pytest.fixture()
def two_checkpoints(tiny_checkpoint: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny checkpoint and a copy whose float tensors are shifted by +1 (integers left alone)."""
    payload = read_checkpoint(tiny_checkpoint)
    shifted = {k: v + 1 if v.is_floating_point() else v + 5 for k, v in payload["state_dict"].items()}
    other = save_checkpoint(tmp_path / "other.pt", {**payload, "state_dict": shifted, "init": "shifted (test)"})
    return tiny_checkpoint, other


def test_average_is_the_mean_of_float_tensors_and_loads(two_checkpoints, tmp_path):
    first, second = two_checkpoints
    out = average_checkpoints([first, second], tmp_path / "soup.pt")
    network, spec, payload = load_network(out)
    a = read_checkpoint(first)["state_dict"]
    checked_float = checked_int = 0
    for name, tensor in payload["state_dict"].items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, a[name] + 0.5)
            checked_float += 1
        else:  # BatchNorm step counters come from the first checkpoint, not a mean
            assert torch.equal(tensor, a[name])
            checked_int += 1
    assert checked_float > 100 and checked_int > 10
    assert spec.to_dict() == read_checkpoint(first)["spec"]
    assert payload["init"]["kind"] == "average"
    assert payload["init"]["sources"] == [str(first), str(second)]
    assert "metrics" not in payload  # no figures that describe other weights
    with torch.no_grad():
        outputs = network(torch.zeros(1, 3, *spec.image_size))
    assert all(torch.isfinite(t).all() for t in outputs[0] + outputs[1])


def test_average_refuses_other_spec_and_resume_checkpoints(two_checkpoints, tmp_path):
    first, _ = two_checkpoints
    payload = read_checkpoint(first)
    other_spec = save_checkpoint(
        tmp_path / "spec.pt", {**payload, "spec": {**payload["spec"], "image_size": [384, 384]}}
    )
    with pytest.raises(FacemaskError, match="another model spec"):
        average_checkpoints([first, other_spec], tmp_path / "soup.pt")
    resume = save_checkpoint(tmp_path / "last.pt", {**payload, "ema": {"weights": payload["state_dict"]}})
    with pytest.raises(FacemaskError, match="resume checkpoint"):
        average_checkpoints([first, resume], tmp_path / "soup.pt")
    with pytest.raises(FacemaskError, match="at least two"):
        average_checkpoints([first], tmp_path / "soup.pt")
    with pytest.raises(FacemaskError, match="one of the checkpoints to average"):
        average_checkpoints([first, other_spec], first, overwrite=True)
    assert not (tmp_path / "soup.pt").exists()


def test_cli_keeps_an_existing_output(two_checkpoints, tmp_path, run_dev, refusal):
    """`facemask-sdk dev average`: an existing --out is one error line (exit code 2) and stays as it was."""
    from facemask_tools.dev import dev

    first, second = two_checkpoints
    existing = tmp_path / "keep.pt"
    existing.write_bytes(b"the user's file")
    line = refusal(["average", first, second, "--out", existing], group=dev).stderr.strip()
    assert line == f"error: {existing} already exists; pass --force (overwrite=True) to replace it"
    assert existing.read_bytes() == b"the user's file"
    result = run_dev(["average", first, second, "--out", existing, "--force"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mean of 2 checkpoints" in result.stdout
    load_network(existing)


def test_average_refuses_checkpoints_with_other_logit_offsets(two_checkpoints, tmp_path):
    from facemask_tools.training.class_offset import write_offset_checkpoint

    first, second = two_checkpoints
    for level in (None, 6):  # in the class head's bias, or in a per-level forward hook
        shifted = write_offset_checkpoint(first, tmp_path / f"shifted-{level}.pt", "without_mask", -1.0, "test", level)
        with pytest.raises(FacemaskError, match="other logit offsets"):
            average_checkpoints([second, shifted], tmp_path / "soup.pt")
