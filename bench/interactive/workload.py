"""The workload: simulated annotators clicking through images over HTTP, and the record of
every request they send."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

import requests

from bench.samples import image_body, smooth_image

HEIGHT, WIDTH = 480, 640


@dataclass(frozen=True)
class Workload:
    annotators: int
    images_per_annotator: int
    clicks: int
    think_s: float
    id_only_share: float
    revisit_share: float
    seed: int = 0


QUICK = Workload(
    annotators=4,
    images_per_annotator=2,
    clicks=3,
    think_s=0.1,
    id_only_share=0.5,
    revisit_share=0.5,
)
FULL = Workload(
    annotators=12,
    images_per_annotator=3,
    clicks=6,
    think_s=0.5,
    id_only_share=0.5,
    revisit_share=0.25,
)


@cache
def picture(seed: int) -> dict[str, str]:
    """Image `seed` (a smooth WIDTH x HEIGHT JPEG) as a request's `image` field, encoded once."""
    return image_body(smooth_image(seed, HEIGHT, WIDTH))


def image_seed(seed: int, annotator: int, image: int) -> int:
    return seed * 1_000_000 + annotator * 1000 + image


@dataclass
class Event:
    t: float
    latency_s: float
    kind: str  # embed | click
    status: int
    replica: str | None
    embedding_cache: str | None
    logits_cache: str | None
    image: str
    annotator: int


@dataclass
class Recorder:
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(
        self, session: requests.Session, url: str, body: dict, kind: str, image: str, annotator: int
    ) -> requests.Response:
        sent = time.monotonic()
        try:
            response = session.post(url, json=body, timeout=300)
        except requests.ConnectionError:
            # Status 0: the connection broke (e.g. a proxy hiccup during a scale event).
            response = requests.Response()
            response.status_code = 0
        event = Event(
            t=sent - self.started,
            latency_s=time.monotonic() - sent,
            kind=kind,
            status=response.status_code,
            replica=response.headers.get("x-sam3-replica"),
            embedding_cache=response.headers.get("x-sam3-embedding-cache"),
            logits_cache=response.headers.get("x-sam3-logits-cache"),
            image=image,
            annotator=annotator,
        )
        with self.lock:
            self.events.append(event)
        return response


class Annotator:
    """One person clicking through images with an annotation tool."""

    def __init__(
        self, index: int, workload: Workload, base_url: str, recorder: Recorder, run_tag: str
    ) -> None:
        self.index = index
        self.workload = workload
        self.url = base_url
        self.recorder = recorder
        self.rng = random.Random(workload.seed * 10_000 + index)
        self.session = requests.Session()
        self.points: dict[str, list[dict]] = defaultdict(list)
        self.tag = run_tag
        self.images: dict[str, int] = {}

    def next_image(self, j: int) -> str:
        image_id = f"{self.tag}-a{self.index}-i{j}"
        self.images[image_id] = image_seed(self.workload.seed, self.index, j)
        return image_id

    def image_body(self, image_id: str) -> dict:
        return picture(self.images[image_id])

    def post(self, path: str, body: dict, kind: str, image_id: str) -> requests.Response:
        for _ in range(5):
            response = self.recorder.post(
                self.session, self.url + path, body, kind, image_id, self.index
            )
            if response.status_code not in (0, 503):
                return response
            time.sleep(float(response.headers.get("retry-after", 1)))
        return response

    def click(self, image_id: str, send_image: bool) -> None:
        points = self.points[image_id]
        points.append(
            {
                "x": self.rng.uniform(0, WIDTH),
                "y": self.rng.uniform(0, HEIGHT),
                "positive": self.rng.random() < 0.8,
            }
        )
        body = {
            "image_id": image_id,
            "prompts": {"prompts": [{"points": list(points)}]},
            "format": "rle",
            "save_logits_to_cache": True,
            "load_logits_from_cache": len(points) > 1,
        }
        if send_image:
            body["image"] = self.image_body(image_id)
        response = self.post("/sam3/visual_segment", body, "click", image_id)
        if response.status_code == 404:  # the tool's recovery: send the image again
            body["image"] = self.image_body(image_id)
            self.post("/sam3/visual_segment", body, "click", image_id)

    def work(self, image_id: str, clicks: int, embed_first: bool) -> None:
        if embed_first:
            body = {"image": self.image_body(image_id), "image_id": image_id}
            self.post("/sam3/embed_image", body, "embed", image_id)
        for _ in range(clicks):
            time.sleep(self.rng.expovariate(1 / self.workload.think_s))
            self.click(image_id, send_image=self.rng.random() >= self.workload.id_only_share)

    def run(self, stop: threading.Event | None = None) -> None:
        """Work through `images_per_annotator` images or, given `stop`, until it is set."""
        done: list[str] = []
        j = 0
        while (stop is None and j < self.workload.images_per_annotator) or (
            stop is not None and not stop.is_set()
        ):
            image_id = self.next_image(j)
            j += 1
            self.work(image_id, self.workload.clicks, embed_first=True)
            done.append(image_id)
            if len(done) > 1 and self.rng.random() < self.workload.revisit_share:
                earlier = self.rng.choice(done[:-1])
                self.work(earlier, max(2, self.workload.clicks // 2), embed_first=False)


def run_workload(
    workload: Workload,
    base_url: str,
    tag: str,
    recorder: Recorder | None = None,
    stop: threading.Event | None = None,
) -> Recorder:
    """All annotators at once, each in its own thread."""
    recorder = recorder or Recorder()
    annotators = [
        Annotator(i, workload, base_url, recorder, tag) for i in range(workload.annotators)
    ]
    threads = [threading.Thread(target=a.run, args=(stop,)) for a in annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return recorder
