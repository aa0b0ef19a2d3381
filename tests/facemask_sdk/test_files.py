"""facemask_sdk.files: atomic writes keep the old file on failure; digests match hashlib."""

from __future__ import annotations

import hashlib

import pytest

from facemask_sdk.errors import FacemaskError
from facemask_sdk.files import file_sha256, write_atomically


def test_write_atomically_bytes_text_and_writer(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    write_atomically(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_atomically(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    write_atomically(target, lambda handle: handle.write(b"from a writer"))
    assert target.read_bytes() == b"from a writer"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def broken(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    with pytest.raises(FacemaskError, match="already exists"):
        write_atomically(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"


def test_file_sha256(tmp_path):
    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_written_files_get_ordinary_permissions(tmp_path):
    """A model written atomically is readable by others (the umask's say), not mkstemp's 0600: a container
    running as another user must be able to read what was installed."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    path = write_atomically(tmp_path / "model.onnx", b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
