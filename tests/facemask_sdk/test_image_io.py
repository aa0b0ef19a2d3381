"""facemask_sdk.image_io: bytes that are no image are one clear error."""

from __future__ import annotations

from facemask_sdk.image_io import decode_image


def test_undecodable_bytes_are_one_clear_error(error_of) -> None:
    assert "cannot decode image (corrupt, not an image" in error_of(lambda: decode_image(b"junk", "upload"))


def test_header_size_matches_the_decoded_size_in_every_format() -> None:
    import cv2
    import numpy as np

    from facemask_sdk.image_io import image_header_size

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    encodings = [
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".webp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        (".tif", []),
        (".ppm", []),
    ]
    for suffix, params in encodings:
        encoded = cv2.imencode(suffix, image, params)[1].tobytes()
        assert image_header_size(encoded) == (53, 37), suffix
        assert decode_image(encoded).shape == (37, 53, 3), suffix
    assert image_header_size(b"GIF89a") is None and image_header_size(b"\xff\xd8\xff") is None


def test_an_image_over_the_pixel_budget_is_refused_before_decoding(error_of, monkeypatch, png_declaring) -> None:
    import cv2
    import numpy as np

    message = error_of(lambda: decode_image(png_declaring(60000, 60000), "bomb.png"))
    assert "image too large: bomb.png declares 60000x60000 pixels" in message and "FACEMASK_MAX_IMAGE_PIXELS" in message
    small = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "9999")
    assert "over the budget of 9,999" in error_of(lambda: decode_image(small, "photo"))
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "10000")
    assert decode_image(small).shape == (100, 100, 3)  # exactly at the budget is allowed
    monkeypatch.setenv("FACEMASK_MAX_IMAGE_PIXELS", "lots")
    assert "FACEMASK_MAX_IMAGE_PIXELS must be a positive whole number" in error_of(lambda: decode_image(small))


def test_sizes_are_found_past_large_metadata_and_at_the_end_of_a_tiff() -> None:
    """A camera JPEG carries EXIF, XMP and ICC segments before its frame header; OpenCV writes a TIFF's
    directory after the pixels: both far past the first 64 KiB."""
    import struct

    import cv2
    import numpy as np

    from facemask_sdk.image_io import image_header_size

    image = np.random.default_rng(1).integers(0, 255, (400, 500, 3), np.uint8)
    tiff = cv2.imencode(".tif", image)[1].tobytes()
    assert len(tiff) > 1 << 16 and image_header_size(tiff) == (500, 400)
    assert decode_image(tiff).shape == (400, 500, 3)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    padding = b"".join(b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533) for _ in range(2))  # 128 KiB of APP1
    camera_jpeg = jpeg[:2] + padding + jpeg[2:]
    assert image_header_size(camera_jpeg) == (500, 400)
    assert decode_image(camera_jpeg).shape == (400, 500, 3)


def test_other_formats_are_named_in_the_refusal(error_of) -> None:
    message = error_of(lambda: decode_image(b"GIF89a" + bytes(100), "anim.gif"))
    assert "not one of JPEG, PNG, BMP, WebP, TIFF, PNM" in message and "anim.gif" in message
