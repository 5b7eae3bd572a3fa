"""The sync plan: last writer wins, per path.  Pure code, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .state import Record


class Plan:
    __slots__ = ("deletions", "requests", "same", "learned")

    def __init__(self) -> None:
        self.deletions: list[Record] = []  # remote tombstones to apply
        self.requests: list[str] = []  # paths to ask the peer for
        # remote tombstones of paths this node has no record of: recorded
        # (nothing to remove), so that an older copy from a peer that has
        # not heard of the deletion loses here too, and this node tells it on
        self.learned: list[Record] = []
        # (path, hash) of live files the peer holds with our content: a write
        # made here that it has already (alike from the start, or received)
        self.same: list[tuple[str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.deletions or self.requests)


def remote_wins(remote: Record, local: Record | None) -> bool:
    """Whether the remote version replaces the local one.

    The later write wins.  On equal mtimes the larger hash wins, and a live
    version beats a tombstone: 1.2.0 leaves that tie unresolved, so the two
    nodes would never converge; a 1.2.0 peer takes no action on it either,
    so breaking it this way stays compatible.
    """
    if local is None:
        return not remote.deleted
    if remote.deleted:
        return not local.deleted and remote.mtime > local.mtime
    if local.deleted:
        return remote.mtime >= local.mtime
    if remote.hash == local.hash:
        return False
    if remote.mtime != local.mtime:
        return remote.mtime > local.mtime
    return remote.hash > local.hash  # type: ignore[operator]


def make_plan(
    local: dict[str, Record], remote: Iterable[Record], accept: Callable[[str], bool]
) -> Plan:
    """Decide what to delete locally and what to request, in the peer's order;
    note the files the peer holds as we do, and the deletions of paths we
    never had."""
    plan = Plan()
    seen: set[str] = set()
    for r in remote:
        if r.path in seen or not accept(r.path):
            continue
        seen.add(r.path)
        mine = local.get(r.path)
        if mine is None and r.deleted:
            plan.learned.append(r)
            continue
        if not remote_wins(r, mine):
            if mine is not None and r.hash is not None and r.hash == mine.hash:
                plan.same.append((r.path, r.hash))  # (a tombstone has no hash)
            continue
        if r.deleted:
            plan.deletions.append(r)
        else:
            plan.requests.append(r.path)
    return plan
