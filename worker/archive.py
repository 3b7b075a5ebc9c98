"""The archive: the user's own S3 bucket. Only this module, ``s3`` and ``source_bucket`` speak
boto3.

Streaming upload
    A body is read once. As it streams, the reader computes the SHA-256 that goes into the
    manifest and the whole object's MD5; each part is then uploaded by a small thread pool,
    which computes the part's MD5 (sent as Content-MD5) and, unless ``checksum_mode`` is
    ``when_required``, its CRC32 (sent as an additional checksum). At most
    ``max_concurrency`` parts are in flight, and no more than fit in ``max_buffer_mib`` with
    the part being filled, so memory is bounded by
    ``min((max_concurrency + 1) x part, max(max_buffer_mib, 2 x part))`` whatever the file
    size. The part size grows with a known size so that no object needs more than 10,000
    parts; for an unknown size it doubles every 1,000 parts, and fewer parts go in flight as
    they grow. A failed upload is aborted.

Verification (``[archive] verify``)
    A fresh HEAD of the version just written must show the size streamed. Then, with
    ``"auto"``: the server's stored checksum when it returns one (AWS, recent MinIO, moto: no
    second read); else an ETag of a form recomputable from what was streamed (a single PUT's
    MD5; for multipart, S3's MD5-of-part-MD5s-N or the whole object's MD5, which s3rver
    gives); else the object is read back and hashed, which the log says once per process.
    ``"checksum"`` and ``"etag"`` accept only that proof and otherwise fail verification;
    ``"read_back"`` always reads back. A checksum or read-back that disagrees is a mismatch,
    never a pass. An encrypted object's ETag (SSE-KMS, SSE-C) is never taken for an MD5. With
    Object Lock configured, the HEAD must also show the retention; a server that ignored the
    lock arguments gets it set explicitly.

Copies from the user's own buckets
    Server-side, with the source pinned (its version, else ``CopySourceIfMatch`` on its
    ETag). The copy is tied to its source by checksum (CopyObject with ``ChecksumAlgorithm``
    SHA256 against the source's stored SHA-256), or by equal MD5 ETags where both are plain
    and unencrypted, or else by hashing the source; never by ETag equality under SSE-KMS.

Storage classes
    Archived files take ``storage_class`` (GLACIER and DEEP_ARCHIVE included); manifests and
    receipts take ``manifest_storage_class``, which must be readable at once: the delete gate
    reads manifests back, and checks files by HEAD only (HEAD works on cold objects).
    ``thaw`` starts a RestoreObject for `retention restore`.

Never overwrite
    With ``if_none_match`` every write carries ``IfNoneMatch="*"``. When the key is taken,
    the existing object is compared with what was just streamed (checksums, else a read-back
    SHA-256): the same bytes are a resumed job meeting its own earlier copy and are kept;
    different bytes stop the job with a permanent error. A server that ignores the header
    (s3rver) cannot give this guarantee; `retention check` finds that out and says so.

Probe
    ``probe`` writes a few tiny objects under ``{prefix}.retention-probe/<random>/`` (in the
    STANDARD class, without Object Lock arguments, so they can be removed), records what the
    server did with them, and removes them. A bucket whose default retention locks every new
    object keeps them until that retention ends; they are reported, not hidden.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import ArchiveError, VerifyError
from worker.logging import get_logger
from worker.s3 import (
    CHECKSUM_FIELDS,
    KMS,
    MISSING,
    TAKEN,
    UNSUPPORTED,
    encrypted,
    error_code,
    etag_of,
    full_object_sha256,
    make_s3_client,
    s3_errors,
)
from worker.settings import COLD_STORAGE_CLASSES, ArchiveSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from worker.source_bucket import SourceObject

__all__ = [
    "Archive",
    "Capabilities",
    "StoredObject",
    "Thaw",
    "make_s3_client",
    "part_size_for",
    "s3_errors",
]

log = get_logger("worker.archive")

MiB = 1024 * 1024
GiB = 1024 * MiB
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * GiB
# S3's single CopyObject limit; above it the managed copy switches to UploadPartCopy.
COPY_MULTIPART_THRESHOLD = 5 * GiB
# A manifest or receipt larger than this is not ours.
MAX_JSON_BYTES = 64 * MiB
# Where `retention check` writes its probe objects, under the prefix. Provider names start
# with a letter, so this folder never meets a job's.
PROBE_FOLDER = ".retention-probe/"
# Intelligent-Tiering's archive tiers also need a RestoreObject before a GET.
_ARCHIVE_ACCESS = ("ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS")
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")

Proof = Literal["checksum", "ETag", "read-back"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    etag: str | None
    version_id: str | None
    # What proved the stored bytes are the ones streamed (or copied).
    proof: Proof | None = None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _md5() -> Any:
    # MD5 here is S3's integrity check (Content-MD5, ETags), not a security measure.
    return hashlib.md5(usedforsecurity=False)


class _Reader:
    """Reads a chunk iterator in parts of a requested size, hashing everything it reads.

    It keeps the whole object's MD5 as well as its SHA-256: some servers (s3rver) give a
    multipart object that MD5 as its ETag, and computing it while streaming is cheap next to
    reading the object back.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.sha256 = hashlib.sha256()
        self.md5 = _md5()
        self.size = 0
        self.eof = False

    def _take(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)
        self.size += len(chunk)

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
                self._take(chunk)
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
                self._take(chunk)
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
                self._take(chunk)
                self._pending = chunk
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Expected:
    """What a stored object must show: the size streamed and what we can recompute."""

    size: int
    sha256_hex: str
    # Every ETag a server may rightly give these bytes (without quotes).
    etags: tuple[str, ...] = ()
    # The additional checksum sent with them: (HEAD field, base64 value).
    checksum: tuple[str, str] | None = None
    # A multipart upload's checksum is COMPOSITE: it depends on where the parts were cut, so
    # one that differs proves nothing (an earlier attempt may have cut other parts).
    composite: bool = False


