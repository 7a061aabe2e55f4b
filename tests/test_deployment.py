"""The Kubernetes manifests render, and agree with the CLI and the settings they drive."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modalhub.cli import build_parser
from modalhub.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render k8s/ (the machine image ships it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"MODALHUB_{name.upper()}")
        choices = getattr(field.validation_alias, "choices", None) or []
        names.update(str(choice) for choice in choices)
    return names


@pytest.mark.parametrize("overlay", ["base", "overlays/production"])
def test_manifests_match_cli_and_settings(overlay: str) -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(overlay)}
    api = objects[("Deployment", "modalhub-api")]["spec"]["template"]["spec"]
    worker = objects[("Deployment", "modalhub-worker")]["spec"]["template"]["spec"]
    config = objects[("ConfigMap", "modalhub-config")]["data"]

    parser = build_parser()
    for pod, command in ((api, "serve"), (worker, "worker")):
        container = pod["containers"][0]
        assert parser.parse_args(container["args"]).command == command
        assert pod["serviceAccountName"] == "modalhub"
    probes = api["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    api_env = {e["name"]: e["value"] for e in api["containers"][0]["env"]}
    assert api_env["MODALHUB_PROCESSOR"] == "external"  # the worker Deployment applies
    worker_env = {e["name"]: e["value"] for e in worker["containers"][0]["env"]}
    metrics_port = worker["containers"][0]["ports"][0]["containerPort"]
    assert int(worker_env["MODALHUB_WORKER_METRICS_PORT"]) == metrics_port
    annotations = objects[("Deployment", "modalhub-worker")]["spec"]["template"]["metadata"]
    assert annotations["annotations"]["prometheus.io/port"] == str(metrics_port)

    known = settings_env_names()
    unknown = [key for key in [*config, *api_env, *worker_env] if key not in known]
    assert not unknown, f"not settings: {unknown}"
    if overlay != "base":
        Settings.model_validate({**config, "MODAL_WEBHOOK_SECRET": "x" * 32})
        account = objects[("ServiceAccount", "modalhub")]["metadata"]["annotations"]
        assert "iam.gke.io/gcp-service-account" in account
