"""Facts about the machine and the software a benchmark ran on, and process memory readings.

Everything here is read from `/proc`, `nvidia-smi` and package metadata; nothing heavy is imported.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from facemask_tools.training.allocator import memory_allocator

PACKAGES = (
    "facemask-sdk",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "onnx",
    "torch",
    "torchvision",
    "effdet",
    "timm",
    "tensorrt",
    "pycuda",
    "pycocotools",
    "matplotlib",
)


def machine_info() -> dict:
    """CPU model, cores, memory, load, GPUs and driver, OS and Python."""
    cpu_count = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = cpu_count
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": cpu_count,
        "usable_cpus": usable,
        "memory_gb": _meminfo_gb(),
        "load_average": _load_average(),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "allocator": memory_allocator(),
    }
    jetson = Path("/proc/device-tree/model")
    if jetson.is_file():
        info["board"] = jetson.read_text(errors="replace").strip("\x00\n ")
    return info


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (x86), else the ARM fields, else platform.processor()."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Hardware", "Model", "cpu model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


def gpus() -> list[dict]:
    """Name, driver and memory of each NVIDIA GPU (empty without nvidia-smi)."""
    rows = _nvidia_smi(["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"])
    out = []
    for row in rows:
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 3:
            out.append({"name": parts[0], "driver": parts[1], "memory_mb": _number(parts[2])})
    return out


def library_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for the figures (absent ones left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(root: Path) -> str | None:
    """`<sha>` of the checkout, with `+dirty` when tracked files are modified; None outside git."""
    if shutil.which("git") is None:
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode != 0:
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def memory_mb() -> dict[str, float | None]:
    """This process's current (`VmRSS`) and peak (`VmHWM`) resident memory in MB, from /proc/self/status."""
    values: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None}
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        import resource  # not Linux: the peak only (ru_maxrss is KiB on Linux, bytes on macOS)

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        values["peak_rss_mb"] = peak / (1e6 if sys.platform == "darwin" else 1024.0)
        return values
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kib = float(value.split()[0])
            values["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = kib / 1024.0
    return values


def gpu_memory_of_process(pid: int) -> float | None:
    """GPU memory (MB) that nvidia-smi attributes to `pid`; None without nvidia-smi or when it cannot
    see the process (e.g. another PID namespace in a container)."""
    rows = _nvidia_smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    total, seen = 0.0, False
    for row in rows:
        parts = [p.strip() for p in row.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            total += _number(parts[1]) or 0.0
            seen = True
    return total if seen else None


def _nvidia_smi(args: list[str]) -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _meminfo_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(float(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