@dataclass(frozen=True, slots=True)
class _Part:
    number: int
    etag: str
    md5: bytes
    crc32: bytes


class _Differs(VerifyError):
    """Proof that the stored object holds other bytes (not merely a missing proof)."""


@dataclass(frozen=True, slots=True)
class Thaw:
    """Whether an archived object can be read now (`retention restore`)."""

    state: Literal["readable", "started", "in_progress"]
    storage_class: str | None = None
    tier: str | None = None


@dataclass
class Capabilities:
    """What the archive's server did with the probe objects: facts, not verdicts."""

    # Set when even a plain write failed; then nothing else was learnt.
    write_error: str | None = None
    # The answer to a write carrying an additional checksum, when one without was accepted.
    checksums_rejected: str | None = None
    # The checksums a HEAD (ChecksumMode=ENABLED) returned for the probe objects.
    checksums_stored: tuple[str, ...] = ()
    # A returned checksum that disagrees with the bytes written.
    checksum_wrong: str | None = None
    single_etag: Literal["md5", "other", "none", "untested"] = "untested"
    conditional: Literal["enforced", "ignored", "rejected", "untested"] = "untested"
    conditional_detail: str | None = None
    multipart_etag: Literal["md5-of-md5s", "whole-md5", "other", "none", "failed", "untested"] = (
        "untested"
    )
    multipart_detail: str | None = None
    sse_kms: Literal["applied", "ignored", "rejected", "not configured"] = "not configured"
    sse_kms_detail: str | None = None
    # Probe objects that could not be removed, each with why.
    left_behind: list[str] = field(default_factory=list)
    prefix: str = ""


# Said once per process (and bucket): every object is being read back to be verified.
_SAID_LOCK = threading.Lock()
_SAID: set[str] = set()


def _say_once(topic: str, **fields: Any) -> None:
    with _SAID_LOCK:
        if topic in _SAID:
            return
        _SAID.add(topic)
    log.warning("verify_reads_back", **fields)


