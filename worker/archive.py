"""The archive: the user's own S3 bucket. This is the only module that speaks boto3.

Streaming upload
    A body is read once. As it streams, the reader computes the SHA-256 that goes into the
    manifest; each part is then uploaded by a small thread pool, which computes the part's
    MD5 (sent as Content-MD5, which every S3 server checks) and, unless ``checksum_mode`` is
    ``when_required``, its CRC32 (sent as an additional checksum). At most
    ``max_concurrency`` parts are in flight, so memory is bounded by
    ``(max_concurrency + 1) x part size`` whatever the file size. The part size grows with a
    known size so that no object needs more than 10,000 parts; for an unknown size it
    doubles every 1,000 parts. A failed upload is aborted.

Verification
    A fresh HEAD after the upload must show the size we streamed, and a checksum we can
    recompute from what we sent: the object's SHA-256 or composite CRC32, or its ETag when
    that is an MD5 (plain or multipart). If the server offers neither, verification fails
    rather than passing on size alone.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import ArchiveError, VerifyError
from worker.settings import ArchiveSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * GiB
# S3's single CopyObject limit; above it the managed copy switches to UploadPartCopy.
COPY_MULTIPART_THRESHOLD = 5 * GiB
# A manifest or receipt larger than this is not ours.
MAX_JSON_BYTES = 64 * MiB
_KMS = ("aws:kms", "aws:kms:dsse")


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    etag: str | None
    version_id: str | None


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


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class _Reader:
    """Reads a chunk iterator in parts of a requested size, hashing everything it reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.eof = False

    def read(self, n: int) -> bytes:
        pieces = [self._pending] if self._pending else []
        have = len(self._pending)
        self._pending = b""
        while have < n and not self.eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.eof = True
                break
            if chunk:
                self.sha256.update(chunk)
                self.size += len(chunk)
                pieces.append(chunk)
                have += len(chunk)
        data = b"".join(pieces)
        if len(data) > n:
            self._pending = data[n:]
            data = data[:n]
        return data

    def at_end(self) -> bool:
        """True when nothing remains; may pull one chunk (kept pending) to find out."""
        if self._pending:
            return False
        while not self.eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.eof = True
                break
            if chunk:
                self.sha256.update(chunk)
                self.size += len(chunk)
                self._pending = chunk
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Part:
    number: int
    etag: str
    md5: bytes
    crc32: bytes


