"""File contents for simulators: small byte strings, or large deterministic streams.

A ``Blob`` of any size is generated on the fly from a seed, so a simulator can serve a
multi-gigabyte output without holding it, and a test can know its SHA-256 without storing it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    size: int
    seed: int = 0

    def _block(self) -> bytes:
        return random.Random(self.seed).randbytes(_BLOCK)

    def chunks(self, chunk_size: int = _BLOCK) -> Iterator[bytes]:
        block = self._block()
        sent = 0
        index = 0
        while sent < self.size:
            # Rotate the block by the chunk index so no two chunks are the same bytes.
            shift = (index * 7919) % _BLOCK
            piece = block[shift:] + block[:shift]
            for start in range(0, _BLOCK, chunk_size):
                part = piece[start : start + chunk_size][: self.size - sent]
                if not part:
                    break
                sent += len(part)
                yield part
                if sent >= self.size:
                    return
            index += 1

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in self.chunks():
            digest.update(part)
        return digest.hexdigest()


Content = bytes | Blob


def size_of(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.size


def chunks_of(content: Content) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
    else:
        yield from content.chunks()
