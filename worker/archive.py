"""The archive: the user's own S3 bucket. This is the only module that speaks boto3.

Streaming upload
    A body is read once. As it streams, the reader computes the SHA-256 that goes into the
    manifest; each part is then uploaded by a small thread pool, which computes the part's
    MD5 (sent as Content-MD5, which every S3 server checks) and, unless ``checksum_mode`` is
    ``when_required``, its CRC32 (sent as an additional checksum). At most
    ``max_concurrency`` parts are in flight, and no more than fit in ``max_buffer_mib`` with
    the part being filled, so memory is bounded by
    ``min((max_concurrency + 1) x part, max(max_buffer_mib, 2 x part))`` whatever the file
    size. The part size grows with a known size so that no object needs more than 10,000
    parts; for an unknown size it doubles every 1,000 parts, and fewer parts go in flight as
    they grow. A failed upload is aborted.

Verification
    A fresh HEAD after the upload must show the size we streamed, and a checksum we can
    recompute from what we sent: the object's SHA-256 or composite CRC32, or its ETag when
    that is an MD5 (plain or multipart). If the server offers neither, verification fails
    rather than passing on size alone. With Object Lock configured, the HEAD must also show
    the retention; a server that ignored the lock arguments gets it set explicitly.

Never overwrite
    With ``if_none_match`` every write carries ``IfNoneMatch="*"``. When the key is taken,
    the existing object is compared with what was just streamed (checksums, else a read-back
    SHA-256): the same bytes are a resumed job meeting its own earlier copy and are kept;
    different bytes stop the job with a permanent error.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import ArchiveError, VerifyError
from worker.s3 import KMS, MISSING, TAKEN, error_code, etag_of, make_s3_client, s3_errors
from worker.settings import ArchiveSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.source_bucket import SourceObject

__all__ = ["Archive", "StoredObject", "make_s3_client", "part_size_for", "s3_errors"]

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * GiB
# S3's single CopyObject limit; above it the managed copy switches to UploadPartCopy.
COPY_MULTIPART_THRESHOLD = 5 * GiB
# A manifest or receipt larger than this is not ours.
MAX_JSON_BYTES = 64 * MiB


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    etag: str | None
    version_id: str | None


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
        if have > n:
            # Split the last (small) chunk, never the joined part: slicing a part would
            # copy it a second time, and a part is the unit of memory here.
            last = pieces[-1]
            cut = len(last) - (have - n)
            pieces[-1] = last[:cut]
            self._pending = last[cut:]
        return b"".join(pieces)

    def readinto(self, buffer: bytearray) -> int:
        """Fill ``buffer`` from the stream; the number of bytes written (short at the end).

        The chunks are copied straight into a reused buffer: no part-sized temporary is
        allocated, so memory stays at the buffers whatever the output's size.
        """
        view = memoryview(buffer)
        want, have = len(buffer), 0
        while have < want:
            chunk = self._pending
            self._pending = b""
            if not chunk:
                if self.eof:
                    break
                try:
                    chunk = next(self._chunks)
                except StopIteration:
                    self.eof = True
                    break
                if not chunk:
                    continue
                self.sha256.update(chunk)
                self.size += len(chunk)
            take = min(len(chunk), want - have)
            view[have : have + take] = chunk[:take] if take < len(chunk) else chunk
            if take < len(chunk):
                self._pending = chunk[take:]
            have += take
        view.release()
        return have

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
class _Expected:
    """What a stored object must show: the size streamed and what we can recompute."""

    size: int
    sha256_hex: str
    etag: str | None
    checksum: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class _Part:
    number: int
    etag: str
    md5: bytes
    crc32: bytes


def part_size_for(
    size_hint: int | None, part_number: int, base: int, max_buffer: int | None = None
) -> int:
    """The size of part ``part_number`` (1-based): fits 10,000 parts in the least memory.

    With a size hint, every part has the same size, the smallest that fits the hint in
    9,500 parts: a 100 GiB output goes in 11 MiB parts, so memory stays near
    ``(max_concurrency + 1) x part``. Should the stream run past its hint, the parts after
    the planned ones double every 100, which fits a stream of 1.6 times its hint in the
    500 parts left. Without a hint, parts start at ``base`` and double every 1,000.

    The hint is a server's claim (a Content-Length, a provider's declared size), so it never
    sizes a part past the memory budget: with one part filling while at least one uploads, a
    part is at most half of ``max_buffer`` (or ``base``, if the operator configured a larger
    part). Growing parts stop growing there. A hint that needs larger parts, or more than
    S3 holds (10,000 parts of 5 GiB), raises ``ArchiveError`` before anything is read.
    ``max_buffer=None`` applies S3's limits only; ``Archive`` always passes its budget.
    """
    largest = MAX_PART_SIZE
    if max_buffer is not None:
        largest = min(MAX_PART_SIZE, max(base, max_buffer // 2))
    if size_hint:
        if size_hint > MAX_PARTS * MAX_PART_SIZE:
            raise ArchiveError(
                f"its declared size, {size_hint} bytes ({size_hint / 1024**4:.1f} TiB), is "
                f"more than S3 holds in one object ({MAX_PARTS} parts of 5 GiB); nothing "
                "was read or uploaded",
                hint="The size comes from the download's Content-Length or the provider's "
                "declared size; the job stays at the provider and will be tried again",
            )
        needed = -(-size_hint // (MAX_PARTS - 500))  # ceil, with a margin of 500 parts
        fixed = max(base, -(-needed // MiB) * MiB)
        if fixed > largest:
            if size_hint > MAX_PARTS * largest:
                at_least = -(-size_hint // MAX_PARTS)
                raise ArchiveError(
                    f"its declared size, {size_hint} bytes ({size_hint / GiB:.1f} GiB), needs "
                    f"parts of {at_least / MiB:.1f} MiB to fit in {MAX_PARTS} parts, and the "
                    f"memory budget allows parts of {largest / MiB:.1f} MiB; nothing was "
                    "read or uploaded",
                    hint="If the size is real, raise [archive] max_buffer_mib to at least "
                    f"{-(-2 * at_least // MiB)}; the job stays at the provider and will be "
                    "tried again",
                )
            fixed = largest  # the margin for a stream that runs long is given up, not memory
        planned = -(-size_hint // fixed)
        if part_number <= planned:
            return fixed
        doublings = 1 + (part_number - planned - 1) // 100
        return min(largest, fixed << min(doublings, 32))
    return min(largest, base << min((part_number - 1) // 1000, 32))


def parts_in_flight(part: int, *, max_concurrency: int, max_buffer: int) -> int:
    """How many parts of ``part`` bytes may upload while the next one fills: at most
    ``max_concurrency``, and no more than ``max_buffer`` holds with the filling one; at least
    one."""
    return max(1, min(max_concurrency, max_buffer // part - 1))


class Archive:
    def __init__(self, client: S3Client, settings: ArchiveSettings) -> None:
        self.client = client
        self.settings = settings
        self.bucket = settings.bucket
        self.part_size = settings.part_size_mib * MiB
        self.max_buffer = settings.max_buffer_mib * MiB
        self.checksums = settings.checksum_mode == "when_supported"

    def _owner(self) -> dict[str, Any]:
        """ExpectedBucketOwner, on every call to the archive bucket when configured."""
        owner = self.settings.expected_bucket_owner
        return {"ExpectedBucketOwner": owner} if owner else {}

    def _object_args(self) -> dict[str, Any]:
        """What every new archived object carries: storage class, encryption, retention."""
        s = self.settings
        args: dict[str, Any] = self._owner()
        if s.storage_class:
            args["StorageClass"] = s.storage_class
        if s.sse_kms_key_id:
            args.update(
                ServerSideEncryption="aws:kms", SSEKMSKeyId=s.sse_kms_key_id, BucketKeyEnabled=True
            )
        if s.object_lock_mode and s.object_lock_days:
            args.update(
                ObjectLockMode=s.object_lock_mode, ObjectLockRetainUntilDate=self._retain_until()
            )
        return args

    def _retain_until(self) -> datetime:
        days = self.settings.object_lock_days or 0
        return datetime.now(UTC) + timedelta(days=days)

    def _conditional(self) -> dict[str, Any]:
        return {"IfNoneMatch": "*"} if self.settings.if_none_match else {}

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
        # Sized before anything is read: a hostile size is refused here, with no upload.
        try:
            first_size = part_size_for(size_hint, 1, self.part_size, self.max_buffer)
        except ArchiveError as exc:
            raise ArchiveError(f"{key}: {exc.message}", hint=exc.hint) from None
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
        # Content-MD5 is checked by every S3 server, and Object Lock requires it (or an SDK
        # checksum) on writes that carry retention.
        md5 = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is an integrity check
        args: dict[str, Any] = {
            "ContentMD5": _b64(md5),
            **headers,
            **self._object_args(),
            **self._conditional(),
        }
        checksum = None
        if self.checksums:
            checksum = ("ChecksumSHA256", _b64(bytes.fromhex(sha256_hex)))
            args["ChecksumAlgorithm"] = "SHA256"
            args["ChecksumSHA256"] = checksum[1]
        expect = _Expected(size=len(data), sha256_hex=sha256_hex, etag=md5.hex(), checksum=checksum)
        try:
            with s3_errors("writing", self.bucket, key):
                answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **args)
        except ArchiveError as exc:
            if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) in TAKEN:
                return self._adopt_existing(key, expect)
            raise
        return self._verify(key, expect, version_id=answer.get("VersionId"))

    def _put_multipart(
        self,
        key: str,
        reader: _Reader,
        first: bytes,
        size_hint: int | None,
        headers: dict[str, Any],
    ) -> StoredObject:
        create: dict[str, Any] = {**headers, **self._object_args()}
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
                # At most max_concurrency parts are uploading while the next one fills, each
                # in a buffer that is reused once its upload has returned (botocore accepts a
                # bytearray body and rewinds it itself on a retry). Fresh part-sized buffers
                # per part would leave the heap fragmented and resident memory growing.
                inflight: list[tuple[Future[_Part], bytes | bytearray]] = []
                free: list[bytearray] = []
                number = 1
                data: bytes | bytearray = first
                while data:
                    while len(inflight) >= self.in_flight_limit(len(data)):
                        done, spent = inflight.pop(0)
                        parts.append(done.result())
                        if isinstance(spent, bytearray):
                            free.append(spent)
                    future = pool.submit(self._upload_part, key, upload_id, number, data)
                    inflight.append((future, data))
                    number += 1
                    if number > MAX_PARTS:
                        raise ArchiveError(
                            f"{key} runs past {MAX_PARTS} parts (the last of "
                            f"{len(data) / MiB:.1f} MiB); nothing was stored",
                            hint="Raise [archive] max_buffer_mib for outputs this large; the "
                            "job will be tried again",
                        )
                    size = part_size_for(size_hint, number, self.part_size, self.max_buffer)
                    data = self._next_part(reader, size, free)
                parts.extend(f.result() for f, _ in inflight)
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
                    **self._owner(),
                    **self._conditional(),
                )
        except BaseException as exc:
            # Never leave parts behind to be billed: abort, and let the lifecycle rule
            # AbortIncompleteMultipartUpload catch what a killed process could not.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, **self._owner()
                )
            taken = (
                isinstance(exc, ArchiveError)
                and isinstance(exc.__cause__, ClientError)
                and error_code(exc.__cause__) in TAKEN
            )
            if not taken:
                raise
            answer = None
        md5_of_md5s = hashlib.md5(b"".join(p.md5 for p in parts)).hexdigest()  # noqa: S324
        composite_crc = zlib.crc32(b"".join(p.crc32 for p in parts)).to_bytes(4, "big")
        expect = _Expected(
            size=reader.size,
            sha256_hex=reader.sha256.hexdigest(),
            etag=f"{md5_of_md5s}-{len(parts)}",
            checksum=("ChecksumCRC32", _b64(composite_crc)) if self.checksums else None,
        )
        if answer is None:
            return self._adopt_existing(key, expect)
        return self._verify(key, expect, version_id=answer.get("VersionId"))

    def in_flight_limit(self, part: int) -> int:
        return parts_in_flight(
            part, max_concurrency=self.settings.max_concurrency, max_buffer=self.max_buffer
        )

    @staticmethod
    def _next_part(reader: _Reader, size: int, free: list[bytearray]) -> bytes | bytearray:
        """The next part, read into a free buffer of ``size`` bytes (b"" at the end)."""
        while free and len(free[-1]) != size:  # the part size grew (see part_size_for)
            free.pop()
        buffer = free.pop() if free else bytearray(size)
        filled = reader.readinto(buffer)
        if filled == size:
            return buffer
        # The last, short part: a copy of what was read, once per upload.
        return bytes(memoryview(buffer)[:filled])

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> _Part:
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
                # botocore's validator takes bytearray for a blob; the stubs name only bytes.
                Body=data,  # type: ignore[arg-type]
                **args,
                **self._owner(),
            )
        return _Part(number=number, etag=answer["ETag"], md5=md5, crc32=crc)

    def _verify(self, key: str, expect: _Expected, *, version_id: str | None) -> StoredObject:
        """A fresh HEAD must show our size and a checksum we can recompute (and the lock)."""
        head = self._head(key, version_id=version_id, checksums=True)
        if head is None:
            raise VerifyError(f"s3://{self.bucket}/{key} is missing right after it was written")
        self._compare(key, head, expect)
        self._ensure_lock(key, head)
        return StoredObject(
            key=key,
            size=expect.size,
            sha256=expect.sha256_hex,
            etag=etag_of(head) or None,
            version_id=head.get("VersionId") or version_id,
        )

    def _compare(self, key: str, head: dict[str, Any], expect: _Expected) -> None:
        where = f"s3://{self.bucket}/{key}"
        if head["ContentLength"] != expect.size:
            raise VerifyError(
                f"{where} holds {head['ContentLength']} bytes; {expect.size} were streamed"
            )
        compared = []
        if expect.checksum is not None:
            field, expected = expect.checksum
            served = head.get(field)
            if served:
                # AWS appends "-<parts>" to composite checksums; some servers do not.
                if str(served).split("-", 1)[0] != expected:
                    raise VerifyError(f"{where} has {field} {served}, expected {expected}")
                compared.append(field)
        etag = etag_of(head)
        encrypted = head.get("ServerSideEncryption") in KMS or head.get("SSECustomerAlgorithm")
        if expect.etag and etag and not encrypted:
            if etag != expect.etag:
                raise VerifyError(f"{where} has ETag {etag}, expected {expect.etag}")
            compared.append("ETag")
        if not compared:
            raise VerifyError(
                f"{where} cannot be verified: the server returned neither a checksum nor an "
                "MD5 ETag",
                hint='Use [archive] checksum_mode = "when_supported" with a server that '
                "stores checksums",
            )

    def _ensure_lock(self, key: str, head: dict[str, Any]) -> None:
        """Object Lock must show on the stored version; set it if the server ignored it.

        Some servers (and emulators) drop the lock arguments of a multipart upload.
        """
        mode = self.settings.object_lock_mode
        if mode is None or head.get("ObjectLockMode") == mode:
            return
        version = head.get("VersionId")
        with s3_errors("setting Object Lock retention on", self.bucket, key):
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=key,
                Retention={"Mode": mode, "RetainUntilDate": self._retain_until()},
                **({"VersionId": version} if version and version != "null" else {}),
                **self._owner(),
            )
        again = self._head(key, version_id=version)
        if again is None or again.get("ObjectLockMode") != mode:
            raise VerifyError(
                f"s3://{self.bucket}/{key} has no {mode} retention after it was set",
                hint="Enable Object Lock on the bucket, or remove [archive] object_lock_mode",
            )

    def _adopt_existing(self, key: str, expect: _Expected) -> StoredObject:
        """The key was taken (IfNoneMatch): keep it only if it holds exactly these bytes."""
        head = self._head(key, checksums=True)
        if head is None:
            raise ArchiveError(f"s3://{self.bucket}/{key} was reported taken but is missing")
        try:
            self._compare(key, head, expect)
        except VerifyError:
            # Part sizes may differ from an earlier attempt; the bytes decide.
            size, sha = self.read_back_sha256(key, head.get("VersionId"))
            if (size, sha) != (expect.size, expect.sha256_hex):
                raise ArchiveError(
                    f"s3://{self.bucket}/{key} already holds different content, and archived "
                    "objects are never overwritten",
                    permanent=True,
                    hint="Move that object aside if it is stale, then run `retention retry`",
                ) from None
        self._ensure_lock(key, head)
        return StoredObject(
            key=key,
            size=expect.size,
            sha256=expect.sha256_hex,
            etag=etag_of(head) or None,
            version_id=head.get("VersionId"),
        )

    def put_json(
        self, key: str, payload: Any, *, same: Callable[[Any], bool] | None = None
    ) -> StoredObject:
        """Write a JSON document. If the key is taken (IfNoneMatch), the existing document is
        kept when ``same(existing)`` says it records the same thing; else a permanent error."""
        body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode() + b"\n"
        sha = hashlib.sha256(body).hexdigest()
        try:
            return self._put_single(key, body, sha, {"ContentType": "application/json"})
        except ArchiveError as exc:
            if not exc.permanent or same is None:
                raise
            existing = self.get_json(key)
            if existing is None or not same(existing):
                raise
            head = self._head(key)
            assert head is not None
            size, digest = self.read_back_sha256(key, head.get("VersionId"))
            return StoredObject(
                key=key,
                size=size,
                sha256=digest,
                etag=etag_of(head) or None,
                version_id=head.get("VersionId"),
            )

    def check_bucket(self) -> str:
        """Reach the bucket and describe its Object Lock; ArchiveError names what is wrong."""
        with s3_errors("reaching", self.bucket):
            self.client.head_bucket(Bucket=self.bucket, **self._owner())
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket, **self._owner())
        except ClientError as exc:
            if error_code(exc) not in ("ObjectLockConfigurationNotFoundError", "404"):
                with s3_errors("reading the Object Lock configuration of", self.bucket):
                    raise
            lock = None
        else:
            lock = answer.get("ObjectLockConfiguration", {})
        wanted = self.settings.object_lock_mode
        if not lock or lock.get("ObjectLockEnabled") != "Enabled":
            if wanted:
                raise ArchiveError(
                    f"s3://{self.bucket} has no Object Lock, but [archive] object_lock_mode is "
                    f"{wanted}",
                    hint="Create the bucket with Object Lock enabled, or remove the setting",
                    permanent=True,
                )
            return "Object Lock: off"
        default = lock.get("Rule", {}).get("DefaultRetention")
        text = "Object Lock: on"
        if default:
            period = (
                f"{default['Days']} days" if "Days" in default else f"{default.get('Years')} years"
            )
            text += f", default {default.get('Mode')} for {period}"
        if wanted:
            text += f"; the worker sets {wanted} for {self.settings.object_lock_days} days"
        return text

    # -- reading ---------------------------------------------------------------------------

    def _head(
        self, key: str, *, version_id: str | None = None, checksums: bool = False
    ) -> dict[str, Any] | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        if checksums:
            args["ChecksumMode"] = "ENABLED"
        try:
            return dict(self.client.head_object(**args))
        except ClientError as exc:
            if error_code(exc) in MISSING:
                return None
            with s3_errors("reading the metadata of", self.bucket, key):
                raise
        except BotoCoreError:
            with s3_errors("reading the metadata of", self.bucket, key):
                raise
        return None  # pragma: no cover - s3_errors always raises

    def exists_unchanged(
        self, key: str, *, size: int, etag: str | None, version_id: str | None = None
    ) -> bool:
        """True when ``key`` still holds the object we verified (same size and ETag)."""
        head = self._head(key, version_id=version_id)
        if head is None:
            return False
        served = etag_of(head)
        return head["ContentLength"] == size and (etag is None or served == etag)

    def superseded(self, key: str, version_id: str | None) -> str | None:
        """Why the object at ``key`` is no longer the version that was verified, or None.

        Only a versioned bucket can say: there a newer version or a delete marker at the key
        is worth a person's look (the verified version itself is still readable).
        """
        if not version_id or version_id == "null":
            return None
        head = self._head(key)
        if head is None:
            return "the key's current version is a delete marker (or it was deleted)"
        current = head.get("VersionId")
        if current and current != version_id:
            return f"a newer version ({current}) is at the key; the verified one was read"
        return None

    def get_json(self, key: str) -> Any:
        """The JSON document at ``key``; None when there is no such object."""
        with s3_errors("reading", self.bucket, key):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **self._owner())
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return None
                raise
            if answer["ContentLength"] > MAX_JSON_BYTES:
                raise ArchiveError(f"s3://{self.bucket}/{key} is too large to be a manifest")
            body = answer["Body"].read()
        try:
            return json.loads(body)
        except ValueError:
            raise ArchiveError(f"s3://{self.bucket}/{key} is not valid JSON") from None

    def read_back_sha256(
        self, key: str, version_id: str | None = None, *, sink: Callable[[bytes], Any] | None = None
    ) -> tuple[int, str]:
        """Read a stored object once and hash it, handing each chunk to ``sink`` if given:
        the check for a server-side copy, and how `retention restore` writes and verifies."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        sha = hashlib.sha256()
        size = 0
        with s3_errors("reading back", self.bucket, key):
            body = self.client.get_object(**args)["Body"]
            for chunk in body.iter_chunks(chunk_size=MiB):
                sha.update(chunk)
                size += len(chunk)
                if sink is not None:
                    sink(chunk)
        return size, sha.hexdigest()

    # -- copies from the user's own buckets (Daily's batch_processor_bucket) ----------------

    def copy_from(self, source: SourceObject, dest_key: str) -> StoredObject:
        """Server-side copy of an object on the archive's own endpoint, then verify.

        The copy never passes through the worker. To put an exact SHA-256 in the manifest,
        the archived copy is read back once and hashed, and its size must match the source.
        """
        size = source.size
        # A copy cannot carry IfNoneMatch, so a taken key is checked first and never copied
        # over: an earlier attempt's copy is verified like a fresh one, or stops the job.
        existing = self._head(dest_key) if self.settings.if_none_match else None
        if existing is None:
            chunk = max(512 * MiB, -(-size // (MAX_PARTS - 500)))
            transfer = TransferConfig(
                multipart_threshold=COPY_MULTIPART_THRESHOLD,
                multipart_chunksize=chunk,
                max_concurrency=self.settings.max_concurrency,
            )
            extra = {k: v for k, v in self._object_args().items() if k != "BucketKeyEnabled"}
            if self.checksums:
                extra["ChecksumAlgorithm"] = "SHA256"
            copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
            if source.version_id and source.version_id != "null":
                copy_source["VersionId"] = source.version_id
            with s3_errors("copying into", self.bucket, dest_key):
                self.client.copy(
                    copy_source,  # type: ignore[arg-type]
                    self.bucket,
                    dest_key,
                    ExtraArgs=extra or None,
                    Config=transfer,
                )
        head = existing or self._head(dest_key)
        if head is None:
            raise VerifyError(f"s3://{self.bucket}/{dest_key} is missing right after the copy")
        read_size, sha = self.read_back_sha256(dest_key, head.get("VersionId"))
        dst_etag = etag_of(head)
        plain = "-" not in source.etag and not source.encrypted
        same = read_size == size == head["ContentLength"] and not (
            plain and size < COPY_MULTIPART_THRESHOLD and source.etag and dst_etag != source.etag
        )
        if not same:
            where = f"s3://{self.bucket}/{dest_key}"
            origin = f"s3://{source.bucket}/{source.key}"
            if existing is not None:
                raise ArchiveError(
                    f"{where} already holds different content than {origin}, and archived "
                    "objects are never overwritten",
                    permanent=True,
                    hint="Move that object aside if it is stale, then run `retention retry`",
                )
            raise VerifyError(
                f"{where} ({read_size} bytes, ETag {dst_etag}) does not match "
                f"{origin} ({size} bytes, ETag {source.etag})"
            )
        self._ensure_lock(dest_key, head)
        return StoredObject(
            key=dest_key,
            size=size,
            sha256=sha,
            etag=dst_etag or None,
            version_id=head.get("VersionId"),
        )
