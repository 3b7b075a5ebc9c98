"""An Archive on the test S3 server, and a body split into chunks as a download streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from worker.archive import Archive, StoredObject, make_s3_client
from worker.settings import ArchiveSettings
from worker.simulators.s3server import S3Server
from worker.source_bucket import SourceBucket


def archive_for(s3_server: S3Server, bucket: str, **options: Any) -> Archive:
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
