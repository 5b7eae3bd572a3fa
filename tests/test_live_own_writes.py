"""The watcher and a live link's own writes.

What a link puts in place raises inotify events on the receiving node; the
watcher lets a path go without a rescan only while its signature is exactly
what the link's write left there.  A local write to the same path right
after still counts, and reaches the peer.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from conftest import DaemonNode, tracked, wait_for, write_at

from owsync.io import database


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


SKIPPED = re.compile(r"watcher: (\d+) path\(s\) as this node's links wrote them, not rescanned")


def test_a_links_writes_cost_no_rescan_and_a_local_write_after_them_still_counts(daemons):
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr])
    b.configure([a.addr])
    for i in range(200):
        sub = a.dir / f"d{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:03d}").write_bytes(b"from a %03d\n" % i)
    a.start()
    b.start()
    assert wait_for(lambda: all(b.has(f"d{i % 4}/f{i:03d}") for i in range(200)), 60), b.text()
    # b's watcher saw the link's renames and let those paths go
    assert wait_for(lambda: sum(int(n) for n in SKIPPED.findall(b.text())) > 0), b.text()
    # a local write on b, the same size, right after the link's: not let go
    for i in range(0, 200, 20):
        p = b.dir / f"d{i % 4}/f{i:03d}"
        p.write_bytes(b"from b %03d\n" % i)
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # newer than a's
    want = {f"d{i % 4}/f{i:03d}": b"from b %03d\n" % i for i in range(0, 200, 20)}
    assert wait_for(lambda: all(a.has(p, d) for p, d in want.items()), 30), a.text()
    assert all(b.has(p, d) for p, d in want.items())
    assert "local change detected" in b.text()


def _link(node: DaemonNode, peer: DaemonNode) -> dict | None:
    """``node``'s live link with ``peer``, once it has reconciled (None before)."""
    for p in node.status()["peers"]:
        if p["address"] == peer.addr and p.get("live") and p["live"].get("reconciles", 0) >= 1:
            return p["live"]
    return None


def test_an_older_copy_from_a_third_node_loses_to_a_deletion_told_before(daemons):
    """n2 never had x; n0 deleted it and told n2 so; n1, down meanwhile, still
    holds the older x and links with n2 while n0 is frozen: n2 must not take it
    (it has no tombstone of its own for a file it never had)."""
    n = [daemons(f"n{i}") for i in range(3)]
    for d in n:
        d.configure([m.addr for m in n if m is not d], poll=600)
        d.start()
    n[2].stop()
    write_at(n[0].dir / "x", b"X v1\n")
    assert wait_for(lambda: n[1].has("x", b"X v1\n"), 20)
    n[1].stop()
    (n[0].dir / "x").unlink()

    def tombstone() -> bool:
        rec = database.load(str(n[0].db), set_aside=False).get("x")
        return rec is not None and rec.deleted

    assert wait_for(tombstone, 20), n[0].text()
    n[2].start()
    assert wait_for(lambda: _link(n[2], n[0]) is not None, 20), n[2].text()
    os.kill(n[0].proc.pid, signal.SIGSTOP)  # n0 silent: n1 meets n2 alone
    try:
        n[1].start()
        assert wait_for(lambda: _link(n[2], n[1]) is not None, 20), n[2].text()
        assert wait_for(lambda: _link(n[1], n[2]) is not None, 20), n[1].text()
        assert not n[2].has("x"), n[2].text()
    finally:
        os.kill(n[0].proc.pid, signal.SIGCONT)
    assert wait_for(lambda: not any(d.has("x") for d in n), 30), [d.text()[-1500:] for d in n]
