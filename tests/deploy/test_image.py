"""The image the Dockerfile builds, run: what a platform runs is what these tests exercise.

scripts/test-image builds the image with buildah (no Docker daemon) and runs this module with
RETENTION_TEST_IMAGE set to the image's id; without it every test here is skipped. Each test
runs commands in one working container made from the image, as the image's own user, with
every capability dropped, against servers on this machine (host network): the CLI, `config
validate` on the deploy configurations, the installed packages, the worker's and beat's
probes beside a real worker and beat, tracing left dormant, and a sweep of the simulators
that archives into an S3 server and deletes, with its ledger in PostgreSQL and its leases in
Redis. The container's root filesystem is not written to: what a pod may write (/tmp,
/var/lib/retention) is mounted from outside, as Kubernetes' emptyDirs are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.deploy.support import (
    DEPLOY,
    IMAGE_UID,
    K8S,
    Simulators,
    assert_simulators_swept,
    dummy_environment,
    env_refs,
    load_all_yaml,
    locked,
    locked_for,
    normalized,
)
from tests.helpers import REDIS_URL, ROOT, CliRun
from worker.simulators import __main__ as simulators_main
from worker.simulators.s3server import LOCAL_CREDENTIALS

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.simulators.s3server import S3Server

IMAGE = os.environ.get("RETENTION_TEST_IMAGE", "")
pytestmark = pytest.mark.skipif(
    not IMAGE, reason="no image to test: scripts/test-image builds one and runs these tests"
)

CONFIG_PATH = "/etc/retention/retention.toml"  # the image's RETENTION_CONFIG
# What a pod may write (emptyDirs in deploy/k8s); the rest of the root filesystem is read-only.
WRITABLE = ("/tmp", "/var/lib/retention")
# What buildah itself puts into the container's root for every command it runs (/run's own
# time changes with /run/.containerenv).
RUNTIME_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/run/.containerenv")


@dataclasses.dataclass
class Container:
    """A working container of the image; `run` executes one command in it."""

    name: str
    root: Path  # its root filesystem, mounted on this machine
    scratch: Path  # where the WRITABLE directories come from

    def run(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        config: Path | None = None,
        timeout: float = 180,
    ) -> CliRun:
        mounts = [f"{self.scratch / path.strip('/')}:{path}" for path in WRITABLE]
        if config is not None:
            mounts.append(f"{config}:{CONFIG_PATH}:ro")
        command = [
            "buildah",
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--cap-drop",
            "ALL",
            *(f"--volume={mount}" for mount in mounts),
            *(f"--env={name}={value}" for name, value in (env or {}).items()),
            self.name,
            "--",
            *argv,
        ]
        proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        return CliRun(proc.returncode, proc.stdout, proc.stderr, proc.stdout.splitlines())

    def written_since(self, moment: float) -> list[str]:
        """Paths in the root filesystem modified after ``moment``, but for buildah's own."""
        changed = []
        for directory, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = Path(directory) / name
                inside = "/" + str(path.relative_to(self.root))
                if inside in RUNTIME_FILES or inside.startswith(("/proc/", "/sys/", "/dev/")):
                    continue
                if path.lstat().st_mtime > moment:
                    changed.append(inside)
        return changed


