"""Bounds: large transfers both ways, size limits, a full disk, concurrent sessions."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
from conftest import Hostile, rec, summary

from owsync.core import protocol

MB = 1024 * 1024


def conf_file(tmp_path, name: str, **settings) -> str:
    p = tmp_path / f"{name}.conf"
    p.write_text("include=*\n" + "".join(f"{k}={v}\n" for k, v in settings.items()))
    return str(p)


def test_twenty_megabytes_each_way_do_not_deadlock(nodes, tmp_path):
    """1.2.0 deadlocks at 8 MB each way; both ends here keep reading while writing."""
    conf = conf_file(tmp_path, "big", max_file_size=25_000_000)
    a = nodes("a", extra=["-c", conf]).listen()
    b = nodes("b", extra=["-c", conf])
    big_a, big_b = os.urandom(20_000_000), os.urandom(20_000_000)
    a.write("from-a.bin", big_a)
    b.write("from-b.bin", big_b)
    r = b.connect(a, timeout=120)
    assert r.returncode == 0, r.stderr
    s = summary(r)
    assert (s["received"], s["sent"]) == (1, 1)
    assert (a.dir / "from-b.bin").read_bytes() == big_b
    assert (b.dir / "from-a.bin").read_bytes() == big_a


def test_files_over_max_file_size_are_not_sent(nodes, tmp_path):
    a = nodes("a", extra=["-c", conf_file(tmp_path, "small", max_file_size=1000)]).listen()
    b = nodes("b")
    a.write("big", b"x" * 2000)
    a.write("small", b"y" * 10)
    r = b.connect(a)
    assert r.returncode == 0, r.stderr
    assert b.files() == {"small": b"y" * 10}
    assert "too large" in a.wait_log("too large")


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"needs a small tmpfs (mount as root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_fails_cleanly_without_partial_files(nodes, tiny_fs):
    a = nodes("a").listen()
    a.write("fits", b"f" * 1000)
    a.write("zz-huge", os.urandom(600 * 1024))
    b = nodes("b")
    b.dir = tiny_fs
    b.write("existing", b"keep me")
    b.run("connect", f"127.0.0.1:{a.port}", *b.opts())
    r = b.connect(a)
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "No space left on device" in err[0], r.stderr
    assert "Traceback" not in r.stderr
    # nothing half-written in place, no temp file left, local data intact
    assert (b.dir / "existing").read_bytes() == b"keep me"
    assert not (b.dir / "zz-huge").exists()
    assert not [p for p in b.dir.rglob("*") if ".owsync-" in p.name]
    json.loads(b.db.read_text())  # the database is still whole
    # space back (the big file gone from A): the next session completes
    (a.dir / "zz-huge").unlink()
    b.sync_ok(a)
    assert b.files() == {"existing": b"keep me", "fits": b"f" * 1000}
    assert a.files()["existing"] == b"keep me"


def test_two_concurrent_sessions_on_one_directory_are_serialized(nodes):
    """A `connect` from A's directory waits while A's listener serves another peer."""
    a = nodes("a").listen()
    c = nodes("c").listen()
    c.write("from-c", "c")
    a.write("from-a", "a")

    h = Hostile(a.port)
    h.send(protocol.Hello("slow", time.time()))
    assert isinstance(h.recv(), protocol.Hello)
    assert isinstance(h.recv(), protocol.SyncState)  # A has scanned: it holds the lock
    box = {}

    def run_connect():
        box["result"] = a.connect(c, timeout=60)
        box["done"] = time.monotonic()

    t = threading.Thread(target=run_connect)
    t.start()
    time.sleep(2.0)
    assert t.is_alive(), "connect did not wait for the lock"
    h.send(protocol.SyncState((rec("from-slow", b"slow", int(time.time() * 1000)),)))
    req = h.recv()
    assert req == protocol.RequestFiles(("from-slow",))
    h.send(protocol.FileContent("from-slow", 0o644, b"slow"))
    h.send(protocol.RequestFiles(()))
    h.send(protocol.EndOfSync())
    h.recv_until_closed()
    released = time.monotonic()
    h.close()
    t.join(60)
    r = box["result"]
    assert r.returncode == 0, r.stderr
    assert box["done"] >= released - 0.5
    files = json.loads(a.db.read_text())["files"]
    assert {"from-a", "from-c", "from-slow"} <= files.keys()
    assert c.files() == {"from-c": b"c", "from-a": b"a", "from-slow": b"slow"}


def test_a_failed_scan_releases_the_directory(tmp_path):
    """An unreadable database fails the session and must not keep the directory locked."""
    import socket
    import threading as th

    from owsync.core.crypto import PlainCipher
    from owsync.core.filters import Filter
    from owsync.service.context import Context
    from owsync.service.engine import run_session

    root = tmp_path / "d"
    root.mkdir()
    bad_db = tmp_path / "db-is-a-directory"
    bad_db.mkdir()
    owner = th.Lock()
    ctx = Context(str(root), str(bad_db), Filter(["*"]), PlainCipher(), owner=owner,
                  idle_timeout=5)  # fmt: skip
    peer_ctx = Context(str(tmp_path / "p"), str(tmp_path / "p.db"), Filter(["*"]), PlainCipher(),
                       idle_timeout=5)  # fmt: skip
    (tmp_path / "p").mkdir()
    s1, s2 = socket.socketpair()
    t = th.Thread(target=run_session, args=(s2, peer_ctx, "x"))
    t.start()
    result = run_session(s1, ctx, "p", initiator=True)
    t.join(10)
    assert not result.ok and "local I/O error" in result.error
    assert owner.acquire(timeout=0), "the in-process owner lock was left held"
    owner.release()


def test_unchanged_files_are_not_hashed_again(tmp_path):
    """Size, mtime, ctime and inode unchanged: the recorded hash is kept, the file unread."""
    import time as t

    from owsync.core.filters import Filter
    from owsync.io.scanner import scan

    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    for i in range(20):
        (root / "sub" / f"f{i}").write_bytes(b"%d" % i)
    now = int(t.time() * 1000)
    first = scan(str(root), {}, Filter(["*"]), frozenset(), now)
    assert first.hashed == 20
    again = scan(str(root), first.records, Filter(["*"]), frozenset(), now)
    assert again.hashed == 0 and again.records == first.records
    # same size, mtime put back: the ctime still tells, and the change is seen
    p = root / "sub" / "f3"
    st = p.stat()
    p.write_bytes(b"X")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = scan(str(root), again.records, Filter(["*"]), frozenset(), now)
    assert third.hashed == 1
    assert third.records["sub/f3"].hash != again.records["sub/f3"].hash
    assert third.records["sub/f3"].mtime > again.records["sub/f3"].mtime
