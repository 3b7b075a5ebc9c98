"""The deployment files agree with each other, with the configuration and with the code.

scripts/validate-deploy checks each file against its schema; these tests check what a schema
cannot: that compose.yaml mounts files that exist, starts workers after the migration and one
beat per profile, and stops them within the configured grace period; that the Kubernetes
manifests do the same; that every worker consumes both the jobs and the sweeps queue; that the
alert rules and the Grafana dashboard query only metrics the code serves; that the image's lock
holds the runtime dependencies only, and its package no simulator; and that the simulators'
server, with
deploy/retention.simulators.toml, archives and deletes every due job.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.aws.iam import Need, allows, load_policy
from tests.deploy.support import (
    DEPLOY,
    ENV_REF,
    IMAGE_UID,
    K8S,
    Simulators,
    assert_simulators_swept,
    dummy_environment,
    env_refs,
    load_all_yaml,
    load_yaml,
    locked,
)
from tests.helpers import REDIS_URL, ROOT, run_cli
from worker import heartbeat
from worker.celery_app import celery_config, sweep_queue
from worker.metrics import gauges as worker_metrics
from worker.settings import Settings, load_settings
from worker.simulators import __main__ as simulators_main
from worker.simulators import seed
from worker.specs.daily import DailySettings
from worker.specs.loom import LoomSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server


def load_deploy_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in dummy_environment(env_refs(path)).items():
        monkeypatch.setenv(name, value)
    return load_settings(path)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


# -- compose.yaml -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")
    return data


def services(compose: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
    """The services `docker compose --profile PROFILE up` starts (those without a profile too)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def mounted_config(service: Mapping[str, Any]) -> Path:
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if target == "/etc/retention/retention.toml":
            return (DEPLOY / source).resolve()
    raise AssertionError(f"no configuration mounted in {service}")


def celery_role(service: Mapping[str, Any]) -> str | None:
    command = command_of(service)
    if command[:3] == ["celery", "-A", "worker.celery_app"]:
        return command[3]
    return None


PROFILES = ("providers", "simulators")


