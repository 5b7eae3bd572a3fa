"""`owsync daemon` in real processes on loopback."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    KEY,
    DaemonNode,
    base_env,
    free_port,
    owsync_cmd,
    summary,
    tracked,
    wait_for,
)

from owsync.core import protocol
from owsync.core.crypto import AesGcmCipher, fingerprint
from owsync.service.daemon import STOP_WAIT


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def pair(daemons, **kw):
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr], **kw)
    b.configure([a.addr], **kw)
    return a, b


def test_startup_sync_and_changes_propagate(daemons):
    a, b = pair(daemons)
    (a.dir / "from-a").write_text("a")
    (b.dir / "from-b").write_text("b")
    a.start()
    b.start()
    assert wait_for(lambda: a.has("from-b", b"b") and b.has("from-a", b"a"))
    # create
    (a.dir / "sub").mkdir()
    (a.dir / "sub" / "new.conf").write_text("v1")
    assert wait_for(lambda: b.has("sub/new.conf", b"v1"), 3)
    # modify, on the other side
    time.sleep(0.05)
    (b.dir / "sub" / "new.conf").write_text("v2")
    assert wait_for(lambda: a.has("sub/new.conf", b"v2"), 3)
    # delete
    (a.dir / "sub" / "new.conf").unlink()
    assert wait_for(lambda: not b.has("sub/new.conf"), 3)
    # no echo: each node took at most its own writes for local changes (A: create
    # and delete, B: modify), never the files it received.  (A write that a
    # session's own scan recorded first is not counted by the watcher again, so
    # under load a count may be lower; an echo would make it higher.)
    assert wait_for(lambda: a.status()["peers"][0]["state"] in ("idle", "connected"))
    time.sleep(0.5)
    assert 1 <= a.text().count("local change detected") <= 2, a.text()
    assert b.text().count("local change detected") <= 1, b.text()


def test_three_daemons_in_a_line_converge(daemons):
    a, b, c = daemons("a"), daemons("b"), daemons("c")
    a.configure([b.addr], poll=2)
    b.configure([c.addr], poll=2)
    c.configure([b.addr], poll=2)
    for d in (a, b, c):
        d.start()
    (a.dir / "from-a").write_text("a")
    assert wait_for(lambda: c.has("from-a", b"a"), 5)  # A -> B -> C without a poll
    (c.dir / "from-c").write_text("c")
    assert wait_for(lambda: a.has("from-c", b"c"), 8)  # C -> B, then A's poll of B


def test_peer_down_at_start_gets_changes_when_it_comes_up(daemons):
    a, b = pair(daemons)
    (a.dir / "early").write_text("x")
    a.start()
    assert wait_for(lambda: a.status()["peers"][0]["consecutive_failures"] >= 1, 5)
    st = a.status()["peers"][0]
    assert (
        st["state"] == "backing off" and st["next_retry"] and "cannot connect" in st["last_result"]
    )
    # the failures are recent activity too: one entry, counted up, not one per retry
    assert wait_for(lambda: a.status()["peers"][0]["consecutive_failures"] >= 2, 10)
    failed = [e for e in a.status()["history"] if not e["ok"]]
    assert len(failed) == 1 and "cannot connect" in failed[0]["error"], failed
    assert failed[0]["peer"] == b.addr and failed[0]["repeats"] >= 2
    b.start()
    assert wait_for(lambda: b.has("early", b"x"), 10)
    # the live link is up: the peer's row says so, and the failures stay one entry
    assert wait_for(lambda: a.status()["peers"][0]["state"] == "connected", 5)
    assert a.status()["peers"][0]["last_result"] == "ok"
    assert len([e for e in a.status()["history"] if not e["ok"]]) == 1


def test_failing_peer_does_not_delay_another(daemons):
    a, b = daemons("a"), daemons("b")
    dead = f"127.0.0.1:{free_port()}"
    a.configure([dead, b.addr])
    b.configure([a.addr])
    a.start()
    b.start()
    time.sleep(0.5)
    start = time.monotonic()
    (a.dir / "f").write_text("x")
    assert wait_for(lambda: b.has("f", b"x"), 5)
    assert time.monotonic() - start < 2.0
    peers = {p["address"]: p for p in a.status()["peers"]}
    assert peers[dead]["consecutive_failures"] >= 1 and peers[b.addr]["last_result"] == "ok"


def test_status_json_and_sync_wait(daemons):
    a, b = pair(daemons)
    a.start()
    b.start()
    (a.dir / "f").write_text("x")
    r = b.ctl("sync", "--wait")
    assert r.returncode == 0, r.stderr
    assert f"{a.addr}: ok" in r.stdout
    st = b.status()
    assert st["ok"] and st["version"] and st["encryption"] is True
    assert st["sync_dir"] == str(b.dir) and st["files"] >= 1
    (p,) = st["peers"]
    assert p["address"] == a.addr and p["last_result"] == "ok" and p["last_success"]
    assert {"state", "last_attempt", "received", "sent", "deleted", "bytes",
            "consecutive_failures", "next_retry"} <= p.keys()  # fmt: skip
    # the file arrived in one session or the other: A pushed it, or B fetched it
    (got,) = [e for e in st["history"] if e["arrived"] == ["f"]]
    assert got["ok"] and got["received"] == 1 and got["removed"] == []
    # incoming too, the peer it is (its live offer says its port), never its ephemeral port
    assert got["direction"] in ("outgoing", "incoming") and got["peer"] == a.addr
    assert st["key"] == {"set": True, "fingerprint": fingerprint(bytes.fromhex(KEY))}
    assert KEY not in json.dumps(st)
    r = b.ctl("sync", "nosuchpeer")
    assert r.returncode == 1 and "unknown peer" in r.stderr
    r = b.ctl("sync", a.addr)
    assert r.returncode == 0 and "started" in r.stdout
    text = b.ctl("status")
    assert text.returncode == 0 and a.addr in text.stdout and "STATE" in text.stdout


def test_status_without_daemon_is_a_clear_error(tmp_path):
    r = subprocess.run(
        owsync_cmd("status", "--control-socket", str(tmp_path / "none.sock")),
        env=base_env(None), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "not running" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("foreground", [["-f"], []])
def test_daemon_without_peers_names_peer(tmp_path, foreground):
    """In 1.2.0's words, which its own test suite greps; on stderr once, -f or not."""
    d = DaemonNode(tmp_path, "a").configure([])
    r = subprocess.run(owsync_cmd("daemon", *foreground, "-c", str(d.conf)), env=base_env(None),
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 1 and "requires at least one --auto-sync peer" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_sighup_adds_a_peer_without_dropping_the_listener(daemons):
    a, b = daemons("a"), daemons("b")
    dead = f"127.0.0.1:{free_port()}"
    a.configure([dead])
    b.configure([a.addr])
    a.start()
    (a.dir / "f").write_text("x")
    b.configure([f"127.0.0.1:{free_port()}"])  # B does not push to A on its own
    b.start()
    time.sleep(1)
    assert not b.has("f")
    a.configure([dead, b.addr])
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: b.has("f", b"x"), 5)
    assert "configuration reloaded" in a.text()
    assert len(a.status()["peers"]) == 2
    # the listener survived the reload: a session with A still works
    r = subprocess.run(
        owsync_cmd("connect", a.addr, "-c", str(b.conf)),
        env=base_env(None), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


EPHEMERAL = re.compile(r"127\.0\.0\.1:(\d+)")


def test_an_incoming_live_link_is_named_as_the_peer_it_is_by_the_port_it_offers(daemons):
    """A has two peers at B's address: the address alone cannot tell which one
    a link B made is, the port B's live offer says can.  Its logs, the history
    and the kept versions name B as configured, never by an ephemeral port."""
    a, b = daemons("a"), daemons("b")
    other = free_port()  # a second configured peer at the same address, down
    a.configure([b.addr, f"127.0.0.1:{other}"])
    b.configure([a.addr])
    (a.dir / "dhcp").write_text("lan")
    a.start()
    assert wait_for(lambda: f"sync with {b.addr} failed" in a.text(), 10), a.text()
    b.start()  # B makes the link, before A's backoff ends
    assert wait_for(lambda: b.has("dhcp", b"lan"), 10), a.text() + b.text()
    time.sleep(1.1)  # B's write is newer by the clock
    (b.dir / "dhcp").write_text("home")
    assert wait_for(lambda: a.has("dhcp", b"home"), 10), a.text()
    assert wait_for(lambda: [v for v in versions(a) if v["reason"] == "replaced"], 10)
    (kept,) = [v for v in versions(a) if v["reason"] == "replaced"]
    assert kept["peer"] == b.addr
    st = a.status()
    (got,) = [e for e in st["history"] if e["arrived"] == ["dhcp"]]
    assert got["direction"] == "incoming" and got["peer"] == b.addr
    peers = {p["address"]: p for p in st["peers"]}
    assert peers[b.addr]["state"] == "connected", peers
    assert re.search(rf"link with {re.escape(b.addr)} up", a.text()), a.text()
    known = {a.port, b.port, other}
    seen = {int(p) for p in EPHEMERAL.findall(a.text() + json.dumps(st))}
    assert seen <= known, (seen - known, a.text())


@pytest.mark.parametrize("v1", [False, True], ids=["connect-v2", "v1-as-1.2.0"])
def test_an_incoming_session_is_named_by_its_address_as_the_one_peer_there(daemons, nodes, v1):
    """`owsync connect` and owsync 1.2.0 (v1) say nothing of where they listen:
    the one configured peer at the address they come from is who they are;
    with two configured there, the address alone.  Never the ephemeral port."""
    a = daemons("a")
    there = f"127.0.0.1:{free_port()}"
    a.configure([there], poll=600)
    (a.dir / "dhcp").write_text("lan")
    a.start()
    c = nodes("c", max_protocol=1 if v1 else None)
    c.write("dhcp", "home")
    c.port = a.port  # c connects to A
    r = c.connect(c)
    assert r.returncode == 0, r.stderr
    assert summary(r)["protocol"] == (1 if v1 else 2)
    assert wait_for(lambda: versions(a), 10)
    (kept,) = versions(a)  # a conflict: A's write had reached no peer
    assert (kept["path"], kept["peer"]) == ("dhcp", there)
    assert wait_for(lambda: [e for e in a.status()["history"] if e["direction"] == "incoming"])
    (got,) = [e for e in a.status()["history"] if e["direction"] == "incoming"]
    assert got["peer"] == there and got["arrived"] == ["dhcp"]
    assert f"sync with {there} ok" in a.text()
    # two peers configured at that address: which one it is cannot be told
    a.configure([there, f"127.0.0.1:{free_port()}"], poll=600)
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "2 peer(s)" in a.text()), a.text()
    c.write("dhcp", "work", mtime=time.time() + 2)
    assert c.connect(c).returncode == 0
    assert wait_for(lambda: len(versions(a)) == 2), a.text()
    newest = versions(a)[0]
    assert (newest["path"], newest["peer"]) == ("dhcp", "127.0.0.1")
    assert "sync with 127.0.0.1 ok" in a.text()
    ports = {int(p) for p in EPHEMERAL.findall(a.text() + json.dumps(a.status()))}
    assert ports <= {a.port, *(int(p.split(":")[1]) for p in a.conf.read_text().split()
                                if p.startswith("peer="))}  # fmt: skip


