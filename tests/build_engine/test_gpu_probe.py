"""GPU discovery for engine builds (facemask_tools.build_engine.gpu_probe): nvidia-smi's answer parsed."""

from __future__ import annotations

import pytest

from facemask_tools.build_engine.gpu_probe import parse_nvidia_smi


@pytest.mark.parametrize(
    "text, expected",
    [
        ("NVIDIA H100 80GB HBM3, 9.0\n", ("NVIDIA H100 80GB HBM3", "9.0")),
        ("Orin, 8.7\nOther, 1.0\n", ("Orin", "8.7")),
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_nvidia_smi(text, expected):
    info = parse_nvidia_smi(text)
    if expected is None:
        assert info is None
    else:
        assert (info.name, info.compute_capability) == expected
