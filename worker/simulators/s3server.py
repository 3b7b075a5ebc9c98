"""A local S3 API server for the demo and the tests: moto's standalone server, over HTTP.

It runs as its own process on 127.0.0.1, so boto3 talks to it exactly as it talks to AWS S3
or MinIO: through ``endpoint_url``. moto is installed with the ``demo`` extra.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.errors import ConfigError

# Credentials moto accepts; real ones never reach the local server.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local-access-key",
    "AWS_SECRET_ACCESS_KEY": "local-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset endpoint)."""
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - loopback only
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback only
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(
    port: int | None = None, *, timeout: float = 30.0, env: Mapping[str, str] | None = None
) -> S3Server:
    """moto's server on 127.0.0.1; ``env`` adds to its environment (for example
    ``INITIAL_NO_AUTH_ACTION_COUNT``, which turns on moto's IAM enforcement)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the local S3 server needs moto",
            hint="Install the demo extra: pip install 'retention-worker[demo]'",
        ) from None
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **LOCAL_CREDENTIALS, **(env or {})},
    )
    server = S3Server(port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"the local S3 server exited at start (code {process.returncode})")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=2),  # noqa: S310
        ):
            return server
        time.sleep(0.1)
    server.stop()
    raise ConfigError(f"the local S3 server did not start within {timeout:.0f} s")
