"""deploy/k8s: the scorer's Kubernetes manifests are valid resources (offline schemas) and agree
with the image and the CLI they run (flags, ports, probes, grace period, user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ds_serving.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "scorer.yaml"
KUBERNETES = "1.30"  # oldest version the manifests target (native gRPC probes: 1.24+)


def _documents() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text())}


def test_every_resource_validates_against_the_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _documents()
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler",
                         "PodDisruptionBudget"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises on any error


def test_the_deployment_runs_what_the_cli_and_the_image_provide() -> None:
    docs = _documents()
    pod = docs["Deployment"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    args = build_parser().parse_args(container["args"])  # flags the CLI really has
    assert container["command"] == ["ds-scorer"] and args.command == "serve"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    # ready when the health service says SERVING (a model is loaded); alive while the port
    # answers, so a pod waiting for its first champion is not restarted in a loop
    assert container["readinessProbe"]["grpc"]["port"] == args.port
    assert container["livenessProbe"]["tcpSocket"]["port"] == args.port
    assert "replicas" not in docs["Deployment"]["spec"]  # the autoscaler owns the count
    # SIGTERM drains within --grace; Kubernetes kills at the pod's grace period
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.grace
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["models"] == args.models
    env = {e["name"]: e["value"] for e in container["env"]}
    assert Path(env["DS_SCORER_TOKEN_FILE"]).parent == Path(mounts["token"])
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile and pod["spec"]["securityContext"]["runAsUser"] == 10001
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yaml").read_text())
    assert container["image"] == compose["services"]["scorer"]["image"]


def test_service_autoscaler_and_budget_select_the_deployment() -> None:
    docs = _documents()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items())
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # the budget keeps 1


def test_prometheus_scrapes_the_pods_as_the_job_the_alerts_name() -> None:
    """DSScorerDown reads up{job="ds-scorer"}: scraped through pod annotations by a generic job
    (the Helm chart's kubernetes-pods), the scorer's series carried that job's name and the
    alert never fired. The shipped scrape job keeps the scorer pods by label and their
    ``metrics`` port, and the pods carry no scrape annotations (no second, generic scrape)."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "kubernetes.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j]
    rules = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    assert f'up{{job="{job["job_name"]}"}}' in rules
    pod = _documents()["Deployment"]["spec"]["template"]
    assert "prometheus.io/scrape" not in pod["metadata"].get("annotations", {})
    [container] = pod["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    meta = {"__meta_kubernetes_pod_label_app_kubernetes_io_name":
            pod["metadata"]["labels"]["app.kubernetes.io/name"],
            "__meta_kubernetes_pod_container_port_name": "metrics",
            "__meta_kubernetes_pod_container_port_number": str(port),
            "__address__": f"10.0.0.7:{port}"}
    kept = _relabel(job["relabel_configs"], meta)
    assert kept is not None and kept["__address__"] == f"10.0.0.7:{port}"
    for other in ({"__meta_kubernetes_pod_container_port_name": "grpc",
                   "__address__": "10.0.0.7:50051"},
                  {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "other-app"}):
        assert _relabel(job["relabel_configs"], {**meta, **other}) is None


def _relabel(rules: list[dict[str, object]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus's keep / drop / replace relabeling (the actions the scrape job uses)."""
    import re

    out = dict(labels)
    for rule in rules:
        sources = rule.get("source_labels", [])
        assert isinstance(sources, list)
        value = str(rule.get("separator", ";")).join(out.get(str(s), "") for s in sources)
        match = re.fullmatch(str(rule.get("regex", "(.*)")), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            out[str(rule["target_label"])] = match.expand(
                str(rule.get("replacement", "$1")).replace("$", "\\"))
    return out
