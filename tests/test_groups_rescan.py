"""An asked sync trusts a live watcher; the poll rescans every group whatever it says.

A full reconcile over a live link used to rescan each group's tree first, on
both sides, even when inotify had told every change already: at a few files
a group, that rescan was half the cost of a resync (bench/groups_bench.py).
Now an asked sync (``owsync sync``, ubus ``sync``) rescans a group only when
its watcher is not live, has events not yet told, or was (re)started after
the last full rescan began; the poll (``poll_interval``, the safety net) and
a VRRP transition always rescan.  These tests hold both halves with real
daemons: nothing a write told inotify is missed by a sync that follows it at
once, and a change inotify never reports (a file written in place and left
open: no IN_CLOSE_WRITE) is still found, by the poll.
"""

from __future__ import annotations

import os

import pytest
from conftest import GroupDaemonNode, tracked, wait_for

SYNC = 30.0


@pytest.fixture
def routers(tmp_path):
    yield from tracked(tmp_path, GroupDaemonNode)


def pair(routers, poll=60):
    a, b = routers("a"), routers("b")
    a.configure([b.addr], poll=poll)
    b.configure([a.addr], poll=poll)
    a.start()
    b.start()
    return a, b


def linked(node: GroupDaemonNode) -> bool:
    """Every group of ``node`` has its live link with the peer up."""
    try:
        st = node.status()
    except AssertionError:
        return False
    return all(
        all(v == "synced" for v in g["peers"].values()) and g["peers"] for g in st["groups"]
    ) and all(p.get("state") == "connected" for p in st["peers"])


def holds(path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def sync_wait(node: GroupDaemonNode) -> None:
    r = node.ctl("sync", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr + node.text()


def test_a_sync_asked_right_after_a_write_carries_it(routers):
    """The write's inotify event is queued when the write returns: a sync
    asked then rescans (the watcher is not quiet), so the peer holds the file
    once the sync returns, with no wait, in main and in a group alike."""
    a, b = pair(routers)
    assert wait_for(lambda: linked(a) and linked(b), SYNC), a.text() + b.text()
    sync_wait(a)  # the start's scans are behind: from here on a sync trusts the watcher
    for i in range(12):
        where = a.dir if i % 2 else a.keys
        (where / f"now{i}").write_bytes(b"written just before the sync %d" % i)
        sync_wait(a)
        peer = (b.dir if i % 2 else b.keys) / f"now{i}"
        assert peer.read_bytes() == b"written just before the sync %d" % i, i
    # and a sync of nothing new moves nothing
    out = a.ctl("sync", "--wait")
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout
    assert a.errors() == [] and b.errors() == []


def test_a_change_inotify_never_reports_is_found_by_the_poll(routers):
    """A file rewritten in place and left open: inotify says nothing (no
    close, and IN_MODIFY is not watched).  An asked sync trusts the quiet
    watcher and does not carry it; the next poll's full rescan does."""
    poll = 3
    a, b = pair(routers, poll=poll)
    old, new = b"the old key\n", b"the new key, written in place\n"
    (a.keys / "hostkey").write_bytes(old)
    assert wait_for(lambda: holds(b.keys / "hostkey", old), SYNC), a.text() + b.text()
    assert wait_for(lambda: linked(a) and linked(b), SYNC), a.text() + b.text()
    sync_wait(a)
    f = open(a.keys / "hostkey", "r+b")  # noqa: SIM115 - left open on purpose
    try:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
        sync_wait(a)  # nothing told the watcher: this sync does not rescan
        assert (b.keys / "hostkey").read_bytes() == old
        # the poll (every `poll` s on each node) rescans a's tree in full
        assert wait_for(lambda: holds(b.keys / "hostkey", new), 4 * poll + SYNC), a.text()
    finally:
        f.close()
    assert a.errors() == [] and b.errors() == []
