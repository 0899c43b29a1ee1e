"""`serve_config.yaml` as data: load it with overrides and deploy it as `serve deploy` does.

Deploying from a config (not `serve.run(app)`) is what makes a replica-count change a
lightweight update that keeps running replicas, and their caches, in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema

SERVE_CONFIG = Path(__file__).parents[1] / "serve_config.yaml"
APP_NAME = "sam3"


def load_config(
    path: Path = SERVE_CONFIG,
    *,
    args: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
) -> ServeDeploySchema:
    """The config with `args` merged into the application's and, per deployment name, the
    given options replacing that deployment's entry (`num_replicas` drops autoscaling)."""
    config = yaml.safe_load(path.read_text())
    (app,) = config["applications"]
    app["args"] = {**app.get("args", {}), **(args or {})}
    entries = {entry["name"]: entry for entry in app.get("deployments", [])}
    for name, options in (deployments or {}).items():
        entries[name] = {"name": name, **options}
    app["deployments"] = list(entries.values())
    return ServeDeploySchema.model_validate(config)


def deploy_config(config: ServeDeploySchema) -> None:
    """Submit to the running Serve instance (started if needed); returns before it is ready."""
    serve_api.serve_start().deploy_apps(config)
