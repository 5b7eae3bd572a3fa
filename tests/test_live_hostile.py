"""A hostile peer WITH the key on a live link to a real `owsync daemon`.

The attacker is built in this process from owsync's own codec: it sends a
v1 Hello that offers a live link, derives the link's keys, and then writes
whatever frames it likes, sealed at the right counters.  Each case checks
the daemon's one line for the link, that nothing was written where it must
not be (no temp file left either), and that the daemon still syncs with a
real peer afterwards.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time

import pytest
from conftest import KEY, DaemonNode, base_env, free_port, owsync_cmd, tracked, wait_for

from owsync.core import live as lv
from owsync.core import protocol2 as p2
from owsync.core.crypto import AesGcmCipher
from owsync.core.protocol import Hello
from owsync.core.state import Record


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def connect(port: int) -> socket.socket:
    """A connection to a daemon whose listener may still be binding."""
    sock: list[socket.socket] = []

    def attempt() -> bool:
        try:
            sock.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        except ConnectionRefusedError:
            return False
        return True

    assert wait_for(attempt, 10), f"nothing listens on port {port}"
    return sock[0]


class LiveWire:
    """A live link's client side, as a peer daemon would open it."""

    def __init__(self, port: int, listens_on: int | None = None) -> None:
        self.sock = connect(port)
        self.cipher = AesGcmCipher(bytes.fromhex(KEY))
        secret = os.urandom(32)
        fields = lv.advertise(
            os.urandom(32), os.urandom(16).hex(), lv.x25519_public(secret), listens_on
        )
        ours = p2.hello_payload(Hello("mallory", time.time(), 1), fields)
        sealed = b"".join(self.cipher.seal_parts([ours]))
        self.sock.sendall(len(sealed).to_bytes(4, "big") + sealed)
        buf = b""
        while True:
            frame, rest = p2.split_hello_frame(buf)
            if frame is not None:
                break
            buf += self.sock.recv(65536)
        theirs = bytes(self.cipher.open(frame))
        keys = lv.link_keys(self.cipher.key, True, ours, theirs, secret)
        self.m = lv.LiveLink(lambda p: True, 1 << 30, keys)
        self.pending = rest
        self.sock.sendall(self.m.start())

    def events(self, timeout: float = 5.0) -> list:
        """What the daemon sent until it has been quiet for a moment."""
        out = []
        data, self.pending = self.pending, b""
        self.sock.settimeout(0.3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if data:
                self.m.receive_data(data)
                while (e := self.m.next_event()) is not None:
                    out.append(e)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
        return out

    def forge(self, kind: int, body: bytes) -> None:
        """A frame sealed at the right counter, past the sender's own checks."""
        self.sock.sendall(self.m._w.frame(kind, body))

    def close(self) -> None:
        self.sock.close()


def record(path: str, data: bytes, mtime: int | None = None) -> Record:
    mtime = mtime or int(time.time() * 1000)
    return Record(path, hashlib.sha256(data).hexdigest(), mtime, len(data), 0o644, False)


def no_temps(d) -> bool:
    return not [p for p in d.rglob("*") if p.name.startswith(".owsync-")]


def still_syncs(daemons, target: DaemonNode) -> None:
    """A real daemon peer still gets a link and a file from the target."""
    peer = daemons("real")
    peer.configure([target.addr]).start()
    name = f"after-{time.monotonic_ns()}"
    (target.dir / name).write_text("still here")
    assert wait_for(lambda: peer.has(name, b"still here"), 10), target.text()
    peer.stop()


def target(daemons) -> DaemonNode:
    d = daemons("t")
    d.configure(["127.0.0.1:1"], extra="exclude=secret*\n").start()  # a peer that is never up
    (d.dir / "keep").write_text("original")
    assert wait_for(lambda: "keep" in str(d.status()["files"]) or d.status()["files"] >= 1, 10)
    return d


def test_a_file_nobody_asked_for_ends_the_link_and_writes_nothing(daemons):
    d = target(daemons)
    w = LiveWire(d.port)
    assert any(isinstance(e, lv.Authenticated) for e in w.events())
    r = record("keep", b"overwritten")
    w.forge(p2.FILE, p2.encode_file_header(p2.FileHeader("keep", 0o644, r.size, r.hash, r.mtime)))
    w.forge(p2.CHUNK, b"overwritten")
    assert wait_for(lambda: "was not requested" in d.text(), 5), d.text()
    w.close()
    assert (d.dir / "keep").read_text() == "original" and no_temps(d.dir)
    still_syncs(daemons, d)


def test_records_for_paths_outside_the_filters_or_the_tree_are_not_requested(daemons):
    d = target(daemons)
    w = LiveWire(d.port)
    w.events()
    bad = [record(p, b"x") for p in ("../escape", "/etc/passwd", "secret.key", ".hidden")]
    good = record("fine", b"fine content")
    w.sock.sendall(b"".join(w.m.state(bad + [good])))
    asked = [e for e in w.events() if isinstance(e, lv.Requested)]
    assert [p for e in asked for p in e.paths] == ["fine"]
    for frame in (w.m.file_start(good, 0o644), w.m.file_chunk(b"fine content")):
        w.sock.sendall(frame)
    w.sock.sendall(w.m.file_end()[0])
    assert wait_for(lambda: d.has("fine", b"fine content"), 5), d.text()
    assert not (d.dir.parent / "escape").exists() and not (d.dir / "secret.key").exists()
    w.sock.sendall(w.m.bye("done"))
    w.close()
    assert no_temps(d.dir)
    still_syncs(daemons, d)


def test_a_link_cut_in_the_middle_of_a_file_leaves_nothing_half_written(daemons):
    d = target(daemons)
    w = LiveWire(d.port)
    w.events()
    data = os.urandom(300 * 1024)
    r = record("keep", data)
    w.sock.sendall(b"".join(w.m.state([r])))
    assert any(isinstance(e, lv.Requested) for e in w.events())
    w.sock.sendall(w.m.file_start(r, 0o644) + w.m.file_chunk(data[: p2.CHUNK_SIZE]))
    time.sleep(0.2)  # let the first chunk land in its temp file: the cut is mid-file
    w.sock.close()
    assert wait_for(lambda: "link with" in d.text() and "lost" in d.text(), 5), d.text()
    assert (d.dir / "keep").read_text() == "original"
    assert wait_for(lambda: no_temps(d.dir), 5)
    still_syncs(daemons, d)


def test_a_replayed_link_fails_at_its_auth(daemons):
    """The bytes of a whole link's start, sent again: the daemon's fresh nonce
    and X25519 key make other keys, so the recorded AUTH does not verify."""
    d = target(daemons)
    cipher = AesGcmCipher(bytes.fromhex(KEY))
    secret = os.urandom(32)
    fields = lv.advertise(os.urandom(32), os.urandom(16).hex(), lv.x25519_public(secret))
    ours = p2.hello_payload(Hello("mallory", time.time(), 1), fields)
    sealed = b"".join(cipher.seal_parts([ours]))
    first = connect(d.port)
    first.sendall(len(sealed).to_bytes(4, "big") + sealed)
    buf = b""
    while (frame := p2.split_hello_frame(buf)[0]) is None:
        buf += first.recv(65536)
    keys = lv.link_keys(cipher.key, True, ours, bytes(cipher.open(frame)), secret)
    auth = lv.LiveLink(lambda p: True, 1, keys).start()
    first.sendall(auth)  # the recording: the Hello and the AUTH
    first.close()
    replay = connect(d.port)
    replay.sendall(len(sealed).to_bytes(4, "big") + sealed + auth)
    assert wait_for(lambda: "failed authentication" in d.text(), 5), d.text()
    replay.close()
    assert (d.dir / "keep").read_text() == "original"
    still_syncs(daemons, d)


def test_a_reconcile_waited_for_ends_when_the_link_closes_under_it(daemons):
    """`owsync sync --wait` over a live link whose peer hangs up instead of
    answering: the wait ends, with the sync reported failed."""
    fake = free_port()  # the peer's address as configured; it connects to us instead
    d = daemons("t")
    d.configure([f"127.0.0.1:{fake}"]).start()
    w = LiveWire(d.port, listens_on=fake)
    w.events()
    assert wait_for(lambda: d.status()["peers"][0]["state"] == "connected", 5), d.text()
    waiting = subprocess.Popen(
        owsync_cmd("sync", "--wait", "--control-socket", str(d.sock)),
        env=base_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    got: list = []  # the daemon's whole state, and its INDEX_END asking for ours

    def asked() -> bool:
        got.extend(w.events(timeout=1.0))
        return any(isinstance(e, lv.IndexEnd) and e.reply for e in got)

    assert wait_for(asked, 15), got
    w.close()
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 1 and "closed before the reconcile completed" in out, out + err
    assert "Traceback" not in d.text(), d.text()
