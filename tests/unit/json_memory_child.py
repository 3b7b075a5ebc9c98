"""JSON answers parsed in a process of their own, so the memory they take is theirs alone.

Run by ``tests/unit/test_json_memory.py`` (Linux: it reads ``/proc/self``):

    python -m tests.unit.json_memory_child measure PATH
    python -m tests.unit.json_memory_child parse SHAPE MIB LIMIT_MIB
    python -m tests.unit.json_memory_child unsiloed SHAPE MIB LIMIT_MIB

``measure`` reads the body in PATH, resets the process's peak resident memory (VmHWM) and
parses it with no cap; it prints how far the peak rose and what ``parse_cost`` allowed.

``parse`` builds a body of SHAPE, about MIB MiB, then limits the address space to what the
process maps plus LIMIT_MIB (``RLIMIT_AS``) and hands the body to ``parse_json`` at the
default cap. ``unsiloed`` limits the address space first, then serves the body as Unsiloed's
result of a completed job, made as it is read (it is never whole but in the adapter), and
asks the adapter for the job's outputs. Both print one JSON line: what came of it (``parsed``,
``refused`` with the BadResponse's message, or ``MemoryError``) and the peak's rise.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from worker.domain import JobSnapshot, Phase
from worker.errors import BadResponse
from worker.memory import return_large_buffers
from worker.providers.base import HttpApi
from worker.providers.parsing import parse_json
from worker.providers.unsiloed import UnsiloedProvider
from worker.specs.unsiloed import UnsiloedSettings

MiB = 1024 * 1024
JOB = "job-7f3a"
KEY = "unsiloed-child-key"
OCR_WORD = (
    b'{"text":"Lorem","bbox":[112.5,33.25,40.75,50.5],"confidence":0.982,'
    b'"font":{"size":10.5,"bold":false}}'
)


def filled(head: bytes, unit: bytes, tail: bytes, size: int) -> Iterator[bytes]:
    """``head``, ``unit`` joined by commas up to about ``size`` bytes, then ``tail``, in
    pieces of about 1 MiB made as they are taken."""
    yield head
    per_piece = max(1, MiB // (len(unit) + 1))
    count = max(1, (size - len(head) - len(tail)) // (len(unit) + 1))
    piece = b",".join([unit] * per_piece)
    while count > per_piece:
        yield piece + b","
        count -= per_piece
    yield b",".join([unit] * count)
    yield tail


SHAPES: dict[str, Callable[[int], Iterator[bytes]]] = {
    # The answer: one list of empty objects, 3 bytes and 70 parsed bytes each.
    "tiny-objects": lambda size: filled(b"[", b"{}", b"]", size),
    # Lists nested 61 deep, over and over, under one key: about 96 parsed bytes for every 2.
    "nested-lists": lambda size: filled(b'{"a":[', b"[" * 60 + b"]" * 60, b"]}", size),
    # A nesting that never closes.
    "unclosed": lambda size: iter([b'{"a":', b"[" * size]),
    # Unsiloed's result envelope around each of the above.
    "result-of-tiny-objects": lambda size: filled(
        b'{"job_id":"%s","file_url":"https://files.test/doc.pdf","result":[' % JOB.encode(),
        b"{}",
        b"]}",
        size,
    ),
    "result-of-nested-lists": lambda size: filled(
        b'{"job_id":"%s","file_url":"https://files.test/doc.pdf","data":[' % JOB.encode(),
        b"[" * 60 + b"]" * 60,
        b"]}",
        size,
    ),
    # A genuine result: OCR words with their boxes, the densest real shape there is.
    "result-of-ocr-words": lambda size: filled(
        b'{"job_id":"%s","file_url":"https://files.test/doc.pdf","file_name":"scan.pdf",'
        b'"result":{"words":[' % JOB.encode(),
        OCR_WORD,
        b"]}}",
        size,
    ),
}


def status() -> dict[str, int]:
    """VmSize and VmHWM of this process, in bytes."""
    fields: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmSize", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak() -> int:
    """Forget the peak so far (the kernel sets VmHWM to the current VmRSS); return it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return status()["VmHWM"]


def limit_address_space(headroom: int) -> None:
    limit = status()["VmSize"] + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def outcome(run: Callable[[], object]) -> dict[str, Any]:
    start = reset_peak()
    try:
        run()
    except BadResponse as refused:
        result: dict[str, Any] = {"outcome": "refused", "message": str(refused)}
    except MemoryError:
        result = {"outcome": "MemoryError"}
    else:
        result = {"outcome": "parsed"}
    result["grown"] = status()["VmHWM"] - start
    return result


def measure(path: str) -> dict[str, Any]:
    from worker.providers.parsing import parse_cost

    body = bytearray(Path(path).stat().st_size)
    with Path(path).open("rb") as file:
        file.readinto(body)
    start = reset_peak()
    parse_json(body, what="the body", max_parse=1 << 50)
    return {"grown": status()["VmHWM"] - start, "cost": parse_cost(body).bytes}


def parse(shape: str, size: int, headroom: int) -> dict[str, Any]:
    body = bytearray(b"".join(SHAPES[shape](size)))
    limit_address_space(headroom)
    return outcome(lambda: parse_json(body, what="the answer to reading job 1"))


def unsiloed(shape: str, size: int, headroom: int) -> dict[str, Any]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": "application/json"},
            stream=_Stream(SHAPES[shape](size)),
        )

    settings = UnsiloedSettings(
        type="unsiloed", base_url="http://unsiloed.test", api_key=SecretStr(KEY)
    )
    api = HttpApi(
        provider="unsiloed",
        base_url=settings.base_url,
        timeout=30,
        transport=httpx.MockTransport(answer),
        attempts=1,
        **UnsiloedProvider.api_options(settings),
    )
    provider = UnsiloedProvider("unsiloed", settings, api)
    job = JobSnapshot(
        job_id=JOB,
        status="completed",
        phase=Phase.SUCCEEDED,
        finished_at=None,
        record={"id": JOB, "status": "completed", "pdf_name": "scan.pdf"},
    )
    limit_address_space(headroom)
    return outcome(lambda: provider.artifacts(job))


class _Stream(httpx.SyncByteStream):
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def main(argv: list[str]) -> None:
    return_large_buffers()  # as the worker does at start: freed buffers go back at once
    command, *args = argv
    if command == "measure":
        result = measure(args[0])
    else:
        shape, mib, limit_mib = args[0], int(args[1]), int(args[2])
        run = parse if command == "parse" else unsiloed
        result = run(shape, mib * MiB, limit_mib * MiB)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
