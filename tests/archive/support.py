"""An Archive on a test S3 server, a body split into chunks as a download streams, and a
count of the requests an archive sends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest

from worker.archive import Archive, StoredObject, make_s3_client
from worker.settings import ArchiveSettings
from worker.simulators.s3rver import S3rverServer
from worker.source_bucket import SourceBucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Endpoint(Protocol):
    @property
    def endpoint_url(self) -> str: ...


def archive_for(s3_server: Endpoint, bucket: str, **options: Any) -> Archive:
    """The smallest part size S3 allows, so multipart paths run with small test files."""
    settings = ArchiveSettings.model_validate(
        {
            "bucket": bucket,
            "endpoint_url": s3_server.endpoint_url,
            "region": "us-east-1",
            "part_size_mib": 5,
            **options,
        }
    )
    return Archive(make_s3_client(settings), settings)


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def copy_in(archive: Archive, bucket: str, key: str, dest_key: str) -> StoredObject:
    """What the pipeline does for an output in the user's own bucket on the same endpoint:
    read the source's metadata, then copy it server-side into the archive."""
    source = SourceBucket(archive.client, same_endpoint=True)
    return archive.copy_from(source.head(bucket, key), dest_key)


@dataclass
class Calls:
    """Every S3 operation a client sent, with the parameters it was given."""

    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.seen.append((model.name, dict(params)))

    def named(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.seen if name == operation]

    def reads(self) -> list[dict[str, Any]]:
        return self.named("GetObject")


def record_calls(archive_or_client: Any) -> Calls:
    """Record each operation's parameters as the caller gave them (``before-parameter-build``
    runs before botocore serializes anything)."""
    client = getattr(archive_or_client, "client", archive_or_client)
    calls = Calls()
    client.meta.events.register("before-parameter-build.s3", calls)
    return calls


def answers_without(
    monkeypatch: pytest.MonkeyPatch, client: Any, operation: str, left_out: Callable[[str], bool]
) -> None:
    """Make ``client.operation`` answer as a server would that leaves out the fields
    ``left_out`` names (an ETag, a checksum, an echoed algorithm)."""
    real = getattr(client, operation)

    def answer(**kwargs: Any) -> Any:
        return {k: v for k, v in dict(real(**kwargs)).items() if not left_out(k)}

    monkeypatch.setattr(client, operation, answer)


def client_of(server: Endpoint) -> S3Client:
    client: S3Client = boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1")
    return client


def on_s3rver(server: Endpoint) -> bool:
    return isinstance(server, S3rverServer)
