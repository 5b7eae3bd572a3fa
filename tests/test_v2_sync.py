"""Protocol v2 between two of our nodes, end to end: real processes, sockets, files.

Two nodes negotiate v2 after their v1 Hellos (plain and encrypted); files of
any size stream from disk to disk in chunks, so a file larger than v1 could
carry arrives with memory bounded by a few chunks; max_file_size stays a policy.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest
from conftest import KEY, MiB, Peak, summary

MODES = ["plain", "encrypted"]


def pair(nodes, mode: str, max_file_size: int | None = None, tmp=None):
    extra = ["-p"] if mode == "plain" else []
    key = None if mode == "plain" else KEY
    made = []
    for name in ("a", "b"):
        opts = list(extra)
        if max_file_size is not None:
            cfg = tmp / f"{name}.conf"
            cfg.write_text(f"max_file_size={max_file_size}\ninclude=*\n")
            opts += ["-c", str(cfg)]
        made.append(nodes(name, key=key, extra=opts))
    return made


@pytest.mark.parametrize("mode", MODES)
def test_two_of_our_nodes_speak_v2_both_ways(nodes, mode):
    a, b = pair(nodes, mode)
    a.write("etc/dhcp", "from a")
    a.write("gone", "to be deleted")
    b.write("etc/firewall", "from b")
    a.listen()
    r = b.sync_ok(a)
    got = summary(r)
    assert got["protocol"] == 2
    assert (got["received"], got["sent"]) == (2, 1)
    assert "protocol 2" in a.wait_log("ok: received 1, sent 2")
    assert a.files() == b.files()
    # a deletion and an edit travel too, and a second session has nothing to do
    (b.dir / "gone").unlink()
    a.write("etc/dhcp", "edited on a")
    got = summary(b.sync_ok(a))
    assert (got["received"], got["sent"], got["deleted"]) == (1, 0, 0)
    assert a.files() == b.files() == {"etc/dhcp": b"edited on a", "etc/firewall": b"from b"}
    got = summary(b.sync_ok(a))
    assert (got["received"], got["sent"], got["deleted"]) == (0, 0, 0)


def test_a_v1_only_node_and_ours_speak_v1(nodes):
    """A node that does not advertise v2 (owsync 1.2.0; here ours with
    OWSYNC_MAX_PROTOCOL=1) gets protocol v1, whichever side connects."""
    a = nodes("a", max_protocol=1)
    b = nodes("b")
    a.write("x", "from a")
    a.listen()
    assert summary(b.sync_ok(a))["protocol"] == 1
    a.stop()
    b.write("y", "from b")
    b.listen()
    assert summary(a.sync_ok(b))["protocol"] == 1
    assert a.files() == b.files() == {"x": b"from a", "y": b"from b"}


@pytest.mark.parametrize("mode", MODES)
def test_a_file_larger_than_v1_can_carry_streams_with_bounded_memory(nodes, tmp_path, mode):
    """96 MiB each way at once: v1 would hold it whole, as hex, on both sides
    (about 3x its size); v2 holds a few 64 KiB chunks."""
    a, b = pair(nodes, mode, max_file_size=128 * MiB, tmp=tmp_path)
    size = 96 * MiB
    for node, name in ((a, "big-a"), (b, "big-b")):
        with open(node.dir / name, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
    a.listen()
    peak = Peak(a.proc.pid)
    r = b.sync_ok(a)
    assert summary(r)["protocol"] == 2
    for name in ("big-a", "big-b"):
        ha = hashlib.sha256((a.dir / name).read_bytes()).hexdigest()
        assert ha == hashlib.sha256((b.dir / name).read_bytes()).hexdigest()
    peak.check(f"listener, {mode}, 96 MiB each way", bound=24 * MiB)
    assert not [p for p in a.dir.iterdir() if p.name.startswith(".owsync-")]


def test_max_file_size_is_a_policy_on_v2(nodes, tmp_path):
    """A file over max_file_size is neither sent nor requested, with a warning;
    the rest of the session goes on."""
    a, b = pair(nodes, "encrypted", max_file_size=1 * MiB, tmp=tmp_path)
    a.write("small", "s")
    a.write("large", os.urandom(MiB + 1))
    a.listen()
    r = b.sync_ok(a)
    assert summary(r)["protocol"] == 2
    assert b.files() == {"small": b"s"}
    assert "not receiving large from" in r.stderr and "too large" in r.stderr


def test_connect_pushing_a_file_over_max_file_size_says_too_large(nodes, tmp_path):
    """The sending side says so too, as 1.2.0 does (its security suite's test 4
    looks for "too large" in the output of `connect`), and the listener logs
    the same; nothing of the file travels, the rest does."""
    a, b = pair(nodes, "plain", max_file_size=1 * MiB, tmp=tmp_path)
    b.write("large.bin", os.urandom(MiB + 1))
    b.write("small", "s")
    a.listen()
    r = b.sync_ok(a)
    assert summary(r)["protocol"] == 2 and summary(r)["sent"] == 1
    assert re.search(rf"not sending large.bin to \S+: too large \({MiB + 1} bytes", r.stderr)
    assert a.files() == {"small": b"s"}
    assert "not receiving large.bin from" in a.wait_log("not receiving large.bin")
    # The listener, the sender now, says it as well.
    a.write("other.bin", os.urandom(MiB + 1))
    r = b.sync_ok(a)
    assert "not receiving other.bin from" in r.stderr
    assert "not sending other.bin to" in a.wait_log("not sending other.bin")


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1"])
def test_a_peer_whose_directory_is_busy_is_worth_a_quick_retry(tmp_path, v2):
    """The accepting side cannot take its directory (another session holds it):
    it gives the session up, and the connecting side marks the failure busy, so
    the daemon retries it within a second instead of backing off."""
    import socket
    import threading

    from owsync.core.crypto import AesGcmCipher
    from owsync.core.filters import Filter
    from owsync.io import database
    from owsync.service.context import Context
    from owsync.service.engine import run_session

    key = bytes.fromhex(KEY)
    ctxs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"from-{name}").write_text(name)
        ctxs[name] = Context(str(tmp_path / name), str(tmp_path / f"{name}.db"), Filter(["*"]),
                             AesGcmCipher(key), lock_timeout=0.2, idle_timeout=5,
                             advertise_v2=v2 or name == "a")  # fmt: skip
    held = database.DirLock(str(tmp_path / "b.db"))
    held.acquire(1)
    try:
        s1, s2 = socket.socketpair()
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("b", run_session(s2, ctxs["b"], "a")))
        t.start()
        ra = run_session(s1, ctxs["a"], "b", initiator=True)
        t.join(10)
    finally:
        held.release()
    rb = box["b"]
    assert not ra.ok and not rb.ok
    assert rb.busy and "another session" in rb.error
    assert ra.busy, ra.error
    assert ra.protocol == (2 if v2 else 1)
    if v2:
        assert "the peer gave the session up: another session" in ra.error
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["from-a"]