def part_size_for(size_hint: int | None, part_number: int, base: int) -> int:
    """The size of part ``part_number`` (1-based): fits 10,000 parts, grows when unsure."""
    fixed = base
    if size_hint:
        needed = -(-size_hint // (MAX_PARTS - 500))  # ceil, with a margin of 500 parts
        fixed = max(base, -(-needed // MiB) * MiB)
    growing = base << ((part_number - 1) // 1000)
    return min(MAX_PART_SIZE, max(fixed, growing))


class Archive:
    def __init__(self, client: S3Client, settings: ArchiveSettings) -> None:
        self.client = client
        self.settings = settings
        self.bucket = settings.bucket
        self.part_size = settings.part_size_mib * MiB
        self.checksums = settings.checksum_mode == "when_supported"

    # -- writing ---------------------------------------------------------------------------

    def store_stream(
        self,
        key: str,
        chunks: Iterator[bytes],
        *,
        size_hint: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
    ) -> StoredObject:
        """Stream ``chunks`` into ``key`` and verify the stored object."""
        reader = _Reader(chunks)
        first_size = part_size_for(size_hint, 1, self.part_size)
        first = reader.read(first_size)
        headers: dict[str, Any] = {}
        if content_type:
            headers["ContentType"] = content_type
        if content_encoding:
            headers["ContentEncoding"] = content_encoding
        if len(first) < first_size or reader.at_end():
            return self._put_single(key, first, reader.sha256.hexdigest(), headers)
        return self._put_multipart(key, reader, first, size_hint, headers)

    def _put_single(
        self, key: str, data: bytes, sha256_hex: str, headers: dict[str, Any]
    ) -> StoredObject:
        md5 = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is an integrity check
        args: dict[str, Any] = {"ContentMD5": _b64(md5), **headers}
        if self.checksums:
            args["ChecksumAlgorithm"] = "SHA256"
            args["ChecksumSHA256"] = _b64(bytes.fromhex(sha256_hex))
        with s3_errors("writing", self.bucket, key):
            answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **args)
        return self._verify(
            key,
            size=len(data),
            sha256_hex=sha256_hex,
            version_id=answer.get("VersionId"),
            expected_etag=md5.hex(),
            checksum=("ChecksumSHA256", _b64(bytes.fromhex(sha256_hex)))
            if self.checksums
            else None,
        )

    def _put_multipart(
        self,
        key: str,
        reader: _Reader,
        first: bytes,
        size_hint: int | None,
        headers: dict[str, Any],
    ) -> StoredObject:
        create: dict[str, Any] = dict(headers)
        if self.checksums:
            create["ChecksumAlgorithm"] = "CRC32"
        with s3_errors("starting a multipart upload to", self.bucket, key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **create)[
                "UploadId"
            ]
        parts: list[_Part] = []
        try:
            with ThreadPoolExecutor(
                max_workers=self.settings.max_concurrency, thread_name_prefix="s3-part"
            ) as pool:
                inflight: list[Future[_Part]] = []
                number, data = 1, first
                while data:
                    if len(inflight) >= self.settings.max_concurrency:
                        parts.append(inflight.pop(0).result())
                    inflight.append(pool.submit(self._upload_part, key, upload_id, number, data))
                    number += 1
                    if number > MAX_PARTS:
                        raise ArchiveError(f"{key} would need more than {MAX_PARTS} parts")
                    data = reader.read(part_size_for(size_hint, number, self.part_size))
                parts.extend(f.result() for f in inflight)
            completed = [
                {"PartNumber": p.number, "ETag": p.etag}
                | ({"ChecksumCRC32": _b64(p.crc32)} if self.checksums else {})
                for p in parts
            ]
            with s3_errors("completing the multipart upload of", self.bucket, key):
                answer = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": completed},  # type: ignore[typeddict-item]
                )
        except BaseException:
            # Never leave parts behind to be billed: abort, and let the lifecycle rule
            # AbortIncompleteMultipartUpload catch what a killed process could not.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        md5_of_md5s = hashlib.md5(b"".join(p.md5 for p in parts)).hexdigest()  # noqa: S324
        composite_crc = zlib.crc32(b"".join(p.crc32 for p in parts)).to_bytes(4, "big")
        return self._verify(
            key,
            size=reader.size,
            sha256_hex=reader.sha256.hexdigest(),
            version_id=answer.get("VersionId"),
            expected_etag=f"{md5_of_md5s}-{len(parts)}",
            checksum=("ChecksumCRC32", _b64(composite_crc)) if self.checksums else None,
        )

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> _Part:
        md5 = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is an integrity check
        crc = zlib.crc32(data).to_bytes(4, "big")
        args: dict[str, Any] = {"ContentMD5": _b64(md5)}
        if self.checksums:
            args["ChecksumCRC32"] = _b64(crc)
        with s3_errors(f"uploading part {number} of", self.bucket, key):
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **args,
            )
        return _Part(number=number, etag=answer["ETag"], md5=md5, crc32=crc)

    def _verify(
        self,
        key: str,
        *,
        size: int,
        sha256_hex: str,
        version_id: str | None,
        expected_etag: str | None,
        checksum: tuple[str, str] | None,
    ) -> StoredObject:
        """A fresh HEAD must show our size and a checksum we can recompute."""
        head = self._head(key, version_id=version_id, checksums=True)
        if head is None:
            raise VerifyError(f"s3://{self.bucket}/{key} is missing right after it was written")
        if head["ContentLength"] != size:
            raise VerifyError(
                f"s3://{self.bucket}/{key} holds {head['ContentLength']} bytes; "
                f"{size} were streamed"
            )
        compared = []
        if checksum is not None:
            field, expected = checksum
            served = head.get(field)
            if served:
                # AWS appends "-<parts>" to composite checksums; some servers do not.
                if str(served).split("-", 1)[0] != expected:
                    raise VerifyError(
                        f"s3://{self.bucket}/{key} has {field} {served}, expected {expected}"
                    )
                compared.append(field)
        etag = str(head.get("ETag", "")).strip('"')
        encrypted = head.get("ServerSideEncryption") in _KMS or head.get("SSECustomerAlgorithm")
        if expected_etag and etag and not encrypted:
            if etag != expected_etag:
                raise VerifyError(
                    f"s3://{self.bucket}/{key} has ETag {etag}, expected {expected_etag}"
                )
            compared.append("ETag")
        if not compared:
            raise VerifyError(
                f"s3://{self.bucket}/{key} cannot be verified: the server returned neither a "
                "checksum nor an MD5 ETag",
                hint='Use [archive] checksum_mode = "when_supported" with a server that '
                "stores checksums",
            )
        return StoredObject(
            key=key,
            size=size,
            sha256=sha256_hex,
            etag=etag or None,
            version_id=head.get("VersionId") or version_id,
        )

    def put_json(self, key: str, payload: Any) -> StoredObject:
        body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode() + b"\n"
        sha = hashlib.sha256(body).hexdigest()
        return self._put_single(key, body, sha, {"ContentType": "application/json"})

    # -- reading ---------------------------------------------------------------------------

    def _head(
        self,
        key: str,
        *,
        version_id: str | None = None,
        checksums: bool = False,
        bucket: str | None = None,
        client: S3Client | None = None,
    ) -> dict[str, Any] | None:
        bucket = bucket or self.bucket
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        if checksums:
            args["ChecksumMode"] = "ENABLED"
        try:
            return dict((client or self.client).head_object(**args))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            with s3_errors("reading the metadata of", bucket, key):
                raise
        except BotoCoreError:
            with s3_errors("reading the metadata of", bucket, key):
                raise
        return None  # pragma: no cover - s3_errors always raises

    def exists_unchanged(
        self, key: str, *, size: int, etag: str | None, version_id: str | None = None
    ) -> bool:
        """True when ``key`` still holds the object we verified (same size and ETag)."""
        head = self._head(key, version_id=version_id)
        if head is None:
            return False
        served = str(head.get("ETag", "")).strip('"')
        return head["ContentLength"] == size and (etag is None or served == etag)

    def get_json(self, key: str) -> Any:
        """The JSON document at ``key``; None when there is no such object."""
        with s3_errors("reading", self.bucket, key):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            if answer["ContentLength"] > MAX_JSON_BYTES:
                raise ArchiveError(f"s3://{self.bucket}/{key} is too large to be a manifest")
            body = answer["Body"].read()
        try:
            return json.loads(body)
        except ValueError:
            raise ArchiveError(f"s3://{self.bucket}/{key} is not valid JSON") from None

    def read_back_sha256(self, key: str, version_id: str | None = None) -> tuple[int, str]:
        """Read a stored object once and hash it: the check for a server-side copy."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        sha = hashlib.sha256()
        size = 0
        with s3_errors("reading back", self.bucket, key):
            body = self.client.get_object(**args)["Body"]
            for chunk in body.iter_chunks(chunk_size=MiB):
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    # -- the user's own buckets (Daily's batch_processor_bucket) ---------------------------

    def head_source(self, bucket: str, key: str, client: S3Client) -> dict[str, Any] | None:
        return self._head(key, bucket=bucket, client=client)

    def copy_in(self, bucket: str, key: str, dest_key: str) -> StoredObject:
        """Server-side copy from a bucket on the archive's own endpoint, then verify.

        The copy never passes through the worker. To put an exact SHA-256 in the manifest,
        the archived copy is read back once and hashed, and its size must match the source.
        """
        source = self._head(key, bucket=bucket)
        if source is None:
            raise ArchiveError(
                f"s3://{bucket}/{key} does not exist",
                permanent=True,
                hint="The provider lists an output that is not in your bucket; "
                "check it, then run `retention retry`",
            )
        size = int(source["ContentLength"])
        chunk = max(512 * MiB, -(-size // (MAX_PARTS - 500)))
        transfer = TransferConfig(
            multipart_threshold=COPY_MULTIPART_THRESHOLD,
            multipart_chunksize=chunk,
            max_concurrency=self.settings.max_concurrency,
        )
        extra: dict[str, Any] = {}
        if self.checksums:
            extra["ChecksumAlgorithm"] = "SHA256"
        with s3_errors("copying into", self.bucket, dest_key):
            self.client.copy(
                {"Bucket": bucket, "Key": key},
                self.bucket,
                dest_key,
                ExtraArgs=extra or None,
                Config=transfer,
            )
        head = self._head(dest_key)
        if head is None:
            raise VerifyError(f"s3://{self.bucket}/{dest_key} is missing right after the copy")
        read_size, sha = self.read_back_sha256(dest_key, head.get("VersionId"))
        if read_size != size or head["ContentLength"] != size:
            raise VerifyError(
                f"s3://{self.bucket}/{dest_key} holds {read_size} bytes; the source "
                f"s3://{bucket}/{key} holds {size}"
            )
        src_etag = str(source.get("ETag", "")).strip('"')
        dst_etag = str(head.get("ETag", "")).strip('"')
        plain = "-" not in src_etag and source.get("ServerSideEncryption") not in _KMS
        if plain and size < COPY_MULTIPART_THRESHOLD and src_etag and dst_etag != src_etag:
            raise VerifyError(
                f"s3://{self.bucket}/{dest_key} has ETag {dst_etag}; the source has {src_etag}"
            )
        return StoredObject(
            key=dest_key,
            size=size,
            sha256=sha,
            etag=dst_etag or None,
            version_id=head.get("VersionId"),
        )

    @contextlib.contextmanager
    def open_source(
        self, bucket: str, key: str, client: S3Client
    ) -> Iterator[tuple[Iterator[bytes], int, str | None]]:
        """Stream an object from a bucket on another endpoint: (chunks, size, content type)."""
        with s3_errors("reading", bucket, key):
            try:
                answer = client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise ArchiveError(
                        f"s3://{bucket}/{key} does not exist",
                        permanent=True,
                        hint="The provider lists an output that is not in your bucket; check "
                        "it, then run `retention retry`",
                    ) from None
                raise
        body = answer["Body"]
        try:
            yield (
                body.iter_chunks(chunk_size=MiB),
                int(answer["ContentLength"]),
                answer.get("ContentType"),
            )
        finally:
            body.close()

    def delete_source(self, bucket: str, key: str, client: S3Client) -> dict[str, Any]:
        """Remove an archived output from the user's custom bucket (after the provider's delete)."""
        with s3_errors("deleting", bucket, key):
            answer = client.delete_object(Bucket=bucket, Key=key)
        return {
            "bucket": bucket,
            "key": key,
            "version_id": answer.get("VersionId"),
            "delete_marker": bool(answer.get("DeleteMarker")),
        }
