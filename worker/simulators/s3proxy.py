"""A fault-injecting proxy in front of the local S3 server.

Every request is forwarded as it came (boto3's signature included); ``inject`` arms the same
faults as the provider simulators (an S3 error status with its XML body, a reset, a delay),
so tests can show that an S3 outage, a 500, a SlowDown or an AccessDenied never ends in a
provider delete.
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

from worker.simulators.http import Request, Response, SimServer

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def s3_error(code: str, message: str, status: int) -> dict[str, Any]:
    """Arguments for ``inject`` that answer like S3 does."""
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>proxy</RequestId></Error>"
    )
    return {"status": status, "body": body, "headers": {"Content-Type": "application/xml"}}


class S3FaultProxy(SimServer):
    credential_headers = ("authorization",)

    def __init__(self, upstream: str, port: int = 0) -> None:
        super().__init__(port=port)
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80

    @property
    def endpoint_url(self) -> str:
        return self.origin

    def _route(self, request: Request) -> Response:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            path = request.path
            target = f"{path}?{request.raw_query}" if request.raw_query else path
            headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
            headers["host"] = request.headers.get("host", f"{self.upstream_host}")
            conn.request(request.method, target, body=request.body or None, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            relayed = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD":  # no body, but the object's length must get through
                length = int(answer.getheader("content-length") or 0)
                return Response(answer.status, iter(()), relayed, length=length)
            return Response(answer.status, body, relayed)
        finally:
            conn.close()
