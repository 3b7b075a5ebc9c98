"""The IAM actions each S3 operation needs, and a small evaluator for deploy/iam/'s policies.

The map follows AWS's service authorization reference for Amazon S3
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html) and
each operation's "Permissions" section in the S3 API reference, for example HeadObject's
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html): a HEAD needs
s3:GetObject, and s3:ListBucket for a missing key to answer 404 rather than 403; a request
that names a version needs the ...Version action; a write with Object Lock headers needs
s3:PutObjectRetention; a copy needs s3:GetObject on its source and s3:PutObject on its target.
SSE-KMS (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html and
the KMS reference,
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awskeymanagementservice.html):
S3 calls KMS as the requester, so a write needs kms:GenerateDataKey, and a read of an
encrypted object and every step of a multipart upload kms:Decrypt.

The worker calls no KMS operation itself; the KMS actions are implied by its S3 operations on
encrypted objects, and counted here the same way.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import ROOT

IAM = ROOT / "deploy" / "iam"
POLICIES = ("base", "object-lock", "sse-kms", "custom-buckets", "restore")


@dataclass(frozen=True)
class Need:
    """One permission a request needs: the action, and the resource it applies to."""

    action: str
    resource: str
    why: str


def _s3(bucket: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def _versioned(params: Mapping[str, Any]) -> bool:
    return params.get("VersionId") not in (None, "", "null")


def _read(bucket: str, key: str, versioned: bool, why: str) -> Need:
    action = "s3:GetObjectVersion" if versioned else "s3:GetObject"
    return Need(action, _s3(bucket, key), why)


def needs(
    operation: str,
    params: Mapping[str, Any],
    *,
    kms_key: str | None,
    encrypted_buckets: Iterable[str],
    locked_buckets: Iterable[str],
) -> list[Need]:
    """What ``operation`` with ``params`` needs. ``encrypted_buckets`` hold SSE-KMS objects
    (under ``kms_key``); in ``locked_buckets`` the worker reads Object Lock retention on HEAD."""
    bucket = str(params.get("Bucket", ""))
    key = params.get("Key")
    why = f"{operation} {bucket}/{key or ''}"
    found: list[Need] = []
    kms_bucket = kms_key is not None and bucket in set(encrypted_buckets)

    def kms(*actions: str) -> None:
        if kms_key is not None:
            found.extend(Need(action, kms_key, why) for action in actions)

    if operation in ("HeadBucket", "ListObjectsV2", "ListObjects"):
        found.append(Need("s3:ListBucket", _s3(bucket), why))
    elif operation == "ListObjectVersions":
        found.append(Need("s3:ListBucketVersions", _s3(bucket), why))
    elif operation == "GetBucketVersioning":
        found.append(Need("s3:GetBucketVersioning", _s3(bucket), why))
    elif operation == "GetObjectLockConfiguration":
        found.append(Need("s3:GetBucketObjectLockConfiguration", _s3(bucket), why))
    elif operation == "HeadObject":
        found.append(_read(bucket, str(key), _versioned(params), why))
        # A missing key answers 404 (not 403) only with s3:ListBucket, and the worker tells
        # "gone" from "denied" by that.
        found.append(Need("s3:ListBucket", _s3(bucket), why))
        if bucket in set(locked_buckets):
            # HEAD shows an object's retention only to s3:GetObjectRetention.
            found.append(Need("s3:GetObjectRetention", _s3(bucket, str(key)), why))
    elif operation == "GetObject":
        found.append(_read(bucket, str(key), _versioned(params), why))
        if kms_bucket:
            kms("kms:Decrypt")
    elif operation in ("PutObject", "CreateMultipartUpload"):
        found.append(Need("s3:PutObject", _s3(bucket, str(key)), why))
        if params.get("ObjectLockMode") or params.get("ObjectLockRetainUntilDate"):
            found.append(Need("s3:PutObjectRetention", _s3(bucket, str(key)), why))
        if params.get("ObjectLockLegalHoldStatus"):
            found.append(Need("s3:PutObjectLegalHold", _s3(bucket, str(key)), why))
        if params.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse"):
            kms("kms:GenerateDataKey")
            if operation == "CreateMultipartUpload":
                kms("kms:Decrypt")  # a multipart upload under SSE-KMS also decrypts
    elif operation in ("UploadPart", "CompleteMultipartUpload"):
        found.append(Need("s3:PutObject", _s3(bucket, str(key)), why))
        if kms_bucket:
            kms("kms:GenerateDataKey", "kms:Decrypt")
    elif operation == "AbortMultipartUpload":
        found.append(Need("s3:AbortMultipartUpload", _s3(bucket, str(key)), why))
    elif operation in ("CopyObject", "UploadPartCopy"):
        source = params["CopySource"]
        if isinstance(source, str):
            path, _, query = source.partition("?versionId=")
            source_bucket, _, source_key = path.lstrip("/").partition("/")
            source_versioned = bool(query)
        else:
            source_bucket, source_key = source["Bucket"], source["Key"]
            source_versioned = _versioned(source)
        found.append(_read(source_bucket, source_key, source_versioned, why))
        found.append(Need("s3:PutObject", _s3(bucket, str(key)), why))
        if params.get("ObjectLockMode") or params.get("ObjectLockRetainUntilDate"):
            found.append(Need("s3:PutObjectRetention", _s3(bucket, str(key)), why))
        if params.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse"):
            kms("kms:GenerateDataKey")
        if kms_key is not None and source_bucket in set(encrypted_buckets):
            kms("kms:Decrypt")
    elif operation == "DeleteObject":
        action = "s3:DeleteObjectVersion" if _versioned(params) else "s3:DeleteObject"
        found.append(Need(action, _s3(bucket, str(key)), why))
    elif operation == "PutObjectRetention":
        found.append(Need("s3:PutObjectRetention", _s3(bucket, str(key)), why))
    elif operation == "GetObjectRetention":
        found.append(Need("s3:GetObjectRetention", _s3(bucket, str(key)), why))
    elif operation == "RestoreObject":
        found.append(Need("s3:RestoreObject", _s3(bucket, str(key)), why))
    else:
        raise AssertionError(
            f"the worker called {operation}, which this map does not know: add it, with the "
            "actions AWS's service authorization reference names for it"
        )
    return found


def load_policy(name: str, names: Mapping[str, str]) -> dict[str, Any]:
    """deploy/iam/NAME.json with its placeholders (ARCHIVE_BUCKET...) filled in."""
    text = (IAM / f"{name}.json").read_text()
    for placeholder, value in names.items():
        text = text.replace(placeholder, value)
    policy: dict[str, Any] = json.loads(text)
    return policy


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allows(policies: Iterable[Mapping[str, Any]], need: Need) -> bool:
    """Whether an Allow statement grants ``need`` (actions and resources as IAM matches them:
    ``*`` spans any characters, ``/`` included)."""
    for policy in policies:
        for statement in policy["Statement"]:
            if statement.get("Effect") != "Allow":
                continue
            actions = _listed(statement["Action"])
            resources = _listed(statement["Resource"])
            if any(fnmatch.fnmatchcase(need.action, a) for a in actions) and any(
                fnmatch.fnmatchcase(need.resource, r) for r in resources
            ):
                return True
    return False


def granted(policy: Mapping[str, Any]) -> set[str]:
    return {a for statement in policy["Statement"] for a in _listed(statement["Action"])}


def policy_files() -> list[Path]:
    return sorted(IAM.glob("*.json"))
