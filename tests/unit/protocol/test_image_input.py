"""The client's `image` field to bytes: base64, URL input off or on."""

import base64

import pytest

from deployments.settings import IngressSettings
from sam3_core.errors import ImageTooLargeError, InvalidImageError, UrlInputError
from sam3_core.protocol.bodies import ImageInput
from sam3_core.protocol.image_input import decode_base64, read_image_input
from tests.conftest import encode_image, random_pixels

OFF = {"max_bytes": 10**7, "url_policy": None}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class TestBase64:
    def test_plain_and_data_url_and_wrapped_lines_decode_alike(self):
        data = encode_image(random_pixels(0))
        text = b64(data)
        assert decode_base64(text, max_bytes=10**7) == data
        assert decode_base64("data:image/png;base64," + text, max_bytes=10**7) == data
        wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
        assert decode_base64(wrapped, max_bytes=10**7) == data

    @pytest.mark.parametrize("bad", ["", "   ", "not base64!!", "abc"])
    def test_invalid_base64(self, bad):
        with pytest.raises(InvalidImageError):
            decode_base64(bad, max_bytes=1000)

    def test_byte_limit_is_checked_before_decoding(self):
        with pytest.raises(ImageTooLargeError, match="limit is 100"):
            decode_base64("A" * 4000, max_bytes=100)


class TestImageInput:
    def test_base64(self):
        data = encode_image(random_pixels(7))
        image = ImageInput(type="base64", value=b64(data))
        assert read_image_input(image, max_bytes=10**7, url_policy=None) == data

    def test_numpy_pickles_are_refused(self):
        with pytest.raises(InvalidImageError, match="'numpy' is not supported"):
            read_image_input(ImageInput(type="numpy", value="gASV"), **OFF)

    def test_url_is_off_without_a_policy(self):
        with pytest.raises(UrlInputError, match="disabled"):
            read_image_input(ImageInput(type="url", value="https://x.org/a.png"), **OFF)

    def test_url_input_is_off_by_default(self):
        assert IngressSettings().url_policy() is None
