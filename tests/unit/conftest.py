"""Fixtures of the HTTP API's unit tests (`tests/unit/http_client.py`)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from sam3_core import Segmenter
from tests.unit.http_client import make_client


@pytest.fixture
def engine(make_segmenter) -> Segmenter:
    return make_segmenter(embedding_cache_bytes=2**26)


@pytest.fixture
def api(engine) -> TestClient:
    return make_client(engine)[0]
