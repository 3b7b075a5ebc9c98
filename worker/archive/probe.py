"""The probe `retention check` runs: what the archive's server does with a few tiny objects.

``probe`` writes a few tiny objects under ``{prefix}.retention-probe/<random>/`` (in the
STANDARD class, without Object Lock arguments, so they can be removed), records what the
server did with them, and removes them. A bucket whose default retention locks every new
object keeps them until that retention ends; they are reported, not hidden.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from worker.s3 import (
    CHECKSUM_FIELDS,
    KMS,
    TAKEN,
    error_code,
    etag_of,
    full_object_sha256,
    make_s3_client,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import DeleteObjectRequestTypeDef, PutObjectOutputTypeDef

    # The probe objects written, to remove after: (client, key, version id).
    Written = list[tuple[S3Client, str, str | None]]

from worker.archive.bucket import PROBE_FOLDER, _b64, _md5
from worker.archive.upload import _Uploads


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
    # Whether CreateMultipartUpload echoed the CRC32 asked for (None: none was asked). When it
    # does, uploads send each part with its CRC32 alone and compute no MD5 (upload.py).
    multipart_checksum_acknowledged: bool | None = None
    sse_kms: Literal["applied", "ignored", "rejected", "not configured"] = "not configured"
    sse_kms_detail: str | None = None
    # Probe objects that could not be removed, each with why.
    left_behind: list[str] = field(default_factory=list)
    prefix: str = ""


def _describe(exc: ClientError) -> str:
    """``answered CODE: message`` for a probe's report (never a credential: S3 error
    messages carry none)."""
    error = exc.response.get("Error", {})
    code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = str(error.get("Message") or "").strip()
    return f"answered {code}" + (f": {message[:200]}" if message else "")


class _Probe(_Uploads):
    """Finds out what the archive's server supports, for `retention check`."""

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
        written: Written = []
        try:
            self._probe_writes(base, caps, written)
        finally:
            caps.left_behind = self._remove_probes(written)
        return caps

    def _probe_put(
        self, client: S3Client, key: str, body: bytes, written: Written, **extra: Any
    ) -> PutObjectOutputTypeDef:
        md5 = _md5()
        md5.update(body)
        answer = client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentMD5=_b64(md5.digest()),
            **self._owner(),
            **extra,
        )
        written.append((client, key, answer.get("VersionId")))
        return answer

    def _probe_writes(self, base: str, caps: Capabilities, written: Written) -> None:
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
        self, client: S3Client, key: str, caps: Capabilities, written: Written
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
        written: Written,
    ) -> None:
        md5 = _md5()
        md5.update(body)
        crc = _b64(zlib.crc32(body).to_bytes(4, "big"))
        create: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if checksums else {}
        part_checksum: dict[str, Any] = {"ChecksumCRC32": crc} if checksums else {}
        try:
            started = client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **self._owner(), **create
            )
        except ClientError as exc:
            caps.multipart_etag = "failed"
            caps.multipart_detail = f"starting a multipart upload {_describe(exc)}"
            return
        upload_id = started["UploadId"]
        if checksums:
            caps.multipart_checksum_acknowledged = (
                str(started.get("ChecksumAlgorithm") or "").upper() == "CRC32"
            )
        # As the worker sends a part: Content-MD5 unless the server acknowledged the CRC32.
        keeps = checksums and self._keeps_checksums(started)
        part_md5: dict[str, Any] = {} if keeps else {"ContentMD5": _b64(md5.digest())}
        try:
            part = client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=1,
                Body=body,
                **part_md5,
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
        self, client: S3Client, key: str, body: bytes, caps: Capabilities, written: Written
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

    def _remove_probes(self, written: Written) -> list[str]:
        """Remove every probe object version written; what could not be removed, and why."""
        left: list[str] = []
        for client, key, version in reversed(written):
            args: DeleteObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
            if owner := self.settings.expected_bucket_owner:
                args["ExpectedBucketOwner"] = owner
            if version and version != "null":
                args["VersionId"] = version
            try:
                client.delete_object(**args)
            except (ClientError, BotoCoreError) as exc:
                why = _describe(exc) if isinstance(exc, ClientError) else type(exc).__name__
                left.append(f"{key} ({why})")
        return left
