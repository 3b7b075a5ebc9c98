"""`python -m worker.simulators`: every provider's simulator in one standalone server.

deploy/compose.yaml's `simulators` profile runs it so the whole system can be tried without a
provider account; it is just as useful by hand::

    python -m worker.simulators                  # 127.0.0.1:8101-8105, demo jobs
    python -m worker.simulators --host 0.0.0.0 --public-host simulators --s3-endpoint http://minio:9000

Each simulator listens on its own port (``--base-port`` and those after it, one per provider
in the registry's order: daily, loom, huawei_mpc, unsiloed, datocms, then any plug-in's;
``--base-port 0`` takes free ports). Once all of them listen, one JSON line on stdout gives,
per account, the ``[providers.NAME]`` table a configuration needs (type, base_url,
credentials), the jobs it holds, and the ids to hand to ``retention track`` (Loom and
Unsiloed have no list endpoint) and ``retention hold``. Then it serves until SIGTERM or
SIGINT. The accounts are the providers' own (``worker/simulators/seed.py``), read off the
registry: this module names no provider.

``--seed demo`` (the default) adds jobs like ``retention demo``'s, in every state, with fixed
ids so a static configuration (deploy/retention.simulators.toml) can name them.

Outputs in the user's own buckets (a Daily ``custom_buckets`` job, Huawei MPC's OBS outputs)
need an S3 server: with ``--s3-endpoint`` they are written there (credentials from the usual
``AWS_*`` variables) and the buckets are created when missing; without it they are left out
and the rest is the same. moto is never needed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar, TypeVar, cast

from worker.simulators.blobs import Content, chunks_of
from worker.simulators.http import SimServer
from worker.simulators.seed import Account, SimulatedAccount, simulated_accounts

DEFAULT_BASE_PORT = 8101
ACCOUNTS = simulated_accounts()
# Port offsets from --base-port, and the account names the JSON (and the configs) use.
ORDER = tuple(account.name for account in ACCOUNTS)

S = TypeVar("S", bound=SimServer)
BucketWriter = Callable[[str, str, Content], None]


class _Bound(SimServer):
    """Binds to the chosen address and hands out URLs (base URL, download links) on the
    host name clients use, which differs from the bind address in a container."""

    bind_host: ClassVar[str] = "127.0.0.1"
    public_host: ClassVar[str] = "127.0.0.1"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=self.bind_host, port=port)

    @property
    def origin(self) -> str:
        host = self.public_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def bound(cls: type[S], bind_host: str, public_host: str) -> type[S]:
    """``cls`` listening on ``bind_host`` and naming ``public_host`` in its URLs.

    The simulators' own constructors bind to 127.0.0.1; slotting ``_Bound`` between the
    simulator and ``SimServer`` changes only that, not how any simulator behaves.
    """
    attrs = {"bind_host": bind_host, "public_host": public_host}
    return cast("type[S]", type(f"Served{cls.__name__}", (cls, _Bound), attrs))


def start_accounts(
    *, bind_host: str, public_host: str, base_port: int, writer: BucketWriter | None
) -> list[tuple[SimulatedAccount[Any], Account]]:
    """Start every provider's simulator (stopping any already started if one fails to bind)."""
    started: list[tuple[SimulatedAccount[Any], Account]] = []
    try:
        for offset, simulated in enumerate(ACCOUNTS):
            account = simulated.start(
                cls=bound(simulated.simulator, bind_host, public_host),
                port=base_port + offset if base_port else 0,
                writer=writer,
            )
            started.append((simulated, account))
    except OSError:
        for _, account in started:
            account.sim.stop()
        raise
    return started


def s3_writer(endpoint_url: str, region: str) -> BucketWriter:
    """Writes custom-bucket outputs to an S3 server, creating the buckets when missing."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            # MinIO and other S3-compatible servers may reject the newer default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in sorted({name for account in ACCOUNTS for name in account.buckets}):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def write(bucket: str, key: str, content: Content) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=b"".join(chunks_of(content)))

    return write


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker.simulators",
        description="Run the provider simulators until SIGTERM or SIGINT.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--public-host",
        help="host name clients reach the simulators by, used in base URLs and download links "
        "(default: --host, or 127.0.0.1 when listening on every address)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"port of the first simulator; the others take the ports after it "
        f"({', '.join(ORDER)}; default: {DEFAULT_BASE_PORT}; 0: free ports)",
    )
    parser.add_argument(
        "--seed",
        choices=("demo", "none"),
        default="demo",
        help="demo: jobs in every state, as in `retention demo` (default); none: no jobs",
    )
    parser.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="S3 server for outputs in the user's own buckets (credentials from AWS_*); "
        "without it those outputs are left out",
    )
    parser.add_argument("--s3-region", default="us-east-1", help="default: us-east-1")
    args = parser.parse_args(argv)
    if not 0 <= args.base_port <= 65535 - len(ORDER):
        parser.error(f"--base-port must be 0 or a port below {65536 - len(ORDER)}")
    if args.public_host is None:
        args.public_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host  # noqa: S104
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # Installed before anything starts, so a SIGTERM during start-up still stops cleanly.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    writer: BucketWriter | None = None
    if args.s3_endpoint:
        try:
            writer = s3_writer(args.s3_endpoint, args.s3_region)
        except Exception as exc:  # botocore's errors: one line, not a traceback
            print(f"error: S3 server {args.s3_endpoint}: {exc}", file=sys.stderr)
            return 1
    try:
        started = start_accounts(
            bind_host=args.host,
            public_host=args.public_host,
            base_port=args.base_port,
            writer=writer,
        )
    except OSError as exc:
        print(f"error: cannot listen on {args.host}: {exc}", file=sys.stderr)
        return 1
    accounts = [account for _, account in started]
    try:
        if args.seed == "demo":
            for simulated, account in started:
                simulated.seed(account, writer is not None)
        ready = {
            "event": "simulators_ready",
            "s3_endpoint": args.s3_endpoint,
            "providers": {a.name: a.summary() for a in accounts},
        }
        print(json.dumps(ready), flush=True)
        print(
            "simulators: "
            + ", ".join(f"{a.name} {a.sim.base_url}" for a in accounts)
            + " (SIGTERM or Ctrl-C stops them)",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
    finally:
        for account in accounts:
            account.sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
