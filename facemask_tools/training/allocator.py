"""Which malloc CPU training runs on, and the switch to tcmalloc.

A training step allocates and frees activation-sized blocks (tens of MB) every step. glibc's malloc
serves those with mmap and hands them back to the kernel on free, so every step faults them in again
and the kernel zeroes each page: on a 2-core AMD EPYC a third of the training time was system time.
tcmalloc keeps the freed blocks: the bare 384 px step takes 2.6 s instead of 3.7 s
(`facemask-sdk dev train-speed`), the whole stage-H training step 3.0 s instead of 3.45 s,
and `facemask-sdk eval` 51 s instead of 122 s (see `docs/training-log.md`). jemalloc's defaults
were measured slower than glibc here, so it is not used.

The allocator is fixed when a process starts (LD_PRELOAD), so `facemask-sdk train` re-executes itself
once with tcmalloc preloaded when the library is installed and the process was started as the command.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

from facemask_sdk.errors import FacemaskError

CHOICES = ("auto", "tcmalloc", "libc")
REEXEC_MARK = "FACEMASK_MALLOC_REEXEC"  # set in the re-executed process: never re-execute twice
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")
INSTALL_HINT = "Debian/Ubuntu: apt-get install libtcmalloc-minimal4"


def memory_allocator() -> str:
    """The malloc this process runs on: `jemalloc` or `tcmalloc` when preloaded, else `libc`."""
    try:
        maps = Path("/proc/self/maps").read_text(errors="replace")
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in maps:
            return name
    return "libc"


def find_tcmalloc() -> str | None:
    """The installed tcmalloc library's name for LD_PRELOAD (e.g. `libtcmalloc_minimal.so.4`), or None."""
    for name in TCMALLOC_NAMES:
        library = ctypes.util.find_library(name)
        if library:
            return library
    return None


def started_as_command() -> bool:
    """True when this process is `facemask-sdk` itself (console script or `python -m facemask_sdk.cli.main`),
    so replacing it with a fresh copy loses nothing; False inside another program (a test runner, a notebook)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "facemask-sdk" or program.parts[-3:] == ("facemask_sdk", "cli", "main.py")


def use_tcmalloc(choice: str = "auto") -> str:
    """Make this training process run on tcmalloc where `choice` allows it; returns the allocator in use.

    auto: re-execute onto tcmalloc when it is installed, the process runs on glibc's malloc, was started
    as the command and was not re-executed already; otherwise carry on as is. tcmalloc: the same, but a
    missing library is an error. libc: change nothing. Does not return when it re-executes.
    """
    if choice not in CHOICES:
        raise FacemaskError(f"--malloc must be one of {', '.join(CHOICES)}, not {choice!r}")
    current = memory_allocator()
    if choice == "libc" or current != "libc" or os.environ.get(REEXEC_MARK) or not sys.platform.startswith("linux"):
        return current
    library = find_tcmalloc()
    if library is None:
        if choice == "tcmalloc":
            raise FacemaskError(f"--malloc tcmalloc: libtcmalloc is not installed ({INSTALL_HINT})")
        return current
    if not started_as_command():
        return current
    preload = " ".join(part for part in (library, os.environ.get("LD_PRELOAD", "")) if part)
    env = {**os.environ, "LD_PRELOAD": preload, REEXEC_MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    return current  # not reached
