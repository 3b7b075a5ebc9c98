"""Files behind signed, expiring links, the way providers hand out S3 presigned URLs.

A simulator puts a file's content under a key, mints a link for it in each answer, and
serves ``GET /files/<key>`` only for a link whose signature matches and has not expired. The
links need no credentials; every signature minted is kept in ``issued_signatures`` so tests
can check that none of them reaches a log line, an error or the archive.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from worker.simulators.blobs import Content, chunks_of, size_of
from worker.simulators.http import Request, Response


def s3_error(status: int, code: str, message: str = "") -> Response:
    """An answer shaped like S3's XML errors."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return Response(status, body, {"Content-Type": "application/xml"})


class SignedFiles:
    def __init__(
        self,
        origin: Callable[[], str],
        *,
        ttl: float = 3600.0,
        content_type: str = "application/octet-stream",
    ) -> None:
        self._origin = origin
        # Seconds a link stays valid (the providers do not document it [?]).
        self.ttl = ttl
        self.content_type = content_type
        self.issued_signatures: list[str] = []
        self._key = secrets.token_bytes(32)
        self._blobs: dict[str, Content] = {}
        self._lock = threading.Lock()

    def put(self, key: str, content: Content) -> None:
        with self._lock:
            self._blobs[key] = content

    def drop(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)

    def _signature(self, key: str, expires: str, nonce: str) -> str:
        return hmac.new(
            self._key, f"{key}\n{expires}\n{nonce}".encode(), hashlib.sha256
        ).hexdigest()

    def sign(self, key: str) -> str:
        """A fresh link to ``key``, valid for ``ttl`` seconds (expiry kept in milliseconds)."""
        expires = str(int((time.time() + self.ttl) * 1000))
        nonce = secrets.token_urlsafe(8)
        signature = self._signature(key, expires, nonce)
        with self._lock:
            self.issued_signatures.append(signature)
        return (
            f"{self._origin()}/files/{key}?X-Amz-Expires={expires}&X-Amz-Nonce={nonce}"
            f"&X-Amz-Signature={signature}"
        )

    def serve(self, request: Request, key: str) -> Response:
        """Answer a download: the bytes for a valid, unexpired link; S3's errors otherwise."""
        expires = request.arg("X-Amz-Expires") or "0"
        nonce = request.arg("X-Amz-Nonce") or ""
        signature = request.arg("X-Amz-Signature") or ""
        if not hmac.compare_digest(signature, self._signature(key, expires, nonce)):
            return s3_error(403, "SignatureDoesNotMatch")
        if not expires.isdigit() or int(expires) < time.time() * 1000:
            return s3_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            content = self._blobs.get(key)
        if content is None:
            return s3_error(404, "NoSuchKey")
        return Response(
            200, chunks_of(content), {"Content-Type": self.content_type}, length=size_of(content)
        )
