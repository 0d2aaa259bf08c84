"""Per-host politeness: concurrency cap, minimum delay between requests, Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ingestor.errors import HostBackoffError


@dataclass
class _HostSlot:
    semaphore: asyncio.Semaphore
    next_start: float = 0.0
    not_before: float = 0.0  # wall-clock time (Retry-After), so it can be persisted
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HostLimiter:
    """Hands out permission to send one request to a host.

    At most `per_host` requests to one host at once, request starts spaced by `min_delay`
    seconds (or the host's own robots.txt Crawl-delay, when longer), and none at all before
    a time the host gave in Retry-After.
    """

    def __init__(self, per_host: int = 2, min_delay: float = 0.0) -> None:
        self.per_host = per_host
        self.min_delay = min_delay
        self._slots: dict[str, _HostSlot] = {}
        self._not_before: dict[str, float] = {}
        self._host_delays: dict[str, float] = {}

    def set_host_delay(self, host: str, seconds: float) -> None:
        """A host's own minimum spacing (robots.txt Crawl-delay)."""
        if seconds > 0:
            self._host_delays[host] = seconds
        else:
            self._host_delays.pop(host, None)

    def delay_for(self, host: str) -> float:
        return max(self.min_delay, self._host_delays.get(host, 0.0))

    def ready_at(self, host: str) -> float:
        """The wall time from which `host` may be sent its next request."""
        ready = self._not_before.get(host, 0.0)
        slot = self._slots.get(host)
        if slot is not None and slot.next_start > 0:
            loop_now = asyncio.get_running_loop().time()
            ready = max(ready, time.time() + (slot.next_start - loop_now))
        return ready

    def not_before(self, host: str) -> float:
        return self._not_before.get(host, 0.0)

    def defer_host(self, host: str, until_wall_time: float) -> None:
        """Retry-After: no request to `host` before `until_wall_time` (time.time())."""
        if until_wall_time > self._not_before.get(host, 0.0):
            self._not_before[host] = until_wall_time

    @asynccontextmanager
    async def slot(self, host: str, url: str) -> AsyncIterator[None]:
        wait_until = self._not_before.get(host, 0.0)
        if wait_until > time.time():
            raise HostBackoffError(url, wait_until)
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = _HostSlot(asyncio.Semaphore(self.per_host))
        slot.users += 1
        spacing = self.delay_for(host)
        try:
            async with slot.semaphore:
                if spacing > 0:
                    async with slot.lock:
                        loop_now = asyncio.get_running_loop().time()
                        delay = slot.next_start - loop_now
                        slot.next_start = max(loop_now, slot.next_start) + spacing
                    if delay > 0:
                        await asyncio.sleep(delay)
                # Another request may have been told to back off while this one waited.
                wait_until = self._not_before.get(host, 0.0)
                if wait_until > time.time():
                    raise HostBackoffError(url, wait_until)
                yield
        finally:
            slot.users -= 1
            if slot.users == 0 and spacing <= 0:
                # Keep memory flat with many hosts; a host with a delay keeps its clock.
                self._slots.pop(host, None)
