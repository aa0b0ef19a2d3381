"""What GPU the engine is built for: name, compute capability and free memory of GPU 0, from pycuda,
cuda-python or nvidia-smi, whichever this machine has. Each probe answers None rather than fail, so
the builder can say in one line that no GPU is visible."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    source: str


def visible_gpu() -> GpuInfo | None:
    """Name and compute capability of GPU 0 from pycuda (what the runtime checks against), cuda-python
    or nvidia-smi, whichever answers first; None when none of them sees a GPU."""
    for probe in (_gpu_from_pycuda, _gpu_from_cuda_python, _gpu_from_nvidia_smi):
        info = probe()
        if info is not None:
            return info
    return None


def _gpu_from_cuda_python() -> GpuInfo | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    error, prop = cudart.cudaGetDeviceProperties(0)
    if error != cudart.cudaError_t.cudaSuccess or prop is None:
        return None
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{prop.major}.{prop.minor}", "cuda-python")


def _gpu_from_pycuda() -> GpuInfo | None:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return None
    try:
        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return GpuInfo(device.name(), f"{major}.{minor}", "pycuda")
    except cuda.Error:
        return None


def _gpu_from_nvidia_smi() -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None


def parse_nvidia_smi(text: str) -> GpuInfo | None:
    """First line of `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`."""
    line = next((row for row in text.splitlines() if row.strip()), "")
    if "," not in line:
        return None
    name, capability = (part.strip() for part in line.rsplit(",", 1))
    return GpuInfo(name, capability, "nvidia-smi") if name else None


def free_gpu_memory() -> int | None:
    """Free memory of GPU 0 in bytes (pycuda or cuda-python), or None when neither can tell."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        context = cuda.Device(0).retain_primary_context()
        context.push()
        try:
            free, _ = cuda.mem_get_info()
        finally:
            cuda.Context.pop()
        return int(free)
    except Exception:  # noqa: BLE001 - no pycuda, no GPU, no driver: fall through to the next probe
        pass
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            return None
    error, free, _ = cudart.cudaMemGetInfo()
    return int(free) if error == cudart.cudaError_t.cudaSuccess else None
