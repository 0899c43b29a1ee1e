"""Where the project's files are, and what pyproject.toml pins (Ray, the package version,
Python), which the image and the manifests must agree with."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
# KubeRay's CRDs, beside the repo (the workplace's shared/kuberay): never copied into it.
KUBERAY_CRDS = ROOT.parent / "shared" / "kuberay"


def pyproject_field(pattern: str) -> str:
    """The one match of `pattern`'s group in pyproject.toml."""
    # A regex, not tomllib: the package supports Python 3.10.
    (value,) = re.findall(pattern, (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    return value


def pinned_ray() -> str:
    return pyproject_field(r'^\s*"ray\[serve\]==([^"]+)",')
