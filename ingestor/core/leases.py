"""Pure rules for work shared by several instances: may this instance claim a feed poll
now, and if not, when should it ask again."""

from __future__ import annotations


def feed_claim_wait(
    *,
    next_due: float,
    owner: str | None,
    lease_until: float,
    me: str,
    now: float,
    force: bool,
) -> tuple[float, str] | None:
    """None: the poll may be claimed now; else (when to ask again, why not now).

    A lease held by another live instance always wins; `force` (run --once) skips only the
    feed's schedule, as it does on one machine.
    """
    if owner is not None and owner != me and lease_until > now:
        return lease_until, f"being polled by instance {owner}"
    if not force and next_due > now:
        return next_due, "polled recently by another instance"
    return None
