"""Machine facts a speed figure is labelled with: which malloc a process really runs on."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from facemask_tools.benchmarks.machine import machine_info
from facemask_tools.training.allocator import memory_allocator

PROBE = "from facemask_tools.training.allocator import memory_allocator; print(memory_allocator())"


def _allocator_in_child(preload: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux only)")
def test_plain_process_runs_on_libc_malloc():
    assert _allocator_in_child(None) == "libc"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux only)")
@pytest.mark.parametrize("name", ["jemalloc", "tcmalloc_minimal"])
def test_preloaded_allocator_is_named(name):
    library = ctypes.util.find_library(name)
    if library is None:
        pytest.skip(f"lib{name} is not installed (Debian: libjemalloc2 / libtcmalloc-minimal4)")
    assert _allocator_in_child(library) == name.split("_")[0]


def test_machine_info_names_this_process_allocator():
    assert machine_info()["allocator"] == memory_allocator()
