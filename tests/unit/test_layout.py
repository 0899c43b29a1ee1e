"""The arrows of the house point one way (STYLE.md): the CPU ingress loads no model, the
engine knows no wire format, and `sam3_core` declares its public surface."""

from __future__ import annotations

import subprocess
import sys

import sam3_core


def imported_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    script = (
        f"import sys\n{statement}\nprint(','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=120, capture_output=True, text=True
    )
    return [m for m in done.stdout.strip().split(",") if m]


def test_the_ingress_never_imports_the_model():
    """The CPU ingress stays light: no torch, no sam3 in its process."""
    assert imported_after("import deployments.ingress", ("torch", "sam3", "cv2")) == []


def test_the_engine_imports_no_wire_format_and_no_serving_framework():
    statement = "import sam3_core.engine, sam3_core.model, sam3_core.caches"
    modules = ("sam3_core.protocol", "ray", "fastapi", "starlette", "deployments")
    assert imported_after(statement, modules) == []


def test_the_public_api_is_declared_and_resolves():
    assert sorted(sam3_core.__all__) == sorted(sam3_core._EXPORTS)
    for name in sam3_core.__all__:
        assert getattr(sam3_core, name).__name__ == name
    assert {"Segmenter", "SegmentRequest", "PromptSet", "EngineSettings", "Sam3Error"} <= set(
        sam3_core.__all__
    )
