"""A hostile or broken peer against a real `owsync listen` process.

The hostile side is this test, speaking protocol v1 through owsync's codec
over a real TCP connection; the listener is a real owsync process.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from conftest import Hostile, rec

from owsync.core import protocol
from owsync.io.syncdir import SyncDir, UnsafePath

TRAVERSALS = [
    "/tmp/owsync-abs-escape",
    "../escape",
    "a/../../escape",
    "sub/../../escape",
    "nul\0byte",
    "./dot",
    "a//b",
    "..",
]


@pytest.fixture
def target(nodes, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("must survive")
    a = nodes("a")
    a.write("sub/keep", "k")
    a.write("victim", "local victim")
    os.symlink(outside, a.dir / "linkdir")
    a.listen()
    a.outside = outside
    return a


def assert_outside_untouched(a, tmp_path):
    assert sorted(p.name for p in a.outside.iterdir()) == ["victim"]
    assert (a.outside / "victim").read_text() == "must survive"
    assert not (tmp_path / "escape").exists()
    assert not os.path.exists("/tmp/owsync-abs-escape")


def test_unsafe_paths_are_neither_requested_nor_written(target, tmp_path):
    h = Hostile(target.port)
    files = [rec(p, b"pwned") for p in TRAVERSALS] + [rec("linkdir/pwned", b"pwned")]
    req = h.handshake(files)
    assert not set(req.paths) & set(TRAVERSALS)
    # push them anyway, requested or not
    for p in [*TRAVERSALS, "linkdir/pwned"]:
        h.send(protocol.FileContent(p, 0o644, b"pwned"))
    h.send(protocol.RequestFiles(()))
    h.send(protocol.EndOfSync())
    rest = h.recv_until_closed()
    assert isinstance(rest[-1], protocol.EndOfSync)
    h.close()
    assert_outside_untouched(target, tmp_path)
    assert not (target.outside / "pwned").exists()
    assert set(target.files()) == {"sub/keep", "victim"}
    log = target.wait_log("not a plain directory")
    assert "not writing" in log and "is not a plain directory" in log


def test_unsafe_tombstones_delete_nothing(target, tmp_path):
    h = Hostile(target.port)
    tombs = [rec(p, deleted=True) for p in [*TRAVERSALS, "linkdir/victim", "../outside/victim"]]
    req = h.handshake(tombs)
    assert req.paths == ()
    h.send(protocol.RequestFiles(()))
    h.send(protocol.EndOfSync())
    h.recv_until_closed()
    h.close()
    assert_outside_untouched(target, tmp_path)
    assert (target.dir / "victim").read_text() == "local victim"


def test_syncdir_refuses_symlinked_directories_for_every_operation(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("must survive")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linkdir")
    os.symlink(outside / "victim", root / "filelink")
    d = SyncDir(str(root))
    with pytest.raises(UnsafePath):
        d.write("linkdir/new", b"x", 0o644, 0, None)
    with pytest.raises(UnsafePath):
        d.delete("linkdir/victim", None)
    with pytest.raises(UnsafePath):
        d.read("linkdir/victim")
    with pytest.raises(UnsafePath):
        d.read("filelink")
    with pytest.raises(UnsafePath):  # an existing symlink is not replaced either
        d.write("filelink", b"x", 0o644, 0, None)
    for p in TRAVERSALS:
        with pytest.raises(UnsafePath):
            d.write(p, b"x", 0o644, 0, None)
        with pytest.raises(UnsafePath):
            d.delete(p, None)
    assert (outside / "victim").read_text() == "must survive"
    assert sorted(os.listdir(outside)) == ["victim"]


def test_requests_for_files_outside_are_not_served(target):
    (target.outside / "secret").write_text("secret")
    h = Hostile(target.port)
    h.handshake()
    h.send(
        protocol.RequestFiles(
            ("../outside/secret", "/etc/passwd", "linkdir/secret", "linkdir/victim", "sub/keep")
        )
    )
    h.send(protocol.EndOfSync())
    got = [m for m in h.recv_until_closed() if isinstance(m, protocol.FileContent)]
    h.close()
    assert [m.path for m in got] == ["sub/keep"]


def test_content_not_matching_the_advertised_hash_is_refused(target):
    h = Hostile(target.port)
    req = h.handshake([rec("evil", b"the advertised content")])
    assert req.paths == ("evil",)
    h.send(protocol.FileContent("evil", 0o644, b"something else"))
    h.send(protocol.RequestFiles(()))
    h.send(protocol.EndOfSync())
    h.recv_until_closed()
    h.close()
    assert not (target.dir / "evil").exists()
    assert "does not match the advertised hash" in target.wait_log("advertised hash")
    assert not [p for p in target.dir.rglob("*") if ".owsync-" in p.name]


def test_oversized_frame_and_garbage_drop_the_session_not_the_listener(target, nodes):
    h = Hostile(target.port)
    h.sock.sendall(struct.pack(">I", 32 * 1024 * 1024 + 1))
    # the listener may have sent its Hello before it read the header; then it hangs up
    assert all(isinstance(m, protocol.Hello) for m in h.recv_until_closed())
    h.close()
    h = Hostile(target.port)
    h.sock.sendall(struct.pack(">I", 5) + b"\x00" * 5)
    h.recv_until_closed()
    h.close()
    log = target.wait_log("too short")
    assert "exceeds the limit" in log and "too short" in log
    b = nodes("b")
    b.sync_ok(target)  # still serving
    assert b.files()["sub/keep"] == b"k"


def test_silent_peer_is_dropped_after_a_timeout(target):
    s = socket.create_connection(("127.0.0.1", target.port))
    s.settimeout(30)
    start = time.monotonic()
    data = b""
    while chunk := s.recv(65536):  # our Hello, then EOF when the listener gives up
        data += chunk
    elapsed = time.monotonic() - start
    s.close()
    assert data  # the Hello
    assert 5 < elapsed < 20
    assert "silent" in target.wait_log("silent")


def test_idle_connection_flood_does_not_lock_out_a_real_peer(target, nodes):
    idle = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(60)]
    try:
        time.sleep(0.3)
        b = nodes("b")
        start = time.monotonic()
        r = b.connect(target, timeout=30)
        elapsed = time.monotonic() - start
        assert r.returncode == 0, r.stderr
        assert elapsed < 5, elapsed
        assert b.files()["sub/keep"] == b"k"
    finally:
        for s in idle:
            s.close()


def test_a_trickling_peer_cannot_hold_the_directory(tmp_path):
    """Bytes now and then keep a session alive only until its overall deadline."""
    import threading

    from owsync.core.crypto import PlainCipher
    from owsync.core.filters import Filter
    from owsync.service.context import Context
    from owsync.service.engine import run_session

    root = tmp_path / "d"
    root.mkdir()
    owner = threading.Lock()
    ctx = Context(str(root), str(tmp_path / "db"), Filter(["*"]), PlainCipher(),
                  idle_timeout=1, session_timeout=2, owner=owner)  # fmt: skip
    ours, theirs = socket.socketpair()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_session(ours, ctx, "slow")))
    t.start()
    hello = protocol.encode(protocol.Hello("slow", time.time()))
    theirs.sendall(struct.pack(">I", len(hello)) + hello)
    state = protocol.encode(protocol.SyncState(()))
    frame = struct.pack(">I", len(state)) + state
    start = time.monotonic()
    for byte in frame[:-1] * 10:  # never a whole message: one byte every 0.5 s
        if not t.is_alive():
            break
        try:
            theirs.send(bytes([byte]))
        except OSError:
            break
        time.sleep(0.5)
    t.join(10)
    theirs.close()
    assert "unfinished after 2 s" in box["r"].error
    assert time.monotonic() - start < 5
    assert owner.acquire(timeout=0)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 60_000,  # nesting that exhausts the JSON parser's recursion
        b'{"type":"Hello","hostname":"x","timestamp":1,"version":NaN}',
        b'{"type":"Hello","hostname":"x","timestamp":Infinity,"version":1}',
        b'{"type":"Hello","hostname":"x","timestamp":1e999,"version":1}',
    ],
)
def test_json_python_takes_but_json_does_not_drops_the_session_cleanly(target, nodes, payload):
    """Found by tests/test_fuzz.py: these escaped the decoder as RecursionError,
    ValueError and OverflowError instead of a protocol error."""
    h = Hostile(target.port)
    sealed = b"".join(h.cipher.seal_parts([payload]))
    h.sock.sendall(struct.pack(">I", len(sealed)) + sealed)
    h.recv_until_closed()
    h.close()
    log = target.wait_log("undecodable message" if b"[" * 9 in payload else "Hello")
    assert "Traceback" not in log and "Error:" not in log.replace("ProtocolError", ""), log
    b = nodes("b")
    b.sync_ok(target)  # still serving
