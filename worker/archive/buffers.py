"""Part buffers: every upload of one ``Archive`` shares one memory budget.

``[archive] max_buffer_mib`` bounds the part buffers of all uploads in a process together,
however many jobs archive at once: a sweep's concurrency sets how many jobs wait on their
providers at once, not how much memory their uploads may take.

No upload can wait forever. An upload that holds no buffer waits for room; one that holds a
buffer never waits on the budget (it reuses its own buffer once that part is sent), so the
holders always give back what the waiters need, and while any upload waits, holders take no
new buffer. A part larger than the whole budget (a part size configured above it) is
allowed when nothing else is held.
"""

from __future__ import annotations

import threading


class PartBudget:
    """Bytes of part buffers held by every upload of one ``Archive``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most held at once, for tests and the bench
        self._waiting = 0
        self._room = threading.Condition()

    def take(self, size: int, *, wait: bool) -> bool:
        """Reserve ``size`` bytes; False when the budget is spent and ``wait`` is False."""
        with self._room:
            if not wait and self._waiting:
                return False  # an upload with no buffer at all goes first
            while self.held and self.held + size > self.limit:
                if not wait:
                    return False
                self._waiting += 1
                try:
                    self._room.wait()
                finally:
                    self._waiting -= 1
            self.held += size
            self.peak = max(self.peak, self.held)
            return True

    def give(self, size: int) -> None:
        if not size:
            return
        with self._room:
            self.held -= size
            self._room.notify_all()


class PartBuffers:
    """One upload's buffers: taken from the budget, reused part after part, given back at
    its end (``close``)."""

    def __init__(self, budget: PartBudget) -> None:
        self._budget = budget
        self.free: list[bytearray] = []
        self.held = 0

    def reuse(self, size: int) -> bytearray | None:
        """A free buffer of ``size`` bytes; free buffers of another size (the parts grew) are
        let go, and their bytes given back."""
        while self.free and len(self.free[-1]) != size:
            self._let_go(self.free.pop())
        return self.free.pop() if self.free else None

    def first(self, size: int) -> bytearray:
        """The upload's first buffer: waits for room while other uploads hold the budget."""
        self._budget.take(size, wait=True)
        return self._counted(size)

    def fresh(self, size: int) -> bytearray | None:
        """A new buffer, if the budget has room. An upload that holds no buffer waits for
        room; one that holds any gets None and reuses its own instead."""
        if not self._budget.take(size, wait=self.held == 0):
            return None
        return self._counted(size)

    def _counted(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes whose room was taken from the budget."""
        self.held += size
        return bytearray(size)

    def _let_go(self, buffer: bytearray) -> None:
        self.held -= len(buffer)
        self._budget.give(len(buffer))

    def close(self) -> None:
        """Give back every byte this upload held (its buffers are no longer used)."""
        self.free.clear()
        self._budget.give(self.held)
        self.held = 0
