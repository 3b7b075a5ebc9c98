"""deploy/k8s's components and example overlay, as kustomize renders them.

scripts/validate-deploy checks every rendered object against its schema; these tests check what
a schema cannot: that the NetworkPolicies let the pods reach what the worker needs and nothing
else (never the cloud metadata service), and let only Prometheus in, on the metrics port; that
the PodMonitor scrapes that port; that the PrometheusRule holds exactly the rules promtool
tests; that the PostgreSQL ledger gives every container that reads the configuration a
LEDGER_URL to itself; and that the example overlay uses every component and patches what it
says it does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.schemas import crd_schemas, problems
from tests.deploy.support import (
    COMPONENTS,
    DEPLOY,
    K8S,
    OVERLAYS,
    by_kind_and_name,
    dummy_environment,
    env_refs,
    kustomize,
    kustomize_with,
    load_all_yaml,
    load_yaml,
)
from worker.settings import Settings, load_settings

Objects = dict[tuple[str, str], dict[str, Any]]

# The cloud metadata services: AWS, GCP and Azure's IMDS, EKS Pod Identity's agent.
METADATA = ("169.254.169.254", "169.254.170.23")
# Addresses no public-internet rule may reach: the cluster's and the VPC's own networks.
PRIVATE = ("10.1.2.3", "172.16.5.4", "192.168.1.1", "100.64.0.10")
WORKLOADS = ("Deployment", "Job", "StatefulSet")


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        config = K8S / "retention.toml"
        for name, value in dummy_environment(env_refs(config)).items():
            monkeypatch.setenv(name, value)
        yield load_settings(config)


@pytest.fixture(scope="module")
def with_network_policy(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    workdir = tmp_path_factory.mktemp("network-policy")
    return by_kind_and_name(kustomize_with(workdir, COMPONENTS / "network-policy"))


@pytest.fixture(scope="module")
def with_postgres(tmp_path_factory: pytest.TempPathFactory) -> Objects:
    workdir = tmp_path_factory.mktemp("postgres-ledger")
    return by_kind_and_name(kustomize_with(workdir, COMPONENTS / "postgres-ledger"))


@pytest.fixture(scope="module")
def example() -> Objects:
    return by_kind_and_name(kustomize(OVERLAYS / "example"))


def app_pods(objects: Objects) -> dict[str, dict[str, Any]]:
    """The pod templates of retention-worker itself (not of its PostgreSQL)."""
    return {
        f"{kind}/{name}": obj["spec"]["template"]
        for (kind, name), obj in objects.items()
        if kind in WORKLOADS
        and obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        == "retention-worker"
    }


def policies_for(objects: Objects, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        obj
        for (kind, _), obj in objects.items()
        if kind == "NetworkPolicy"
        and obj["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]


def reachable(peer: dict[str, Any], address: str) -> bool:
    """Whether an ipBlock peer lets ``address`` through (selector peers name pods, not IPs)."""
    block = peer.get("ipBlock")
    if block is None:
        return False
    ip = ipaddress.ip_address(address)
    return ip in ipaddress.ip_network(block["cidr"]) and not any(
        ip in ipaddress.ip_network(excluded) for excluded in block.get("except", [])
    )


def egress_rules(policies: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            yield policy["metadata"]["name"], rule


def ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port["protocol"], port["port"]) for port in rule["ports"]}


def assert_no_rule_reaches_the_metadata_service(policies: list[dict[str, Any]]) -> None:
    for name, rule in egress_rules(policies):
        # A rule without `to` or `ports` would allow every destination or every port.
        assert rule.get("to"), name
        assert rule.get("ports"), name
        for peer in rule["to"]:
            for address in METADATA:
                assert not reachable(peer, address), (name, address)


# -- NetworkPolicy ------------------------------------------------------------------------------


def test_every_pod_of_the_worker_is_isolated_both_ways_by_the_network_policy(
    with_network_policy: Objects,
) -> None:
    pods = app_pods(with_network_policy)
    assert set(pods) == {
        "Deployment/retention-worker",
        "Deployment/retention-beat",
        "Deployment/retention-exporter",
        "Job/retention-migrate",
    }
    for where, template in pods.items():
        policies = policies_for(with_network_policy, template["metadata"]["labels"])
        types = {kind for policy in policies for kind in policy["spec"]["policyTypes"]}
        assert types == {"Ingress", "Egress"}, where


def test_the_pods_may_reach_dns_redis_the_ledger_s3_and_the_providers_and_nothing_else(
    with_network_policy: Objects,
) -> None:
    # given the policies that select the worker's pods
    template = with_network_policy[("Deployment", "retention-worker")]["spec"]["template"]
    policies = policies_for(with_network_policy, template["metadata"]["labels"])
    rules = dict(egress_rules(policies))

    # then there is one rule per destination, each with its own ports
    assert {name: ports(rule) for name, rule in rules.items()} == {
        "retention-worker-allow-dns": {("UDP", 53), ("TCP", 53)},
        "retention-worker-allow-redis": {("TCP", 6379)},
        "retention-worker-allow-ledger": {("TCP", 5432)},
        "retention-worker-allow-s3": {("TCP", 443)},
        "retention-worker-allow-providers": {("TCP", 443)},
    }
    # and DNS is the cluster's DNS pods only
    (dns,) = rules["retention-worker-allow-dns"]["to"]
    assert dns == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    # and Redis and the ledger are unreachable placeholders until an overlay sets them
    for name in ("retention-worker-allow-redis", "retention-worker-allow-ledger"):
        (peer,) = rules[name]["to"]
        network = ipaddress.IPv4Network(peer["ipBlock"]["cidr"])
        assert network.subnet_of(ipaddress.IPv4Network("192.0.2.0/24")), name  # TEST-NET-1
    # and the public rules reach a public address, but neither the metadata service nor the
    # cluster's or the VPC's private networks
    for name in ("retention-worker-allow-s3", "retention-worker-allow-providers"):
        (peer,) = rules[name]["to"]
        assert reachable(peer, "52.216.0.1"), name
        for address in PRIVATE:
            assert not reachable(peer, address), (name, address)
    assert_no_rule_reaches_the_metadata_service(policies)


def test_only_the_monitoring_namespace_reaches_the_pods_and_only_on_the_metrics_port(
    with_network_policy: Objects, settings: Settings
) -> None:
    worker = with_network_policy[("Deployment", "retention-worker")]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    rules = [
        rule
        for policy in policies_for(with_network_policy, labels)
        for rule in policy["spec"].get("ingress", [])
    ]
    (rule,) = rules
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert ports(rule) == {("TCP", settings.metrics.port)}
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": settings.metrics.port, "protocol": "TCP"} in (
        container["ports"]
    )


# -- monitoring ---------------------------------------------------------------------------------


def test_the_prometheusrule_holds_exactly_the_rules_promtool_tests() -> None:
    (rule,) = load_all_yaml(COMPONENTS / "monitoring" / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == load_yaml(DEPLOY / "prometheus" / "alerts.yaml")


def test_the_podmonitor_scrapes_every_worker_pod_on_its_metrics_port(
    tmp_path: Path, settings: Settings
) -> None:
    objects = by_kind_and_name(kustomize_with(tmp_path, COMPONENTS / "monitoring"))
    (monitor,) = [obj for (kind, _), obj in objects.items() if kind == "PodMonitor"]
    worker = objects[("Deployment", "retention-worker")]["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        worker["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = worker["spec"]["containers"]
    served = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert served[endpoint["port"]] == settings.metrics.port
    assert endpoint["path"] == "/metrics"


def test_every_alert_has_a_runbook_url_to_its_own_section_of_the_runbook() -> None:
    # (tests/unit/test_docs.py checks that the runbook has each section)
    for group in load_yaml(DEPLOY / "prometheus" / "alerts.yaml")["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            page, anchor = url.split("#")
            assert page.endswith("/docs/operations/runbook.md"), url
            assert anchor == rule["alert"].lower(), url


def test_the_example_overlay_points_every_runbook_url_at_its_own_copy_of_the_docs(
    example: Objects,
) -> None:
    (runbook,) = load_all_yaml(OVERLAYS / "example" / "runbook.yaml")
    base = runbook["data"]["url"]
    (rule,) = [o for (k, _), o in example.items() if k == "PrometheusRule"]
    urls = {
        r["alert"]: r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }
    assert urls
    assert urls == {alert: f"{base}#{alert.lower()}" for alert in urls}
    # and the object that holds the address is kustomize's alone: nothing to apply
    assert ("ConfigMap", "retention-runbook") not in example


def test_the_crd_check_refuses_a_misspelt_field_and_accepts_the_shipped_objects() -> None:
    schemas = crd_schemas()
    (monitor,) = load_all_yaml(COMPONENTS / "monitoring" / "podmonitor.yaml")
    (rule,) = load_all_yaml(COMPONENTS / "monitoring" / "prometheusrule.yaml")
    assert list(problems(monitor, schemas)) == []
    assert list(problems(rule, schemas)) == []

    misspelt = {**monitor, "spec": {**monitor["spec"], "podMetricEndpoints": []}}
    (problem,) = problems(misspelt, schemas)
    assert "podMetricEndpoints" in problem
    bad_duration = {**rule, "spec": {"groups": [{"name": "g", "interval": "1 minute"}]}}
    assert any("interval" in p for p in problems(bad_duration, schemas))


# -- PostgreSQL ledger --------------------------------------------------------------------------


def test_the_postgres_ledger_gives_every_container_that_reads_the_config_a_url_to_itself(
    with_postgres: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the ledger's Service and the Secret its server reads its password from
    service = with_postgres[("Service", "retention-postgres")]
    server = with_postgres[("StatefulSet", "retention-postgres")]["spec"]["template"]["spec"]
    (postgres,) = server["containers"]
    server_env = {e["name"]: e for e in postgres["env"]}
    secret_ref = server_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    (port,) = service["spec"]["ports"]

    for where, template in app_pods(with_postgres).items():
        spec = template["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            # then each container's LEDGER_URL names the Service, its port and database,
            # with the password from the same Secret, defined before it
            names = [e["name"] for e in container["env"]]
            env = {e["name"]: e for e in container["env"]}
            assert names.index("POSTGRES_PASSWORD") < names.index("LEDGER_URL"), where
            assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret_ref, where
            url = env["LEDGER_URL"]["value"]
            user, db = server_env["POSTGRES_USER"]["value"], server_env["POSTGRES_DB"]["value"]
            assert url == (
                f"postgresql+psycopg://{user}:$(POSTGRES_PASSWORD)@"
                f"{service['metadata']['name']}:{port['port']}/{db}"
            ), where

    # and, the password expanded, the Kubernetes configuration loads with that URL
    config = K8S / "retention.toml"
    for name, value in dummy_environment(env_refs(config)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LEDGER_URL", url.replace("$(POSTGRES_PASSWORD)", "0123abcd"))
    assert load_settings(config).ledger.url.startswith("postgresql+psycopg://retention:")


def test_the_postgres_server_runs_unprivileged_on_a_read_only_root_and_only_the_worker_reaches_it(
    with_postgres: Objects,
) -> None:
    server = with_postgres[("StatefulSet", "retention-postgres")]["spec"]["template"]["spec"]
    assert server["securityContext"]["runAsNonRoot"] is True
    assert server["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert server["automountServiceAccountToken"] is False
    (container,) = server["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "limits" in container["resources"]
    (policy,) = policies_for(with_postgres, {"app.kubernetes.io/name": "retention-postgres"})
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "egress" not in policy["spec"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "retention-worker"}}}
    ]


# -- the example overlay ------------------------------------------------------------------------


def test_the_example_overlay_uses_every_component_network_policy_first() -> None:
    kustomization = load_yaml(OVERLAYS / "example" / "kustomization.yaml")
    used = [Path(path).name for path in kustomization["components"]]
    assert sorted(used) == sorted(path.name for path in COMPONENTS.iterdir() if path.is_dir())
    assert used.index("network-policy") < used.index("postgres-ledger")


def test_the_example_overlay_sets_the_addresses_and_still_keeps_the_metadata_service_out(
    example: Objects,
) -> None:
    # given everything in the overlay's namespace, under the restricted Pod Security profile
    namespace = example[("Namespace", "retention")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for (kind, name), obj in example.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "retention", (kind, name)

    # then its patches set Redis, the ledger (to the PostgreSQL pod), S3 and the scraping
    # namespace
    worker = example[("Deployment", "retention-worker")]["spec"]["template"]
    policies = policies_for(example, worker["metadata"]["labels"])
    rules = dict(egress_rules(policies))
    (redis,) = rules["retention-worker-allow-redis"]["to"]
    assert reachable(redis, "10.20.30.40")
    assert ports(rules["retention-worker-allow-redis"]) == {("TCP", 6380)}
    (ledger,) = rules["retention-worker-allow-ledger"]["to"]
    assert ledger == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "retention-postgres"}}
    }
    (s3,) = rules["retention-worker-allow-s3"]["to"]
    assert reachable(s3, "10.20.64.10")
    assert not reachable(s3, "52.216.0.1")
    scrape = example[("NetworkPolicy", "retention-worker-allow-metrics-scrape")]
    (rule,) = scrape["spec"]["ingress"]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    # and no rule reaches the metadata service
    assert_no_rule_reaches_the_metadata_service(policies)
    # and the Prometheus Operator's objects carry the label its Helm release selects
    for kind in ("PodMonitor", "PrometheusRule"):
        (obj,) = [o for (k, _), o in example.items() if k == kind]
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_every_pod_of_the_example_meets_the_restricted_pod_security_profile(
    example: Objects,
) -> None:
    for (kind, name), obj in example.items():
        if kind not in WORKLOADS:
            continue
        spec = obj["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "add" not in context["capabilities"], (name, container["name"])
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret"}, (name, volume)


def test_the_deployment_page_names_every_component() -> None:
    page = (DEPLOY.parent / "docs" / "operations" / "deployment.md").read_text()
    for component in COMPONENTS.iterdir():
        assert re.search(rf"components/{re.escape(component.name)}\b", page), component.name
