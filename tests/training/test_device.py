"""Device and autocast choice (facemask_tools.training.device): what each --device / --amp resolves to here."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from facemask_sdk.errors import FacemaskError  # noqa: E402
from facemask_tools.training.device import cpu_has_fast_bf16, resolve_amp, resolve_device  # noqa: E402


def test_auto_device_is_cuda_only_where_torch_sees_it() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(FacemaskError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_autocast_dtype_on_the_cpu() -> None:
    assert resolve_amp("off", "cpu") is None
    assert resolve_amp("bf16", "cpu") is torch.bfloat16
    assert resolve_amp("auto", "cpu") is (torch.bfloat16 if cpu_has_fast_bf16() else None)  # emulated bf16 is slower
    with pytest.raises(FacemaskError, match="--amp fp16 needs CUDA"):
        resolve_amp("fp16", "cpu")
