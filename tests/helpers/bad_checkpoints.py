"""Hostile checkpoint files for tests: a pickle that would run a shell command, and a zip bomb."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path


def pickle_running(path: Path, command: str) -> Path:
    """A bare pickle whose loading would call os.system(command)."""

    class RunsACommand:
        def __reduce__(self):
            import os

            return (os.system, (command,))

    path.write_bytes(pickle.dumps(RunsACommand(), protocol=2))
    return path


def zip_bomb(path: Path, mebibytes: int) -> Path:
    """A torch.save-shaped zip whose pickle unpacks to `mebibytes` MiB of zeros (deflated to a few hundred KB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb/data.pkl", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(mebibytes):
                member.write(block)
    return path
