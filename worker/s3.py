"""S3 plumbing shared by the archive and the user's own source buckets: one client per
process, botocore's errors translated at the edge, and what an answer's fields mean.

Only this module, the ``archive`` package and ``source_bucket`` speak boto3.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import ArchiveError
from worker.metrics import recorders
from worker.settings import ArchiveSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Answers that mean "no such object" (HEAD answers a bare 404).
MISSING = ("404", "NoSuchKey", "NotFound")
# Answers that mean "the key is taken" (a conditional write met an existing object).
TAKEN = ("PreconditionFailed", "412")
# Answers that mean "this server does not implement that": a feature it lacks, not a fault.
UNSUPPORTED = ("NotImplemented", "MethodNotAllowed", "501", "405")
# A GET of an object in a cold storage class before a RestoreObject has finished.
COLD = ("InvalidObjectState",)
KMS = ("aws:kms", "aws:kms:dsse")
# The additional checksums S3 defines, as HEAD answers name them.
CHECKSUM_FIELDS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def etag_of(answer: Mapping[str, object]) -> str:
    """An answer's ETag without the quotes S3 puts around it ("" when there is none)."""
    return str(answer.get("ETag", "")).strip('"')


def encrypted(answer: Mapping[str, object]) -> bool:
    """SSE-KMS or SSE-C: AWS documents that such an object's ETag is not an MD5 of its bytes."""
    return answer.get("ServerSideEncryption") in KMS or bool(answer.get("SSECustomerAlgorithm"))


def full_object_sha256(answer: Mapping[str, object]) -> str | None:
    """The object's SHA-256 (hex) when the answer carries one for the whole object.

    A multipart object's SHA-256 is COMPOSITE (a hash of the parts' hashes, shown with a
    "-<parts>" suffix on AWS), not the digest of the bytes; it is never taken for one.
    """
    value = answer.get("ChecksumSHA256")
    if not value or "-" in str(value) or answer.get("ChecksumType") == "COMPOSITE":
        return None
    if answer.get("ChecksumType") != "FULL_OBJECT" and "-" in etag_of(answer):
        return None  # a multipart object: composite unless the answer says otherwise
    try:
        digest = base64.b64decode(str(value), validate=True)
    except ValueError:
        return None
    return digest.hex() if len(digest) == 32 else None


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
            f"Check that the worker's AWS credentials may read and write s3://{bucket}: "
            "deploy/iam/ has the policy for each feature you use"
        )
    if code in ("NoSuchBucket", "404"):
        return f"Create the bucket {bucket} or fix [archive] bucket"
    if code in ("SlowDown", "503", "500", "InternalError", "ServiceUnavailable"):
        return "S3 is overloaded or failing; the job will be tried again"
    if code in ("PreconditionFailed", "412"):
        return "An object already exists at this key and archived objects are never overwritten"
    if code in COLD:
        return (
            "The object is in a cold storage class (GLACIER, DEEP_ARCHIVE) and cannot be read "
            "until a restore finishes: `retention restore PROVIDER JOB_ID --wait` starts one"
        )
    if code in UNSUPPORTED or code in ("InvalidArgument", "400"):
        return (
            "The server may not implement what this request asked for; `retention check` "
            "probes the bucket and says which [archive] settings it needs"
        )
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
        # Counted here, where every S3 failure passes once, after botocore's own retries;
        # the answers callers expect (a missing object) are handled before they get here.
        recorders.record_s3_error(recorders.operation_of(exc, action), code)
        raise ArchiveError(
            f"S3 answered {code} while {action} {where}", hint=_s3_hint(code, bucket)
        ) from exc
    except BotoCoreError as exc:
        recorders.record_s3_error(recorders.operation_of(exc, action), type(exc).__name__)
        raise ArchiveError(
            f"S3 could not be reached while {action} {where}: {type(exc).__name__}",
            hint="Check [archive] endpoint_url and the network; the job will be tried again",
        ) from exc
