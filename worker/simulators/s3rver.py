"""A second S3 implementation for the tests: s3rver (npm), which differs from moto where real
servers differ from AWS.

s3rver stores no additional checksums, ignores ``If-None-Match``, has no versioning and no
Object Lock API (``NotImplemented``), does not check Content-MD5, and gives a multipart
object the whole object's MD5 as its ETag instead of S3's MD5-of-part-MD5s-N. A worker that
passes its tests against both moto and s3rver does not lean on what only one of them does.

``scripts/test`` installs the pinned version into ``.s3rver/`` at the repository's root once
(``npm install``); ``find_s3rver`` looks there, or in ``$RETENTION_S3RVER_DIR``. The server is
started through a small Node launcher that also accepts the tests' local credentials
(``LOCAL_CREDENTIALS``), so clients need no special configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import ConfigError
from worker.simulators.s3server import LOCAL_CREDENTIALS

# Pinned: scripts/lib.sh installs exactly this version (keep the two in step).
S3RVER_VERSION = "3.7.1"
DIR_ENV = "RETENTION_S3RVER_DIR"

# Registers the local credentials next to s3rver's own S3RVER/S3RVER pair, listens on a port
# the OS picks, and prints it as one JSON line (no race for a "free" port).
_LAUNCHER = """
const S3rver = require('s3rver');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');
DUMMY_ACCOUNT.createKeyPair(process.env.S3RVER_KEY_ID, process.env.S3RVER_SECRET);
const server = new S3rver({
  address: '127.0.0.1', port: 0, directory: process.env.S3RVER_DATA, silent: true,
});
server.run().then(({ port }) => { process.stdout.write(JSON.stringify({ port }) + '\\n'); });
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
"""


def s3rver_dir(root: Path) -> Path:
    return Path(os.environ.get(DIR_ENV) or root / ".s3rver")


def find_s3rver(root: Path) -> Path | None:
    """The installed s3rver package's folder, or None."""
    package = s3rver_dir(root) / "node_modules" / "s3rver"
    return package if (package / "package.json").is_file() else None


def install_s3rver(root: Path) -> Path | None:
    """Install the pinned s3rver with npm (what scripts/test does); None without node/npm."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    target = s3rver_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--prefix",
            str(target),
            f"s3rver@{S3RVER_VERSION}",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigError(
            f"npm could not install s3rver {S3RVER_VERSION} into {target}: "
            f"{done.stderr.strip()[-300:]}",
            hint="Check the npm registry is reachable, or remove the folder and run scripts/test",
        )
    return find_s3rver(root)


@dataclass
class S3rverServer:
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    data: Path = field(repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def start_s3rver(package: Path, *, timeout: float = 30.0) -> S3rverServer:
    """Start s3rver from its installed ``package`` folder, files in a fresh temporary one."""
    node = shutil.which("node")
    if node is None:
        raise ConfigError("s3rver needs node", hint="Install Node.js 18 or newer")
    data = Path(tempfile.mkdtemp(prefix="s3rver-"))
    env = {
        **os.environ,
        "NODE_PATH": str(package.parent),
        "S3RVER_DATA": str(data),
        "S3RVER_KEY_ID": LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "S3RVER_SECRET": LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }
    process = subprocess.Popen(
        [node, "-e", _LAUNCHER],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=package.parent,
    )
    assert process.stdout is not None
    try:
        line = _first_line(process, timeout)
        port = int(json.loads(line)["port"])
    except (ValueError, KeyError, TimeoutError) as exc:
        process.kill()
        process.wait()
        shutil.rmtree(data, ignore_errors=True)
        raise ConfigError(f"s3rver did not start ({type(exc).__name__}: {exc})") from None
    return S3rverServer(port, process, data)


def _first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no answer within {timeout:.0f} s")
    line = process.stdout.readline().decode()
    if not line:
        raise ValueError(f"it exited with code {process.wait()}")
    return line
