"""The HTTP API on a real socket without Ray: one engine in-process (`LocalOwners`) behind
uvicorn on 127.0.0.1, for tests whose client is another program (Label Studio, CVAT's
nuclio handlers) and whose subject is the protocol, not routing between replicas."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from deployments.api import create_api
from deployments.owners import LocalOwners
from deployments.settings import IngressSettings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def local_service(engine: Any, **settings: Any) -> Iterator[str]:
    """Serves `engine` at the yielded base URL until the block ends."""
    port = free_port()
    app = create_api(LocalOwners(engine), IngressSettings(**settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the local service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
