"""facemask_sdk.image_io: bytes that are no image are one clear error."""

from __future__ import annotations

from facemask_sdk.image_io import decode_image


def test_undecodable_bytes_are_one_clear_error(error_of) -> None:
    assert "cannot decode image (corrupt or not an image): upload" in error_of(lambda: decode_image(b"junk", "upload"))


def test_header_size_matches_the_decoded_size_in_every_format() -> None:
    import cv2
    import numpy as np

    from facemask_sdk.image_io import image_header_size

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    encodings = [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
                 (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", []), (".ppm", [])]
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
