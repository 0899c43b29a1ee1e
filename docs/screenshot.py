"""The page's screenshot in README.md (docs/page.png): the service on a local Ray cluster with
the demo model (`SAM3_CHECKPOINT=demo:shapes`, trained here on synthetic shapes, not SAM3), the
page's second sample scene, three objects made by clicks and a box, in Chromium at 1366x768.

    python -m docs.screenshot
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from bench.browser import chromium, chromium_path
from bench.harness import app_config, deploy_and_wait, start_local_cluster
from bench.samples import image_body, random_image
from deployments.config import APP_NAME
from sam3_core.demo.scenes import sample_scenes

OUT = Path(__file__).with_name("page.png")
DEMO_ENGINE = {"checkpoint": "demo:shapes", "device": "cpu", "concepts": False}


def main() -> None:
    path = chromium_path()
    assert path, "apt-get install chromium"
    scene = sample_scenes()[1]
    height, width = scene.image.shape[:2]
    cluster = start_local_cluster(workers=1)
    try:
        config = app_config(1, args={"engine": DEMO_ENGINE})
        deploy_and_wait(config, {APP_NAME: 1}, cluster.url, image_body(random_image(0)))
        with chromium(path) as browser:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(cluster.url + "/")
            page.get_by_test_id("sample-scenes").select_option("scene-2.png")
            status = page.get_by_test_id("status")
            expect(status).to_contain_text("embed")
            box = page.get_by_test_id("canvas").bounding_box()
            scale = min(box["width"] / width, box["height"] / height)
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            def screen(x: float, y: float) -> tuple[float, float]:
                return cx + (x - width / 2) * scale, cy + (y - height / 2) * scale

            objects = page.get_by_test_id("object")

            def settle(count: int) -> None:
                expect(objects).to_have_count(count)
                expect(page.locator("[data-testid=object].pending")).to_have_count(0)

            names = scene.names()
            # A click on each of two shapes, each a new object.
            for count, index in enumerate((0, 3), start=1):
                page.mouse.click(*screen(*scene.centre_click(index)))
                settle(count)
                objects.nth(count - 1).get_by_role("textbox").fill(names[index])
                page.keyboard.press("Escape")
            # The square, by a box dragged a little outside it.
            x0, y0, x1, y1 = scene.boxes[2].tolist()
            page.mouse.move(*screen(x0 - 4, y0 - 4))
            page.mouse.down()
            page.mouse.move(*screen(x1 + 4, y1 + 4), steps=5)
            page.mouse.up()
            settle(3)
            objects.nth(2).get_by_role("textbox").fill(names[2])
            objects.nth(0).click()
            page.locator("#requests-panel summary").click()
            page.get_by_test_id("canvas").hover(position={"x": 1, "y": 1})
            page.screenshot(path=OUT)
    finally:
        cluster.shutdown()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
