"""The Prometheus Operator's objects against the OpenAPI schemas of its CRDs.

kubernetes-validate knows Kubernetes' own kinds only; a PodMonitor or a PrometheusRule is
checked here against the schema its CustomResourceDefinition carries (tests/deploy/crds, the
operator's own files). Unknown fields are refused wherever the schema lists an object's
fields, as `kubectl apply`'s strict field validation refuses them (a misspelt
`podMetricsEndpoint` would otherwise pass, and be pruned by the API server without a word).
The CEL rules (x-kubernetes-validations) are not evaluated.

    python -m tests.deploy.schemas RENDERED.yaml --others BUILTIN.yaml

validates every object of a group the CRDs define, writes the other objects to BUILTIN.yaml
(for kubernetes-validate), and exits 1 naming each problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

CRDS = Path(__file__).parent / "crds"


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists an object's fields
    and does not keep unknown ones (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas(directory: Path = CRDS) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the strict schema of each version each CRD serves."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def groups(schemas: Iterable[tuple[str, str]]) -> set[str]:
    return {api_version.split("/")[0] for api_version, _ in schemas}


def problems(obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> Iterator[str]:
    """Each way ``obj`` breaks its CRD's schema, as ``Kind/name: path: message``."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    schema = schemas.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        yield f"{where}: no CRD here defines {obj.get('apiVersion')} {obj.get('kind')}"
        return
    for error in sorted(Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path)):
        path = ".".join(str(part) for part in error.path) or "(the object)"
        yield f"{where}: {path}: {error.message}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.deploy.schemas")
    parser.add_argument("rendered", type=Path, help="kustomize's output")
    parser.add_argument("--others", type=Path, required=True, help="where the other objects go")
    args = parser.parse_args(argv)
    schemas = crd_schemas()
    custom_groups = groups(schemas)
    others: list[dict[str, Any]] = []
    found: list[str] = []
    for obj in yaml.safe_load_all(args.rendered.read_text()):
        if not obj:
            continue
        if obj.get("apiVersion", "").split("/")[0] in custom_groups:
            found += problems(obj, schemas)
        else:
            others.append(obj)
    args.others.write_text(yaml.safe_dump_all(others, sort_keys=False))
    for problem in found:
        print(f"error: {args.rendered.name}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
