"""The simulators' server for the deployment tests (test_deploy.py and test_image.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.deploy.support import Simulators
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def simulators() -> Iterator[Simulators]:
    """`python -m worker.simulators --base-port 0`, ready once it prints its JSON line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.simulators", "--base-port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout = process.stdout
    assert stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(stdout.readline()))
    reader.start()
    reader.join(timeout=30)
    if not first or not first[0]:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the simulators did not start: {err}")
    try:
        yield Simulators(process, json.loads(first[0]))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