def versions(d: DaemonNode) -> list[dict]:
    r = d.ctl("versions", "--json", "-c", str(d.conf))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["versions"]


def test_ipv6_loopback(daemons):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    a, b = daemons("a", host="::1"), daemons("b", host="::1")
    a.configure([b.addr])
    b.configure([a.addr])
    a.start()
    b.start()
    (a.dir / "v6").write_text("six")
    assert wait_for(lambda: b.has("v6", b"six"), 5)


def test_peer_with_a_source_address(daemons):
    a, b = daemons("a"), daemons("b", host="0.0.0.0")
    a.configure([f"127.0.0.1:{b.port},127.0.0.2"])
    b.configure([f"127.0.0.1:{a.port}"])
    b.start()
    a.start()
    (a.dir / "f").write_text("x")
    assert wait_for(lambda: b.has("f", b"x"), 5)
    # not a configured peer of b's address: named by that address alone
    assert wait_for(lambda: re.search(r"(sync|link) with 127\.0\.0\.2\b", b.text()), 5), b.text()


class SlowPeer(threading.Thread):
    """A peer that offers one big file and sends it slowly, to stop a daemon mid-transfer."""

    def __init__(self, size: int) -> None:
        super().__init__(daemon=True)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.data = os.urandom(size)
        self.sending = threading.Event()
        self.cipher = AesGcmCipher(bytes.fromhex(KEY))

    def frame(self, msg) -> bytes:
        payload = b"".join(self.cipher.seal_parts(protocol.encode_parts(msg)))
        return struct.pack(">I", len(payload)) + payload

    def run(self) -> None:
        import hashlib

        from owsync.core.state import Record

        conn, _ = self.srv.accept()
        with conn:
            conn.sendall(self.frame(protocol.Hello("slow", time.time())))
            rec = Record("big.bin", hashlib.sha256(self.data).hexdigest(),
                         int(time.time() * 1000), len(self.data), 0o644)  # fmt: skip
            conn.sendall(self.frame(protocol.SyncState((rec,))))
            conn.recv(65536)  # its Hello, state and request
            frame = self.frame(protocol.FileContent("big.bin", 0o644, self.data))
            self.sending.set()
            try:
                for i in range(0, len(frame), 256 * 1024):
                    conn.sendall(frame[i : i + 256 * 1024])
                    time.sleep(0.05)
            except OSError:
                pass