def buildah(*args: str) -> str:
    proc = subprocess.run(["buildah", *args], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, f"buildah {shlex.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    assert shutil.which("buildah"), "RETENTION_TEST_IMAGE is set, but buildah is not installed"
    name = buildah("from", "--pull=never", IMAGE)
    try:
        root = Path(buildah("mount", name))
        with tempfile.TemporaryDirectory(prefix="retention-image-") as scratch:
            for path in WRITABLE:
                writable = Path(scratch) / path.strip("/")
                writable.mkdir(parents=True)
                os.chown(writable, IMAGE_UID, IMAGE_UID)
            yield Container(name, root, Path(scratch))
    finally:
        buildah("rm", name)


def test_the_cli_runs_as_the_unprivileged_image_user(container: Container) -> None:
    # when the image's default command line runs, with no user given
    run = container.run("sh", "-c", "id -u && id -g && exec retention --help")

    # then it runs as uid and gid 10001, which the Kubernetes manifests name
    assert run.code == 0, run.stderr
    uid, gid, *help_text = run.lines
    assert (int(uid), int(gid)) == (IMAGE_UID, IMAGE_UID)
    assert "Commands:" in help_text
    assert any(line.split()[:1] == ["sweep"] for line in help_text)


def secret_example() -> dict[str, str]:
    """The variables deploy/k8s/secret.example.yaml gives the pods."""
    (secret,) = load_all_yaml(K8S / "secret.example.yaml")
    return {name: str(value) for name, value in secret["stringData"].items()}


@pytest.mark.parametrize(
    ("config", "environment"),
    [
        (K8S / "retention.toml", secret_example),
        (DEPLOY / "retention.toml", lambda: dummy_environment(env_refs(DEPLOY / "retention.toml"))),
    ],
    ids=["k8s/retention.toml", "retention.toml"],
)
def test_config_validate_accepts_each_deploy_configuration_where_the_image_reads_it(
    container: Container, config: Path, environment: Any
) -> None:
    # given the configuration mounted read-only where RETENTION_CONFIG points, and its
    # variables in the environment
    # when `retention config validate` runs with no file named
    run = container.run(
        "retention", "config", "validate", "--json", env=environment(), config=config
    )

    # then it finds no problem, and names every provider
    assert run.code == 0, run.stdout + run.stderr
    report = run.only_json()
    assert report["ok"] is True, report
    assert report["file"] == CONFIG_PATH
    assert report["providers"]


# The environment markers of the image's Python, as packaging.markers.default_environment()
# computes them (the image's own packaging is not imported: this runs before any check of it).
MARKER_ENVIRONMENT = """
import json, os, platform, sys
print(json.dumps({
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


def test_the_image_holds_the_runtime_dependencies_and_no_test_or_demo_tool(
    container: Container,
) -> None:
    # when pip lists what the image's environment holds, and its Python says which of the
    # lock's markers apply
    run = container.run(
        "sh",
        "-c",
        'pip list --format json --disable-pip-version-check && python -c "$0"',
        MARKER_ENVIRONMENT,
    )
    assert run.code == 0, run.stderr
    listing, environment = (json.loads(line) for line in run.lines)
    installed = {normalized(p["name"]): p["version"] for p in listing}

    # then no package that only the demo's or the dev lock holds is there
    runtime = locked(ROOT / "requirements.lock")
    tools = (
        set(locked(ROOT / "requirements-demo.lock")) | set(locked(ROOT / "requirements-dev.lock"))
    ) - set(runtime)
    assert {"moto", "pytest", "hypothesis", "mypy"} <= tools
    assert sorted(set(installed) & tools) == []
    # and the runtime lock is there whole, at its versions, for this Python and platform
    wanted = locked_for(ROOT / "requirements.lock", environment)
    assert {name: installed.get(name) for name in wanted} == wanted
    # and nothing else but the project and the virtual environment's own installer
    assert set(installed) - set(wanted) <= {"retention-worker", "pip", "setuptools"}
    assert "retention-worker" in installed


@pytest.mark.postgres
@pytest.mark.redis
def test_a_sweep_inside_the_image_archives_and_deletes_every_due_job(
    container: Container,
    simulators: Simulators,
    s3_server: S3Server,
    s3: S3Client,
    bucket: str,
    postgres_url: str,
) -> None:
    # given deploy/retention.simulators.toml, pointed by environment variables only at the
    # simulators, S3 server, PostgreSQL and Redis running on this machine
    config = DEPLOY / "retention.simulators.toml"
    env = {
        **LOCAL_CREDENTIALS,
        "LEDGER_URL": postgres_url,
        "BROKER_URL": REDIS_URL,
        "RETENTION_ARCHIVE__BUCKET": bucket,
        "RETENTION_ARCHIVE__ENDPOINT_URL": s3_server.endpoint_url,
        # A queue of the test's own keeps its sweep leases apart from other runs.
        "RETENTION_BROKER__QUEUE": f"image-test-{os.getpid()}",
    }
    for name in simulators_main.ORDER:
        table = simulators.provider(name)
        for key in ("base_url", "stream_base_url"):
            if key in table:
                env[f"RETENTION_PROVIDERS__SIM_{name.upper()}__{key.upper()}"] = table[key]
    (held,) = simulators.provider("daily")["hold"]
    prepare = [
        ["retention", "migrate"],
        ["retention", "track", "sim_loom", *simulators.provider("loom")["track"]],
        ["retention", "track", "sim_unsiloed", *simulators.provider("unsiloed")["track"]],
        ["retention", "hold", "sim_daily", held],
    ]
    before = time.time()
    prepared = container.run(
        "sh", "-ec", "\n".join(map(shlex.join, prepare)), env=env, config=config
    )
    assert prepared.code == 0, prepared.stdout + prepared.stderr

    # when every dependency is checked, then a sweep runs
    check = container.run("retention", "check", env=env, config=config)
    sweep = container.run("retention", "sweep", "--json", env=env, config=config)

    # then every check passed, each provider's credentials included
    assert check.code == 0, check.stdout + check.stderr
    assert check.stdout.count("credentials accepted") == len(simulators_main.ORDER)
    # and the sweep archived and deleted every due job
    assert_simulators_swept(sweep, s3, bucket, held)
    # and nothing was written to the image's root filesystem: it can be mounted read-only
    assert container.written_since(before) == []


def test_the_celery_app_the_worker_and_beat_pods_start_loads_in_the_image(
    container: Container,
) -> None:
    # given the worker's and beat's command lines in deploy/k8s, up to the subcommand
    starts = {
        tuple(c["command"][:4])
        for manifest in ("worker.yaml", "beat.yaml")
        for obj in load_all_yaml(K8S / manifest)
        for c in obj["spec"]["template"]["spec"]["containers"]
    }
    assert starts == {
        ("celery", "-A", "worker.celery_app", "worker"),
        ("celery", "-A", "worker.celery_app", "beat"),
    }

    # when Celery loads that app in the image with the Kubernetes configuration and prints
    # its settings (no broker is contacted)
    run = container.run(
        "celery",
        "-A",
        "worker.celery_app",
        "report",
        env=secret_example(),
        config=K8S / "retention.toml",
    )

    # then the app, its tasks and both queues are there
    assert run.code == 0, run.stdout + run.stderr
    assert "include: ['worker.tasks']" in run.stdout
    assert "<unbound Queue retention.sweeps " in run.stdout


def probe_commands(manifest: str) -> dict[str, list[str]]:
    """Each probe's command line in a deploy/k8s manifest, by probe."""
    (obj,) = load_all_yaml(K8S / manifest)
    (container,) = obj["spec"]["template"]["spec"]["containers"]
    return {
        probe: container[probe]["exec"]["command"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
        if probe in container
    }


# In one container: start a Celery process in the background, wait for every probe of its
# manifest to pass, stop the process (SIGSTOP), and wait for the liveness probe to fail.
PROBE_SCRIPT = """
"$@" >/tmp/celery.log 2>&1 &
pid=$!
for attempt in $(seq 120); do
  if $STARTUP >/dev/null 2>&1; then break; fi
  sleep 0.5
done
for probe in "$STARTUP" "$LIVENESS" "$READINESS"; do
  [ -z "$probe" ] && continue
  $probe || { echo "probe failed: $probe"; cat /tmp/celery.log; kill -9 $pid; exit 1; }
done
kill -STOP $pid
for attempt in $(seq 40); do
  if ! $STOPPED 2>/dev/null; then echo "liveness failed after stop"; break; fi
  sleep 0.5
done
kill -CONT $pid
kill -TERM $pid
wait $pid
"""


@pytest.mark.redis
@pytest.mark.parametrize(
    ("manifest", "arguments"),
    [
        ("worker.yaml", ["worker", "--concurrency", "1", "--without-gossip", "--without-mingle"]),
        ("beat.yaml", ["beat", "--schedule", "/var/lib/retention/celerybeat-schedule"]),
    ],
)
def test_the_manifests_probes_pass_in_the_image_and_liveness_fails_once_celery_is_stopped(
    container: Container, manifest: str, arguments: list[str]
) -> None:
    # given the Kubernetes configuration, its heartbeat renewed every half second, and a Redis
    probes = probe_commands(manifest)
    liveness = probes["livenessProbe"]
    stopped = [*liveness[: liveness.index("--max-age")], "--max-age", "3"]
    env = {
        **secret_example(),
        "BROKER_URL": REDIS_URL,
        "RETENTION_BROKER__QUEUE": f"image-probe-{os.getpid()}",
        "RETENTION_WORKER__HEARTBEAT_SECONDS": "0.5",
        "RETENTION_METRICS__ENABLED": "false",
        "REMAP_SIGTERM": "SIGQUIT",
        "STARTUP": shlex.join(probes["startupProbe"]),
        "LIVENESS": shlex.join(liveness),
        "READINESS": shlex.join(probes.get("readinessProbe", [])),
        "STOPPED": shlex.join(stopped),
    }

    # when Celery starts in the image as the pod starts it, and its probes run beside it
    run = container.run(
        "sh",
        "-c",
        PROBE_SCRIPT,
        "probe",
        "celery",
        "-A",
        "worker.celery_app",
        *arguments,
        env=env,
        config=K8S / "retention.toml",
    )

    # then every probe passed while it ran, and liveness failed once its loop was stopped
    assert run.code == 0, run.stdout + run.stderr
    assert "liveness failed after stop" in run.stdout, run.stdout + run.stderr


def test_tracing_is_dormant_in_the_image_until_the_otel_variables_ask_for_it(
    container: Container,
) -> None:
    # given the image, which carries the otel extra
    check = (
        "from worker import tracing; import sys; "
        "print(tracing.configure('retention-worker'), 'opentelemetry' in sys.modules)"
    )

    # when tracing is set up without, then with, an exporter asked for
    off = container.run("python", "-c", check)
    on = container.run("python", "-c", check, env={"OTEL_TRACES_EXPORTER": "console"})

    # then it stays off, importing nothing, until asked; then it is on
    assert (off.code, off.stdout.split()) == (0, ["False", "False"]), off.stderr
    assert (on.code, on.stdout.split()) == (0, ["True", "True"]), on.stderr
