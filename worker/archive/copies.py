"""Copies from the user's own buckets into the archive, server-side, tied to their source.

Server-side, with the source pinned (its version, else ``CopySourceIfMatch`` on its
ETag). The copy is tied to its source by checksum (CopyObject with ``ChecksumAlgorithm``
SHA256 against the source's stored SHA-256), or by equal MD5 ETags where both are plain
and unencrypted, or else by hashing the source; never by ETag equality under SSE-KMS.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from worker.errors import ArchiveError, VerifyError
from worker.s3 import (
    encrypted,
    etag_of,
    full_object_sha256,
    s3_errors,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

    from worker.source_bucket import SourceObject
from worker.archive.bucket import (
    _MD5_HEX,
    COPY_MULTIPART_THRESHOLD,
    MAX_PARTS,
    MiB,
    Proof,
    StoredObject,
    _cold,
)
from worker.archive.verify import _Differs, _say_once, _Verification


class _Copies(_Verification):
    """Copies an object from one of the user's own buckets, server-side, tied to its source."""

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
        self, source: SourceObject, dest_key: str, head: HeadObjectOutputTypeDef
    ) -> tuple[str, Proof]:
        """The copy's SHA-256, and what ties it to its source; _Differs for a copy that holds
        other bytes, VerifyError when nothing the configuration accepts proves it."""
        where, origin = self._where(dest_key), f"s3://{source.bucket}/{source.key}"
        if head["ContentLength"] != source.size:
            raise _Differs(f"{where} holds {head['ContentLength']} bytes; {origin} {source.size}")
        mode = self.settings.verify
        stored = full_object_sha256(head)
        # 1. MD5 ETags, where both are plain and unencrypted.
        proof = None if mode == "checksum" else _etag_proof(source, head, mode == "etag", where)
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
                + (
                    "one is encrypted or multipart" if etag_of(head) else "the server returned none"
                ),
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


def _etag_proof(
    source: SourceObject, head: HeadObjectOutputTypeDef, etag_only: bool, where: str
) -> Proof | None:
    """ "ETag" when the copy's and its source's ETags are plain MD5s of unencrypted objects and
    agree (AWS gives an object copied under SSE-KMS an ETag that is not its MD5); _Differs
    when they disagree and ETags are all the configuration trusts (``etag_only``)."""
    dest_etag = etag_of(head)
    comparable = (
        bool(source.etag and dest_etag)
        and _MD5_HEX.match(source.etag) is not None
        and _MD5_HEX.match(dest_etag) is not None
        and not source.encrypted
        and not encrypted(head)
    )
    if not comparable:
        return None
    if dest_etag == source.etag:
        return "ETag"
    if etag_only:
        raise _Differs(
            f"{where} has ETag {dest_etag}; s3://{source.bucket}/{source.key} {source.etag}"
        )
    return None