def test_sigterm_mid_transfer_leaves_no_partial_file(daemons):
    slow = SlowPeer(12_000_000)
    slow.start()
    b = daemons("b")
    b.configure([f"127.0.0.1:{slow.port}"])
    b.start()
    assert slow.sending.wait(10)
    time.sleep(0.5)  # well inside the ~5 s the frame takes
    assert b.stop() == 0
    assert "stopped" in b.text()
    assert not b.has("big.bin")
    assert not [p for p in b.dir.rglob("*")]  # no temp file either
    if b.db.exists():
        json.loads(b.db.read_text())


def _term_timeout() -> int:
    """procd's term_timeout, as the init script sets it."""
    root = Path(__file__).resolve().parents[1]
    init = (root / "openwrt/owsync/files/etc/init.d/owsync").read_text()
    return int(re.search(r"^\s*procd_set_param term_timeout (\d+)$", init, re.M)[1])


def test_the_slowest_stop_ends_cleanly_within_procds_term_timeout(daemons):
    """The worst case of a stop: SIGTERM while a peer worker sits in a connect
    to a peer that never answers (its SYNs dropped: a full listen backlog).
    The daemon waits for it as long as it may (STOP_WAIT), then says it
    stopped and exits 0, inside the term_timeout the init script gives
    procd (after which procd would SIGKILL it)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filled = []
    while True:  # fill the backlog: later SYNs are dropped, connect() hangs
        c = socket.socket()
        c.settimeout(0.5)
        try:
            c.connect(hole.getsockname())
        except OSError:
            c.close()
            break
        filled.append(c)
    a = daemons("a")
    a.configure([f"127.0.0.1:{hole.getsockname()[1]}"])
    a.start()
    assert wait_for(lambda: "listening on" in a.text(), 10), a.text()
    start = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0
    took = time.monotonic() - start
    print(f"stop took {took:.2f} s, STOP_WAIT {STOP_WAIT} s, term_timeout {_term_timeout()} s")
    assert a.text().rstrip().endswith("stopped"), a.text()
    assert took < _term_timeout() and _term_timeout() >= STOP_WAIT + 2
    for c in (*filled, hole):
        c.close()


def test_daemon_entirely_from_options(daemons, tmp_path):
    """As in owsync 1.2.0: no config file, every setting on the command line."""
    a, b = pair(daemons)
    a.start()
    b.dir = tmp_path / "b-opts"
    b.dir.mkdir()
    (b.dir / "from-opts").write_text("x")
    args = ["daemon", "-f", "-H", "127.0.0.1", "-P", str(b.port), "-d", str(b.dir),
            "-b", str(b.db), "-i", "*", "--auto-sync", a.addr,
            "--control-socket", str(b.sock), "--poll-interval", "30"]  # fmt: skip
    b.start(owsync_cmd(*args), base_env(KEY))
    assert wait_for(lambda: a.has("from-opts", b"x"), 10), b.text()
    assert b.status()["peers"][0]["address"] == a.addr


def test_new_subdirectories_are_watched_and_the_socket_is_private(daemons):
    a, b = pair(daemons)
    a.start()
    b.start()
    assert stat.S_IMODE(os.stat(a.sock).st_mode) == 0o600
    (a.dir / "new" / "deeper").mkdir(parents=True)
    time.sleep(0.6)  # the directory's own event has been handled; only a watch on it sees more
    (a.dir / "new" / "deeper" / "f").write_text("x")
    assert wait_for(lambda: b.has("new/deeper/f", b"x"), 3)  # the poll would take 60 s


def test_watcher_falls_back_to_polling_when_inotify_cannot_be_used(tmp_path):
    """inotify failing cannot be produced here without starving the whole machine of
    watches, so this one test stands a failing Inotify in for it; the polling is real."""
    from owsync.service import watcher

    class NoInotify(watcher.Inotify):
        def __init__(self, root):
            raise watcher.InotifyUnavailable("the inotify watch limit is reached")

    calls = []
    stop = threading.Event()
    logged: list[logging.LogRecord] = []
    catch = logging.Handler(logging.WARNING)
    catch.emit = logged.append
    real, watcher.Inotify = watcher.Inotify, NoInotify
    old_period, watcher.POLL_FALLBACK = watcher.POLL_FALLBACK, 0.05
    try:
        w = watcher.Watcher(str(tmp_path), lambda paths: calls.append(1), stop)
        logging.getLogger("owsync").addHandler(catch)
        w.start()
        assert wait_for(lambda: len(calls) >= 3, 5)
        stop.set()
        w.join(5)
    finally:
        logging.getLogger("owsync").removeHandler(catch)
        watcher.Inotify, watcher.POLL_FALLBACK = real, old_period
    assert w.mode == "polling"
    warnings = [r for r in logged if "polling" in r.getMessage()]
    assert len(warnings) == 1 and "watch limit" in warnings[0].getMessage()


def test_sighup_moving_the_sync_directory_moves_the_watch(daemons, tmp_path):
    a, b = pair(daemons)
    a.start()
    b.start()
    moved = tmp_path / "a-moved"
    moved.mkdir()
    a.dir = moved
    a.configure([b.addr])
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: a.status()["sync_dir"] == str(moved), 5)
    time.sleep(0.3)
    (moved / "in-new-dir").write_text("x")
    assert wait_for(lambda: b.has("in-new-dir", b"x"), 3), a.text() + b.text()


def test_the_daemon_never_forks_and_minus_f_only_adds_stderr(daemons):
    """As in 1.2.0: the process a supervisor starts is the daemon, with or without -f."""
    a, b = pair(daemons)
    b.start()
    a.start(owsync_cmd("daemon", "-c", str(a.conf)))  # no -f
    assert a.status()["pid"] == a.proc.pid  # the very process started: no fork
    assert os.getsid(a.proc.pid) == os.getsid(0)  # no session of its own either
    (a.dir / "f").write_text("x")
    assert wait_for(lambda: b.has("f", b"x"), 5)
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(10) == 0


def test_several_daemons_side_by_side_find_their_own_control_socket(daemons):
    """No control_socket anywhere: each daemon's socket is derived from its database,
    and `owsync status`/`sync` given the same options reach the right daemon."""
    nodes = [daemons(n) for n in "abc"]
    for n in nodes:
        n.configure([m.addr for m in nodes if m is not n])
        n.conf.write_text(n.conf.read_text().replace(f"control_socket={n.sock}\n", ""))
    for n in nodes:
        n.start(owsync_cmd("daemon", "-f", "-c", str(n.conf)), probe=False)
    try:
        for n in nodes:
            assert wait_for(lambda n=n: _status(n).returncode == 0, 10), n.text()
            st = json.loads(_status(n).stdout)
            assert st["pid"] == n.proc.pid and st["sync_dir"] == str(n.dir)

        def settled() -> bool:  # the start-up syncs, which race each other, are over
            peers = [p for n in nodes for p in json.loads(_status(n).stdout)["peers"]]
            return all(p["state"] in ("idle", "connected") and p["last_result"] == "ok"
                       for p in peers)  # fmt: skip

        assert wait_for(settled, 30)
        r = _cli("sync", "--wait", "-c", str(nodes[0].conf))
        assert r.returncode == 0 and r.stdout.count(": ok;") == 2, r.stdout + r.stderr
    finally:
        for n in nodes:
            n.proc.send_signal(signal.SIGTERM)
            assert n.proc.wait(10) == 0
    r = _status(nodes[0])
    assert r.returncode == 1 and "not running" in r.stderr and "Traceback" not in r.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        owsync_cmd(*args), env=base_env(None), capture_output=True, text=True, timeout=60
    )


def _status(node: DaemonNode) -> subprocess.CompletedProcess:
    return _cli("status", "--json", "-c", str(node.conf))


def test_a_second_daemon_on_the_same_database_says_so_in_one_line(daemons):
    a, b = pair(daemons)
    a.start()
    r = subprocess.run(owsync_cmd("daemon", "-f", "-c", str(a.conf)), env=base_env(None),
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "another owsync daemon answers" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert a.status()["pid"] == a.proc.pid  # the first one is unharmed


def test_a_taken_port_leaves_the_daemon_syncing_outward_and_retrying(daemons):
    """As 1.2.0 (whose daemon suite relies on it): the port is not fatal, and here the
    daemon binds it once it is free (an address not up yet at boot is the same case)."""
    a, b = pair(daemons)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", b.port))  # bound, not listening: A's pushes are refused
    try:
        a.start()
        (b.dir / "from-b").write_text("b")
        b.start()
        assert wait_for(lambda: a.has("from-b", b"b"), 5), b.text()  # outward sync works
        st = b.status()
        assert st["listen_error"] and "in use" in st["listen_error"]
        assert b.text().count("cannot listen on") == 1
    finally:
        squatter.close()
    assert wait_for(lambda: b.status().get("listen_error") is None, 10), b.text()
    (a.dir / "from-a").write_text("a")  # A pushes to B's listener now
    assert wait_for(lambda: b.has("from-a", b"a"), 5), b.text()


def test_status_json_into_a_closed_pipe_is_no_traceback(daemons):
    a, b = pair(daemons)
    a.start()
    cmd = shlex.join(owsync_cmd("status", "--json", "--control-socket", str(a.sock)))
    r = subprocess.run(["sh", "-c", f"{cmd} | head -c 1 >/dev/null; echo $? >/dev/null"],
                       env=base_env(None), capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.stderr == "", r.stderr


def test_a_missing_directory_is_one_line(tmp_path):
    d = DaemonNode(tmp_path, "a").configure(["127.0.0.1:9"])
    d.conf.write_text(d.conf.read_text().replace(str(d.dir), str(tmp_path / "nope")))
    r = subprocess.run(owsync_cmd("daemon", "-f", "-c", str(d.conf)), env=base_env(None),
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_logs_go_to_syslog_as_owsync_facility_daemon(daemons, tmp_path):
    """A syslog socket of the test's own at /dev/log, in a mount namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to put a test syslog socket at /dev/log")
    fake_dev = tmp_path / "dev"
    fake_dev.mkdir()
    if subprocess.run(["mknod", str(fake_dev / "null"), "c", "1", "3"]).returncode != 0:
        pytest.skip("cannot make a /dev/null node here")
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(fake_dev / "log"))
    syslog.settimeout(10)
    a, b = pair(daemons)
    b.start()
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not allowed here: {probe.stderr.decode().strip()}")
    # -f: in the foreground, logging to stderr and to syslog
    daemon = shlex.join(owsync_cmd("daemon", "-f", "-c", str(a.conf)))
    cmd = ["unshare", "-m", "sh", "-c", f"mount --bind {fake_dev} /dev && exec {daemon}"]
    a.start(cmd, base_env(None))  # exec all the way: the PID is the daemon's
    try:
        (a.dir / "f").write_text("x")
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(b"link with" in m for m in seen):
            seen.append(syslog.recv(4096))
    finally:
        syslog.close()
    lines = [m.rstrip(b"\0").decode() for m in seen]
    info = [m for m in lines if "link with" in m]
    # facility daemon (3) and info (6), with the PID and one prefix, as logread shows it
    assert info and re.match(r"<30>.*owsync\[(\d+)\]: link with", info[0]), lines
    assert re.search(r"owsync\[\d+\]: owsync", info[0]) is None, info
    assert "daemon:" in a.text()  # -f: stderr as well


