"""facemask_sdk.image_io: bytes that are no image are one clear error."""

from __future__ import annotations

from facemask_sdk.image_io import decode_image


def test_undecodable_bytes_are_one_clear_error(error_of) -> None:
    assert "cannot decode image (corrupt or not an image): upload" in error_of(lambda: decode_image(b"junk", "upload"))
