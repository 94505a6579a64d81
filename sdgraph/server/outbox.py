"""One WebSocket client's outbox: frames in order, bounded by bytes, where a newer frame can supersede an older one.

While the client lags (more than `lag_bytes` unsent), a frame queued with a key (progress of one node, the queue
status, a latent preview) makes the unsent frame with the same key stale: that one is dropped and the new one
queued at the end, so a lagging client gets the latest value once instead of every step; a client that keeps up
gets every frame. Frames without a key (executing, executed, execution_*) are always delivered,
in order, as long as the client reads; one that stops reading fills the byte budget and `put` says so.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Hashable

Frame = str | bytes
FRAME_OVERHEAD = 64  # bytes a queued frame costs besides its payload (object headers, the queue slot)


class _Slot:
    __slots__ = ("frame", "key")

    def __init__(self, frame: Frame | None, key: Hashable | None) -> None:
        self.frame = frame
        self.key = key


def cost(frame: Frame) -> int:
    return len(frame) + FRAME_OVERHEAD


class Outbox:
    def __init__(self, limit_bytes: int, lag_bytes: int = 64 * 1024) -> None:
        self.limit_bytes = limit_bytes
        self.lag_bytes = lag_bytes
        self.size = 0  # bytes queued, overhead included
        self._slots: deque[_Slot] = deque()
        self._latest: dict[Hashable, _Slot] = {}  # key -> its unsent slot
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return sum(1 for slot in self._slots if slot.frame is not None)

    def put(self, frame: Frame, key: Hashable | None = None) -> bool:
        """Queue a frame, superseding the unsent one with the same key. False (and nothing queued) when it does
        not fit in the budget."""
        stale = self._latest.get(key) if key is not None and self.size > self.lag_bytes else None
        freed = cost(stale.frame) if stale is not None and stale.frame is not None else 0
        if self.size - freed + cost(frame) > self.limit_bytes:
            return False
        if stale is not None:
            stale.frame = None
            self.size -= freed
        slot = _Slot(frame, key)
        self._slots.append(slot)
        if key is not None:
            self._latest[key] = slot
        self.size += cost(frame)
        self._ready.set()
        return True

    def get_nowait(self) -> Frame | None:
        """The next frame, or None when there is none."""
        while self._slots:
            slot = self._slots.popleft()
            if slot.key is not None and self._latest.get(slot.key) is slot:
                del self._latest[slot.key]
            if slot.frame is not None:
                self.size -= cost(slot.frame)
                return slot.frame
        return None

    async def get(self) -> Frame:
        while (frame := self.get_nowait()) is None:
            self._ready.clear()
            await self._ready.wait()
        return frame

    def clear(self) -> None:
        self._slots.clear()
        self._latest.clear()
        self.size = 0