def test_three_daemons_in_a_full_mesh_converge_under_concurrent_edits(daemons):
    """Every node edits the same few files in quick succession while all of them sync
    with each other: no two sessions may hold each other up (a wait-for cycle through
    three nodes once stalled everything for the 30 s lock timeout)."""
    import random

    ns = [daemons(n) for n in "xyz"]
    for n in ns:
        n.configure([m.addr for m in ns if m is not n], poll=5)
    for n in ns:
        n.start()
    time.sleep(1)
    rng = random.Random(2)  # a sequence that stalled the nodes before the fix
    for i in range(60):
        n = rng.choice(ns)
        f = n.dir / f"f{rng.randrange(6)}"
        if rng.random() < 0.25:
            f.unlink(missing_ok=True)
        else:
            f.write_text(f"{n.name} {i}\n")
        time.sleep(rng.choice([0, 0.01, 0.05, 0.2]))

    def snapshot(n):
        return {p.name: p.read_bytes() for p in n.dir.iterdir() if p.is_file()}

    start = time.monotonic()
    assert wait_for(lambda: snapshot(ns[0]) == snapshot(ns[1]) == snapshot(ns[2]), 20)
    assert time.monotonic() - start < 8  # about 1 s here; the stall took 26-30 s


def test_sigterm_delivered_to_another_thread_still_stops_the_daemon(daemons):
    """A process-directed signal may land on any thread; the main thread, blocked
    waiting, must still run the handler (tgkill aims SIGTERM at a worker thread)."""
    import ctypes

    a, b = pair(daemons)
    a.start()
    b.start()
    pid = a.proc.pid
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, "the daemon runs threads"
    if os.uname().machine != "x86_64":
        pytest.skip("tgkill's syscall number here is x86_64's")
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = 234
    assert libc.syscall(sys_tgkill, pid, others[-1], signal.SIGTERM) == 0
    a.proc.wait(5)
    assert a.proc.returncode == 0, a.text()
    assert "stopped" in a.text()


def sighup_caught(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGHUP (/proc's SigCgt mask)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_a_reload_asked_while_the_daemon_starts_is_done_once_it_runs(tmp_path):
    """procd's `service owsync reload` right after a start: the SIGHUP comes
    while the daemon still loads its modules; it must not end the process."""
    peer = DaemonNode(tmp_path, "peer")
    a = DaemonNode(tmp_path, "a").configure([peer.addr])
    a.start(probe=False)
    try:
        assert wait_for(lambda: sighup_caught(a.proc.pid) or a.proc.poll() is not None, 10, 0.001)
        # caught before the daemon runs: its control socket is not there yet
        assert not a.sock.exists(), "SIGHUP was only caught once the daemon ran"
        os.kill(a.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded" in a.text(), 20), a.text()
        assert a.proc.poll() is None, a.text()
        assert wait_for(lambda: a.sock.exists())
    finally:
        a.stop()
