"""The Daily simulator in a process of its own, with routes only the benchmarks use.

``python -m bench.simproc`` prints ``{"port": N, "table": {...}}`` (the account's provider
table) and serves until its stdin closes.

Bench-only routes (no credentials; loopback only):
    POST /bench/jobs?count=N&status=finished&outputs=1   add N jobs (two small outputs each)
    POST /bench/jobs?count=N&size=S                       add N jobs with one output of S bytes
    POST /bench/blob?size=S&seed=K                        a signed link to a ``Blob`` of S bytes
    POST /bench/reset                                     forget every job and request
    POST /bench/latency?ms=M                              answer every other request M ms late
    GET  /bench/stats                                     jobs held, requests seen, deletes

``/bench/stats`` also counts the requests by kind (``by_kind``: list, get, access-link,
delete, other API, download, with ``downloads_with_credentials``), so a benchmark can show
the provider requests per job of any client without looking inside it.

The listing is the simulator's own, answered from a cached order instead of sorting every
job for every page, so a listing of 100,000 jobs costs the simulator O(n), not O(n^2/page).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import Counter

from bench.servers import API_KEY
from worker.simulators.blobs import Blob
from worker.simulators.daily import DailySimulator, SimJob
from worker.simulators.http import Request, Response, route


def kind_of(method: str, path: str) -> str:
    """A provider request's kind, for the per-job counts: list, get, access-link, delete,
    download or other."""
    if path.startswith("/files/"):
        return "download"
    if path.rstrip("/") == "/v1/batch-processor":
        return "list" if method == "GET" else "other"
    if path.startswith("/v1/batch-processor/"):
        if path.endswith("/access-link"):
            return "access-link"
        return {"GET": "get", "DELETE": "delete"}.get(method, "other")
    return "other"


class BenchDaily(DailySimulator):
    def __init__(self) -> None:
        super().__init__(API_KEY, link_ttl=24 * 3600.0)
        self._generation = 0
        self._order: list[SimJob] = []
        self._position: dict[str, int] = {}
        self._order_key: tuple[int, int] = (-1, -1)
        self._blobs = 0
        self._counter = itertools.count()
        # A provider's round trip over the internet: the handler thread sleeps (no CPU, no
        # GIL held), as a client would wait for a remote API or file server.
        self.latency = 0.0
        self.on_request = self._delay

    def _delay(self, request: Request) -> None:
        if self.latency and not request.path.startswith("/bench/"):
            time.sleep(self.latency)

    def _ordered(self) -> tuple[list[SimJob], dict[str, int]]:
        with self._state:
            key = (self._generation, len(self.jobs))
            if key != self._order_key:
                self._order = sorted(self.jobs.values(), key=lambda j: (-j.seq, j.id))
                self._position = {j.id: i for i, j in enumerate(self._order)}
                self._order_key = key
            return self._order, self._position

    @route("GET", "/v1/batch-processor")
    def list_jobs(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        limit = max(1, min(100, int(request.arg("limit", "100") or 100)))
        ordered, position = self._ordered()
        after = request.arg("starting_after")
        start = position[after] + 1 if after and after in position else 0
        if after and after not in position:
            start = len(ordered)
        page = ordered[start : start + limit]
        return Response.json(
            {
                "total_count": len(ordered),
                "data": [{"id": j.id, "preset": j.preset, "status": j.status} for j in page],
            }
        )

    @route("POST", "/bench/jobs")
    def bench_jobs(self, request: Request) -> Response:
        count = int(request.arg("count", "1") or 1)
        status = request.arg("status", "finished") or "finished"
        outputs = (request.arg("outputs", "1") or "1") == "1"
        size = int(request.arg("size", "0") or 0)
        for _ in range(count):
            n = next(self._counter)
            if size:
                self.add_job(status, transcription=[("mp4", Blob(size, n))])
            elif outputs:
                transcript = json.dumps(
                    {"job": n, "transcript": "hello world " * 150}, sort_keys=True
                ).encode()
                summary = f"job {n}: a short summary of the call\n".encode() * 20
                self.add_job(status, transcription=[("json", transcript)], summary=("txt", summary))
            else:
                self.add_job(status)
        with self._state:
            self._generation += 1
        return Response.json({"added": count})

    @route("POST", "/bench/blob")
    def bench_blob(self, request: Request) -> Response:
        size = int(request.arg("size", "0") or 0)
        seed = int(request.arg("seed", "1") or 1)
        self._blobs += 1
        key = f"bench/blob-{self._blobs}-{size}.bin"
        self.files.put(key, Blob(size, seed))
        return Response.json({"url": self.files.sign(key)})

    @route("POST", "/bench/latency")
    def bench_latency(self, request: Request) -> Response:
        self.latency = float(request.arg("ms", "0") or 0) / 1000
        return Response.json({"latency_ms": self.latency * 1000})

    @route("POST", "/bench/reset")
    def bench_reset(self, request: Request) -> Response:
        with self._state:
            for job in list(self.jobs.values()):
                for out in job.outputs:
                    self.files.drop(out.key)
            self.jobs.clear()
            self._generation += 1
        with self._lock:
            self.requests.clear()
        self.deleted.clear()
        return Response.json({"ok": True})

    @route("GET", "/bench/stats")
    def bench_stats(self, request: Request) -> Response:
        with self._lock:
            seen = list(self.requests)
        api = [s for s in seen if s.path.startswith("/v1/")]
        files = [s for s in seen if s.path.startswith("/files/")]
        return Response.json(
            {
                "jobs": len(self.jobs),
                "deleted": len(self.deleted),
                "requests": len(seen),
                "api_requests": len(api),
                "downloads": len(files),
                "downloads_with_credentials": sum(s.authorization for s in files),
                "by_kind": dict(Counter(kind_of(s.method, s.path) for s in [*api, *files])),
                "errors": sum(s.status >= 400 for s in seen if not s.path.startswith("/bench")),
            }
        )


def main() -> None:
    sim = BenchDaily()
    sim.start()
    print(json.dumps({"port": sim.port, "table": sim.provider_table()}), flush=True)
    done = threading.Event()

    def watch() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or dies)
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    done.wait()
    sim.stop()


if __name__ == "__main__":
    main()
