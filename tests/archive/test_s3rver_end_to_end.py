"""s3rver, a second S3 implementation, with default settings: `retention check` passes with
warnings, and one sweep archives, verifies and deletes a job with a multipart output."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive.support import Endpoint, client_of
from tests.helpers import ROOT, config_data, daily_provider, run_cli, write_config
from worker.archive import MiB
from worker.simulators.blobs import Blob, chunks_of
from worker.simulators.daily import DailySimulator
from worker.simulators.s3rver import S3RVER_VERSION


@pytest.fixture
def daily() -> Iterator[DailySimulator]:
    sim = DailySimulator("daily-s3rver-key-0b1e")
    sim.start()
    yield sim
    sim.stop()


@pytest.mark.slow
def test_one_sweep_on_s3rver_with_default_settings_archives_verifies_and_deletes(
    s3rver: Endpoint, daily: DailySimulator, tmp_path: Path
) -> None:
    # given a bucket on s3rver, default [archive] settings, and a finished job with a 24 MiB
    # output (three 8 MiB parts) and a small one
    s3 = client_of(s3rver)
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    big, small = Blob(24 * MiB, seed=24), b'{"transcript": "hello"}'
    job = daily.add_job("finished", transcription=[("json", big), ("txt", small)])
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket=bucket,
            endpoint_url=s3rver.endpoint_url,
            ledger_url=f"sqlite:///{tmp_path}/ledger.db",
            providers={"daily": daily_provider(daily)},
        ),
    )

    # when `retention check` runs, then one sweep
    check = run_cli("check", config=config)
    sweep = run_cli("sweep", "--json", config=config, timeout=300)

    # then the check passes with warnings, and says what this server needs
    assert check.code == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok")
    assert "warn    archive:" in check.stdout
    assert "Object Lock: not supported by this server" in check.stdout
    assert "If-None-Match: * is ignored" in check.stdout
    assert "the whole object's MD5" in check.stdout
    assert "if_none_match = false" in check.stdout
    assert "FAILED" not in check.stdout
    # and the probe left nothing behind
    probes = s3.list_objects_v2(Bucket=bucket, Prefix="archive/.retention-probe/")
    assert probes.get("KeyCount") == 0
    # and the sweep archived, verified and deleted the job
    assert sweep.code == 0, sweep.stderr
    summary = sweep.last_json()
    assert (summary["archived"], summary["deleted"], summary["failed"]) == (1, 1, 0), summary
    assert daily.deletes_of(job) == 1
    folder = f"archive/daily/{job}/"
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=folder)["Contents"]}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=folder + "manifest.json")["Body"].read())
    by_size = {entry["size"]: entry for entry in manifest["files"]}
    data = b"".join(chunks_of(big))
    assert by_size[len(data)]["sha256"] == hashlib.sha256(data).hexdigest()
    assert by_size[len(small)]["sha256"] == hashlib.sha256(small).hexdigest()
    assert {entry["key"] for entry in manifest["files"]} | {
        folder + "manifest.json",
        folder + "deletion.json",
    } == stored


def test_the_s3rver_the_tests_start_is_the_version_scripts_test_installs() -> None:
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    match = re.search(r'^S3RVER_VERSION="([^"]+)"$', lib, re.M)
    assert match is not None
    assert match.group(1) == S3RVER_VERSION
    assert "/.s3rver/" in (ROOT / ".gitignore").read_text().splitlines()
