"""README's run command, as written: `serve run serve_config.yaml` with the tiny random model
(Ray started in-process by the CLI, in its own cluster, with Ray's default token
authentication), then an embed, two clicks, the page, and README's readiness check."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bench.harness import wait_for
from tests.integration.serving import click_prompt, image_body

# A Ray instance of its own (the CLI's), not the session's cluster: not `ray`, so that under
# xdist it runs beside the tests on that cluster.
pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def readiness_command() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readiness-command -->\n```bash\n(.+?)\n```", readme, re.S)
    assert block, "README.md names no readiness check"
    return block.group(1)


def test_serve_run_serve_config_serves_on_port_8000(tmp_path):
    serve_cli = shutil.which("serve", path=str(Path(sys.executable).parent)) or "serve"
    # As on a fresh machine: no RAY_AUTH_MODE (the test harness turns auth off for its own
    # clusters), so Ray starts this one with token authentication, its default since 2.60.
    fresh = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env = {**fresh, "SAM3_RANDOM_WEIGHTS": "tiny", "SAM3_MAX_HOLE_AREA": "0"}
    # A fresh machine has no Ray running; here the test session's cluster runs, which a bare
    # `ray.init()` would join. "local" makes the CLI start its own, as on a fresh machine.
    env["RAY_ADDRESS"] = "local"
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [serve_cli, "run", "serve_config.yaml"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = "http://127.0.0.1:8000"
    try:

        def embedded() -> requests.Response | None:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])
            try:
                response = requests.post(
                    f"{url}/sam3/embed_image", json={"image": image_body(1)}, timeout=30
                )
            except requests.ConnectionError:
                return None
            return response if response.status_code == 200 else None

        image_id = wait_for(embedded, 240, "serve run to serve", every=2).json()["image_id"]
        for click in [((10, 10),), ((10, 10), (40, 30))]:
            response = requests.post(
                f"{url}/sam3/visual_segment",
                json={"image_id": image_id, "prompts": click_prompt(*click)},
                timeout=30,
            )
            assert response.status_code == 200
            assert response.headers["x-sam3-embedding-cache"] == "hit"
            assert len(response.json()["predictions"]) == 1
        assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        assert "RANDOM weights" in (tmp_path / "serve.log").read_text()
        page = requests.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and 'data-testid="canvas"' in page.text

        # The readiness check README names, run as written in another terminal would.
        command = readiness_command().replace(".venv/bin/serve", serve_cli)
        status = subprocess.run(
            ["bash", "-c", command], env=fresh, capture_output=True, text=True, timeout=120
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout) == {"status": "ready"}, status.stdout
        # The operator's view the README names beside it: Ray's CLI, with its token.
        operator = subprocess.run(
            [serve_cli, "status"],
            env={**fresh, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert operator.returncode == 0, operator.stdout + operator.stderr
        assert re.search(r"sam3:\n\s+status: RUNNING", operator.stdout), operator.stdout
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