def _cold(head: dict[str, Any]) -> bool:
    """True when a GET of this object fails until a RestoreObject has finished."""
    restore = str(head.get("Restore") or "")
    if 'ongoing-request="false"' in restore:
        return False
    return head.get("StorageClass") in COLD_STORAGE_CLASSES or (
        head.get("ArchiveStatus") in _ARCHIVE_ACCESS
    )


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

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _owner(self) -> dict[str, Any]:
        """ExpectedBucketOwner, on every call to the archive bucket when configured."""
        owner = self.settings.expected_bucket_owner
        return {"ExpectedBucketOwner": owner} if owner else {}

    def _object_args(self, storage_class: str | None) -> dict[str, Any]:
        """What every new archived object carries: storage class, encryption, retention.

        STANDARD is every S3 server's default class, so it is never sent: some servers (and
        S3 Express directory buckets) refuse or do not know the header.
        """
        s = self.settings
        args: dict[str, Any] = self._owner()
        if storage_class and storage_class != "STANDARD":
            args["StorageClass"] = storage_class
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
            return self._put_single(
                key, first, reader.sha256.hexdigest(), headers, self.settings.storage_class
            )
        return self._put_multipart(key, reader, first, size_hint, headers)

    def _put_single(
        self,
        key: str,
        data: bytes,
        sha256_hex: str,
        headers: dict[str, Any],
        storage_class: str | None,
    ) -> StoredObject:
        # Content-MD5 is checked by AWS and most servers (not by s3rver: the ETag check
        # below catches what it lets through), and Object Lock requires it (or an SDK
        # checksum) on writes that carry retention.
        md5 = _md5()
        md5.update(data)
        args: dict[str, Any] = {
            "ContentMD5": _b64(md5.digest()),
            **headers,
            **self._object_args(storage_class),
            **self._conditional(),
        }
        checksum = None
        if self.checksums:
            checksum = ("ChecksumSHA256", _b64(bytes.fromhex(sha256_hex)))
            args["ChecksumAlgorithm"] = "SHA256"
            args["ChecksumSHA256"] = checksum[1]
        expect = _Expected(
            size=len(data), sha256_hex=sha256_hex, etags=(md5.hexdigest(),), checksum=checksum
        )
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
        create: dict[str, Any] = {**headers, **self._object_args(self.settings.storage_class)}
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
        md5_of_md5s = _md5()
        md5_of_md5s.update(b"".join(p.md5 for p in parts))
        composite_crc = zlib.crc32(b"".join(p.crc32 for p in parts)).to_bytes(4, "big")
        expect = _Expected(
            size=reader.size,
            sha256_hex=reader.sha256.hexdigest(),
            # S3's form, and the whole object's MD5 that s3rver gives a multipart object.
            etags=(f"{md5_of_md5s.hexdigest()}-{len(parts)}", reader.md5.hexdigest()),
            checksum=("ChecksumCRC32", _b64(composite_crc)) if self.checksums else None,
            composite=True,
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
        hasher = _md5()
        hasher.update(data)
        md5 = hasher.digest()
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

    # -- verification ----------------------------------------------------------------------

    def _verify(self, key: str, expect: _Expected, *, version_id: str | None) -> StoredObject:
        """A fresh HEAD of the version written must show our size and a proof of the bytes
        (and the lock)."""
        head = self._head(key, version_id=version_id, checksums=True)
        if head is None:
            raise VerifyError(f"{self._where(key)} is missing right after it was written")
        version = head.get("VersionId") or version_id
        proof = self._confirm(key, head, expect, version_id=version)
        self._ensure_lock(key, head)
        return StoredObject(
            key=key,
            size=expect.size,
            sha256=expect.sha256_hex,
            etag=etag_of(head) or None,
            version_id=version,
            proof=proof,
        )

    def _confirm(
        self, key: str, head: dict[str, Any], expect: _Expected, *, version_id: str | None
    ) -> Proof:
        """Prove that the object ``head`` describes holds the bytes streamed, as
        ``[archive] verify`` says; the proof's name, or VerifyError."""
        where = self._where(key)
        if head["ContentLength"] != expect.size:
            raise _Differs(
                f"{where} holds {head['ContentLength']} bytes; {expect.size} were streamed"
            )
        mode = self.settings.verify
        by_checksum = self._checksum_agrees(where, head, expect)
        by_etag = self._etag_agrees(head, expect)
        if mode in ("auto", "checksum") and by_checksum:
            return "checksum"
        if mode in ("auto", "etag") and by_etag:
            return "ETag"
        if mode == "checksum":
            raise VerifyError(
                f"{where} cannot be verified by checksum: the server returned none for it",
                hint='The server stores no checksums, or checksum_mode is "when_required": set '
                '[archive] verify = "auto" (an ETag, else a read-back) or "read_back"',
            )
        if mode == "etag":
            raise VerifyError(
                f"{where} cannot be verified by ETag: {self._etag_problem(head, expect)}",
                hint='Set [archive] verify = "auto" (a stored checksum, else an ETag, else a '
                'read-back) or "read_back"; `retention check` says what this server supports',
            )
        if mode == "auto":
            _say_once(
                self.bucket,
                bucket=self.bucket,
                key=key,
                reason=self._etag_problem(head, expect) + ", and no stored checksum proves it",
                effect="each such object is read back once and hashed to verify it",
                hint="`retention check` says what this server supports; [archive] verify = "
                '"read_back" says so in the configuration',
            )
        return self._read_back_proof(key, head, expect, version_id=version_id)

    def _checksum_agrees(self, where: str, head: dict[str, Any], expect: _Expected) -> bool | None:
        """True when a stored checksum matches what was streamed; None when the server
        returned none we can compare. A stored checksum that differs is a mismatch."""
        agreed = None
        if expect.checksum is not None:
            name, expected = expect.checksum
            served = head.get(name)
            if served:
                # AWS appends "-<parts>" to composite checksums; some servers do not.
                if str(served).split("-", 1)[0] == expected:
                    agreed = True
                elif not expect.composite:
                    raise _Differs(
                        f"{where} has {name} {served}; {expected} was computed from the bytes "
                        "streamed"
                    )
        whole = full_object_sha256(head)
        if whole is not None:
            if whole != expect.sha256_hex:
                raise _Differs(
                    f"{where} has SHA-256 {whole[:16]}...; {expect.sha256_hex[:16]}... was streamed"
                )
            agreed = True
        return agreed

    @staticmethod
    def _etag_agrees(head: dict[str, Any], expect: _Expected) -> bool | None:
        """True when the ETag is one recomputed from what was streamed; False when it is
        another; None when it cannot be one (absent, or an encrypted object's)."""
        etag = etag_of(head)
        if not etag or not expect.etags or encrypted(head):
            return None
        return etag in expect.etags

    @staticmethod
    def _etag_problem(head: dict[str, Any], expect: _Expected) -> str:
        etag = etag_of(head)
        if not etag:
            return "the server returned no ETag"
        if encrypted(head):
            return "it is encrypted (SSE-KMS or SSE-C), and such an ETag is not an MD5"
        forms = ", ".join(expect.etags)
        return f"its ETag {etag} is none of those recomputed from the bytes ({forms})"

    def _read_back_proof(
        self, key: str, head: dict[str, Any], expect: _Expected, *, version_id: str | None
    ) -> Proof:
        where = self._where(key)
        if _cold(head):
            raise VerifyError(
                f"{where} cannot be read back to verify it: it is in "
                f"{head.get('StorageClass') or 'an archive tier'}, and the server returned no "
                "checksum that proves it",
                hint='Use checksum_mode = "when_supported" (AWS stores checksums), or a '
                "storage_class that can be read at once; the job stays at the provider",
            )
        size, sha = self.read_back_sha256(key, version_id)
        if (size, sha) != (expect.size, expect.sha256_hex):
            etag = etag_of(head)
            raise _Differs(
                f"{where} does not hold the bytes streamed: reading it back gave {size} bytes "
                f"with SHA-256 {sha[:16]}... (ETag {etag or 'none'}); {expect.size} bytes with "
                f"SHA-256 {expect.sha256_hex[:16]}... were streamed"
            )
        return "read-back"

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
                f"{self._where(key)} has no {mode} retention after it was set",
                hint="Enable Object Lock on the bucket, or remove [archive] object_lock_mode",
            )

    def _adopt_existing(self, key: str, expect: _Expected) -> StoredObject:
        """The key was taken (IfNoneMatch): keep it only if it holds exactly these bytes."""
        head = self._head(key, checksums=True)
        if head is None:
            raise ArchiveError(f"{self._where(key)} was reported taken but is missing")
        version = head.get("VersionId")
        proof: Proof
        if head["ContentLength"] != expect.size:
            raise self._taken_by_other(key)
        try:
            proof = self._confirm(key, head, expect, version_id=version)
        except _Differs:
            raise self._taken_by_other(key) from None
        except VerifyError:
            # No proof of the kind configured: part sizes may differ from an earlier attempt,
            # and then the bytes decide.
            size, sha = self.read_back_sha256(key, version)
            if (size, sha) != (expect.size, expect.sha256_hex):
                raise self._taken_by_other(key) from None
            proof = "read-back"
        self._ensure_lock(key, head)
        return StoredObject(
            key=key,
            size=expect.size,
            sha256=expect.sha256_hex,
            etag=etag_of(head) or None,
            version_id=version,
            proof=proof,
        )

    def _taken_by_other(self, key: str) -> ArchiveError:
        return ArchiveError(
            f"{self._where(key)} already holds different content, and archived objects are "
            "never overwritten",
            permanent=True,
            hint="Move that object aside if it is stale, then run `retention retry`",
        )

    def put_json(
        self, key: str, payload: Any, *, same: Callable[[Any], bool] | None = None
    ) -> StoredObject:
        """Write a JSON document (a manifest, a receipt) in ``manifest_storage_class``. If the
        key is taken (IfNoneMatch), the existing document is kept when ``same(existing)`` says
        it records the same thing; else a permanent error."""
        body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode() + b"\n"
        sha = hashlib.sha256(body).hexdigest()
        headers = {"ContentType": "application/json"}
        try:
            return self._put_single(key, body, sha, headers, self.settings.manifest_storage_class)
        except ArchiveError as exc:
            if not exc.permanent or same is None:
                raise
            head = self._head(key)
            if head is None:
                raise
            version = head.get("VersionId")
            existing = self.get_json(key, version_id=version)
            if existing is None or not same(existing):
                raise
            size, digest = self.read_back_sha256(key, version)
            return StoredObject(
                key=key,
                size=size,
                sha256=digest,
                etag=etag_of(head) or None,
                version_id=version,
                proof="read-back",
            )

    # -- the bucket ------------------------------------------------------------------------

    def check_bucket(self) -> str:
        """Reach the bucket and describe its Object Lock; ArchiveError names what is wrong.

        A server without an Object Lock API (NotImplemented, MethodNotAllowed) lacks a
        feature: that fails only when ``object_lock_mode`` asks for it.
        """
        with s3_errors("reaching", self.bucket):
            self.client.head_bucket(Bucket=self.bucket, **self._owner())
        wanted = self.settings.object_lock_mode
        try:
            answer = self.client.get_object_lock_configuration(Bucket=self.bucket, **self._owner())
        except ClientError as exc:
            code = error_code(exc)
            if code in UNSUPPORTED:
                if wanted:
                    raise ArchiveError(
                        f"s3://{self.bucket}: the server does not implement Object Lock "
                        f"(it answered {code}), but [archive] object_lock_mode is {wanted}",
                        hint="Use a server with Object Lock, or remove object_lock_mode and "
                        "object_lock_days",
                        permanent=True,
                    ) from None
                return "Object Lock: not supported by this server"
            if code not in ("ObjectLockConfigurationNotFoundError", "404"):
                with s3_errors("reading the Object Lock configuration of", self.bucket):
                    raise
            lock = None
        else:
            lock = answer.get("ObjectLockConfiguration", {})
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

    def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", "off" or "not supported"."""
        try:
            answer = self.client.get_bucket_versioning(Bucket=self.bucket, **self._owner())
        except ClientError as exc:
            if error_code(exc) in UNSUPPORTED:
                return "not supported"
            with s3_errors("reading the versioning of", self.bucket):
                raise
        except BotoCoreError:
            with s3_errors("reading the versioning of", self.bucket):
                raise
        return str(answer.get("Status") or "off")

    # -- reading ---------------------------------------------------------------------------

    def _head(
        self, key: str, *, version_id: str | None = None, checksums: bool = False
    ) -> dict[str, Any] | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        # Asked for only in when_supported mode: some servers refuse the header itself.
        if checksums and self.checksums:
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
        """True when ``key`` still holds the object we verified (same size and ETag).

        A HEAD, never a GET: it answers for objects in GLACIER or DEEP_ARCHIVE too, which is
        what lets the delete gate pass for files archived in a cold class.
        """
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

    def get_json(self, key: str, *, version_id: str | None = None) -> Any:
        """The JSON document at ``key`` (at ``version_id``); None when there is no such
        object."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        with s3_errors("reading", self.bucket, key):
            try:
                answer = self.client.get_object(**args)
            except ClientError as exc:
                if error_code(exc) in MISSING:
                    return None
                raise
            if answer["ContentLength"] > MAX_JSON_BYTES:
                raise ArchiveError(f"{self._where(key)} is too large to be a manifest")
            body = answer["Body"].read()
        try:
            return json.loads(body)
        except ValueError:
            raise ArchiveError(f"{self._where(key)} is not valid JSON") from None

    def read_back_sha256(
        self, key: str, version_id: str | None = None, *, sink: Callable[[bytes], Any] | None = None
    ) -> tuple[int, str]:
        """Read a stored object once and hash it, handing each chunk to ``sink`` if given:
        verification where no checksum or ETag proves an object, and how `retention restore`
        writes and verifies."""
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

    def thaw(self, key: str, version_id: str | None = None, *, start: bool = True) -> Thaw | None:
        """Whether ``key`` (at ``version_id``) can be read now; None when there is no such
        object. A cold object (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier)
        gets a RestoreObject at ``restore_tier`` for ``restore_days`` unless one is running
        (or ``start`` is False)."""
        head = self._head(key, version_id=version_id)
        if head is None:
            return None
        storage_class = head.get("StorageClass")
        if not _cold(head):
            return Thaw("readable", storage_class)
        tier = self.settings.restore_tier
        if storage_class == "DEEP_ARCHIVE" and tier == "Expedited":
            tier = "Standard"  # DEEP_ARCHIVE has no Expedited tier
        if 'ongoing-request="true"' in str(head.get("Restore") or "") or not start:
            return Thaw("in_progress", storage_class, tier)
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": tier}}
        if head.get("ArchiveStatus") not in _ARCHIVE_ACCESS:
            # An Intelligent-Tiering restore takes no Days: the object moves back to a
            # frequent-access tier instead of getting a temporary copy.
            request["Days"] = self.settings.restore_days
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
        if version_id and version_id != "null":
            args["VersionId"] = version_id
        try:
            self.client.restore_object(RestoreRequest=request, **args)  # type: ignore[arg-type]
        except ClientError as exc:
            if error_code(exc) == "RestoreAlreadyInProgress":
                return Thaw("in_progress", storage_class, tier)
            with s3_errors("starting a restore of", self.bucket, key):
                raise
        return Thaw("started", storage_class, tier)

    # -- copies from the user's own buckets (Daily's batch_processor_bucket) ----------------

    def copy_from(self, source: SourceObject, dest_key: str) -> StoredObject:
        """Server-side copy of an object on the archive's own endpoint, then verify.

        The copy never passes through the worker. Its SHA-256 for the manifest comes from the
        server's stored checksum (CopyObject with ChecksumAlgorithm SHA256), else from reading
        the copy back once; and the copy is tied to its source as ``_confirm_copy`` says.
        """
        # A copy cannot carry IfNoneMatch, so a taken key is checked first and never copied
        # over: an earlier attempt's copy is verified like a fresh one, or stops the job.
        existing = self._head(dest_key, checksums=True) if self.settings.if_none_match else None
        if existing is None:
            self._copy(source, dest_key)
        head = existing or self._head(dest_key, checksums=True)
        if head is None:
            raise VerifyError(f"{self._where(dest_key)} is missing right after the copy")
        try:
            sha, proof = self._confirm_copy(source, dest_key, head)
        except _Differs as exc:
            if existing is None:
                raise
            raise ArchiveError(
                f"{self._where(dest_key)} already holds different content than "
                f"s3://{source.bucket}/{source.key} ({exc.message}), and archived objects are "
                "never overwritten",
                permanent=True,
                hint="Move that object aside if it is stale, then run `retention retry`",
            ) from None
        self._ensure_lock(dest_key, head)
        return StoredObject(
            key=dest_key,
            size=source.size,
            sha256=sha,
            etag=etag_of(head) or None,
            version_id=head.get("VersionId"),
            proof=proof,
        )

    @staticmethod
    def _pinned(source: SourceObject) -> dict[str, str]:
        """The source's version when it has one."""
        if source.version_id and source.version_id != "null":
            return {"VersionId": source.version_id}
        return {}

    def _copy(self, source: SourceObject, dest_key: str) -> None:
        size = source.size
        chunk = max(512 * MiB, -(-size // (MAX_PARTS - 500)))
        transfer = TransferConfig(
            multipart_threshold=COPY_MULTIPART_THRESHOLD,
            multipart_chunksize=chunk,
            max_concurrency=self.settings.max_concurrency,
        )
        # BucketKeyEnabled is not among the managed copy's arguments. The Object Lock ones are
        # left out too: a copy carries no body, so no Content-MD5, which moto (and some
        # servers) require with lock headers; _ensure_lock sets the retention on the copied
        # version right after, as it does for a server that drops lock arguments.
        left_out = ("BucketKeyEnabled", "ObjectLockMode", "ObjectLockRetainUntilDate")
        extra = {
            k: v
            for k, v in self._object_args(self.settings.storage_class).items()
            if k not in left_out
        }
        if self.checksums:
            # The server computes the copy's SHA-256 from the bytes it copies: the manifest's
            # digest without reading the copy back.
            extra["ChecksumAlgorithm"] = "SHA256"
        copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
        copy_source.update(self._pinned(source))
        if "VersionId" not in copy_source and source.etag:
            # Without a version, the ETag pins what is copied to what was read.
            extra["CopySourceIfMatch"] = f'"{source.etag}"'
        with s3_errors("copying into", self.bucket, dest_key):
            self.client.copy(
                copy_source,  # type: ignore[arg-type]
                self.bucket,
                dest_key,
                ExtraArgs=extra or None,
                Config=transfer,
            )

    def _confirm_copy(
        self, source: SourceObject, dest_key: str, head: dict[str, Any]
    ) -> tuple[str, Proof]:
        """The copy's SHA-256, and what ties it to its source; _Differs for a copy that holds
        other bytes, VerifyError when nothing the configuration accepts proves it."""
        where, origin = self._where(dest_key), f"s3://{source.bucket}/{source.key}"
        if head["ContentLength"] != source.size:
            raise _Differs(f"{where} holds {head['ContentLength']} bytes; {origin} {source.size}")
        mode = self.settings.verify
        stored = full_object_sha256(head)
        proof: Proof | None = None
        # 1. MD5 ETags, only where both are plain and unencrypted: AWS gives an object copied
        # under SSE-KMS an ETag that is not its MD5.
        dest_etag = etag_of(head)
        comparable = (
            bool(source.etag and dest_etag)
            and _MD5_HEX.match(source.etag) is not None
            and _MD5_HEX.match(dest_etag) is not None
            and not source.encrypted
            and not encrypted(head)
        )
        if comparable and mode != "checksum":
            if dest_etag == source.etag:
                proof = "ETag"
            elif mode == "etag":
                raise _Differs(f"{where} has ETag {dest_etag}; {origin} {source.etag}")
        # 2. The copy's stored SHA-256 against the source's (one HEAD of the source).
        if proof is None and stored and mode != "etag":
            source_sha = self._source_sha256(source)
            if source_sha is not None:
                if source_sha != stored:
                    raise _Differs(
                        f"{where} has SHA-256 {stored[:16]}...; {origin} {source_sha[:16]}..."
                    )
                proof = "checksum"
        if proof is None and mode == "etag":
            raise VerifyError(
                f"{where} cannot be verified by ETag against {origin}: "
                + ("one is encrypted or multipart" if dest_etag else "the server returned none"),
                hint='Set [archive] verify = "auto" or "checksum"',
            )
        if proof is None and mode == "checksum" and stored is None:
            raise VerifyError(
                f"{where} cannot be verified by checksum: the server returned none for the copy",
                hint='Set [archive] verify = "auto" or "read_back"',
            )
        # The manifest's SHA-256: the server's, else the copy read back once.
        sha = stored if mode != "read_back" else None
        if sha is None:
            if _cold(head):
                raise VerifyError(
                    f"{where} cannot be read back to hash it: it is in "
                    f"{head.get('StorageClass')}, and the server returned no SHA-256 for it",
                    hint='Use checksum_mode = "when_supported" (AWS computes the copy\'s '
                    "SHA-256), or a storage_class that can be read at once",
                )
            size, sha = self.read_back_sha256(dest_key, head.get("VersionId"))
            if size != source.size or (stored is not None and sha != stored):
                raise _Differs(f"reading {where} back gave {size} bytes, SHA-256 {sha[:16]}...")
        if proof is None:
            # Nothing stored ties the copy to its source (under SSE-KMS, say, with a source
            # that has no SHA-256 of its own): hash the source, the version or ETag copied.
            if mode == "auto":
                _say_once(
                    f"{self.bucket} copies",
                    bucket=self.bucket,
                    key=dest_key,
                    reason="neither a stored SHA-256 nor a plain MD5 ETag ties a copy to its "
                    "source",
                    effect="the source of each such copy is read once and hashed",
                )
            size, source_sha = self._read_source_sha256(source)
            if (size, source_sha) != (source.size, sha):
                raise _Differs(
                    f"{where} (SHA-256 {sha[:16]}...) does not match {origin} ({size} bytes, "
                    f"SHA-256 {source_sha[:16]}...)"
                )
            # The copy's own stored SHA-256 against its source's bytes is a checksum proof;
            # a copy read back and its source read are two reads.
            proof = "checksum" if stored is not None and mode != "read_back" else "read-back"
        return sha, proof

    def _source_sha256(self, source: SourceObject) -> str | None:
        """The source's stored full-object SHA-256, if the server keeps one."""
        if not self.checksums:
            return None
        args: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
        args.update(self._pinned(source))
        if "VersionId" not in args and source.etag:
            args["IfMatch"] = f'"{source.etag}"'
        with s3_errors("reading the metadata of", source.bucket, source.key):
            head = self.client.head_object(ChecksumMode="ENABLED", **args)
        return full_object_sha256(dict(head))

    def _read_source_sha256(self, source: SourceObject) -> tuple[int, str]:
        """Read the source once (the version or ETag that was copied) and hash it."""
        args: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
        args.update(self._pinned(source))
        if "VersionId" not in args and source.etag:
            args["IfMatch"] = f'"{source.etag}"'
        sha = hashlib.sha256()
        size = 0
        with s3_errors("reading", source.bucket, source.key):
            body = self.client.get_object(**args)["Body"]
            for chunk in body.iter_chunks(chunk_size=MiB):
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    # -- the probe (`retention check`) -----------------------------------------------------

    def probe(self) -> Capabilities:
        """Write, inspect and remove a few tiny objects under ``{prefix}.retention-probe/``;
        what the server did with them.

        Each object is written the way the worker writes (Content-MD5, the configured
        checksums, IfNoneMatch), but in the STANDARD class and without Object Lock arguments,
        so that it can be removed: a cold class would bill a minimum storage period, and
        retention would keep it for its whole length. A bucket whose default retention locks
        every new object keeps them anyway; they are listed in ``left_behind``.
        """
        token = secrets.token_hex(8)
        base = f"{self.settings.prefix}{PROBE_FOLDER}{token}/"
        caps = Capabilities(prefix=f"{self.settings.prefix}{PROBE_FOLDER}")
        written: list[tuple[S3Client, str, str | None]] = []
        try:
            self._probe_writes(base, caps, written)
        finally:
            caps.left_behind = self._remove_probes(written)
        return caps

    def _probe_put(
        self, client: S3Client, key: str, body: bytes, written: list[Any], **extra: Any
    ) -> dict[str, Any]:
        md5 = _md5()
        md5.update(body)
        answer = dict(
            client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentMD5=_b64(md5.digest()),
                **self._owner(),
                **extra,
            )
        )
        written.append((client, key, answer.get("VersionId")))
        return answer

    def _probe_writes(self, base: str, caps: Capabilities, written: list[Any]) -> None:
        body = b"retention-worker probe " + base.encode() + b"\n"
        sha = hashlib.sha256(body).digest()
        client, checksums = self.client, self.checksums
        # 1. A single PUT as the worker sends it; if the server refuses its checksums, the
        # same PUT without them (from a client that adds none) tells the two apart.
        try:
            extra = (
                {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha)} if checksums else {}
            )
            self._probe_put(client, base + "single", body, written, **extra)
        except ClientError as exc:
            if not checksums or error_code(exc) in ("AccessDenied", "403", "NoSuchBucket", "404"):
                caps.write_error = _describe(exc)
                return
            plain = make_s3_client(
                self.settings.model_copy(update={"checksum_mode": "when_required"})
            )
            try:
                self._probe_put(plain, base + "single", body, written)
            except ClientError as again:
                caps.write_error = _describe(again)
                return
            caps.checksums_rejected = _describe(exc)
            client, checksums = plain, False
        ask: dict[str, Any] = {"ChecksumMode": "ENABLED"} if checksums else {}
        head = dict(
            client.head_object(Bucket=self.bucket, Key=base + "single", **self._owner(), **ask)
        )
        caps.checksums_stored = tuple(f[len("Checksum") :] for f in CHECKSUM_FIELDS if head.get(f))
        served_sha = full_object_sha256(head)
        if served_sha is not None and served_sha != sha.hex():
            caps.checksum_wrong = f"ChecksumSHA256 {head.get('ChecksumSHA256')}"
        etag = etag_of(head)
        md5 = _md5()
        md5.update(body)
        caps.single_etag = "none" if not etag else ("md5" if etag == md5.hexdigest() else "other")
        # 2. A conditional write to a new key, then to the same key with other bytes.
        self._probe_conditional(client, base + "conditional", caps, written)
        # 3. A multipart upload of one part, completed as the worker completes one.
        self._probe_multipart(client, checksums, base + "multipart", body, caps, written)
        # 4. SSE-KMS, when configured.
        if self.settings.sse_kms_key_id:
            self._probe_kms(client, base + "sse-kms", body, caps, written)

    def _probe_conditional(
        self, client: S3Client, key: str, caps: Capabilities, written: list[Any]
    ) -> None:
        try:
            self._probe_put(client, key, b"first\n", written, IfNoneMatch="*")
        except ClientError as exc:
            caps.conditional = "rejected"
            caps.conditional_detail = f"a write to a new key with If-None-Match: * {_describe(exc)}"
            return
        try:
            self._probe_put(client, key, b"second\n", written, IfNoneMatch="*")
        except ClientError as exc:
            if error_code(exc) in TAKEN:
                caps.conditional = "enforced"
            else:
                caps.conditional = "rejected"
                caps.conditional_detail = f"a write to a taken key {_describe(exc)}"
            return
        caps.conditional = "ignored"
        caps.conditional_detail = "a second write with If-None-Match: * replaced the first"

    def _probe_multipart(
        self,
        client: S3Client,
        checksums: bool,
        key: str,
        body: bytes,
        caps: Capabilities,
        written: list[Any],
    ) -> None:
        md5 = _md5()
        md5.update(body)
        crc = _b64(zlib.crc32(body).to_bytes(4, "big"))
        create: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if checksums else {}
        part_checksum: dict[str, Any] = {"ChecksumCRC32": crc} if checksums else {}
        try:
            upload_id = client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self._owner(), **create
            )["UploadId"]
        except ClientError as exc:
            caps.multipart_etag = "failed"
            caps.multipart_detail = f"starting a multipart upload {_describe(exc)}"
            return
        try:
            part = client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=1,
                Body=body,
                ContentMD5=_b64(md5.digest()),
                **self._owner(),
                **part_checksum,
            )
            parts: list[dict[str, Any]] = [{"PartNumber": 1, "ETag": part["ETag"]} | part_checksum]
            answer = client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **self._owner(),
                **self._conditional(),
            )
        except ClientError as exc:
            with contextlib.suppress(ClientError, BotoCoreError):
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, **self._owner()
                )
            caps.multipart_etag = "failed"
            caps.multipart_detail = f"a multipart upload {_describe(exc)}"
            return
        written.append((client, key, answer.get("VersionId")))
        head = client.head_object(Bucket=self.bucket, Key=key, **self._owner())
        etag = etag_of(head)
        of_md5s = _md5()
        of_md5s.update(md5.digest())
        if not etag:
            caps.multipart_etag = "none"
        elif etag == f"{of_md5s.hexdigest()}-1":
            caps.multipart_etag = "md5-of-md5s"
        elif etag == md5.hexdigest():
            caps.multipart_etag = "whole-md5"
        else:
            caps.multipart_etag = "other"
            caps.multipart_detail = f"ETag {etag}"

    def _probe_kms(
        self, client: S3Client, key: str, body: bytes, caps: Capabilities, written: list[Any]
    ) -> None:
        wanted = self.settings.sse_kms_key_id or ""
        try:
            self._probe_put(
                client, key, body, written, ServerSideEncryption="aws:kms", SSEKMSKeyId=wanted
            )
        except ClientError as exc:
            caps.sse_kms = "rejected"
            caps.sse_kms_detail = _describe(exc)
            return
        head = client.head_object(Bucket=self.bucket, Key=key, **self._owner())
        used = head.get("SSEKMSKeyId") or ""
        if head.get("ServerSideEncryption") not in KMS:
            caps.sse_kms = "ignored"
            caps.sse_kms_detail = "the object came back without SSE-KMS"
        elif wanted.startswith("arn:") and used and used != wanted:
            caps.sse_kms = "ignored"
            caps.sse_kms_detail = f"the object is encrypted with {used}, not {wanted}"
        else:
            caps.sse_kms = "applied"
            caps.sse_kms_detail = f"encrypted with {used or wanted}"

    def _remove_probes(self, written: list[tuple[S3Client, str, str | None]]) -> list[str]:
        """Remove every probe object version written; what could not be removed, and why."""
        left: list[str] = []
        for client, key, version in reversed(written):
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, **self._owner()}
            if version and version != "null":
                args["VersionId"] = version
            try:
                client.delete_object(**args)
            except (ClientError, BotoCoreError) as exc:
                why = _describe(exc) if isinstance(exc, ClientError) else type(exc).__name__
                left.append(f"{key} ({why})")
        return left


def _describe(exc: ClientError) -> str:
    """``answered CODE: message`` for a probe's report (never a credential: S3 error
    messages carry none)."""
    error = exc.response.get("Error", {})
    code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = str(error.get("Message") or "").strip()
    return f"answered {code}" + (f": {message[:200]}" if message else "")
