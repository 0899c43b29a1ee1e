"""Every rendered manifest is what a cluster with KubeRay accepts: Kubernetes' schemas and
rules, KubeRay's CRD schemas and webhook checks, the Prometheus Operator's PodMonitor."""

from __future__ import annotations

import pytest

from tests.k8s.manifests import KUSTOMIZATIONS, RAY_SERVICES, cluster, ray_service
from tests.k8s.validators import document_errors


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_manifests_are_valid(rendered, crds, name):
    errors = [e for doc in rendered[name] for e in document_errors(doc, crds)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_manifests_pass_checks_without_the_crds(rendered, name):
    """The Kubernetes and webhook checks run even where ../shared/kuberay is absent."""
    errors = [e for doc in rendered[name] for e in document_errors(doc, None)]
    assert not errors, "\n".join(errors)


def test_no_field_needs_cel(rendered):
    """The CRDs' CEL rules (not evaluated here) concern only these fields: keep them unset."""
    for name in RAY_SERVICES:
        service = ray_service(rendered, name)
        assert "managedBy" not in service["spec"]
        assert "managedBy" not in cluster(service)
        assert "gcsFaultToleranceOptions" not in cluster(service)
