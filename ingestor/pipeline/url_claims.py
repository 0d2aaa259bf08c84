"""One task per article link at a time: the next task for the same link learns the record
the one before it settled (its page need not be fetched again)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class UrlClaim:
    """A link being worked on by one task; `known`: the record its article settled under."""

    def __init__(self, known: str | None) -> None:
        self.known = known
        self.released = asyncio.Event()


class UrlClaims:
    def __init__(self) -> None:
        self._inflight: dict[str, UrlClaim] = {}

    @contextlib.asynccontextmanager
    async def claim(self, canonical: str) -> AsyncIterator[UrlClaim]:
        """Wait for the task holding `canonical`, then hold it; `known` is the record the
        tasks before settled under it."""
        known = None
        while (held := self._inflight.get(canonical)) is not None:
            await held.released.wait()
            known = held.known or known
        claim = self._inflight[canonical] = UrlClaim(known)
        try:
            yield claim
        finally:
            del self._inflight[canonical]
            claim.released.set()
