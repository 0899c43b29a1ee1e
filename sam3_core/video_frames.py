"""A video's frames kept compressed on the host and decoded when the model reads one.

sam3's `Sam3VideoPredictor` loads every frame at the model's size (1008² at full size) into
one tensor on the GPU: 6 MiB per frame in float16 (image folders), 12 MiB in float32 (video
files through OpenCV). `FrameStore` holds what a frame was sent as instead, and sam3 indexes
it like that tensor (its detector accepts "a list or other indexable type" as `img_batch`):
`store[t]` decodes, resizes and normalises frame t exactly as sam3's loader would have.

- Frames sent as pictures (`frames`): their bytes are kept as sent (JPEG, PNG, WebP, ...)
  and decoded as sam3's image-folder loader decodes files (Pillow, torchvision's resize,
  float16), so results equal sam3's on a folder of the same files.
- A video file (`video`, MP4 or WebM): decoded once by PyAV (FFmpeg), each frame resized
  to the model's size as the image-folder loader resizes it, then kept as a PNG (lossless:
  results equal sam3's on a folder of the decoded frames) or a JPEG
  (`SAM3_VIDEO_FRAME_FORMAT`, smaller, masks may differ at edges).

Why not as sam3's OpenCV video loader: in 0.1.4 it normalises 0-255 pixels with the 0-1
mean and std (sam3 issue #493; fixes proposed in PRs #522 and #603), so a video file
reaches the model scaled unlike pictures, image folders and sam3's torchcodec loader.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from sam3_core.errors import InvalidImageError, InvalidPromptError, VideoTooLargeError
from sam3_core.images import image_size
from sam3_core.settings import RequestLimits, VideoSettings

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EncodedFrames:
    """A video's frames as kept: `frames[t]` is frame t's bytes.

    Attributes:
        resized: True when the frames are already at the model's size (decoded from a video
            file), False when they are the pictures a client sent.
        height, width: the original video's size (masks are answered at it).
    """

    frames: tuple[bytes, ...]
    height: int
    width: int
    resized: bool

    @property
    def nbytes(self) -> int:
        return sum(len(frame) for frame in self.frames)


@dataclass(frozen=True)
class VideoSource:
    """A video as sent: an MP4/WebM file, or its frames as pictures (exactly one)."""

    video: bytes | None = None
    frames: tuple[bytes, ...] | None = None


def encode_source(
    source: VideoSource, settings: VideoSettings, limits: RequestLimits, model_size: int
) -> EncodedFrames:
    """`source`'s frames as kept, within the video limits (each refusal names its setting)."""
    if (source.video is None) == (source.frames is None):
        raise InvalidPromptError("send a video or its frames, not both")
    if source.video is not None:
        if len(source.video) > settings.video_max_video_bytes:
            raise VideoTooLargeError(
                f"the video has {len(source.video)} bytes, over "
                f"SAM3_VIDEO_MAX_VIDEO_BYTES={settings.video_max_video_bytes}"
            )
        return frames_from_video(
            source.video,
            image_size=model_size,
            max_frames=settings.video_max_frames,
            max_pixels=limits.max_image_pixels,
            frame_format=settings.video_frame_format,
        )
    frames = source.frames or ()
    if len(frames) > settings.video_max_frames:
        raise VideoTooLargeError(
            f"{len(frames)} frames, over SAM3_VIDEO_MAX_FRAMES={settings.video_max_frames}"
        )
    total = sum(len(frame) for frame in frames)
    if total > settings.video_max_video_bytes:
        raise VideoTooLargeError(
            f"the frames have {total} bytes, over "
            f"SAM3_VIDEO_MAX_VIDEO_BYTES={settings.video_max_video_bytes}"
        )
    return frames_from_pictures(frames, max_pixels=limits.max_image_pixels)


def frames_from_pictures(pictures: Sequence[bytes], *, max_pixels: int) -> EncodedFrames:
    """Frames sent one picture each; all must have the first one's size."""
    if not pictures:
        raise InvalidImageError("frames is empty")
    sizes = {image_size(picture, max_pixels=max_pixels) for picture in pictures}
    if len(sizes) > 1:
        raise InvalidImageError(f"frames differ in size: {sorted(sizes)}")
    height, width = sizes.pop()
    return EncodedFrames(tuple(pictures), height=height, width=width, resized=False)


def frames_from_video(
    data: bytes,
    *,
    image_size: int,
    max_frames: int,
    max_pixels: int,
    frame_format: str = "png",
) -> EncodedFrames:
    """Decode an MP4/WebM with PyAV and keep each frame resized and compressed.

    Raises:
        InvalidImageError: not a video PyAV can decode, or no frame in it.
        VideoTooLargeError: more than `max_frames` frames, or frames over `max_pixels`.
    """
    import av  # PyAV: only replicas that decode videos import FFmpeg

    extension, parameters = _ENCODINGS[frame_format]
    frames: list[bytes] = []
    height = width = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidImageError("the video has no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height > max_pixels:
                raise VideoTooLargeError(
                    f"video frames are {stream.codec_context.width}x"
                    f"{stream.codec_context.height}, over SAM3_MAX_IMAGE_PIXELS={max_pixels}"
                )
            for frame in container.decode(stream):
                if len(frames) == max_frames:
                    raise VideoTooLargeError(
                        f"the video has more than SAM3_VIDEO_MAX_FRAMES={max_frames} frames"
                    )
                picture = frame.to_image()  # RGB
                width, height = picture.size
                resized = np.asarray(TF.resize(picture, size=(image_size, image_size)))
                ok, encoded = cv2.imencode(extension, resized[:, :, ::-1], parameters)
                if not ok:
                    raise InvalidImageError("a video frame could not be re-encoded")
                frames.append(encoded.tobytes())
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise InvalidImageError(f"not a decodable MP4/WebM video: {error}") from error
    if not frames:
        raise InvalidImageError("the video has no frames")
    return EncodedFrames(tuple(frames), height=height, width=width, resized=True)


_ENCODINGS = {
    # Level 1: ~3x faster to write than the default 3 and within ~10 % of its size.
    "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
}


class FrameStore:
    """sam3's `img_batch` of a session: `store[t]` is frame t as sam3's image-folder loader
    makes it, (3, S, S) float16 normalised, on `device`; nothing decoded is kept."""

    def __init__(self, encoded: EncodedFrames, image_size: int, device: torch.device) -> None:
        self.encoded = encoded
        self.image_size = image_size
        self.device = device
        self.decoded = 0  # frames decoded so far (a measure of the decode work)

    def __len__(self) -> int:
        return len(self.encoded.frames)

    @property
    def nbytes(self) -> int:
        return self.encoded.nbytes

    def __getitem__(self, index: int) -> torch.Tensor:
        data = self.encoded.frames[int(index)]
        self.decoded += 1
        if self.encoded.resized:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            pixels = np.ascontiguousarray(bgr[:, :, ::-1])
        else:
            picture = Image.open(io.BytesIO(data)).convert("RGB")
            pixels = TF.resize(picture, size=(self.image_size, self.image_size))
        image = TF.to_tensor(pixels).to(torch.float16).to(self.device)
        mean = torch.tensor(IMAGE_MEAN, dtype=torch.float16, device=self.device)[:, None, None]
        std = torch.tensor(IMAGE_STD, dtype=torch.float16, device=self.device)[:, None, None]
        image -= mean
        image /= std
        return image
