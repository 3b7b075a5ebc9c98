"""Streaming upload: a body read once, hashed as it goes, in parts within a memory budget.

A body is read once. As it streams, the reader computes the SHA-256 that goes into the
manifest and the whole object's MD5; each part is then uploaded by a small thread pool,
which computes the part's MD5 (sent as Content-MD5) and, unless ``checksum_mode`` is
``when_required``, its CRC32 (sent as an additional checksum).

The MD5s are there for servers that keep no checksums: they check Content-MD5 and give
ETags that the MD5s prove. A server that acknowledges the CRC32 when the multipart upload
starts (AWS, MinIO, moto answer ``ChecksumAlgorithm: CRC32``) checks each part's CRC32 on
receipt and shows the object's composite CRC32, which ``verify = "auto"`` or ``"checksum"``
takes as the proof; for it, the rest of the body is hashed with neither MD5, as boto3 itself
uploads. Should that server then show no checksum, the object is read back: a missing proof
is never a pass.

At most ``max_concurrency`` parts of one upload are in flight, and no more than fit in
``max_buffer_mib`` with the part being filled: one upload holds at most
``min((max_concurrency + 1) x part, max(max_buffer_mib, 2 x part))`` whatever the file
size. The buffers of all uploads of one ``Archive`` share that budget too
(``worker/archive/buffers.py``), so jobs archiving at once do not multiply it; an output
that is small by its size, or ends within its first 256 KiB, takes no part buffer. The part
size grows with a known size so that no object needs more than 10,000 parts; for an unknown
size it doubles every 1,000 parts, and fewer parts go in flight as they grow. A failed
upload is aborted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from worker.archive.bucket import MAX_PART_SIZE, MAX_PARTS, GiB, MiB, StoredObject, _b64, _md5
from worker.archive.buffers import PartBuffers
from worker.archive.verify import _Expected, _Verification
from worker.errors import ArchiveError
from worker.s3 import (
    TAKEN,
    error_code,
    etag_of,
    s3_errors,
)

# What is read before a part buffer is taken for an output of unknown size: most such
# outputs (a transcript, a JSON result) end within it, and need no part-sized buffer.
SMALL = 256 * 1024


class _Reader:
    """Reads a chunk iterator in parts of a requested size, hashing everything it reads.

    It keeps the whole object's MD5 as well as its SHA-256 until ``drop_md5``: some servers
    (s3rver) give a multipart object that MD5 as its ETag, and computing it while streaming is
    cheap next to reading the object back.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.sha256 = hashlib.sha256()
        self.md5: Any = _md5()
        self.size = 0
        self.eof = False

    def drop_md5(self) -> None:
        """Stop computing the whole object's MD5: no ETag will be held to it."""
        self.md5 = None

    def _take(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self.md5 is not None:
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

    def readinto(self, buffer: bytearray, start: int = 0) -> int:
        """Fill ``buffer`` from ``start`` on from the stream; the number of bytes it holds
        (short at the end).

        The chunks are copied straight into a reused buffer: no part-sized temporary is
        allocated, so memory stays at the buffers whatever the output's size.
        """
        view = memoryview(buffer)
        want, have = len(buffer), start
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
class _Part:
    number: int
    etag: str
    md5: bytes | None  # None when the server keeps checksums (see the module's docstring)
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


class _Uploads(_Verification):
    """Streams a body into the bucket (one PUT, or a multipart upload) and verifies it."""

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
        headers: dict[str, Any] = {}
        if content_type:
            headers["ContentType"] = content_type
        if content_encoding:
            headers["ContentEncoding"] = content_encoding
        buffers = PartBuffers(self.budget)
        try:
            first: bytes | bytearray
            if size_hint is not None and size_hint < first_size:
                # Small by its size: read as it comes, outside the part budget. Should the
                # size be wrong, this first part goes outside the budget, once.
                first = reader.read(first_size)
                whole = len(first) < first_size or reader.at_end()
            else:
                # Possibly large. A small output without a size ends within its first
                # chunks; past them, the first part is a buffer of the shared budget, which
                # may wait here for the uploads of other jobs to give theirs back.
                first = reader.read(min(first_size, SMALL))
                whole = len(first) < min(first_size, SMALL) or reader.at_end()
                if not whole:
                    head, first = first, buffers.first(first_size)
                    first[: len(head)] = head
                    filled = reader.readinto(first, len(head))
                    del head
                    whole = filled < first_size or reader.at_end()
                    if whole:
                        first = bytes(memoryview(first)[:filled])
                        buffers.close()
            if whole:
                return self._put_single(
                    key,
                    bytes(first),
                    reader.sha256.hexdigest(),
                    headers,
                    self.settings.storage_class,
                )
            # The upload owns the first part from here: once it is sent, its buffer takes a
            # later part (one outside the budget is let go).
            handed = [first]
            del first
            return self._put_multipart(key, reader, handed, buffers, size_hint, headers)
        finally:
            buffers.close()

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
        proof = self._proved_by_answer(answer, expect)
        if proof is None:
            return self._verify(key, expect, version_id=answer.get("VersionId"))
        return StoredObject(
            key=key,
            size=expect.size,
            sha256=sha256_hex,
            etag=etag_of(answer) or None,
            version_id=answer.get("VersionId"),
            proof=proof,
        )

    def _put_multipart(
        self,
        key: str,
        reader: _Reader,
        first: list[bytes | bytearray],
        buffers: PartBuffers,
        size_hint: int | None,
        headers: dict[str, Any],
    ) -> StoredObject:
        create: dict[str, Any] = {**headers, **self._object_args(self.settings.storage_class)}
        if self.checksums:
            create["ChecksumAlgorithm"] = "CRC32"
        with s3_errors("starting a multipart upload to", self.bucket, key):
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **create)
        upload_id = started["UploadId"]
        with_md5 = not self._keeps_checksums(started)
        if not with_md5:
            reader.drop_md5()
        parts: list[_Part] = []
        try:
            parts = self._upload_parts(key, upload_id, reader, first, buffers, size_hint, with_md5)
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
        expect = self._multipart_expected(reader, parts)
        if answer is None:
            return self._adopt_existing(key, expect)
        return self._verify(key, expect, version_id=answer.get("VersionId"))

    def _keeps_checksums(self, started: Mapping[str, Any]) -> bool:
        """True when the server acknowledged the CRC32 asked for at CreateMultipartUpload, and
        ``verify`` takes a checksum as proof: then no MD5 needs computing (a server that
        ignores the algorithm, like s3rver, does not echo it)."""
        return (
            self.checksums
            and self.settings.verify in ("auto", "checksum")
            and str(started.get("ChecksumAlgorithm") or "").upper() == "CRC32"
        )

    def _upload_parts(
        self,
        key: str,
        upload_id: str,
        reader: _Reader,
        first: list[bytes | bytearray],
        buffers: PartBuffers,
        size_hint: int | None,
        with_md5: bool,
    ) -> list[_Part]:
        """Upload the body's parts, a few at a time, each from a reused buffer; ``first``
        holds the part already read, and is emptied."""
        parts: list[_Part] = []
        with ThreadPoolExecutor(
            max_workers=self.settings.max_concurrency, thread_name_prefix="s3-part"
        ) as pool:
            # At most max_concurrency parts are uploading while the next one fills, each in a
            # buffer that is reused once its upload has returned (botocore accepts a
            # bytearray body and rewinds it itself on a retry). Fresh part-sized buffers per
            # part would leave the heap fragmented and resident memory growing.
            inflight: list[tuple[Future[_Part], bytes | bytearray]] = []
            number = 1
            data: bytes | bytearray = first.pop()
            while data:
                while len(inflight) >= self.in_flight_limit(len(data)):
                    self._reclaim(inflight, parts, buffers)
                future = pool.submit(self._upload_part, key, upload_id, number, data, with_md5)
                inflight.append((future, data))
                del data  # the first part, if outside the budget, goes once it is sent
                number += 1
                if number > MAX_PARTS:
                    raise ArchiveError(
                        f"{key} runs past {MAX_PARTS} parts (the last of "
                        f"{len(inflight[-1][1]) / MiB:.1f} MiB); nothing was stored",
                        hint="Raise [archive] max_buffer_mib for outputs this large; the job "
                        "will be tried again",
                    )
                size = part_size_for(size_hint, number, self.part_size, self.max_buffer)
                data = self._next_part(reader, size, buffers, inflight, parts)
            parts.extend(f.result() for f, _ in inflight)
        return parts

    @staticmethod
    def _reclaim(
        inflight: list[tuple[Future[_Part], bytes | bytearray]],
        parts: list[_Part],
        buffers: PartBuffers,
    ) -> None:
        """Wait for the oldest part in flight; its buffer is free for the next part."""
        done, spent = inflight.pop(0)
        parts.append(done.result())
        if isinstance(spent, bytearray):
            buffers.free.append(spent)

    def _multipart_expected(self, reader: _Reader, parts: list[_Part]) -> _Expected:
        """What the completed object must show, recomputed from the parts sent."""
        etags: list[str] = []
        md5s = [p.md5 for p in parts if p.md5 is not None]
        if len(md5s) == len(parts):  # S3's form: the MD5 of the parts' MD5s, "-N"
            md5_of_md5s = _md5()
            md5_of_md5s.update(b"".join(md5s))
            etags.append(f"{md5_of_md5s.hexdigest()}-{len(parts)}")
        if reader.md5 is not None:  # the whole object's MD5, which s3rver gives
            etags.append(reader.md5.hexdigest())
        composite_crc = zlib.crc32(b"".join(p.crc32 for p in parts)).to_bytes(4, "big")
        return _Expected(
            size=reader.size,
            sha256_hex=reader.sha256.hexdigest(),
            etags=tuple(etags),
            checksum=("ChecksumCRC32", _b64(composite_crc)) if self.checksums else None,
            composite=True,
        )

    def in_flight_limit(self, part: int) -> int:
        return parts_in_flight(
            part, max_concurrency=self.settings.max_concurrency, max_buffer=self.max_buffer
        )

    def _next_part(
        self,
        reader: _Reader,
        size: int,
        buffers: PartBuffers,
        inflight: list[tuple[Future[_Part], bytes | bytearray]],
        parts: list[_Part],
    ) -> bytes | bytearray:
        """The next part, read into a buffer of ``size`` bytes (b"" at the end): a free one,
        else a new one if the shared budget has room, else the oldest part's once it is sent
        (the budget is spent by other uploads)."""
        buffer = buffers.reuse(size)
        while buffer is None:
            buffer = buffers.fresh(size)
            if buffer is None:
                self._reclaim(inflight, parts, buffers)
                buffer = buffers.reuse(size)
        filled = reader.readinto(buffer)
        if filled == size:
            return buffer
        buffers.free.append(buffer)
        # The last, short part: a copy of what was read, once per upload.
        return bytes(memoryview(buffer)[:filled])

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes | bytearray, with_md5: bool
    ) -> _Part:
        md5 = None
        args: dict[str, Any] = {}
        if with_md5:
            hasher = _md5()
            hasher.update(data)
            md5 = hasher.digest()
            args["ContentMD5"] = _b64(md5)
        crc = zlib.crc32(data).to_bytes(4, "big")
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
