"""CVAT's nuclio functions for sam3-serve: an interactor (CVAT's AI tools: positive and
negative clicks, optionally a box, to one mask) and a detector (automatic annotation: every
instance of each label of the function's spec, found as a SAM3 concept).

Both forward to the service and hold no model: `SAM3_URL` is where sam3-serve listens,
`SAM3_API_KEY` one of its keys (when it has any). The image crosses once: each call sends
the image's SHA-256 (the service's own `image_id` for those bytes) and only when the service
answers `404 image_not_cached` the image itself, so the clicks that follow cost no transfer
and no embedding, whichever nuclio worker serves them.

Deployed with `nuctl deploy` and `function-interactor.yaml` / `function-detector.yaml`
(handlers `main:interactor` and `main:detector`); see README.md beside this directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pycocotools import mask as coco_mask

# The detector's labels: the spec CVAT reads from the function's configuration.
SPEC_FILE = Path(__file__).with_name("function-detector.yaml")


class ServiceError(Exception):
    """sam3-serve refused or failed a request: its status and `{"message", "code"}`."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Service:
    """sam3-serve's HTTP API (`/sam3/visual_segment`, `/sam3/concept_segment`)."""

    def __init__(self, url: str, api_key: str | None, timeout_seconds: float) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout_seconds = timeout_seconds
        self.image_uploads = 0  # images sent in full (each answered image_not_cached first)

    @classmethod
    def from_environment(cls) -> Service:
        return cls(
            os.environ.get("SAM3_URL", "http://127.0.0.1:8000"),
            os.environ.get("SAM3_API_KEY") or None,
            float(os.environ.get("SAM3_TIMEOUT_SECONDS", "60")),
        )

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read())
            except ValueError:
                detail = {}
            raise ServiceError(
                error.code,
                str(detail.get("message", error.reason)),
                str(detail.get("code", "http_error")),
            ) from error
        except (urllib.error.URLError, TimeoutError) as error:
            raise ServiceError(
                503, f"sam3-serve at {self.url} is unreachable: {error}", "unreachable"
            ) from error

    def post_image(self, path: str, body: dict[str, Any], image_base64: str) -> dict[str, Any]:
        """`body` about the image: by its digest first, with the image only when the service
        does not hold it."""
        try:
            data = base64.b64decode(image_base64, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ServiceError(400, f"image is not base64: {error}", "invalid_image") from error
        image_id = hashlib.sha256(data).hexdigest()
        try:
            return self.post(path, {**body, "image_id": image_id})
        except ServiceError as error:
            if error.code != "image_not_cached":
                raise
        self.image_uploads += 1
        image = {"type": "base64", "value": image_base64}
        return self.post(path, {**body, "image_id": image_id, "image": image})


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """The service's COCO RLE as an (H, W) bool mask."""
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def spec_labels(spec_file: Path = SPEC_FILE) -> list[str]:
    """The label names of the function's spec (`metadata.annotations.spec`, a JSON list)."""
    config = yaml.safe_load(spec_file.read_text())
    return [item["name"] for item in json.loads(config["metadata"]["annotations"]["spec"])]


def init_context(context: Any) -> None:
    context.user_data.service = Service.from_environment()
    spec_file = Path(os.environ.get("SAM3_CVAT_SPEC", SPEC_FILE))
    context.user_data.labels = spec_labels(spec_file) if spec_file.exists() else []
    context.logger.info(f"sam3-serve at {context.user_data.service.url}")


def _reply(context: Any, body: Any, status: int = 200) -> Any:
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status
    )


def _points(data: dict[str, Any], key: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in data.get(key) or []]


def interactor(context: Any, event: Any) -> Any:
    """CVAT's interactor body (`image` base64, `pos_points`, `neg_points` as `[[x, y], ...]`,
    `obj_bbox` `[[x1, y1], [x2, y2]]` or none) → `{"mask": [[0 | 255, ...], ...]}`, the
    object's mask at the image's size. Each click refines the last (logits cache)."""
    data = event.body
    try:
        points = [{"x": x, "y": y, "positive": True} for x, y in _points(data, "pos_points")]
        points += [{"x": x, "y": y, "positive": False} for x, y in _points(data, "neg_points")]
        prompt: dict[str, Any] = {"points": points}
        if data.get("obj_bbox"):
            (x1, y1), (x2, y2) = _points(data, "obj_bbox")
            prompt["box"] = {
                "x": (x1 + x2) / 2,
                "y": (y1 + y2) / 2,
                "width": abs(x2 - x1),
                "height": abs(y2 - y1),
            }
        body = {
            "prompts": [prompt],
            "format": "rle",
            "save_logits_to_cache": True,
            "load_logits_from_cache": True,
        }
        reply = context.user_data.service.post_image("/sam3/visual_segment", body, data["image"])
    except ServiceError as error:
        return _reply(context, {"message": error.message, "code": error.code}, error.status)
    except (KeyError, TypeError, ValueError) as error:
        message = f"not a CVAT interactor body: {error!r}"
        return _reply(context, {"message": message, "code": "invalid_request"}, 400)
    mask = decode_mask(reply["predictions"][0]["masks"])
    return _reply(context, {"mask": np.where(mask, 255, 0).astype(np.uint8).tolist()})


def cvat_mask(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """A non-empty (H, W) bool mask as CVAT stores a detector's mask: the mask's bounding
    box cropped, flattened row by row (0/1), then `xtl, ytl, xbr, ybr`; and the box."""
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    xtl, ytl, xbr, ybr = box
    crop = mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8)
    return [*crop.ravel().tolist(), *box], box


def detector(context: Any, event: Any) -> Any:
    """CVAT's detector body (`image` base64, optional `threshold`) → one `{"label",
    "confidence", "type": "mask", "mask", "points"}` per instance of each spec label
    (`points` is the mask's box, `xtl, ytl, xbr, ybr`)."""
    data = event.body
    labels: list[str] = context.user_data.labels
    try:
        threshold = 0.5 if data.get("threshold") is None else float(data["threshold"])
        body = {
            "prompts": [{"type": "text", "text": label} for label in labels],
            "output_prob_thresh": threshold,
            "format": "rle",
        }
        reply = context.user_data.service.post_image("/sam3/concept_segment", body, data["image"])
    except ServiceError as error:
        return _reply(context, {"message": error.message, "code": error.code}, error.status)
    except (KeyError, TypeError, ValueError) as error:
        message = f"not a CVAT detector body: {error!r}"
        return _reply(context, {"message": message, "code": "invalid_request"}, 400)
    shapes = []
    for result in reply["prompt_results"]:
        for prediction in result["predictions"]:
            mask = decode_mask(prediction["masks"])
            if not mask.any():
                continue
            flattened, box = cvat_mask(mask)
            shapes.append(
                {
                    "label": labels[result["prompt_index"]],
                    "confidence": f"{prediction['confidence']:.4f}",
                    "type": "mask",
                    "mask": flattened,
                    "points": box,
                }
            )
    return _reply(context, shapes)
