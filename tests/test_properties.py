"""Property tests of the plan, run through the real engine on real directories.

Each session is two run_session() calls talking over a socketpair, on real
files in temporary directories; hypothesis picks the edits.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from owsync.core.crypto import PlainCipher
from owsync.core.filters import Filter
from owsync.service.context import Context
from owsync.service.engine import run_session

T0 = 1_800_000_000.0  # a fixed "now" for every node in these tests


class Mem:
    """A node: a directory and its database, with a pinned clock."""

    def __init__(self, base: Path, name: str) -> None:
        self.dir = base / name
        self.dir.mkdir()
        self.ctx = Context(
            root=str(self.dir),
            db_path=str(base / f"{name}.db"),
            filter=Filter(["*"]),
            cipher=PlainCipher(),
            hostname=name,
            clock=lambda: self.now,
            idle_timeout=5,
        )
        self.now = T0

    def write(self, path: str, data: bytes, mtime: float) -> None:
        p = self.dir / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (mtime, mtime))

    def delete(self, path: str) -> None:
        (self.dir / path).unlink(missing_ok=True)

    def files(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.dir)): p.read_bytes() for p in self.dir.rglob("*") if p.is_file()
        }


def sync(x: Mem, y: Mem):
    s1, s2 = socket.socketpair()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("y", run_session(s2, y.ctx, x.ctx.hostname)))
    t.start()
    rx = run_session(s1, x.ctx, y.ctx.hostname, initiator=True)
    t.join(10)
    ry = box["y"]
    assert rx.ok and ry.ok, (rx.error, ry.error)
    return rx, ry


PATHS = ["a", "b", "sub/c"]
edit = st.tuples(
    st.sampled_from(["write", "delete"]),
    st.sampled_from(PATHS),
    st.sampled_from([b"one", b"two", b"three"]),
    # few distinct mtimes, so ties happen; +5 lands on the scan time of the tombstones
    st.sampled_from([-3.0, -2.0, -1.0, 0.0, 5.0]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(edit, max_size=4),
    edits_x=st.lists(edit, max_size=5),
    edits_y=st.lists(edit, max_size=5),
)
@example(  # a deletion and a write stamped the same millisecond
    initial=[("write", "a", b"one", 0.0)],
    edits_x=[("delete", "a", b"one", 0.0)],
    edits_y=[("write", "a", b"two", 5.0)],
)
def test_two_nodes_end_identical_and_resync_is_empty(initial, edits_x, edits_y):
    base = Path(tempfile.mkdtemp(prefix="owsync-prop-"))
    try:
        x, y = Mem(base, "x"), Mem(base, "y")
        for op, path, data, dt in initial:
            x.write(path, data, T0 + dt) if op == "write" else x.delete(path)
        sync(x, y)
        assert x.files() == y.files()
        x.now = y.now = T0 + 10
        for node, edits in ((x, edits_x), (y, edits_y)):
            for op, path, data, dt in edits:
                node.write(path, data, T0 + 5 + dt) if op == "write" else node.delete(path)
        sync(x, y)
        assert x.files() == y.files()
        rx, ry = sync(y, x)
        assert (rx.received, rx.sent, rx.deleted) == (0, 0, 0)
        assert (ry.received, ry.sent, ry.deleted) == (0, 0, 0)
    finally:
        shutil.rmtree(base)


def test_three_nodes_deletion_does_not_beat_a_later_recreation(tmp_path):
    """1.2.0's first defect (docs/PROTOCOL.md): a tombstone re-stamped on arrival
    deleted a newer file."""
    n0, n1, n2 = (Mem(tmp_path, f"n{i}") for i in range(3))
    n1.write("a.conf", b"v1", T0 - 10)
    sync(n1, n2)
    sync(n1, n0)
    n1.delete("a.conf")
    n1.now = n2.now = n0.now = T0 + 1  # node 1 deletes at T0+1 (its scan time)
    sync(n1, n2)
    n1.write("a.conf", b"v2", T0 + 1.04)  # re-created 40 ms later
    n0.now = T0 + 5  # node 0 hears of the deletion later
    sync(n2, n0)
    sync(n0, n1)
    sync(n1, n2)
    for n in (n0, n1, n2):
        assert n.files() == {"a.conf": b"v2"}


def test_three_nodes_latest_write_survives_relay(tmp_path):
    """1.2.0's second defect (docs/PROTOCOL.md): a copy stamped with its arrival
    time beat a later write."""
    x, y, z = (Mem(tmp_path, n) for n in "xyz")
    x.write("f", b"v1", T0 - 20)
    sync(x, y)
    x.write("f", b"v3", T0 - 10)
    for n in (x, y, z):
        n.now = T0 + 30  # y's copy of v1 travels on later
    sync(y, z)
    sync(z, x)
    for n in (x, z):
        assert n.files() == {"f": b"v3"}
    sync(x, y)
    assert y.files() == {"f": b"v3"}
