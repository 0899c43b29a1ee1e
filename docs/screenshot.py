"""The page's screenshot in README.md (docs/page.png): the service on a local Ray cluster with
the tiny random-weights model, scikit-image's `chelsea` photo, a few objects, in Chromium at
1366x768. Random weights: the masks are noise.

    python -m docs.screenshot
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect
from skimage import data as photos

from bench.browser import chromium, chromium_path
from bench.harness import app_config, deploy_and_wait, start_local_cluster
from bench.samples import image_body, random_image
from deployments.config import APP_NAME

OUT = Path(__file__).with_name("page.png")


def main() -> None:
    path = chromium_path()
    assert path, "apt-get install chromium"
    cluster = start_local_cluster(workers=1)
    try:
        deploy_and_wait(app_config(1), {APP_NAME: 1}, cluster.url, image_body(random_image(0)))
        with tempfile.TemporaryDirectory() as folder, chromium(path) as browser:
            photo = Path(folder) / "chelsea.png"
            Image.fromarray(photos.chelsea()).save(photo)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(cluster.url + "/")
            page.get_by_test_id("image-input").set_input_files(photo)
            status = page.get_by_test_id("status")
            expect(status).to_contain_text("embedding miss")
            box = page.get_by_test_id("canvas").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            objects = page.get_by_test_id("object")

            def settle(count: int) -> None:
                expect(objects).to_have_count(count)
                expect(page.locator("[data-testid=object].pending")).to_have_count(0)

            # The cat's face: a click, then a negative click on the background.
            page.mouse.click(x - 40, y - 60)
            settle(1)
            page.mouse.click(x + 330, y - 250, button="right")
            settle(1)
            objects.nth(0).get_by_role("textbox").fill("cat")
            # The left ear, by a box; then the right eye, by a click, hidden.
            page.keyboard.press("Escape")
            page.mouse.move(x - 230, y - 300)
            page.mouse.down()
            page.mouse.move(x - 90, y - 170, steps=5)
            page.mouse.up()
            settle(2)
            objects.nth(1).get_by_role("textbox").fill("ear")
            page.keyboard.press("Escape")
            page.mouse.click(x + 60, y - 40)
            settle(3)
            objects.nth(2).get_by_role("textbox").fill("eye")
            objects.nth(2).get_by_role("button", name="Hide object 3").click()
            objects.nth(1).click()
            page.locator("#requests-panel summary").click()
            page.get_by_test_id("canvas").hover(position={"x": 1, "y": 1})
            page.screenshot(path=OUT)
    finally:
        cluster.shutdown()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
