"""A real Label Studio for tests, benchmarks and the docs' screenshot: installed from PyPI into
a venv of its own (`~/.cache/sam3-serve/label-studio-<version>`, made once per machine, about
a minute and a half), started on 127.0.0.1 with SQLite in a directory of the caller's, and
driven through its REST API with a legacy API token.

Its Python environment is apart from the service's: Label Studio pins Django, its SDK an
OpenCV older than the service's. Its SDK's brush decoder (`decode_brush`) runs there too.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

VERSION = "1.23.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sam3-serve"
TOKEN = "sam3-serve-test-token-0123456789"
# Label Studio started without telemetry, update checks or its SSRF block on loopback (the
# ML backend runs on 127.0.0.1 in tests).
ENVIRONMENT = {
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "USE_DEFAULT_BANNED_SUBNETS": "false",
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "DJANGO_DB": "sqlite",
}
# A brush config with Label Studio's smart tools, as its SAM backends document them.
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="brush" toName="image">
    <Label value="square" background="#d62728"/><Label value="circle" background="#1f77b4"/>
  </BrushLabels>
  <KeyPointLabels name="point" toName="image" smart="true">
    <Label value="square" smart="true"/><Label value="circle" smart="true"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="square" smart="true"/><Label value="circle" smart="true"/>
  </RectangleLabels>
</View>"""


def venv(version: str = VERSION) -> Path:
    """Label Studio's venv, installed when missing (raises CalledProcessError without a
    package index)."""
    path = CACHE / f"label-studio-{version}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"label-studio-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install per machine, whoever asks first
        if not (path / ".installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
            pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
            subprocess.run([*pip, f"label-studio=={version}"], check=True)
            (path / ".installed").touch()
    return path


@dataclass
class LabelStudio:
    """A running Label Studio and its API."""

    url: str
    python: Path
    token: str = TOKEN

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Token {self.token}", **kwargs.pop("headers", {})}
        response = requests.request(method, self.url + path, headers=headers, timeout=300, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def create_project(self, title: str, label_config: str = BRUSH_CONFIG) -> int:
        body = {"title": title, "label_config": label_config}
        return self.api("POST", "/api/projects", json=body)["id"]

    def import_image(self, project: int, name: str, png: bytes) -> dict[str, Any]:
        """Uploads an image (Label Studio keeps it under /data/upload/...): its task."""
        files = {"file": (name, io.BytesIO(png), "image/png")}
        self.api("POST", f"/api/projects/{project}/import", files=files)
        tasks = self.api("GET", f"/api/tasks?project={project}")["tasks"]
        return max(tasks, key=lambda task: task["id"])

    def connect(self, project: int, backend_url: str, **auth: str) -> dict[str, Any]:
        body = {"url": backend_url, "project": project, "is_interactive": True, **auth}
        return self.api("POST", "/api/ml", json={"title": "sam3-serve", **body})

    def interactive(self, backend: int, task: int, regions: list[dict]) -> dict[str, Any]:
        """What the labelling page asks when an annotator places a smart region."""
        body = {"task": task, "context": {"result": regions}}
        answer = self.api("POST", f"/api/ml/{backend}/interactive-annotating", json=body)
        if "errors" in answer:
            raise RuntimeError(f"Label Studio: {answer['errors']}")
        return answer["data"]

    def retrieve_predictions(self, project: int, tasks: list[int]) -> None:
        """The data manager's "Retrieve predictions" action (pre-annotation)."""
        body = {"selectedItems": {"all": False, "included": tasks}}
        self.api(
            "POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}", json=body
        )

    def predictions(self, task: int) -> list[dict[str, Any]]:
        return self.api("GET", f"/api/predictions?task={task}")

    def annotate(self, task: int, result: list[dict]) -> dict[str, Any]:
        return self.api("POST", f"/api/tasks/{task}/annotations", json={"result": result})

    def annotation(self, annotation: int) -> dict[str, Any]:
        return self.api("GET", f"/api/annotations/{annotation}")

    def decode_brush(self, results: list[dict]) -> list[np.ndarray]:
        """Each brush result's mask, (H, W) bool, as Label Studio's SDK decodes it
        (`label_studio_sdk.converter.brush.decode_rle`, run in Label Studio's venv)."""
        script = (
            "import json, sys, numpy as np\n"
            "from label_studio_sdk.converter.brush import decode_rle\n"
            "out = {}\n"
            "for i, r in enumerate(json.load(sys.stdin)):\n"
            "    h, w = r['original_height'], r['original_width']\n"
            "    out[str(i)] = decode_rle(r['value']['rle']).reshape(h, w, 4)[:, :, 3] > 0\n"
            "np.savez(sys.stdout.buffer, **out)\n"
        )
        done = subprocess.run(
            [str(self.python), "-c", script],
            input=json.dumps(results).encode(),
            capture_output=True,
            check=True,
        )
        archive = np.load(io.BytesIO(done.stdout))
        return [archive[str(i)] for i in range(len(results))]


def _snapshot(database: Path, template: Path) -> None:
    """A consistent copy of a live SQLite database (its backup API), put in place at once."""
    partial = template.with_suffix(".partial")
    with sqlite3.connect(database) as source, sqlite3.connect(partial) as copy:
        source.backup(copy)
    partial.replace(template)


@contextmanager
def running(data_dir: Path, port: int, timeout_s: float = 600) -> Iterator[LabelStudio]:
    """Label Studio on 127.0.0.1:`port` with its data (SQLite, uploads) in `data_dir`."""
    path = venv()
    # Label Studio's first start migrates its database (minutes on a busy CPU): later starts
    # begin from a copy of that database, taken once it was ready (admin and token included).
    database, template = (
        data_dir / "label_studio.sqlite3",
        CACHE / f"label-studio-{VERSION}.sqlite3",
    )
    if template.exists() and not database.exists():
        shutil.copyfile(template, database)
    env = {**os.environ, **ENVIRONMENT, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir)}
    command = [
        str(path / "bin" / "label-studio"), "start", "--no-browser",
        "--host", "127.0.0.1", "--port", str(port), "--internal-host", "127.0.0.1",
        "--data-dir", str(data_dir),
        "--username", "admin@example.com", "--password", "sam3-serve-admin",
        "--user-token", TOKEN,
    ]  # fmt: skip
    log = open(data_dir / "label-studio.log", "wb")  # noqa: SIM115 (kept open while it runs)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    studio = LabelStudio(f"http://127.0.0.1:{port}", path / "bin" / "python")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Label Studio exited: see {data_dir / 'label-studio.log'}")
            try:
                studio.api("GET", "/api/version")
                break
            except (requests.ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Label Studio did not start in {timeout_s} s") from None
                time.sleep(1)
        if not template.exists():
            _snapshot(database, template)
        yield studio
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and its children
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
