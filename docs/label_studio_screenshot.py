"""The screenshot in docs/label_studio.md (docs/label_studio.png): a real Label Studio
(bench/label_studio.py) with sam3-serve connected as its ML backend, a mask made by two smart
keypoints through Label Studio's interactive API and saved as an annotation, its labelling
page in Chromium at 1366x768. The service runs in-process with the tiny random-weights model:
the mask is noise.

    python -m docs.label_studio_screenshot
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect
from skimage import data as photos

from bench import label_studio
from bench.browser import chromium, chromium_path
from bench.local_service import free_port, local_service
from bench.samples import encode_image
from sam3_core.engine import Segmenter
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

OUT = Path(__file__).with_name("label_studio.png")
USER, PASSWORD = "admin@example.com", "sam3-serve-admin"


def keypoint(x: float, y: float, width: int, height: int, positive: bool) -> dict:
    return {
        "id": f"kp{int(x)}x{int(y)}",
        "type": "keypointlabels",
        "from_name": "point",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "is_positive": positive,
        "value": {"x": x / width * 100, "y": y / height * 100, "width": 1,
                  "keypointlabels": ["cat"]},
    }  # fmt: skip


def main() -> None:
    path = chromium_path()
    assert path, "apt-get install chromium"
    settings = EngineSettings(random_weights="tiny", device="cpu", max_hole_area=0)
    engine = Segmenter(load_model(settings), settings)
    photo = photos.chelsea()  # scikit-image's cat, 300x451
    height, width = photo.shape[:2]
    with (
        tempfile.TemporaryDirectory() as folder,
        label_studio.running(Path(folder), free_port()) as studio,
        local_service(
            engine, label_studio_url=studio.url, label_studio_api_key=studio.token
        ) as service,
    ):
        config = label_studio.BRUSH_CONFIG.replace("square", "cat").replace("circle", "dog")
        project = studio.create_project("Cats, on sam3-serve", config)
        task = studio.import_image(project, "chelsea.png", encode_image(photo))
        backend = studio.connect(project, f"{service}/label-studio")
        regions = [
            keypoint(190, 120, width, height, True),
            keypoint(400, 40, width, height, False),
        ]
        answer = studio.interactive(backend["id"], task["id"], regions)
        studio.annotate(task["id"], regions + answer["result"])
        with chromium(path) as browser:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(studio.url + "/user/login")
            page.fill("input[name=email]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.locator("button[type=submit]").first.click()
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=180_000)
            page.goto(f"{studio.url}/projects/{project}/data?task={task['id']}")
            expect(page.locator("canvas").first).to_be_visible(timeout=120_000)
            time.sleep(5)  # the image and the brush layer render after the canvas exists
            page.screenshot(path=str(OUT))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
