"""Where a run computes: the torch device, and the autocast dtype that is fast there.

bf16 autocast is native on CPUs with AVX-512-BF16 or AMX and emulated (several times slower, measured
in the model card) elsewhere, so `--amp auto` turns it on only where it pays; on CUDA it is AMP.
"""

from __future__ import annotations

from pathlib import Path

import torch

from facemask_sdk.errors import FacemaskError


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacemaskError(f"--device {name} asked for, but CUDA is not available to torch here")
    return name


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512-BF16 or AMX); elsewhere bf16 is emulated, slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: str) -> torch.dtype | None:
    """The autocast dtype for the network's forward pass, or None for fp32."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    if amp == "fp16" and not device.startswith("cuda"):
        raise FacemaskError("--amp fp16 needs CUDA; on a CPU use --amp bf16 or off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
