"""The watcher and a live link's own writes.

What a link puts in place raises inotify events on the receiving node; the
watcher lets a path go without a rescan only while its signature is exactly
what the link's write left there.  A local write to the same path right
after still counts, and reaches the peer.
"""

from __future__ import annotations

import os
import re

import pytest
from conftest import DaemonNode, tracked, wait_for


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
