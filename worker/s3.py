"""S3 plumbing shared by the archive and the user's own source buckets: one client per
process, botocore's errors translated at the edge, and what an answer's fields mean.

Only this module, ``archive`` and ``source_bucket`` speak boto3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import ArchiveError
from worker.settings import ArchiveSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Answers that mean "no such object" (HEAD answers a bare 404).
MISSING = ("404", "NoSuchKey", "NotFound")
# Answers that mean "the key is taken" (a conditional write met an existing object).
TAKEN = ("PreconditionFailed", "412")
KMS = ("aws:kms", "aws:kms:dsse")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def etag_of(answer: Mapping[str, Any]) -> str:
    """An answer's ETag without the quotes S3 puts around it ("" when there is none)."""
    return str(answer.get("ETag", "")).strip('"')


def make_s3_client(
    settings: ArchiveSettings, *, max_pool_connections: int = 32, endpoint_url: str | None = None
) -> S3Client:
    """One client per process: boto3 clients are thread-safe, sessions are not."""
    config = Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": settings.addressing_style},
        request_checksum_calculation=settings.checksum_mode,
        response_checksum_validation=settings.checksum_mode,
        connect_timeout=10,
        read_timeout=120,
    )
    session = boto3.session.Session()
    client: S3Client = session.client(
        "s3", endpoint_url=endpoint_url or settings.endpoint_url, config=config
    )
    return client


def _s3_hint(code: str, bucket: str) -> str:
    if code in (
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "403",
    ):
        return (
            f"Check that the worker's AWS credentials may read and write s3://{bucket} "
            "(s3:PutObject, s3:GetObject, s3:AbortMultipartUpload)"
        )
    if code in ("NoSuchBucket", "404"):
        return f"Create the bucket {bucket} or fix [archive] bucket"
    if code in ("SlowDown", "503", "500", "InternalError", "ServiceUnavailable"):
        return "S3 is overloaded or failing; the job will be tried again"
    if code in ("PreconditionFailed", "412"):
        return "An object already exists at this key and archived objects are never overwritten"
    return "The job will be tried again"


@contextlib.contextmanager
def s3_errors(action: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Translate botocore's errors into ArchiveError, naming the bucket and what to do."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(
            error.get("Code", "")
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
        )
        raise ArchiveError(
            f"S3 answered {code} while {action} {where}", hint=_s3_hint(code, bucket)
        ) from exc
    except BotoCoreError as exc:
        raise ArchiveError(
            f"S3 could not be reached while {action} {where}: {type(exc).__name__}",
            hint="Check [archive] endpoint_url and the network; the job will be tried again",
        ) from exc
