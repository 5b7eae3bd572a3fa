"""Files that two nodes already hold alike before they first sync.

A common HA setup: both routers were configured alike before owsync was
installed.  Each node's first scan takes its files for writes made here, not
yet sent; the first sync finds the peer holding the same content (nothing is
transferred), which counts as the peer having them.  A later write from the
peer then replaces the file here as a plain "replaced", never a conflict.

Real `owsync listen` / `connect` processes (v2, and v1 as 1.2.0 speaks it)
and two live-linked daemons, on loopback, with real files.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import KEY, DaemonNode, Node, c_bin, store_versions, tracked, wait_for

SAME = {"network": "config interface lan\n", "firewall": "config zone lan\n"}


def kept(node) -> dict[str, str]:
    """path -> why its kept version was kept (the store checked on disk)."""
    return {v["path"]: v["reason"] for v in store_versions(node.db.with_suffix(".versions"))}


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


@pytest.mark.parametrize("max_protocol", [None, 1], ids=["v2", "v1-as-1.2.0"])
def test_files_alike_at_the_first_session_are_no_conflict_later(tmp_path, max_protocol):
    a = Node(tmp_path, "a", max_protocol=max_protocol)
    b = Node(tmp_path, "b", max_protocol=max_protocol)
    now = time.time()
    # configured alike by hand, at other times: "network" on the same
    # second, "firewall" an hour apart
    a.write("network", SAME["network"], mtime=now - 7200)
    b.write("network", SAME["network"], mtime=now - 7200)
    a.write("firewall", SAME["firewall"], mtime=now - 7200)
    b.write("firewall", SAME["firewall"], mtime=now - 3600)
    a.listen()
    try:
        r = b.sync_ok(a)
        assert "received 0, sent 0" in r.stdout, r.stdout
        # the listener changes both files; b receives them
        a.write("network", "config interface lan\n\toption proto static\n")
        a.write("firewall", "config zone lan\n\toption input ACCEPT\n")
        r = b.sync_ok(a)
        assert "received 2" in r.stdout, r.stdout
        assert "conflict" not in r.stderr, r.stderr
        assert kept(b) == {"network": "replaced", "firewall": "replaced"}
        # and the other way: b's new write replaces a's untouched first copy...
        b.write("dhcp", "config dnsmasq\n", mtime=now - 7200)
        a.write("dhcp", "config dnsmasq\n", mtime=now - 60)
        b.sync_ok(a)  # (alike again: nothing moves, both now know it)
        b.write("dhcp", "config dnsmasq\n\toption domain lan\n")
        r = b.sync_ok(a)
        assert "sent 1" in r.stdout, r.stdout
        log = a.wait_log("sync with")
        assert "conflict" not in log, log
        assert wait_for(lambda: kept(a).get("dhcp") == "replaced"), kept(a)
    finally:
        a.stop()


@pytest.mark.skipif(c_bin() is None, reason="needs OWSYNC_C_BIN (owsync 1.2.0)")
def test_files_alike_with_a_1_2_0_peer_are_no_conflict_later(nodes, tmp_path):
    """owsync 1.2.0 connects to our listener; alike at first, then it writes."""
    py = nodes("py")
    cdir = tmp_path / "c"
    now = time.time()
    for d, age in ((py.dir, 7200), (cdir, 3600)):
        d.mkdir(exist_ok=True)
        (d / "network").write_text(SAME["network"])
        os.utime(d / "network", (now - age, now - age))
    py.listen()
    env = {**os.environ, "OWSYNC_KEY": KEY}
    args = [c_bin(), "connect", "127.0.0.1", "-P", str(py.port), "-d", str(cdir),
            "-b", str(tmp_path / "c.db"), "-i", "*"]  # fmt: skip
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ok: received 0, sent 0" in py.wait_log("ok: received"), py.log.read_text()
    (cdir / "network").write_text("config interface lan\n\toption proto static\n")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    log = py.wait_log("ok: received 1")
    assert "ok: received 1" in log and "conflict" not in log, log
    assert kept(py) == {"network": "replaced"}


def test_a_real_concurrent_write_after_alike_files_is_still_a_conflict(nodes):
    """Alike at the first sync, then each node writes its own content before
    they meet again: the older write loses and is kept as a conflict."""
    a, b = nodes("a"), nodes("b")
    now = time.time()
    a.write("firewall", SAME["firewall"], mtime=now - 7200)
    b.write("firewall", SAME["firewall"], mtime=now - 3600)
    a.listen()
    b.sync_ok(a)
    b.write("firewall", "written on b\n", mtime=now - 5)
    a.write("firewall", "written on a\n", mtime=now)
    r = b.sync_ok(a)
    assert "conflict: firewall, written here, lost" in r.stderr, r.stderr
    assert kept(b) == {"firewall": "conflict"}


def test_daemons_starting_alike_log_no_conflict_on_a_later_change(daemons):
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr])
    b.configure([a.addr])
    now = time.time()
    for node, age in ((a, 7200), (b, 3600)):  # alike, written at other times
        for name, text in SAME.items():
            (node.dir / name).write_text(text)
            t = now - age
            os.utime(node.dir / name, (t, t))
    a.start()
    b.start()
    assert wait_for(lambda: "up (live" in a.text() and "up (live" in b.text(), 20)
    for node in (a, b):  # each side's index reached the other
        r = node.ctl("sync", "--wait")
        assert r.returncode == 0 and ": ok" in r.stdout, r.stdout + r.stderr
    (a.dir / "network").write_text("config interface lan\n\toption proto static\n")
    (b.dir / "firewall").write_text("config zone lan\n\toption input ACCEPT\n")
    assert wait_for(lambda: kept(b).get("network") == "replaced", 20), b.text()
    assert wait_for(lambda: kept(a).get("firewall") == "replaced", 20), a.text()
    assert "conflict" not in a.text() + b.text()
    assert a.status()["conflicts"] == [] and b.status()["conflicts"] == []
