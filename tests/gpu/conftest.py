"""The GPU tests' one precondition, checked once: pycuda and a CUDA GPU. Without them every test in
tests/gpu is skipped with the reason (tests/gpu/run.sh installs pycuda first on a GPU machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def gpu_missing() -> str | None:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return "pycuda is not installed (pip install 'facemask-sdk[trt]'); these tests need a CUDA GPU"
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        return f"no usable CUDA GPU: {exc}"
    return None if count else "no CUDA GPU found"


REASON = gpu_missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REASON is None:
        return
    skip = pytest.mark.skip(reason=REASON)
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)
