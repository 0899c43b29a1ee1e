import io

import numpy as np
import pytest
from PIL import Image

from sam3_core.errors import ImageTooLargeError, InvalidImageError, InvalidImageIdError
from sam3_core.images import check_image_id, content_id, load_rgb
from tests.conftest import encode_image, png_header, random_pixels


class TestLoadRgb:
    def test_png_roundtrip(self):
        pixels = random_pixels(1, 30, 40)
        assert np.array_equal(load_rgb(encode_image(pixels), max_pixels=10**6), pixels)

    def test_exif_orientation_is_applied(self):
        pixels = random_pixels(2, 30, 40)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        data = encode_image(pixels, "JPEG", exif=exif.tobytes(), quality=95)
        out = load_rgb(data, max_pixels=10**6)
        assert out.shape == (40, 30, 3)

    @pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "1", "I;16", "I"])
    def test_modes_become_rgb(self, mode):
        image = Image.fromarray(random_pixels(3, 20, 30)).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, "TIFF" if mode in ("CMYK", "I;16", "I") else "PNG")
        out = load_rgb(buffer.getvalue(), max_pixels=10**6)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8

    def test_grayscale_keeps_its_values(self):
        gray = random_pixels(4, 10, 10)[..., 0]
        out = load_rgb(encode_image(gray), max_pixels=10**6)
        assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    def test_sixteen_bit_keeps_the_high_byte(self):
        values = np.array([[0, 256 * 200 + 7], [65535, 256 * 17]], dtype=np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(values).save(buffer, "PNG")
        assert load_rgb(buffer.getvalue(), max_pixels=100)[..., 0].tolist() == [[0, 200], [255, 17]]

    def test_pixel_limit_from_header(self):
        data = encode_image(np.zeros((100, 100, 3), np.uint8))
        with pytest.raises(ImageTooLargeError, match="100x100"):
            load_rgb(data, max_pixels=9999)

    def test_decompression_bomb_is_refused_before_decoding(self):
        # 20000 x 20000 of one colour: a few hundred KB of PNG, 1.2 GB of pixels.
        bomb = Image.new("L", (20000, 20000))
        buffer = io.BytesIO()
        bomb.save(buffer, "PNG", optimize=True)
        assert len(buffer.getvalue()) < 2_000_000
        with pytest.raises(ImageTooLargeError):
            load_rgb(buffer.getvalue(), max_pixels=64 * 2**20)

    @pytest.mark.parametrize(
        ("max_pixels", "says"),
        [
            (64 * 2**20, "the image is 200000000 pixels, the limit is 67108864"),
            # An operator's limit above Pillow's own guard: the message names both.
            (300_000_000, "over Pillow's decompression-bomb guard of 178956970 pixels"),
        ],
    )
    def test_over_pillows_own_limit_quotes_ours(self, max_pixels, says):
        # Pillow refuses this while opening it, before our check: the client still hears of
        # SAM3_MAX_IMAGE_PIXELS, not only of Pillow's limit.
        with pytest.raises(ImageTooLargeError) as refused:
            load_rgb(png_header(20000, 10000), max_pixels=max_pixels)
        assert says in refused.value.message
        assert "SAM3_MAX_IMAGE_PIXELS" in refused.value.message
        assert "DOS attack" not in refused.value.message

    def test_truncated_image(self):
        data = encode_image(random_pixels(5, 64, 64), "JPEG")
        with pytest.raises(InvalidImageError, match="cannot be decoded"):
            load_rgb(data[: len(data) // 2], max_pixels=10**6)

    @pytest.mark.parametrize(
        "data",
        [
            b"plain text, not an image",
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x05numpy\x94.",  # a pickle
            b"",
        ],
    )
    def test_not_an_image(self, data):
        with pytest.raises(InvalidImageError, match="not in a supported format"):
            load_rgb(data, max_pixels=10**6)

    def test_format_outside_the_list_is_refused(self):
        buffer = io.BytesIO()
        Image.fromarray(random_pixels(6, 8, 8)).save(buffer, "PPM")
        with pytest.raises(InvalidImageError, match="supported format"):
            load_rgb(buffer.getvalue(), max_pixels=10**6)


class TestImageId:
    def test_content_id_is_sha256_hex(self):
        assert content_id(b"abc").startswith("ba7816bf") and len(content_id(b"abc")) == 64

    def test_ids_are_kept_as_sent(self):
        assert check_image_id("project-1/img_0001.jpg", max_length=64) == "project-1/img_0001.jpg"

    @pytest.mark.parametrize("bad", ["", "a" * 65, "with space", "semi;colon", "new\nline", "é"])
    def test_bad_ids(self, bad):
        with pytest.raises(InvalidImageIdError):
            check_image_id(bad, max_length=64)
