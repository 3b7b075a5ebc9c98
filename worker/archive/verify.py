"""Verification: a stored object is proved to hold the bytes streamed, or it is not kept.

A single PUT whose answer echoes the SHA-256 sent, or whose ETag is the bytes' MD5 (an
unencrypted object), is proved by that answer. Otherwise a fresh HEAD of the version just
written must show the size streamed. Then, with
``"auto"``: the server's stored checksum when it returns one (AWS, recent MinIO, moto: no
second read); else an ETag of a form recomputable from what was streamed (a single PUT's
MD5; for multipart, S3's MD5-of-part-MD5s-N or the whole object's MD5, which s3rver
gives); else the object is read back and hashed, which the log says once per process.
``"checksum"`` and ``"etag"`` accept only that proof and otherwise fail verification;
``"read_back"`` always reads back. A checksum or read-back that disagrees is a mismatch,
never a pass. An encrypted object's ETag (SSE-KMS, SSE-C) is never taken for an MD5. With
Object Lock configured, the HEAD must also show the retention; a server that ignored the
lock arguments gets it set explicitly.

Never overwrite: with ``if_none_match`` every write carries ``IfNoneMatch="*"``. When the key
is taken, the existing object is compared with what was just streamed (checksums, else a read-back
SHA-256): the same bytes are a resumed job meeting its own earlier copy and are kept;
different bytes stop the job with a permanent error. A server that ignores the header
(s3rver) cannot give this guarantee; `retention check` finds that out and says so.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.archive.bucket import Proof, StoredObject, _Bucket, _cold, log
from worker.errors import ArchiveError, VerifyError
from worker.s3 import (
    encrypted,
    etag_of,
    full_object_sha256,
    s3_errors,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import (
        HeadObjectOutputTypeDef,
        PutObjectRetentionRequestTypeDef,
    )


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


class _Differs(VerifyError):
    """Proof that the stored object holds other bytes (not merely a missing proof)."""


# Said once per process (and bucket): every object is being read back to be verified.
_SAID_LOCK = threading.Lock()


_SAID: set[str] = set()


def _say_once(topic: str, **fields: object) -> None:
    with _SAID_LOCK:
        if topic in _SAID:
            return
        _SAID.add(topic)
    log.warning("verify_reads_back", **fields)


class _Verification(_Bucket):
    """Proves a stored object holds what was streamed; adopts an earlier identical copy."""

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

    def _proved_by_answer(self, answer: Mapping[str, object], expect: _Expected) -> Proof | None:
        """A single PUT's own answer proves the bytes when it echoes the SHA-256 we sent (the
        server checked it against what it received), or when its ETag is the MD5 of those
        bytes (an unencrypted object's): the HEAD that would follow repeats that work. None
        when the answer proves nothing (the HEAD decides, and finds any mismatch), or when a
        HEAD is needed anyway: Object Lock must be seen on the stored version, and
        ``verify = "read_back"`` reads every object back. The delete gate checks every file
        again, by the ETag this answer gave, before any delete."""
        mode = self.settings.verify
        if self.settings.object_lock_mode is not None or mode == "read_back":
            return None
        if expect.checksum is not None:
            name, value = expect.checksum
            served = answer.get(name)
            if served and served != value:
                return None  # the HEAD names the mismatch
            if served and mode in ("auto", "checksum"):
                return "checksum"
        if mode in ("auto", "etag") and not encrypted(answer) and etag_of(answer) in expect.etags:
            return "ETag"
        return None

    def _confirm(
        self, key: str, head: HeadObjectOutputTypeDef, expect: _Expected, *, version_id: str | None
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

    def _checksum_agrees(
        self, where: str, head: HeadObjectOutputTypeDef, expect: _Expected
    ) -> bool | None:
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
    def _etag_agrees(head: HeadObjectOutputTypeDef, expect: _Expected) -> bool | None:
        """True when the ETag is one recomputed from what was streamed; False when it is
        another; None when it cannot be one (absent, or an encrypted object's)."""
        etag = etag_of(head)
        if not etag or not expect.etags or encrypted(head):
            return None
        return etag in expect.etags

    @staticmethod
    def _etag_problem(head: HeadObjectOutputTypeDef, expect: _Expected) -> str:
        etag = etag_of(head)
        if not etag:
            return "the server returned no ETag"
        if encrypted(head):
            return "it is encrypted (SSE-KMS or SSE-C), and such an ETag is not an MD5"
        forms = ", ".join(expect.etags)
        return f"its ETag {etag} is none of those recomputed from the bytes ({forms})"

    def _read_back_proof(
        self, key: str, head: HeadObjectOutputTypeDef, expect: _Expected, *, version_id: str | None
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

    def _ensure_lock(self, key: str, head: HeadObjectOutputTypeDef) -> None:
        """Object Lock must show on the stored version; set it if the server ignored it.

        Some servers (and emulators) drop the lock arguments of a multipart upload.
        """
        mode = self.settings.object_lock_mode
        if mode is None or head.get("ObjectLockMode") == mode:
            return
        version = head.get("VersionId")
        request: PutObjectRetentionRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": key,
            "Retention": {"Mode": mode, "RetainUntilDate": self._retain_until()},
        }
        if version and version != "null":
            request["VersionId"] = version
        if owner := self.settings.expected_bucket_owner:
            request["ExpectedBucketOwner"] = owner
        with s3_errors("setting Object Lock retention on", self.bucket, key):
            self.client.put_object_retention(**request)
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