def test_compose_uses_the_specification_format_without_a_version_key(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose
    assert set(compose["services"]) >= {"redis", "postgres", "minio", "minio-setup"}


def test_every_application_service_runs_the_one_image_built_from_the_repository(
    compose: dict[str, Any],
) -> None:
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    # the simulators are not in the worker's image: they have a target of their own
    simulators = built.pop("simulators")
    assert simulators["build"]["target"] == "simulators"
    assert "FROM build AS simulators" in (ROOT / "Dockerfile").read_text()
    assert set(built) == {
        name for name, s in compose["services"].items() if s["image"].startswith("${RETENTION")
    }
    assert {s["image"] for s in built.values()} == {"${RETENTION_IMAGE:-retention-worker:local}"}
    for service in built.values():
        assert "target" not in service["build"]
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_every_file_the_compose_file_mounts_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
        for env_file in service.get("env_file", []):
            path = DEPLOY / env_file["path"]
            # An optional env file is the user's own (git ignores it); its example is shipped.
            assert env_file.get("required", True) is False or path.exists(), (name, path)
            assert path.with_name(path.name + ".example").is_file(), (name, path)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_runs_one_worker_and_exactly_one_beat_and_one_exporter(
    compose: dict[str, Any], profile: str
) -> None:
    active = services(compose, profile)
    roles = [celery_role(s) for s in active.values()]
    assert roles.count("worker") == 1
    assert roles.count("beat") == 1
    # The ledger's gauges come from one process, not from every worker.
    exporters = [s for s in active.values() if command_of(s) == ["retention", "exporter"]]
    assert len(exporters) == 1
    assert "deploy" not in exporters[0]
    beat = next(s for s in active.values() if celery_role(s) == "beat")
    assert beat["deploy"]["replicas"] == 1
    # The schedule file lives in a named volume: the root filesystem is read-only.
    schedule = command_of(beat)[command_of(beat).index("--schedule") + 1]
    assert any(
        v.endswith(f":{Path(schedule).parent}") and not v.startswith(".") for v in beat["volumes"]
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_workers_and_beat_start_only_after_the_migration_of_their_own_profile(
    compose: dict[str, Any], profile: str
) -> None:
    active = services(compose, profile)
    migrations = {name for name, s in active.items() if command_of(s) == ["retention", "migrate"]}
    assert len(migrations) == 1
    (migrate,) = migrations
    for name, service in active.items():
        if celery_role(service) is None:
            continue
        config = mounted_config(service)
        assert config == mounted_config(active[migrate]), name
        waits_for = {dep: cond["condition"] for dep, cond in service["depends_on"].items()}
        # Beat reaches the migration through the seeding step in the simulators profile.
        chain = {migrate} | {
            dep for dep in waits_for if migrate in active.get(dep, {}).get("depends_on", {})
        }
        assert any(waits_for.get(dep) == "service_completed_successfully" for dep in chain), name
        assert waits_for["minio-setup"] == "service_completed_successfully", name
        assert waits_for["redis"] == waits_for["postgres"] == "service_healthy", name


@pytest.mark.parametrize("profile", PROFILES)
def test_a_worker_is_stopped_within_the_configured_grace_period_by_a_soft_shutdown(
    compose: dict[str, Any], profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in services(compose, profile).values():
        if celery_role(service) != "worker":
            continue
        settings = load_deploy_config(mounted_config(service), monkeypatch)
        assert seconds(service["stop_grace_period"]) == settings.worker.grace_period_seconds
        assert service["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
        soft = celery_config(settings)["worker_soft_shutdown_timeout"]
        assert 0 < soft < settings.worker.grace_period_seconds
        # The Prometheus multiprocess directory is scratch space of its own.
        assert any(t.startswith("/run/retention/metrics:") for t in service["tmpfs"])
        port = settings.metrics.port
        assert any(p.endswith(f":{port}") for p in service["ports"])


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_health_is_the_heartbeat_each_celery_process_renews(
    compose: dict[str, Any], profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = {"worker": heartbeat.WORKER_FILE, "beat": heartbeat.BEAT_FILE}
    checked = set()
    for name, service in services(compose, profile).items():
        role = celery_role(service)
        if role not in roles:
            continue
        settings = load_deploy_config(mounted_config(service), monkeypatch)
        assert settings.worker.heartbeat_dir is not None, name
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "worker.heartbeat"], name
        assert Path(test[4]) == Path(settings.worker.heartbeat_dir) / roles[role], name
        checked.add(role)
    assert checked == set(roles)


def consumed_queues(command: list[str], settings: Settings) -> set[str]:
    """The queues `celery worker` consumes: those it names with -Q/--queues, else every
    queue the app declares (celery_app's task_queues)."""
    for flag in ("-Q", "--queues"):
        if flag in command:
            return set(command[command.index(flag) + 1].split(","))
    return {queue.name for queue in celery_config(settings)["task_queues"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_worker_consumes_both_the_jobs_and_the_sweeps_queue(
    compose: dict[str, Any], profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in services(compose, profile).values():
        if celery_role(service) != "worker":
            continue
        settings = load_deploy_config(mounted_config(service), monkeypatch)
        assert consumed_queues(command_of(service), settings) == {
            settings.broker.queue,
            sweep_queue(settings),
        }


def test_every_application_container_runs_under_an_init_that_reaps_and_forwards_signals(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert service.get("init") is True, name


def test_redis_never_evicts_a_key_and_keeps_queued_tasks_across_a_restart(
    compose: dict[str, Any],
) -> None:
    command = command_of(compose["services"]["redis"])
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--appendonly"] == "yes"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_the_bucket_is_created_with_object_lock_under_the_configured_name(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = compose["services"]["minio-setup"]
    (script,) = setup["command"]
    assert re.search(r"mc mb .*--with-lock", script)
    bucket = setup["environment"]["ARCHIVE_BUCKET"]
    for config in ("retention.toml", "retention.simulators.toml"):
        settings = load_deploy_config(DEPLOY / config, monkeypatch)
        assert settings.archive.bucket == bucket, config
        assert settings.archive.endpoint_url == "http://minio:9000", config
    policy = json.loads((DEPLOY / "minio" / "retention-worker-policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"} <= resources
    # Write once: the worker's own user can never delete from the archive, except the objects
    # `retention check` writes under {prefix}.retention-probe/ to probe the server.
    for statement in policy["Statement"]:
        archive = any(r.startswith(f"arn:aws:s3:::{bucket}") for r in statement["Resource"])
        if archive and any(a.startswith("s3:Delete") for a in statement["Action"]):
            probes = [r.endswith("/.retention-probe/*") for r in statement["Resource"]]
            assert all(probes), statement


@pytest.mark.parametrize("config", ["retention.toml", "retention.simulators.toml"])
def test_the_minio_policy_grants_what_the_worker_needs_for_each_deploy_config(
    config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given what deploy/iam/ grants for the features this configuration uses
    settings = load_deploy_config(DEPLOY / config, monkeypatch)
    archive = settings.archive
    features = ["base"] + (["object-lock"] if archive.object_lock_mode else [])
    custom = sorted(
        bucket
        for provider in settings.providers.values()
        for bucket in getattr(provider, "custom_buckets", None) or []
    )
    names = {"ARCHIVE_BUCKET": archive.bucket, "ARCHIVE_PREFIX": archive.prefix}
    wanted = [load_policy(name, names) for name in features]
    wanted += [load_policy("custom-buckets", {"CUSTOM_BUCKET": b}) for b in custom]
    minio = json.loads((DEPLOY / "minio" / "retention-worker-policy.json").read_text())

    # then the MinIO user's policy allows each of those actions on a key of each resource
    missing = [
        (action, resource)
        for policy in wanted
        for statement in policy["Statement"]
        for action in statement["Action"]
        for resource in statement["Resource"]
        if not allows([minio], Need(action, resource.replace("*", "some/key"), config))
    ]
    assert missing == []


def test_minio_clears_stale_multipart_uploads_as_the_lifecycle_rule_says(
    compose: dict[str, Any],
) -> None:
    rule = json.loads((DEPLOY / "minio" / "lifecycle.json").read_text())["Rules"][0]
    days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
    expiry = compose["services"]["minio"]["environment"]["MINIO_API_STALE_UPLOADS_EXPIRY"]
    assert expiry == f"{days * 24}h"


def test_the_simulators_profile_needs_no_provider_secret(compose: dict[str, Any]) -> None:
    lines = (DEPLOY / "compose.yaml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    try_out = dict(
        line.split("=", 1)
        for line in (DEPLOY / "simulators.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(try_out)
    # Provider credentials are never interpolated by compose: only the providers profile's
    # containers read them, from deploy/providers.env.
    provider_vars = env_refs(DEPLOY / "retention.toml") - {"LEDGER_URL", "BROKER_URL"}
    assert provider_vars
    assert not provider_vars & set(re.findall(r"\$\{([A-Z_]+)", text))
    for service in services(compose, "simulators").values():
        assert "env_file" not in service


def test_every_variable_each_compose_config_reads_is_supplied(compose: dict[str, Any]) -> None:
    example = (DEPLOY / "providers.env.example").read_text()
    in_example = set(re.findall(r"^#\s*([A-Z_]+)=", example, re.M))
    for profile in PROFILES:
        for name, service in services(compose, profile).items():
            if celery_role(service) is None and command_of(service)[:1] != ["retention"]:
                continue
            supplied = set(service["environment"])
            if "env_file" in service:
                supplied |= in_example
            missing = env_refs(mounted_config(service)) - supplied
            assert not missing, (profile, name, missing)


# -- the deploy configurations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "retention.toml", DEPLOY / "retention.simulators.toml", K8S / "retention.toml"],
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_each_deploy_configuration_loads_and_schedules_every_provider(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_deploy_config(path, monkeypatch)
    assert settings.providers
    assert settings.ledger.auto_migrate is False  # a migrate step runs first
    beat = celery_config(settings)["beat_schedule"].values()
    sweeps = [entry for entry in beat if entry["task"] == "retention.sweep"]
    assert {entry["args"][0] for entry in sweeps} == set(settings.providers)


def test_the_simulators_config_names_the_simulators_accounts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_deploy_config(DEPLOY / "retention.simulators.toml", monkeypatch)
    command = command_of(compose["services"]["simulators"])
    host = command[command.index("--public-host") + 1]
    base_port = int(command[command.index("--base-port") + 1])
    for offset, name in enumerate(simulators_main.ORDER):
        provider = settings.providers[f"sim_{name}"]
        assert provider.base_url.startswith(f"http://{host}:{base_port + offset}"), name
        # and every other host the account is read from is the simulator's, never the vendor's
        for key, value in provider.model_dump().items():
            if key.endswith("base_url"):
                assert value.startswith(f"http://{host}:{base_port + offset}"), (name, key)
    daily, loom = settings.providers["sim_daily"], settings.providers["sim_loom"]
    assert isinstance(daily, DailySettings)
    assert isinstance(loom, LoomSettings)
    assert daily.api_key.get_secret_value() == seed.DAILY_API_KEY
    assert loom.secret.get_secret_value() == seed.LOOM_SECRET


# -- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        for obj in load_all_yaml(K8S / name):
            found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


@pytest.fixture(scope="module")
def k8s_settings() -> Iterator[Settings]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield load_deploy_config(K8S / "retention.toml", monkeypatch)


def pod_specs(k8s: Mapping[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{kind}/{name}": obj["spec"]["template"]["spec"]
        for (kind, name), obj in k8s.items()
        if kind in ("Deployment", "Job")
    }


def test_the_kustomization_lists_every_manifest_but_not_the_secret_example() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests - {"secret.example.yaml"}
    assert "namespace" not in kustomization
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["retention.toml"]
    (image,) = kustomization["images"]
    assert image["newTag"]


def test_every_container_runs_the_pinned_image_with_the_config_and_the_secret(
    k8s: dict[tuple[str, str], Any],
) -> None:
    image = load_yaml(K8S / "kustomization.yaml")["images"][0]["name"]
    for where, spec in pod_specs(k8s).items():
        config = next(v for v in spec["volumes"] if v["name"] == "config")
        assert config["configMap"]["name"] == "retention-config", where
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["image"] == image, where
            assert {"secretRef": {"name": "retention-secrets"}} in container["envFrom"], where
            assert {
                "name": "config",
                "mountPath": "/etc/retention",
                "readOnly": True,
            } in container["volumeMounts"], where


def test_beat_is_a_single_replica_that_is_never_rolled_over_alive(
    k8s: dict[tuple[str, str], Any],
) -> None:
    beats = [
        obj
        for (kind, _), obj in k8s.items()
        if kind == "Deployment"
        and "beat" in obj["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    assert len(beats) == 1
    (beat,) = beats
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_the_ledger_is_exported_by_exactly_one_pod_that_is_never_rolled_over_alive(
    k8s: dict[tuple[str, str], Any], k8s_settings: Settings
) -> None:
    exporters = [
        obj
        for (kind, _), obj in k8s.items()
        if kind == "Deployment"
        and obj["spec"]["template"]["spec"]["containers"][0]["command"] == ["retention", "exporter"]
    ]
    (exporter,) = exporters
    assert exporter["spec"]["replicas"] == 1
    assert exporter["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = exporter["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": k8s_settings.metrics.port, "protocol": "TCP"} in (
        container["ports"]
    )
    # its /metrics is its work: an answer there is its health
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    labels = exporter["spec"]["template"]["metadata"]["labels"]
    service = k8s[("Service", "retention-exporter-metrics")]
    assert service["spec"]["selector"] == labels


def test_workers_stop_by_soft_shutdown_within_the_configured_grace_period(
    k8s: dict[tuple[str, str], Any], k8s_settings: Settings
) -> None:
    worker = k8s[("Deployment", "retention-worker")]
    spec = worker["spec"]["template"]["spec"]
    assert worker["spec"]["replicas"] == 2
    assert spec["terminationGracePeriodSeconds"] == k8s_settings.worker.grace_period_seconds
    (container,) = spec["containers"]
    assert {"name": "REMAP_SIGTERM", "value": "SIGQUIT"} in container["env"]
    assert "--concurrency" in container["command"]


def test_kubernetes_workers_consume_both_the_jobs_and_the_sweeps_queue(
    k8s: dict[tuple[str, str], Any], k8s_settings: Settings
) -> None:
    worker = k8s[("Deployment", "retention-worker")]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert consumed_queues(container["command"], k8s_settings) == {
        k8s_settings.broker.queue,
        sweep_queue(k8s_settings),
    }


def heartbeat_probe(probe: Mapping[str, Any]) -> tuple[Path, float | None, bool]:
    """(file, --max-age, --running) of an exec probe that runs `python -m worker.heartbeat`."""
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "-m", "worker.heartbeat"], command
    options = command[4:]
    max_age = float(options[options.index("--max-age") + 1]) if "--max-age" in options else None
    return Path(command[3]), max_age, "--running" in options


@pytest.mark.parametrize(
    ("deployment", "container_name", "file"),
    [
        ("retention-worker", "worker", heartbeat.WORKER_FILE),
        ("retention-beat", "beat", heartbeat.BEAT_FILE),
    ],
)
def test_liveness_reads_the_heartbeat_the_configuration_has_renewed_on_a_writable_volume(
    k8s: dict[tuple[str, str], Any],
    k8s_settings: Settings,
    deployment: str,
    container_name: str,
    file: str,
) -> None:
    (container,) = k8s[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == container_name
    assert k8s_settings.worker.heartbeat_dir is not None
    expected = Path(k8s_settings.worker.heartbeat_dir) / file
    # the heartbeat's directory is on a volume: the root filesystem is read-only
    mounts = [Path(m["mountPath"]) for m in container["volumeMounts"] if not m.get("readOnly")]
    assert any(expected.is_relative_to(mount) for mount in mounts)
    path, max_age, running = heartbeat_probe(container["livenessProbe"])
    assert (path, running) == (expected, False)
    # a few heartbeats may be missed before the probe fails
    assert max_age is not None
    assert max_age >= 3 * k8s_settings.worker.heartbeat_seconds
    path, _, running = heartbeat_probe(container["startupProbe"])
    assert (path, running) == (expected, True)


def test_worker_probes_and_scraping_use_the_configured_metrics_port(
    k8s: dict[tuple[str, str], Any], k8s_settings: Settings
) -> None:
    worker = k8s[("Deployment", "retention-worker")]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert port == {
        "name": "metrics",
        "containerPort": k8s_settings.metrics.port,
        "protocol": "TCP",
    }
    # a worker is ready once its consumer consumes, not once its metrics thread answers
    assert heartbeat_probe(container["readinessProbe"])[2]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(k8s_settings.metrics.port)
    service = k8s[("Service", "retention-worker-metrics")]
    assert service["spec"]["selector"] == worker["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = k8s[("PodDisruptionBudget", "retention-worker")]
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


def test_every_pod_runs_as_the_image_user_on_a_read_only_root(
    k8s: dict[tuple[str, str], Any],
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in dockerfile
    for where, spec in pod_specs(k8s).items():
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == pod["runAsGroup"] == IMAGE_UID, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert "limits" in container["resources"], where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where


def test_the_worker_metrics_directory_is_memory_backed_where_the_image_points(
    k8s: dict[tuple[str, str], Any],
) -> None:
    match = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert match
    spec = k8s[("Deployment", "retention-worker")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == match.group(1))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"


def test_the_secret_example_supplies_every_variable_the_config_reads() -> None:
    (secret,) = load_all_yaml(K8S / "secret.example.yaml")
    assert secret["metadata"]["name"] == "retention-secrets"
    assert env_refs(K8S / "retention.toml") <= set(secret["stringData"])


# -- alert rules --------------------------------------------------------------------------------


SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
# Digits too: retention_s3_errors_total.
METRIC_NAME = re.compile(r"\bretention_[a-z0-9_]+")
PROMETHEUS = DEPLOY / "prometheus"
RULE_TESTS = ("alerts.test.yaml", "sweep-schedules.test.yaml")


def exposed_metric_names() -> set[str]:
    """The series names worker.metrics' metrics appear under on /metrics: each declared
    family with its type's suffixes (a counter is only ever queried as ..._total)."""
    return {
        name + suffix
        for name, kind in worker_metrics.declared_metrics().items()
        for suffix in SUFFIXES[kind]
    }


def test_alert_rules_name_only_metrics_the_worker_serves() -> None:
    exposed = exposed_metric_names()
    assert "retention_last_successful_sweep_timestamp_seconds" in exposed
    assert "retention_archived_bytes_total" in exposed
    groups = load_yaml(PROMETHEUS / "alerts.yaml")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    used: set[str] = set()
    for rule in rules:
        names = set(METRIC_NAME.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= exposed, (rule["alert"], names - exposed)
        assert rule["labels"]["severity"], rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used |= names
    # The dead-man's switch reads the schedule's own next run; the failed jobs come from the
    # ledger, not from a counter's last hour.
    assert {
        "retention_next_sweep_timestamp_seconds",
        "retention_first_scheduled_sweep_timestamp_seconds",
        "retention_ledger_failed_jobs",
    } <= used
    # Every rule is exercised by a promtool test, with series the worker serves.
    tested: set[str] = set()
    for name in RULE_TESTS:
        tests = load_yaml(PROMETHEUS / name)
        assert tests["rule_files"] == ["alerts.yaml"], name
        series = {s["series"].split("{")[0] for t in tests["tests"] for s in t["input_series"]}
        assert series - {"up"} <= exposed, (name, series - {"up"} - exposed)
        tested |= {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", [])}
    assert {rule["alert"] for rule in rules} - {"RetentionSweepsSlow"} <= tested


def test_validate_deploy_runs_every_promtool_test_file() -> None:
    script = (ROOT / "scripts" / "validate-deploy").read_text()
    for name in RULE_TESTS:
        assert f"deploy/prometheus/{name}" in script
    assert {p.name for p in PROMETHEUS.glob("*.test.yaml")} == set(RULE_TESTS)


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_dashboard_queries_only_metrics_the_worker_serves() -> None:
    # given the shipped dashboard
    dashboard = json.loads((DEPLOY / "grafana" / "retention-worker.json").read_text())
    exposed = exposed_metric_names()
    queries = [
        target["expr"]
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]

    # then every metric it names is one the code serves, under its served name
    used = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert used <= exposed, used - exposed
    # and it shows what an operator asks first: sweeps, deletes, overdue, failed, held,
    # bytes, provider errors and the last scrub
    assert {
        "retention_next_sweep_timestamp_seconds",
        "retention_sweep_duration_seconds_count",
        "retention_jobs_deleted_total",
        "retention_ledger_overdue_jobs",
        "retention_ledger_failed_jobs",
        "retention_ledger_held_jobs",
        "retention_archived_bytes_total",
        "retention_provider_requests_total",
        "retention_provider_rate_limited_total",
        "retention_s3_errors_total",
        "retention_last_scrub_timestamp_seconds",
    } <= used


def test_the_dashboard_reads_the_one_exporters_ledger_gauges_and_rates_at_any_scrape_interval() -> (
    None
):
    dashboard = json.loads((DEPLOY / "grafana" / "retention-worker.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "instance", "provider"} <= set(variables)
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            expr, where = target["expr"], (panel["title"], target["refId"])
            # every query stays in the chosen namespace
            assert 'namespace=~"$namespace"' in expr, where
            ledger = "retention_ledger_" in expr
            # the ledger's gauges come from one exporter: nothing to deduplicate across pods,
            # and the worker variable does not hide them
            if ledger:
                assert not re.search(r"\b(max|min|avg)\b", expr), where
                assert "$instance" not in expr, where
            elif "retention_build_info" not in expr:
                assert 'instance=~"$instance"' in expr, where
            # a rate's window follows the scrape interval, but for the long windows the
            # alerts read (a sweep's p95 over 6 h, the SLI over a day)
            for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", expr):
                assert window in ("$__rate_interval", "6h", "1d"), (where, window)


def test_the_dashboard_is_importable_into_any_grafana_with_a_prometheus() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "retention-worker.json").read_text())
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    (source,) = (v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert source["query"] == "prometheus"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        # Every query goes to the chosen Prometheus, never to a uid of our own installation.
        assert panel["datasource"]["uid"] == f"${{{source['name']}}}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


# -- the image ---------------------------------------------------------------------------------


def test_the_image_installs_only_the_runtime_dependencies_hash_checked() -> None:
    # given the image's lock, the demo's and the dev lock
    runtime, demo, dev = (
        locked(ROOT / name)
        for name in ("requirements.lock", "requirements-demo.lock", "requirements-dev.lock")
    )
    dockerfile = (ROOT / "Dockerfile").read_text()

    # then the image installs the runtime lock, hash-checked; the others never reach the
    # build context (.dockerignore is an allowlist)
    assert "--require-hashes --no-deps -r requirements.lock" in dockerfile
    allowed = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!requirements.lock" in allowed
    assert not [line for line in allowed if "demo" in line or "dev" in line]
    # and that lock holds no demo or test tool, while the demo's and the dev lock do
    for tool in ("moto", "flask", "werkzeug", "pytest", "mypy"):
        assert tool not in runtime, tool
    assert "moto" in demo
    assert "pytest" in dev
    # and all three pin every shared package to one version
    for other in (demo, dev):
        assert {name: other[name] for name in runtime} == runtime
    # and the image's lock is the runtime's with the otel extra only (tracing, dormant until
    # the OTEL_* variables ask for it), never the demo's or the dev tools'
    header = (ROOT / "requirements.lock").read_text().splitlines()[1]
    assert re.findall(r"--extra (\S+)", header) == ["otel"]


def _runtime_imports(tree: ast.Module) -> list[str]:
    """The modules a module imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_the_image_holds_no_simulator_and_no_module_it_holds_imports_one() -> None:
    # given the packages of the wheel the image installs: every folder, matched against
    # pyproject.toml's include and exclude patterns as setuptools matches them (fnmatchcase)
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    where = find["packages"]["find"]
    folders = {"worker"} | {
        ".".join(path.relative_to(ROOT).parts)
        for path in (ROOT / "worker").rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts
    }
    packages = {
        name
        for name in folders
        if any(fnmatch.fnmatchcase(name, p) for p in where["include"])
        and not any(fnmatch.fnmatchcase(name, p) for p in where.get("exclude", ()))
    }

    # then the simulators (test and demo equipment) are not among them
    assert "worker.providers" in packages
    assert [p for p in packages if p.startswith("worker.simulators")] == []
    # and no module that is imports them, except the demo, which says what is missing
    importers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "worker").rglob("*.py")
        if "simulators" not in path.parts
        and any(
            name.startswith("worker.simulators")
            for name in _runtime_imports(ast.parse(path.read_text()))
        )
    }
    assert importers == {"worker/demo.py"}


# -- the simulators' server, end to end ----------------------------------------------------------


def test_the_simulators_listen_on_loopback_and_stop_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.simulators", "--base-port", "0", "--seed", "none"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert ready["event"] == "simulators_ready"
    assert list(ready["providers"]) == list(simulators_main.ORDER)
    for table in ready["providers"].values():
        assert table["base_url"].startswith("http://127.0.0.1:")
        assert table["jobs"] == []


def test_the_seed_step_tracks_and_holds_the_ids_the_simulators_report(
    compose: dict[str, Any], simulators: Simulators
) -> None:
    script = compose["services"]["seed-simulators"]["command"][0]
    for name in ("loom", "unsiloed"):
        ids = simulators.provider(name)["track"]
        assert f"retention track sim_{name} {' '.join(ids)}" in script
    (held,) = simulators.provider("daily")["hold"]
    assert f"retention hold sim_daily {held}" in script


@pytest.mark.redis
def test_the_simulators_config_archives_and_deletes_every_due_job(
    simulators: Simulators,
    s3_server: S3Server,
    s3: S3Client,
    bucket: str,
    tmp_path: Path,
) -> None:
    # given deploy/retention.simulators.toml, pointed at the running simulators, the test's
    # S3 server and bucket, a SQLite ledger and the local Redis by environment variables only
    config = DEPLOY / "retention.simulators.toml"
    env = {
        "LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
        "BROKER_URL": REDIS_URL,
        "RETENTION_ARCHIVE__BUCKET": bucket,
        "RETENTION_ARCHIVE__ENDPOINT_URL": s3_server.endpoint_url,
        # A queue of the test's own keeps its sweep leases apart from other runs.
        "RETENTION_BROKER__QUEUE": f"deploy-test-{os.getpid()}",
    }
    for name in simulators_main.ORDER:
        # Every URL of the account (DatoCMS's stream host too) points at the running server.
        for key, value in simulators.provider(name).items():
            if key.endswith("base_url"):
                env[f"RETENTION_PROVIDERS__SIM_{name.upper()}__{key.upper()}"] = value
    assert run_cli("migrate", config=config, env=env).code == 0
    for name in ("loom", "unsiloed"):
        tracked = run_cli(
            "track", f"sim_{name}", *simulators.provider(name)["track"], config=config, env=env
        )
        assert tracked.code == 0, tracked.stderr
    (held,) = simulators.provider("daily")["hold"]
    assert run_cli("hold", "sim_daily", held, config=config, env=env).code == 0

    # when every dependency is checked, then a sweep runs, then another
    check = run_cli("check", config=config, env=env)
    sweep = run_cli("sweep", "--json", config=config, env=env)
    again = run_cli("sweep", "--json", config=config, env=env)

    # then every check passed, each provider's credentials included
    assert check.code == 0, check.stdout + check.stderr
    assert check.stdout.count("credentials accepted") == len(simulators_main.ORDER)
    # and the sweep archived and deleted every due job
    assert_simulators_swept(sweep, s3, bucket, held)
    # and the second sweep finds nothing left to do
    assert again.code == 0, again.stderr
    assert again.last_json()["deleted"] == again.last_json()["archived"] == 0


def test_the_deploy_configs_read_secrets_only_from_the_environment() -> None:
    for path in (DEPLOY / "retention.toml", K8S / "retention.toml"):
        data = tomllib.loads(path.read_text())
        for name, provider in data["providers"].items():
            for key in ("api_key", "key", "secret", "secret_key", "access_key", "api_token"):
                if key in provider:
                    assert ENV_REF.fullmatch(provider[key]), (path.name, name, key)
        assert ENV_REF.fullmatch(data["ledger"]["url"])
        assert ENV_REF.fullmatch(data["broker"]["url"])
