"""A live link between two real daemons, through a relay that damages it.

Daemon B's one peer is the relay, which forwards to daemon A; A's one peer
never answers (127.0.0.1:1), so the only link between them is B's, through
the relay.  The relay passes each direction's Hello (4-byte length, payload)
as it is, then cuts the stream into live frames by their 5-byte headers
(length of the body, type) and, once, on the n-th frame of a type in one
direction, drops it, duplicates it, swaps it with the next frame, cuts the
connection in its middle, or flips a byte of its body.

Each case checks what the daemon that got the damaged stream did: one line
for the link (lost, or failed), nothing half-written in place and no temp
file left, a new link within seconds, and then that both trees hold every
file whole, with its mtime, nothing deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import DaemonNode, wait_for

from owsync.core import protocol2 as p2

A2B, B2A = "a2b", "b2a"  # A: the daemon behind the relay; B connects to the relay
NOWHERE = "127.0.0.1:1"  # A's peer: nothing listens there
LINK_END = re.compile(r"link with (\S+) (lost|failed): (.*)")
LINK_UP = re.compile(r"link with (\S+) up \(live")
LINK_GONE = re.compile(r"link with (\S+) (lost:|failed:|closed$)", re.M)
BIG = 300 * 1024  # several CHUNKs (64 KiB each)


# --- the relay ---------------------------------------------------------------------------


class Fault:
    """Once: the ``nth`` (from 1) frame of type ``kind`` going ``way``."""

    def __init__(self, way: str, kind: int, nth: int, action: str) -> None:
        assert action in ("drop", "dup", "swap", "cut", "flip"), action
        self.way, self.kind, self.nth, self.action = way, kind, nth, action
        self.seen = 0
        self.applied = threading.Event()


class LiveRelay:
    """Forwards every connection made to :attr:`port` to the daemon at ``target``.

    ``down``: connections are cut, new ones closed at once (a link outage).
    A fault made with ``hold`` holds the connections accepted after it (not
    forwarded yet) until :meth:`release`: the damaged link's end can be
    looked at before the next link starts.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.fault: Fault | None = None
        self.hold_after = False
        self.gate = threading.Event()
        self.gate.set()
        self.down = False
        self.silenced: list = []  # connections cut on B's side only (A's left open, unanswered)
        self.conns: list[tuple[socket.socket, socket.socket]] = []
        self.forwarded = 0  # connections passed on to the target
        self.waiting = 0  # connections held at the gate
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    # --- the test's side

    def arm(self, way: str, kind: int, nth: int, action: str, hold: bool = True) -> Fault:
        with self.lock:
            self.fault = Fault(way, kind, nth, action)
            self.hold_after = hold
            return self.fault

    def release(self) -> None:
        self.gate.set()

    def set_down(self, down: bool) -> None:
        with self.lock:
            self.down = down
            conns = list(self.conns) if down else []
        for pair in conns:
            self._cut(pair)

    def cut_silently(self) -> None:
        """Close B's side of every connection; leave A's open, and answer it
        no more (a path that died without telling A: a NAT, a cable)."""
        with self.lock:
            conns = list(self.conns)
            self.silenced.extend(conns)
        for client, _ in conns:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping.set()
        self.gate.set()
        self.set_down(True)
        for t in self.threads:
            t.join(5)
        self.srv.close()

    # --- the relay's threads

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        with self.lock:
            self.waiting += 1
        try:
            while not self.gate.wait(0.1):
                if self.stopping.is_set():
                    break
        finally:
            with self.lock:
                self.waiting -= 1
        with self.lock:
            refuse = self.down or self.stopping.is_set()
        if refuse:
            client.close()
            return
        try:
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        pair = (client, server)
        with self.lock:
            self.conns.append(pair)
            self.forwarded += 1
        back = threading.Thread(target=self._pipe, args=(server, client, A2B, pair), daemon=True)
        back.start()
        self._pipe(client, server, B2A, pair)
        if pair in self.silenced:
            return  # A's side stays open (the A-to-B thread swallows what A sends)
        back.join(30)
        with self.lock:
            self.conns.remove(pair)
        for s in pair:
            s.close()

    def _cut(self, pair) -> None:
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _hit(self, way: str, kind: int) -> str | None:
        """The fault's action when this frame is the one, else None."""
        with self.lock:
            f = self.fault
            if f is None or f.applied.is_set() or f.way != way or f.kind != kind:
                return None
            f.seen += 1
            if f.seen < f.nth:
                return None
            if self.hold_after:
                self.gate.clear()
            f.applied.set()
            return f.action

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str, pair) -> None:
        buf = bytearray()
        hello = False
        held: bytes | None = None  # a frame to send after the next one (swap)
        try:
            while data := src.recv(65536):
                if pair in self.silenced:
                    continue
                buf += data
                if not hello:  # v1's Hello: 4-byte length, payload; passed as it is
                    if len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
                        continue
                    n = 4 + int.from_bytes(buf[:4], "big")
                    dst.sendall(buf[:n])
                    del buf[:n]
                    hello = True
                while len(buf) >= p2.HEADER_SIZE:
                    n = p2.HEADER_SIZE + int.from_bytes(buf[:4], "big")
                    if len(buf) < n:
                        break
                    frame = bytes(buf[:n])
                    del buf[:n]
                    action = self._hit(way, frame[4])
                    if held is not None:
                        out, held = [frame, held], None
                    elif action == "drop":
                        out = []
                    elif action == "dup":
                        out = [frame, frame]
                    elif action == "swap":
                        out, held = [], frame
                    elif action == "flip":
                        body = bytearray(frame)
                        body[p2.HEADER_SIZE + (n - p2.HEADER_SIZE) // 2] ^= 0x01
                        out = [bytes(body)]
                    elif action == "cut":  # half the frame, then the connection ends
                        dst.sendall(frame[: n // 2])
                        self._cut(pair)
                        return
                    else:
                        out = [frame]
                    for f in out:
                        dst.sendall(f)
        except OSError:
            pass
        if pair not in self.silenced:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


# --- the two daemons -----------------------------------------------------------------------


def write(d: DaemonNode, rel: str, data: bytes, mtime: float | None = None) -> None:
    """Write a file whole (under a dot-name, which is never synced, then renamed)."""
    tmp = d.dir / f".w-{rel}"
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, d.dir / rel)


def tree(d: DaemonNode) -> dict[str, tuple[bytes, int]]:
    """Every synced file (not a dot-file, a temp among them): its content and
    its mtime in milliseconds (what a record keeps)."""
    out = {}
    for p in sorted(d.dir.rglob("*")):
        rel = p.relative_to(d.dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        with contextlib.suppress(FileNotFoundError):  # replaced as we look
            if p.is_file():
                out[str(rel)] = (p.read_bytes(), p.stat().st_mtime_ns // 10**6)
    return out


def temps(d: DaemonNode) -> list[str]:
    return [p.name for p in d.dir.rglob("*") if p.name.startswith(".owsync-")]


def ends(d: DaemonNode, since: int = 0) -> list[str]:
    """The lines saying a link (not the one to NOWHERE) ended badly, after ``since``."""
    return [m.group(0) for m in LINK_END.finditer(d.text()[since:]) if m.group(1) != NOWHERE]


def ups(d: DaemonNode) -> int:
    return len(LINK_UP.findall(d.text()))


class Pair:
    """A and B, B's link through the relay, each with a file of its own.

    One pair per mode serves every case of this module (starting daemons is
    most of a case's time): each case begins with the link up and the trees
    equal, and names its files after itself.
    """

    def __init__(self, root: Path, plain: bool) -> None:
        self.a, self.b = DaemonNode(root, "a"), DaemonNode(root, "b")
        self.relay = LiveRelay(self.a.port)
        extra = "plain_mode=1\n" if plain else ""
        self.a.configure([NOWHERE], extra=extra)
        self.b.configure([self.relay.addr], extra=extra)
        past = time.time() - 86400
        write(self.a, "from-a", b"A's own file\n", past + 0.123)
        write(self.b, "from-b", b"B's own file\n", past + 0.456)
        self.mark = {"a": 0, "b": 0}
        try:
            self.a.start()
            self.b.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.b.stop()
        self.a.stop()
        self.relay.close()

    def linked(self) -> bool:
        """One connection through the relay, and one link up on each side."""
        return len(self.relay.conns) == 1 and all(
            len(LINK_UP.findall(t)) == len(LINK_GONE.findall(t)) + 1
            for t in (self.a.text(), self.b.text())
        )

    def begin(self, name: str) -> Pair:
        """The link is up and the trees equal: a case starts here."""
        assert wait_for(self.converged, 15), self.a.text() + self.b.text()
        assert wait_for(self.linked, 10), self.b.text()
        self.relay.fault = None
        self.mark = {"a": len(self.a.text()), "b": len(self.b.text())}
        self.name = re.sub(r"[^\w-]+", "-", name.removeprefix("test_")).strip("-")
        return self

    def converged(self) -> bool:
        ta, tb = tree(self.a), tree(self.b)
        return ta == tb and {"from-a", "from-b"} <= ta.keys()

    def check_after(self, receiver: DaemonNode, name: str, before: dict) -> None:
        """The damaged link's end on the receiver, the next link, and the trees."""
        since = self.mark[receiver.name]
        assert wait_for(lambda: ends(receiver, since), 10), receiver.text()[since:]
        # the damaged link has ended: nothing of the file, whole or not, and no temp
        assert temps(receiver) == [], temps(receiver)
        assert tree(receiver).get(name) == before.get(name)
        up = ups(self.b)
        self.relay.release()
        assert wait_for(lambda: ups(self.b) > up, 5), self.b.text()[self.mark["b"] :]
        assert wait_for(self.converged, 15), (tree(self.a).keys(), tree(self.b).keys())
        assert before.keys() <= tree(self.a).keys()  # nothing deleted
        assert temps(self.a) == [] and temps(self.b) == []
        assert len(ends(receiver, since)) == 1, ends(receiver, since)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    made: dict[bool, Pair] = {}

    def get(plain: bool, name: str) -> Pair:
        if plain not in made:
            root = tmp_path_factory.mktemp("plain" if plain else "encrypted")
            made[plain] = Pair(root, plain)
        return made[plain].begin(name)

    yield get
    for p in made.values():
        p.stop()


@pytest.fixture
def pair(pairs, request):
    """The pair of the case's mode (its ``plain`` parameter), ready."""
    return pairs(request.node.callspec.params.get("plain", False), request.node.name)


def sender_receiver(pair: Pair, way: str) -> tuple[DaemonNode, DaemonNode]:
    return (pair.a, pair.b) if way == A2B else (pair.b, pair.a)


MODES = [pytest.param(False, id="encrypted"), pytest.param(True, id="plain")]
ACTIONS = ["drop", "dup", "swap", "cut", "flip"]


# --- a frame damaged in the middle of a file ----------------------------------------------


def damaged_chunk(pair: Pair, way: str, action: str) -> None:
    sender, receiver = sender_receiver(pair, way)
    before = tree(receiver)
    name = f"{pair.name}.bin"
    fault = pair.relay.arm(way, p2.CHUNK, 2, action)
    data, mtime = os.urandom(BIG), time.time() - 3600.789
    write(sender, name, data, mtime)
    assert fault.applied.wait(10), sender.text()
    pair.check_after(receiver, name, before)
    assert tree(receiver)[name] == (data, int(mtime * 1000))


@pytest.mark.parametrize("plain", MODES)
@pytest.mark.parametrize("action", ACTIONS)
def test_a_damaged_chunk_costs_the_link_not_the_file(pair, plain, action):
    """The second CHUNK of a 300 KiB file, A to B.  Encrypted, the damage
    fails authentication at that frame or the next; plain, the file's
    SHA-256 or size gives it away at its FILE_END (or the grammar does)."""
    damaged_chunk(pair, A2B, action)


@pytest.mark.parametrize(
    ("plain", "action"),
    [(False, "drop"), (False, "swap"), (True, "flip"), (True, "cut")],
    ids=["encrypted-drop", "encrypted-swap", "plain-flip", "plain-cut"],
)
def test_a_damaged_chunk_to_the_side_that_accepted(pair, plain, action):
    """The same, B to A: the damaged stream reaches the responder."""
    damaged_chunk(pair, B2A, action)


# --- a frame damaged in the middle of an update ---------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_a_damaged_update_costs_the_link_not_the_change(pair, action):
    """The STATE that tells B of a change on A.  Dropped, or held back to be
    swapped, it is missed only at the next frame: the next change sends one."""
    sender, receiver = sender_receiver(pair, A2B)
    before = tree(receiver)
    one, two = f"{pair.name}.1", f"{pair.name}.2"
    fault = pair.relay.arm(A2B, p2.STATE, 1, action)
    mtime = time.time() - 60.5
    write(sender, one, b"the first change\n", mtime)
    assert fault.applied.wait(10), sender.text()
    write(sender, two, b"the second change\n", mtime + 1)
    pair.check_after(receiver, one, before)
    got = tree(receiver)
    assert got[one] == (b"the first change\n", int(mtime * 1000))
    assert got[two] == (b"the second change\n", int((mtime + 1) * 1000))


@pytest.mark.parametrize("plain", MODES)
@pytest.mark.parametrize("action", ["drop", "dup", "swap", "cut"])
def test_a_damaged_file_of_an_update(pair, plain, action):
    """The FILE frame that answers B's REQUEST for a small change: the
    grammar (plain) or the counters (encrypted) refuse what follows."""
    sender, receiver = sender_receiver(pair, A2B)
    before = tree(receiver)
    name = f"{pair.name}.txt"
    fault = pair.relay.arm(A2B, p2.FILE, 1, action)
    mtime = time.time() - 30.25
    write(sender, name, b"a small change\n", mtime)
    assert fault.applied.wait(10), sender.text()
    pair.check_after(receiver, name, before)
    assert tree(receiver)[name] == (b"a small change\n", int(mtime * 1000))


@pytest.mark.parametrize("plain", [pytest.param(True, id="plain")])
def test_plain_a_duplicated_update_is_harmless(pair, plain):
    """Plain mode has no counters: the same STATE twice says the same thing
    twice; the link stays up and the change arrives once."""
    name = f"{pair.name}.txt"
    links = pair.relay.forwarded
    fault = pair.relay.arm(A2B, p2.STATE, 1, "dup", hold=False)
    mtime = time.time() - 10.5
    write(pair.a, name, b"told twice\n", mtime)
    assert fault.applied.wait(10)
    assert wait_for(lambda: name in tree(pair.b) and pair.converged(), 10)
    assert tree(pair.b)[name] == (b"told twice\n", int(mtime * 1000))
    assert ends(pair.a, pair.mark["a"]) == [] and ends(pair.b, pair.mark["b"]) == []
    assert pair.relay.forwarded == links


# --- the link cut, then back ------------------------------------------------------------------


@pytest.mark.parametrize("plain", MODES)
def test_writes_on_both_sides_during_an_outage_arrive_after_it(pair, plain):
    a, b = pair.a, pair.b
    on_a, on_b, changed = f"{pair.name}.a", f"{pair.name}.b", f"{pair.name}.c"
    write(a, changed, b"before the outage\n")
    assert wait_for(lambda: b.has(changed), 10)
    files_a, files_b = a.status()["files"], b.status()["files"]
    pair.relay.set_down(True)
    assert wait_for(lambda: ends(b, pair.mark["b"]), 10), b.text()[pair.mark["b"] :]
    t = time.time()
    write(a, on_a, b"written on A while down\n", t - 5.5)
    write(b, on_b, b"written on B while down\n", t - 4.5)
    write(a, changed, b"changed on A while down\n")  # newer than what it replaces
    assert wait_for(lambda: a.status()["files"] == files_a + 1, 10)
    assert wait_for(lambda: b.status()["files"] == files_b + 1, 10)
    assert not b.has(on_a) and not a.has(on_b)  # it was down
    up = ups(b)
    pair.relay.set_down(False)
    assert wait_for(lambda: ups(b) > up, 10), b.text()[pair.mark["b"] :]
    assert wait_for(pair.converged, 10), (tree(a).keys(), tree(b).keys())
    got = tree(b)
    assert got[on_a] == (b"written on A while down\n", int((t - 5.5) * 1000))
    assert got[on_b] == (b"written on B while down\n", int((t - 4.5) * 1000))
    assert got[changed] == tree(a)[changed] and got[changed][0] == b"changed on A while down\n"
    assert temps(a) == [] and temps(b) == []


def test_a_link_that_died_silently_on_the_accepting_side_comes_back(tmp_path):
    """B's side of the connection closes; A's stays open and hears nothing
    more (a NAT or a path that died).  B sees its link lost and connects again
    at once: that new link must replace the one A still holds."""
    pair = Pair(tmp_path, plain=False).begin("silent")
    try:
        a, b = pair.a, pair.b
        pair.relay.cut_silently()
        assert wait_for(lambda: ends(b, pair.mark["b"]), 10), b.text()[pair.mark["b"] :]
        write(a, "after.txt", b"written after the cut\n")
        assert wait_for(lambda: b.has("after.txt", b"written after the cut\n"), 5), (
            b.text()[pair.mark["b"] :] + a.text()[pair.mark["a"] :]
        )
    finally:
        pair.stop()
