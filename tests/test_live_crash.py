"""A daemon killed at a crash point of a live link's batch, then restarted.

tests/test_crash_points.py enumerates every crash point under a receiving
`owsync connect`.  Here the receiver is a daemon taking a batch over its live
link (new files, replaced files whose versions are kept, a deletion): it is
killed (SIGKILL, by the crash-point hook) at the first call of each point the
live step reaches, then started again.  Each file is then old or new, never
half-written; after the restart the link comes back and both trees are the
writer's, with no deleted file back, no temp file left, and a database that
loads.
"""

from __future__ import annotations

import signal

import pytest
from conftest import DaemonNode, armed, base_env, tracked, wait_for

from owsync.io import database

POINTS = [
    "syncdir.create.temp",
    "syncdir.syncfs.batch",
    "syncdir.rename.noreplace",
    "syncdir.rename.exchange",
    "syncdir.unlink.deleted",
    "database.journal.write",
    "database.journal.fsync",
    "versions.rename.index",
]
OLD = {f"keep{i}": f"v1 {i}\n".encode() for i in range(4)}
NEW = {f"keep{i}": f"v2 {i}\n".encode() for i in range(4)} | {"sub/new": b"new\n"}


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def tree(d: DaemonNode) -> dict[str, bytes]:
    """The synced files (not owsync's temp files, which come and go meanwhile)."""
    out = {}
    for p in sorted(d.dir.rglob("*")):
        if p.name.startswith(".owsync-"):
            continue
        try:
            out[p.relative_to(d.dir).as_posix()] = p.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
    return out


def temps(d: DaemonNode) -> list[str]:
    return [p.name for p in d.dir.rglob(".owsync-*")]


@pytest.mark.parametrize("point", POINTS)
def test_a_daemon_killed_in_a_live_batch_keeps_old_or_new_and_converges(daemons, point):
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr])
    b.configure([a.addr])
    for name, data in OLD.items():
        (a.dir / name).write_bytes(data)
    (a.dir / "gone").write_bytes(b"deleted on a\n")
    a.start()
    b.start()
    assert wait_for(lambda: tree(b) == tree(a), 15), b.text()
    b.stop()
    b.start(env=base_env(None) | armed(crash_at=(point, 1)))
    assert wait_for(lambda: b.status()["peers"][0]["state"] == "connected", 15), b.text()

    for name, data in NEW.items():
        (a.dir / name).parent.mkdir(exist_ok=True)
        (a.dir / name).write_bytes(data)
    (a.dir / "gone").unlink()
    assert wait_for(lambda: b.proc.poll() is not None, 15), f"{point} was not reached\n{b.text()}"
    assert b.proc.returncode == -signal.SIGKILL, b.text()
    for name in OLD:  # never half-written: the old version or the new one
        assert (b.dir / name).read_bytes() in (OLD[name], NEW[name]), name
    assert not (b.dir / "sub/new").exists() or (b.dir / "sub/new").read_bytes() == NEW["sub/new"]

    b.stop()
    b.start()
    assert wait_for(lambda: tree(b) == tree(a) == NEW, 20), (point, tree(b), b.text())
    assert wait_for(lambda: not temps(b), 10), temps(b)
    records = database.load(str(b.db), set_aside=False)
    assert records["gone"].deleted and not records["keep0"].deleted, records
    assert "Traceback" not in b.text() and "internal error" not in b.text(), b.text()
