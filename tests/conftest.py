"""Fixtures shared by every test: images (from `bench.samples`) and a tiny random-weights SAM3.

Random weights: masks are meaningless but deterministic, which is what the tests compare.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import NoReturn

import pytest
import torch

from bench.samples import encode_image, random_pixels
from sam3_core.engine import Segmenter
from sam3_core.settings import EngineSettings
from sam3_core.weights import load_model

# Test modules import these from here.
__all__ = ["encode_image", "png_header", "random_pixels", "tiny_settings", "unavailable"]


def pytest_configure(config: pytest.Config) -> None:
    """torch on one thread in every test process and what it starts (`OMP_NUM_THREADS`, unless
    set), as Ray gives each fractional-CPU replica: the two xdist workers and the cluster's
    replicas share two cores, and torch's default of a thread per core in each process made
    them wait on each other's spinning threads (the memory soak: 59 s beside a full-size
    build on one thread, 139 s beside it on two)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the session's Ray cluster first (in file order), then the other slow
    ones: under xdist (README's `-n 2`) the longest runs start at once, one per worker."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("ray"):
            return (0, 0)
        return (1, 0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)


SESSION_CLUSTER = "tests on the session's Ray cluster"


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist (README's test command: `-n 2`), every module marked `ray` goes to
    one worker, whole and in file order, as they would run alone: they share one cluster
    (`tests/integration/conftest.py`), whose deployments each test replaces. Every other
    test goes to whichever worker is free. (xdist's `loadgroup` would do this from an
    `xdist_group` mark, but it renames tests through `Item._nodeid`, which pytest 9 no
    longer reads; scopes are what `LoadScopeScheduling` is for.)"""
    from xdist.scheduler import LoadScopeScheduling

    tests = config.rootpath / "tests"
    on_cluster = {
        path.relative_to(config.rootpath).as_posix()
        for path in tests.rglob("test_*.py")
        if "pytest.mark.ray" in path.read_text()
    }

    class OneWorkerForTheCluster(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SESSION_CLUSTER if nodeid.split("::")[0] in on_cluster else nodeid

    return OneWorkerForTheCluster(config, log)


def unavailable(message: str) -> NoReturn:
    """A test whose tool is missing here: skipped on a workstation, failed under CI (`CI` set),
    where every test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test; {message}", pytrace=False)
    pytest.skip(message)


def tiny_settings(**overrides: object) -> EngineSettings:
    """Tiny random model; hole filling off unless `overrides` turn it on (noisy random masks
    make it slow on CPU; the parity tests run it in the default setting too)."""
    return EngineSettings(
        **{"random_weights": "tiny", "max_hole_area": 0, "device": "cpu", **overrides}
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only its header: a reader learns the size, and there are no pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def tiny_model():
    """The service's default build: interactive + concepts."""
    return load_model(tiny_settings())


@pytest.fixture(scope="session")
def tiny_interactive_model():
    """The interactive-only build (SAM3_CONCEPTS=false): no text encoder, no detector."""
    return load_model(tiny_settings(concepts=False))


@pytest.fixture
def make_segmenter(tiny_model, tiny_interactive_model):
    """A fresh engine (empty caches) around the session's tiny model (`concepts=False`: the
    interactive-only one)."""

    def make(**overrides: object) -> Segmenter:
        model = tiny_interactive_model if overrides.get("concepts") is False else tiny_model
        return Segmenter(model, tiny_settings(**overrides))

    return make


@pytest.fixture
def segmenter(make_segmenter) -> Segmenter:
    return make_segmenter(embedding_cache_bytes=64 * 2**20)
