"""File helpers shared by the runtime and the tooling: atomic writes and file digests.

An atomic write goes to a temporary file in the target's folder and is renamed into place, so a crash
or a full disk never leaves half a model, checkpoint or sidecar where a whole one was expected.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from facemask_sdk.errors import FacemaskError

Content = bytes | str | Callable[[BinaryIO], None]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import (os.umask can only be read by setting it)


def write_atomically(path: str | os.PathLike, content: Content, overwrite: bool = True) -> Path:
    """Write `content` (bytes, text as UTF-8, or a function that writes into a binary handle) to `path`.

    With `overwrite=False` an existing `path` is refused, also one that appeared while writing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FacemaskError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        if path.exists() and not overwrite:
            raise FacemaskError(f"{path} already exists; pass --force (overwrite=True) to replace it")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a written model is as readable as any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
