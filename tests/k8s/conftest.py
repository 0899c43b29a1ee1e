"""The k8s tests' shared fixtures: every kustomization rendered once per session with
`kubectl kustomize`, and KubeRay's CRD schemas. Tests that use neither run everywhere; those
that do are skipped where kubectl or the schemas are missing, except under CI, where they
fail."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import unavailable
from tests.k8s.kuberay_rules import CrdValidator, load_crds
from tests.k8s.manifests import KUSTOMIZATIONS, Document, KustomizeError, kustomize
from tests.k8s.project import K8S, KUBERAY_CRDS


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Document]]:
    """Kustomization folder under k8s/ -> the documents `kubectl apply -k` would apply."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable(
            "kubectl not found: the manifest tests render k8s/ with `kubectl kustomize` "
            "(kustomize v5), as `kubectl apply -k` does; put kubectl on PATH to run them"
        )
    try:
        return {name: kustomize(K8S / name, kubectl) for name in KUSTOMIZATIONS}
    except KustomizeError as error:
        if "unknown command" in str(error):
            unavailable(f"kubectl has no kustomize (kubectl >= 1.14 has): {error}")
        raise


@pytest.fixture(scope="session")
def crds() -> dict[str, CrdValidator]:
    if not KUBERAY_CRDS.is_dir():
        unavailable(
            f"KubeRay's CRD schemas are not at {KUBERAY_CRDS} (the workplace's shared/kuberay, "
            "linked beside the repo); the CRD checks need them"
        )
    return load_crds(KUBERAY_CRDS)
