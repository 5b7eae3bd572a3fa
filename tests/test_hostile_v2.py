"""Hostile peers against real `owsync listen` processes speaking protocol v2.

The issue-7 harness (test_hostile_more.py) aimed at v2, over real sockets:

- an attacker WITH the key is a v2 client built in this process from owsync's
  own codec (:class:`V2Wire`): it exchanges Hellos, derives the session keys
  with ``protocol2.session_keys`` and then writes whatever frames it likes,
  sealed at the right counters (giant headers, unknown types, chunks that do
  not match the advertised file, a wrong END, frames after END, a second AUTH);
- an attacker WITHOUT the key works on the bytes of a real `owsync connect`
  (:class:`FrameRelay`, a man in the middle that parses the v2 frames from
  their 5-byte headers and drops, duplicates, swaps or cuts them, or rewrites
  a plain Hello), or on recorded bytes (a spliced session; the plain replay of
  a whole recording is test_hostile_more.py's).

Every case checks: the listener's session line says ``failed: <reason>``,
nothing was written or deleted in its directory (no temp file left either),
and it still serves a real peer afterwards; where it matters, that its memory
did not grow.  Plain and encrypted mode alike where the case means something
in both.  Then min_protocol 2 against a node that speaks v1 only (ours with
OWSYNC_MAX_PROTOCOL=1, standing in for 1.2.0; test_interop_c.py has the real
one), and two of our nodes negotiating v2.

A damaged or cut file stage fails both sides: the receiver of that
direction at the damaged frame, its sender for want of the receiver's DONE
(this harness found the sender reporting such sessions ok before DONE).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time

import pytest
from conftest import (
    KEY,
    Canary,
    MiB,
    Node,
    Peak,
    make_target,
    no_temp_files,
    record_session,
    session_line,
    still_serves,
    summary,
    tracked,
)

from owsync.core import protocol
from owsync.core import protocol2 as p2
from owsync.core.crypto import AesGcmCipher, PlainCipher
from owsync.core.protocol import ProtocolError

MODES = ["plain", "encrypted"]
OTHER_KEY = "11" * 32
CHUNK = p2.CHUNK_SIZE


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def v2_record(path: str, data: bytes, mtime: int | None = None) -> dict:
    """A live record as a v2 STATE carries it (numbers as integers)."""
    mtime = mtime or int((time.time() + 3600) * 1000)
    return {"path": path, "hash": sha(data), "mtime": mtime, "size": len(data),
            "mode": 0o644, "deleted": False}  # fmt: skip


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- an attacker with the key: a v2 client of the test's own ------------------------------


class V2Wire:
    """The connecting side of a v2 session, scripted by the test frame by frame.

    ``key`` None is plain mode.  ``hello()`` exchanges the v1 Hellos (ours
    advertises v2) and derives the keys as an owsync node does; then ``send``
    seals frames at this direction's counter, and ``recv`` opens the listener's.
    """

    def __init__(self, port: int, key: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.label = f"127.0.0.1:{self.sock.getsockname()[1]}"  # how the listener logs us
        self.psk = bytes.fromhex(key) if key else None
        self.cipher = AesGcmCipher(self.psk) if key else PlainCipher()
        self.inbox: list[p2.Frame] = []
        self.peer_hello: bytes | None = None

    @classmethod
    def to(cls, node, key: str | None = "node") -> V2Wire:
        return cls(node.port, node.key if key == "node" else key)

    def send_hello(self, hostname: str = "hostile") -> bytes:
        self.ours = p2.hello_payload(
            protocol.Hello(hostname, time.time()), p2.advertise(p2.new_nonce())
        )
        sealed = b"".join(self.cipher.seal_parts([self.ours]))
        self.sock.sendall(protocol.frame_header(len(sealed)) + sealed)
        return self.ours

    def hello(self, hostname: str = "hostile") -> None:
        """Hellos both ways, keys derived, and nothing else sent yet."""
        self.send_hello(hostname)
        buf = b""
        while True:
            sealed, rest = p2.split_hello_frame(buf)
            if sealed is not None:
                break
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before the listener's Hello ({len(buf)} bytes)")
            buf += data
        self.peer_hello = bytes(self.cipher.open(sealed))
        keys = p2.session_keys(self.psk, True, self.ours, self.peer_hello)
        self.t = keys.transcript
        self.w = p2.FrameWriter(keys.send)
        self.r = p2.FrameReader(keys.recv)
        self.inbox += self.r.feed(rest)

    def frame(self, ftype: int, body: bytes = b"") -> bytes:
        return self.w.frame(ftype, body)

    def send(self, ftype: int, body: bytes = b"") -> bool:
        """False when the listener hung up already (it may, at the first bad frame)."""
        return self.send_raw(self.frame(ftype, body))

    def send_raw(self, data: bytes) -> bool:
        """False when the listener hung up before taking it all."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def recv(self) -> p2.Frame:
        while not self.inbox:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.inbox += self.r.feed(data)
        return self.inbox.pop(0)

    def expect(self, ftype: int) -> p2.Frame:
        f = self.recv()
        assert f.type == ftype, (p2.NAMES.get(f.type), f.body[:200])
        return f

    def until(self, ftype: int) -> list[p2.Frame]:
        """Frames up to and including the first of ``ftype``."""
        out = [self.recv()]
        while out[-1].type != ftype:
            assert out[-1].type != p2.ERROR, out[-1].body
            out.append(self.recv())
        return out

    def recv_until_closed(self) -> list[p2.Frame]:
        out = []
        try:
            while True:
                out.append(self.recv())
        except (ConnectionError, OSError, ProtocolError):  # closed, reset, or unreadable
            pass
        return out

    def authed(self) -> None:
        """Hello and AUTH both ways: the listener is about to send its state."""
        self.hello()
        self.send(p2.AUTH, self.t)
        assert self.expect(p2.AUTH).body == self.t

    def handshake(self, records=()) -> list[str]:
        """Up to the file stage: states both ways, requests both ways (ours empty).
        What the listener requested."""
        self.authed()
        self.until(p2.STATE_END)
        for body in [dumps(list(records))] if records else []:
            self.send(p2.STATE, body)
        self.send(p2.STATE_END)
        asked = []
        for f in self.until(p2.REQUEST_END):
            if f.type == p2.REQUEST:
                asked += json.loads(f.body)
        self.send(p2.REQUEST_END)
        return asked

    def file_header(self, r: dict, **over) -> bytes:
        h = {"path": r["path"], "mode": r["mode"], "size": r["size"], "sha256": r["hash"],
             "mtime": r["mtime"]} | over  # fmt: skip
        return dumps(h)

    def end(self, frames=None, files=0, nbytes=0) -> None:
        n = self.w.counter if frames is None else frames
        self.send(p2.END, dumps({"frames": n, "files": files, "bytes": nbytes}))

    def close(self) -> None:
        self.sock.close()


# --- an attacker without the key: a man in the middle ---------------------------------------


class Cut:
    """Forward ``keep`` bytes of this frame, then hang up on both sides."""

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep


class Fault:
    """What the relay does to one direction's v2 frames: ``action`` on the ``nth``
    frame of type ``ftype`` (0 the first; the AUTH is frame 0 of its direction).

    drop | dup | swap (with the frame that follows it) | cut (``keep`` bytes of
    it forwarded, then both connections closed)."""

    def __init__(self, action: str, ftype: int, nth: int = 0, keep: int = 0) -> None:
        self.action, self.ftype, self.nth, self.keep = action, ftype, nth, keep
        self.seen = 0
        self.held: bytes | None = None
        self.hit = False  # the frame came by and the fault was applied

    def __repr__(self) -> str:
        return f"{self.action}-{p2.NAMES[self.ftype]}-{self.nth}"

    def apply(self, ftype: int, frame: bytes):
        if self.held is not None:  # swap: the frame after the held one goes first
            held, self.held = self.held, None
            return [frame, held]
        if ftype != self.ftype or self.hit:
            return [frame]
        if self.seen < self.nth:
            self.seen += 1
            return [frame]
        self.hit = True
        if self.action == "drop":
            return []
        if self.action == "dup":
            return [frame, frame]
        if self.action == "swap":
            self.held = frame
            return []
        if self.action == "cut":
            return Cut(self.keep)
        raise ValueError(self.action)


class FrameRelay(threading.Thread):
    """A man in the middle between a real `connect` and a real listener.

    Each direction's first frame is the v1 Hello (4-byte length, payload),
    passed through ``hello_c2s`` / ``hello_s2c`` (bytes -> bytes: the frame
    as forwarded); after it, with ``v2`` set, the relay cuts the stream into
    v2 frames by their 5-byte headers and lets ``c2s`` / ``s2c`` (a Fault)
    decide what goes on.  ``types`` records, per direction, the types of the
    frames that came by (before any fault).  Without ``v2`` the bytes after
    the Hellos pass as they are (a session that fell back to v1).

    ``gate``: directions whose frames, from their first FILE on, are held
    until the other direction's END has passed (the attacker chooses the
    timing: the faulted file arrives after the receiver has sent everything).
    """

    def __init__(self, port: int, c2s=None, s2c=None, hello_c2s=None, hello_s2c=None,
                 v2: bool = True, gate=()) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.target = port
        self.faults = {"c2s": c2s, "s2c": s2c}
        self.hellos = {"c2s": hello_c2s, "s2c": hello_s2c}
        self.v2 = v2
        self.gate = set(gate)
        self.ended = {"c2s": threading.Event(), "s2c": threading.Event()}
        self.types: dict[str, list[str]] = {"c2s": [], "s2c": []}
        self.cut = threading.Event()
        self.label: str | None = None  # how the listener names this connection
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.start()

    def run(self) -> None:
        self.srv.settimeout(30)
        client, _ = self.srv.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        self.label = f"127.0.0.1:{server.getsockname()[1]}"
        self.socks = (client, server)
        back = threading.Thread(target=self._pipe, args=(server, client, "s2c"), daemon=True)
        back.start()
        self._pipe(client, server, "c2s")
        back.join(90)
        for s in (client, server, self.srv):
            s.close()

    def _hang_up(self) -> None:
        self.cut.set()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        buf = bytearray()
        hello_done = False
        fault = self.faults[way]
        other = self.ended["s2c" if way == "c2s" else "c2s"]
        try:
            while data := src.recv(65536):
                if self.cut.is_set():
                    return
                buf += data
                if not hello_done:
                    if len(buf) < 4 or len(buf) < 4 + int.from_bytes(buf[:4], "big"):
                        continue
                    n = 4 + int.from_bytes(buf[:4], "big")
                    hello, buf = bytes(buf[:n]), buf[n:]
                    rewrite = self.hellos[way]
                    dst.sendall(rewrite(hello) if rewrite else hello)
                    hello_done = True
                if not self.v2:
                    dst.sendall(buf)
                    buf.clear()
                    continue
                while len(buf) >= p2.HEADER_SIZE:
                    n, ftype = struct.unpack_from(">IB", buf)
                    if len(buf) < p2.HEADER_SIZE + n:
                        break
                    frame = bytes(buf[: p2.HEADER_SIZE + n])
                    del buf[: p2.HEADER_SIZE + n]
                    self.types[way].append(p2.NAMES.get(ftype, str(ftype)))
                    if ftype == p2.FILE and way in self.gate:
                        assert other.wait(30), f"{way}: the other direction's END never came"
                    out = fault.apply(ftype, frame) if fault else [frame]
                    if isinstance(out, Cut):
                        dst.sendall(frame[: out.keep])
                        self._hang_up()
                        return
                    for f in out:
                        dst.sendall(f)
                    if ftype == p2.END:
                        self.ended[way].set()
        except OSError:  # reset: the other end learns it as an end of stream
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def strip_v2(hello_frame: bytes) -> bytes:
    """A plain Hello frame without its v2 advertisement (the rest as it was)."""
    payload = re.sub(rb',"v2":\{"nonce":"[0-9a-f]{64}"\}', b"", hello_frame[4:])
    assert payload != hello_frame[4:], hello_frame
    return protocol.frame_header(len(payload)) + payload


# --- what every case checks -----------------------------------------------------------------


class FalseComplete(AssertionError):
    """A side reported a complete session over a damaged or cut connection.

    Before DONE, a side counted a session complete once its END was sent and the
    peer's END verified: a frame dropped, duplicated, swapped or cut in one
    direction's file stage left the SENDER of that direction reporting "ok, sent
    N" while its peer refused the file.  Now each side completes only on the
    peer's DONE, which the peer sends once what it received is in place and saved.
    """


def relay_label(relay: FrameRelay) -> str:
    assert relay.label, "the relay never reached the listener"
    return relay.label


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def whole_or_absent(node, originals: dict[str, bytes]) -> None:
    """Every file of ``node`` is one it had or a whole copy of the peer's: nothing
    half-written, no temp file."""
    assert no_temp_files(node.dir), sorted(node.files())
    for path, data in node.files().items():
        assert originals.get(path) == data, f"{node.name}: {path} is not a whole copy"


@pytest.fixture(scope="module")
def shared_nodes(tmp_path_factory):
    yield from tracked(tmp_path_factory.mktemp("shared-v2"), Node)


@pytest.fixture(scope="module", params=MODES)
def served(request, shared_nodes, tmp_path_factory):
    """One listener per mode for all the keyed sequences (each leaves it as it found it)."""
    c = Canary(tmp_path_factory.mktemp(f"canary-v2-{request.param}") / "tree")
    a = make_target(shared_nodes, c, f"a-{request.param}", request.param).listen()
    a.canary = c
    a.mode = request.param
    return a


# --- frame-level faults from an attacker with the key ------------------------------------------


def over(w: V2Wire) -> int:
    return p2.TAG if w.psk else 0


def limits(w: V2Wire, ftype: int) -> str:
    lo, hi = p2.LIMITS[ftype]
    return f"({lo + over(w)}..{hi + over(w)})"


def offer(w: V2Wire, path: str, data: bytes) -> dict:
    """Advertise one file; the listener requests it; we may now send files."""
    r = v2_record(path, data)
    assert w.handshake([r]) == [path]
    return r


def chunks(data: bytes):
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def kseq_second_auth_where_state_is_due(w, tag):
    w.authed()
    w.send(p2.AUTH, w.t)
    return "unexpected AUTH from the peer where STATE was due"


def kseq_second_auth_in_the_file_stage(w, tag):
    w.handshake()
    w.send(p2.AUTH, w.t)
    return "unexpected AUTH from the peer where FILE or END was due"


def kseq_giant_state_header(w, tag):
    w.authed()
    w.send_raw(struct.pack(">IB", 0xFFFFFFFF, p2.STATE))  # the header alone: no body follows
    return f"frame 1: STATE of 4294967295 bytes outside its limits {limits(w, p2.STATE)}"


def kseq_state_one_byte_over_its_limit(w, tag):
    w.authed()
    w.send_raw(struct.pack(">IB", p2.CONTROL_LIMIT + over(w) + 1, p2.STATE))
    n = p2.CONTROL_LIMIT + over(w) + 1
    return f"frame 1: STATE of {n} bytes outside its limits {limits(w, p2.STATE)}"


def kseq_giant_chunk_header(w, tag):
    r = offer(w, f"g-{tag}", b"g" * 100)
    w.send(p2.FILE, w.file_header(r))
    n = w.w.counter
    w.send_raw(struct.pack(">IB", 0xFFFFFFFF, p2.CHUNK))
    return f"frame {n}: CHUNK of 4294967295 bytes outside its limits {limits(w, p2.CHUNK)}"


def kseq_unknown_type_0(w, tag):
    w.authed()
    w.send_raw(struct.pack(">IB", 16, 0) + b"\0" * 16)
    return "frame 1: unknown frame type 0"


def kseq_unknown_type_12(w, tag):
    w.authed()
    w.send_raw(struct.pack(">IB", 16, 12) + b"\0" * 16)
    return "frame 1: unknown frame type 12"


def kseq_unknown_type_255_giant(w, tag):
    w.handshake()
    n = w.w.counter
    w.send_raw(struct.pack(">IB", 0xFFFFFFFF, 255))
    return f"frame {n}: unknown frame type 255"


def kseq_chunks_do_not_match_the_advertised_sha256(w, tag):
    """Three good chunks reach the temp file, the last one is not the file's."""
    path, data = f"f-{tag}", os.urandom(200_000)
    r = offer(w, path, data)
    w.send(p2.FILE, w.file_header(r))
    parts = chunks(data)
    for part in parts[:-1]:
        w.send(p2.CHUNK, part)
    w.send(p2.CHUNK, bytes(b ^ 1 for b in parts[-1]))
    w.send(p2.FILE_END)
    return f"{path!r}: the content does not match its SHA-256"


def kseq_a_chunk_past_the_advertised_size(w, tag):
    path, data = f"f-{tag}", b"x" * 100
    r = offer(w, path, data)
    w.send(p2.FILE, w.file_header(r))
    w.send(p2.CHUNK, data + b"!")
    return f"CHUNK past the size of {path!r} (100)"


def kseq_file_end_before_the_advertised_size(w, tag):
    path, data = f"f-{tag}", os.urandom(200_000)
    r = offer(w, path, data)
    w.send(p2.FILE, w.file_header(r))
    w.send(p2.CHUNK, data[:CHUNK])
    w.send(p2.FILE_END)
    return f"FILE_END for {path!r} after {CHUNK} of 200000 bytes"


def kseq_file_header_with_another_size_and_hash(w, tag):
    path, data = f"f-{tag}", b"advertised"
    r = offer(w, path, data)
    other = b"something else, longer"
    w.send(p2.FILE, w.file_header(r, size=len(other), sha256=sha(other)))
    w.send(p2.CHUNK, other)
    w.send(p2.FILE_END)
    return f"FILE: {path!r} is not the version the peer advertised"


def kseq_file_not_requested(w, tag):
    w.handshake()
    w.send(p2.FILE, w.file_header(v2_record(f"planted-{tag}", b"pwned")))
    w.send(p2.CHUNK, b"pwned")
    w.send(p2.FILE_END)
    return f"FILE: 'planted-{tag}' was not requested, or was sent already"


def kseq_chunk_outside_a_file(w, tag):
    w.handshake()
    w.send(p2.CHUNK, b"stray")
    return "unexpected CHUNK from the peer where FILE or END was due"


def kseq_end_with_a_frame_too_many(w, tag):
    w.handshake()
    n = w.w.counter
    w.end(frames=n + 1)
    return (
        f"the peer's END says it sent ({n + 1}, 0, 0) (frames, files, bytes); ({n}, 0, 0) arrived"
    )


def kseq_end_claiming_a_file_that_never_came(w, tag):
    """What a peer whose FILE a relay dropped would say: refused, by the counts."""
    path, data = f"f-{tag}", b"dropped"
    offer(w, path, data)
    n = w.w.counter
    w.end(files=1, nbytes=len(data))
    return (
        f"the peer's END says it sent ({n}, 1, {len(data)}) (frames, files, bytes);"
        f" ({n}, 0, 0) arrived"
    )


def past_end(w, ftype: int, body=lambda n: b"") -> str:
    """After the handshake, END then a frame of ``ftype`` (``body(n)``, n the frames
    before END), in one write so that they arrive together; the reason expected."""
    w.handshake()
    n = w.w.counter
    end = w.frame(p2.END, dumps({"frames": n, "files": 0, "bytes": 0}))
    w.w.ended = False  # the writer refuses to write past END: the test does it anyway
    w.send_raw(end + w.frame(ftype, body(n)))
    return f"frame {n + 1}: {p2.NAMES[ftype]} after the peer's end of stream"


def kseq_frame_after_end(w, tag):
    return past_end(w, p2.STATE_END)


def kseq_second_end(w, tag):
    return past_end(w, p2.END, lambda n: dumps({"frames": n + 1, "files": 0, "bytes": 0}))


def kseq_second_auth_after_end(w, tag):
    return past_end(w, p2.AUTH, lambda n: w.t)


def kseq_error_frame_with_control_characters(w, tag):
    """The peer's reason reaches the log printable and clipped: no forged log lines."""
    w.handshake()
    w.send(p2.ERROR, b"\x1b[31mred\nowsync: sync with 10.0.0.9 ok: forged" + b"z" * 300)
    return "the peer gave the session up: ?[31mred?owsync: sync with 10.0.0.9 ok: forged"


KSEQ = {
    f.__name__.removeprefix("kseq_"): f
    for f in (
        kseq_second_auth_where_state_is_due,
        kseq_second_auth_in_the_file_stage,
        kseq_giant_state_header,
        kseq_state_one_byte_over_its_limit,
        kseq_giant_chunk_header,
        kseq_unknown_type_0,
        kseq_unknown_type_12,
        kseq_unknown_type_255_giant,
        kseq_chunks_do_not_match_the_advertised_sha256,
        kseq_a_chunk_past_the_advertised_size,
        kseq_file_end_before_the_advertised_size,
        kseq_file_header_with_another_size_and_hash,
        kseq_file_not_requested,
        kseq_chunk_outside_a_file,
        kseq_end_with_a_frame_too_many,
        kseq_end_claiming_a_file_that_never_came,
        kseq_frame_after_end,
        kseq_second_end,
        kseq_second_auth_after_end,
        kseq_error_frame_with_control_characters,
    )
}
GIANT = {"giant_state_header", "giant_chunk_header", "unknown_type_255_giant"}


@pytest.mark.parametrize("seq", sorted(KSEQ))
def test_frame_level_faults_from_a_key_holder(served, shared_nodes, seq):
    """A v2 client that holds the key (any node of the fleet) sends frames that break
    the rules: the listener refuses the session with the reason, tells the client
    why in an ERROR frame (unless the client gave up first), writes nothing, and
    serves the next peer.  A header that announces a giant body is refused from
    its 5 bytes: the client sends nothing after it, the listener holds nothing."""
    a = served
    since = len(a.log.read_text())
    before = a.files()
    peak = Peak(a.proc.pid)
    w = V2Wire.to(a)
    want = KSEQ[seq](w, seq)
    got = w.recv_until_closed()  # the listener hangs up without waiting for more
    if seq in GIANT:
        # what the header announced, pushed anyway: the socket is closed already
        sent = 0
        while sent < 16 * MiB and w.send_raw(b"\0" * MiB):
            sent += MiB
        assert sent < 16 * MiB
    w.close()
    line = session_line(a, w.label, since)
    assert f"sync with {w.label} failed: {want}" in line, line
    # the listener says why, sealed at its counter, unless its stream had ended
    # already (nothing may follow END) or the client gave up first
    assert got, "the listener sent nothing after its Hello"
    if got[-1].type != p2.END and not seq.startswith("error_frame"):
        assert got[-1].type == p2.ERROR, [p2.NAMES[f.type] for f in got]
        assert want[:60] in got[-1].body.decode(), got[-1].body
    assert a.files() == before
    assert no_temp_files(a.dir)
    a.canary.assert_unchanged()
    still_serves(a, shared_nodes, f"checker-{a.mode}-{seq}")
    peak.check(f"listener, {seq}, {a.mode}", bound=16 * MiB)


# --- a key holder, wrong key, spliced sessions ------------------------------------------------


def test_a_client_with_another_key_fails_at_the_hello(nodes, tmp_path):
    """Encrypted: a v2 client sealing with another PSK never gets past the Hello
    (v1's sealing of it): the listener cannot open it, says so, and sends nothing
    after its own Hello; the client cannot open the listener's Hello either."""
    canary = Canary(tmp_path / "canary")
    a = make_target(nodes, canary).listen()
    before = a.files()
    peak = Peak(a.proc.pid)
    w = V2Wire.to(a, key=OTHER_KEY)
    w.send_hello()
    buf = b""
    try:
        while data := w.sock.recv(65536):
            buf += data
    except OSError:
        pass
    w.close()
    sealed, rest = p2.split_hello_frame(buf)
    assert sealed is not None and rest == b""  # its Hello, nothing after it
    with pytest.raises(Exception, match="decryption failed"):
        w.cipher.open(sealed)
    line = session_line(a, w.label)
    assert "failed: decryption failed: wrong key, or the peer is in plain mode" in line, line
    assert a.files() == before and no_temp_files(a.dir)
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check("listener, another key", bound=16 * MiB)


def v2_part(recorded: bytes) -> tuple[bytes, bytes]:
    """A recording of what a connect sent: its Hello frame, and the v2 frames after it."""
    sealed, rest = p2.split_hello_frame(recorded)
    assert sealed is not None and rest
    return recorded[: len(recorded) - len(rest)], rest


@pytest.mark.parametrize("mode", MODES)
def test_the_v2_part_of_a_recording_spliced_after_a_fresh_hello(nodes, tmp_path, mode):
    """A recorded session's v2 frames behind another Hello: in plain mode a Hello
    the attacker makes itself (no key needed), encrypted one recorded from a
    second session (the attacker cannot seal a Hello).  Either way the frames
    belong to another transcript: refused at the first one, AUTH (encrypted: it
    fails to open under this session's keys; plain: its T is not this one's),
    before the listener takes its lock or scans."""
    canary = Canary(tmp_path / "canary")
    a = make_target(nodes, canary, mode=mode).listen()
    b = nodes("b", key=a.key, extra=a.extra)
    b.write("new", "from b")
    _, frames_1 = v2_part(record_session(a, b))
    b.write("newer", "from b")
    hello_2, _ = v2_part(record_session(a, b))
    assert "protocol 2" in a.wait_log("ok: received 1, sent 0")
    if mode == "plain":
        payload = p2.hello_payload(protocol.Hello("fresh", time.time()),
                                   p2.advertise(p2.new_nonce()))  # fmt: skip
        hello = protocol.frame_header(len(payload)) + payload
        want = (
            "failed: the peer's AUTH does not match this session's Hellos"
            " (a modified Hello, or a spliced session)"
        )
    else:
        hello = hello_2
        want = "failed: frame 0 (AUTH) failed authentication"
    (a.dir / "new").unlink()
    a.write("newer", "edited on a")
    before = a.files()
    peak = Peak(a.proc.pid)
    s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    label = f"127.0.0.1:{s.getsockname()[1]}"
    s.sendall(hello + frames_1)
    got = b""
    try:
        while data := s.recv(65536):
            got += data
    except OSError:
        pass
    s.close()
    line = session_line(a, label)
    assert want in line, line
    # what the listener sent: its Hello, its AUTH and its ERROR, no state
    _, rest = p2.split_hello_frame(got)
    types = []
    while len(rest) >= p2.HEADER_SIZE:
        n, t = struct.unpack_from(">IB", rest)
        types.append(p2.NAMES[t])
        rest = rest[p2.HEADER_SIZE + n :]
    assert types in (["AUTH", "ERROR"], ["AUTH"]), types
    assert a.files() == before and no_temp_files(a.dir)
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check(f"listener, spliced session, {mode}", bound=16 * MiB)


# --- an attacker without the key between two real nodes --------------------------------------

BIG = 200_000  # 3 chunks of 64 KiB and one of 3392 bytes

# (direction, action, frame type, which one of that type); file-stage faults (and
# the cuts) hit the frames of a 200 KB file, the others the state and AUTH.
RELAY_CASES = [
    ("c2s", "dup", p2.AUTH, 0),
    ("c2s", "drop", p2.STATE_END, 0),
    ("c2s", "swap", p2.STATE, 0),
    ("s2c", "drop", p2.AUTH, 0),
    ("s2c", "dup", p2.STATE, 0),
    ("s2c", "swap", p2.STATE, 0),
    ("c2s", "drop", p2.CHUNK, 1),
    ("c2s", "dup", p2.CHUNK, 1),
    ("c2s", "swap", p2.CHUNK, 1),
    ("c2s", "cut", p2.CHUNK, 1),
    ("s2c", "drop", p2.CHUNK, 1),
    ("s2c", "dup", p2.CHUNK, 1),
    ("s2c", "swap", p2.CHUNK, 1),
    ("s2c", "cut", p2.CHUNK, 1),
]


def relay_reason(mode: str, action: str, ftype: int, path: str) -> str:
    """The regex of what the receiving side of the damaged direction says."""
    if action == "cut":
        return (r"connection closed before the peer's END \(after \d+ frames\):"
                r" the session is incomplete")  # fmt: skip
    if mode == "encrypted":
        return (r"frame \d+ \(\w+\) failed authentication: wrong key, or a replayed,"
                r" reordered, dropped or spliced frame")  # fmt: skip
    if ftype == p2.CHUNK:
        return {
            "drop": f"FILE_END for '{path}' after {BIG - CHUNK} of {BIG} bytes",
            "dup": rf"CHUNK past the size of '{path}' \({BIG}\)",
            "swap": f"'{path}': the content does not match its SHA-256",
        }[action]
    return {
        ("dup", p2.AUTH): "unexpected AUTH from the peer where STATE was due",
        ("drop", p2.STATE_END): "unexpected REQUEST from the peer where STATE was due",
        ("swap", p2.STATE): "unexpected STATE from the peer where REQUEST was due",
        ("drop", p2.AUTH): "unexpected STATE from the peer where AUTH was due",
        ("dup", p2.STATE): r"STATE: '(sub/keep|big-a)' twice",
    }[(action, ftype)]


def relay_case_id(case) -> str:
    way, action, ftype, nth = case
    return f"{way}-{action}-{p2.NAMES[ftype]}{nth}"


def relay_params():
    return [pytest.param(case, id=relay_case_id(case)) for case in RELAY_CASES]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", relay_params())
def test_frames_dropped_duplicated_swapped_or_cut_on_the_path(nodes, tmp_path, mode, case):
    """A real `connect` (b) and a real listener (a), a relay between them that damages
    one direction's v2 frames.  The receiver of that direction refuses the session
    at the damaged frame, with the reason; nothing half-written on either side, no
    temp file, nothing written on the listener; the listener serves the next peer;
    and the session counts as complete on neither side.

    c2s: b sends a 200 KB file (b's own state and AUTH in the early cases); s2c: a
    sends it.  In the file stage the relay holds the damaged direction's files
    until the other direction's END has passed (an attacker picks the timing)."""
    way, action, ftype, nth = case
    canary = Canary(tmp_path / "canary")
    a = make_target(nodes, canary, mode=mode)
    b = nodes("b", key=a.key, extra=a.extra)
    path = "big-b" if way == "c2s" else "big-a"
    (b if way == "c2s" else a).write(path, os.urandom(BIG))
    a.listen()
    a_before, b_before = a.files(), b.files()
    fault = Fault(action, ftype, nth, keep=3000)
    gate = {way} if ftype == p2.CHUNK else set()
    relay = FrameRelay(a.port, gate=gate, **{way: fault})
    peak = Peak(a.proc.pid)
    r = b.run("connect", f"127.0.0.1:{relay.port}", *b.opts(), timeout=90)
    relay.join(30)
    assert fault.hit, relay.types
    line = session_line(a, relay_label(relay))
    want = relay_reason(mode, action, ftype, path)
    other_side = r"the peer gave the session up|connection closed before the peer's (END|DONE)"
    if way == "c2s":  # the listener received the damaged stream
        assert re.search(f"failed: {want}", line), line
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        assert re.search(f"failed: {want}", one_error_line(r.stderr)), r.stderr
    # nothing written on the listener; on the connecting side, a's files whole or absent
    assert a.files() == a_before and no_temp_files(a.dir)
    whole_or_absent(b, {**b_before, **a_before})
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")
    peak.check(f"listener, {relay_case_id(case)}, {mode}", bound=16 * MiB)
    # and the other side did not take it for a complete session either
    if way == "c2s" and r.returncode != 1:
        raise FalseComplete(f"connect: {r.stdout.strip()} (rc {r.returncode}); listener: {line}")
    if way == "s2c" and "failed:" not in line:
        raise FalseComplete(f"listener: {line}; connect: {r.stderr.strip()}")
    if way == "c2s":  # the listener told b why, or b saw it hang up
        assert re.search(other_side, one_error_line(r.stderr)), r.stderr
    else:
        assert re.search(f"failed: ({other_side})", line), line


# --- the v2 advertisement stripped (plain mode: the Hellos are not sealed) --------------------


@pytest.mark.parametrize("way", ["c2s", "s2c"])
def test_an_advertisement_stripped_from_one_hello_fails_both_sides(nodes, tmp_path, way):
    """A man in the middle removes "v2" from one plain Hello: the side that saw both
    advertisements speaks v2, the other v1.  Neither runs a mismatched session to
    an end: both fail at the other's first frame, nothing written or deleted."""
    canary = Canary(tmp_path / "canary")
    a = make_target(nodes, canary, mode="plain")
    a.write("gone-on-b", "a has it, b deleted it")
    b = nodes("b", key=None, extra=["-p"])
    b.write("from-b", "b")
    a.listen()
    b.sync_ok(a)
    (b.dir / "gone-on-b").unlink()
    b.write("from-b", "b, edited")
    a_before, b_before = a.files(), b.files()
    relay = FrameRelay(a.port, v2=False, **{f"hello_{way}": strip_v2})
    r = b.run("connect", f"127.0.0.1:{relay.port}", *b.opts(), timeout=90)
    relay.join(30)
    line = session_line(a, relay_label(relay))
    err = one_error_line(r.stderr)
    assert r.returncode == 1 and "failed:" in line, (r.stdout, line)
    # the side that speaks v2 takes the other's v1 frame ('{' of its JSON) for a
    # frame type; the side that speaks v1 takes the v2 frames for v1 frames
    v2_side, v1_side = (err, line) if way == "c2s" else (line, err)
    # (or, when the v1 side failed before its v1 frame left, the hang-up)
    assert re.search(
        r"failed: (frame 0: unknown frame type 123|connection closed before the peer's END)",
        v2_side,
    ), v2_side
    assert re.search(r"failed: (frame of \d+ bytes exceeds the limit|.*undecodable)", v1_side)
    assert a.files() == a_before and b.files() == b_before
    assert no_temp_files(a.dir) and no_temp_files(b.dir)
    canary.assert_unchanged()
    still_serves(a, nodes, "checker")


def test_both_advertisements_stripped_fall_back_to_v1_unless_min_protocol_2(nodes, tmp_path):
    """Removed from both plain Hellos, the session falls back to v1, as with owsync
    1.2.0 (plain mode has no integrity: this is the downgrade it allows).  A
    listener with `--min-protocol 2` refuses it, with the reason, and nothing
    changes on either side."""
    canary = Canary(tmp_path / "canary")
    a = make_target(nodes, canary, mode="plain")
    b = nodes("b", key=None, extra=["-p"])
    b.write("from-b", "b")
    a.listen()
    relay = FrameRelay(a.port, v2=False, hello_c2s=strip_v2, hello_s2c=strip_v2)
    r = b.run("connect", f"127.0.0.1:{relay.port}", *b.opts(), timeout=90)
    relay.join(30)
    assert r.returncode == 0, r.stderr
    assert summary(r)["protocol"] == 1
    line = session_line(a, relay_label(relay))
    assert line.endswith("protocol 1") and " ok: received 1, sent 1" in line, line
    a.stop()

    strict = nodes("a", key=None, extra=["-p", "--min-protocol", "2"])  # the same node
    strict.log = tmp_path / "a-strict.log"
    strict.listen()
    b.write("from-b", "b, edited")
    (b.dir / "sub/keep").unlink()
    a_before, b_before = strict.files(), b.files()
    relay = FrameRelay(strict.port, v2=False, hello_c2s=strip_v2, hello_s2c=strip_v2)
    r = b.run("connect", f"127.0.0.1:{relay.port}", *b.opts(), timeout=90)
    relay.join(30)
    line = session_line(strict, relay_label(relay))
    host = socket.gethostname()
    assert f"failed: {host} speaks protocol 1 only (owsync 1.2.0?); min_protocol 2 refuses it" in (
        line
    ), line
    assert r.returncode == 1, r.stdout
    one_error_line(r.stderr)
    assert strict.files() == a_before and b.files() == b_before
    assert no_temp_files(strict.dir) and no_temp_files(b.dir)
    canary.assert_unchanged()
    still_serves(strict, nodes, "checker")  # a peer that speaks v2 is served


# --- min_protocol against a node that speaks v1 only (a stand-in for owsync 1.2.0) -------------


def refusal(host: str) -> str:
    return f"{host} speaks protocol 1 only (owsync 1.2.0?); min_protocol 2 refuses it"


@pytest.mark.parametrize("how", ["flag", "config"])
@pytest.mark.parametrize("mode", MODES)
def test_a_min_protocol_2_listener_refuses_a_v1_only_node(nodes, tmp_path, mode, how):
    """OWSYNC_MAX_PROTOCOL=1 makes our node advertise no v2, as owsync 1.2.0: a
    listener with min_protocol 2 (the flag, or key=value in its config file)
    refuses it after the Hellos, with the reason; nothing changes on either side;
    the listener goes on serving v2 peers."""
    canary = Canary(tmp_path / "canary")
    if how == "flag":
        opts = ["--min-protocol", "2"]
    else:
        conf = tmp_path / "a.conf"
        conf.write_text(
            "min_protocol=2\ninclude=*\n" + ("plain_mode=1\n" if mode == "plain" else "")
        )
        opts = ["-c", str(conf)]
    a = make_target(nodes, canary, mode=mode)
    a.extra += opts
    a.write("from-a", "a")
    a.listen()
    old = nodes("old", key=a.key, extra=["-p"] if mode == "plain" else [], max_protocol=1)
    old.write("from-old", "old")
    a_before, old_before = a.files(), old.files()
    r = old.connect(a)
    assert r.returncode == 1, r.stdout
    one_error_line(r.stderr)
    line = a.wait_log(refusal(socket.gethostname()))
    assert f"failed: {refusal(socket.gethostname())}" in line.splitlines()[-1], line
    assert a.files() == a_before and old.files() == old_before
    assert no_temp_files(a.dir) and no_temp_files(old.dir)
    canary.assert_unchanged()
    checker = still_serves(a, nodes, "checker")
    assert summary(checker.connect(a))["protocol"] == 2


@pytest.mark.parametrize("mode", MODES)
def test_connect_with_min_protocol_2_refuses_a_v1_only_listener(nodes, tmp_path, mode):
    """`connect --min-protocol 2` to a node that speaks v1 only: exit 1, the reason
    on stderr, the summary says protocol 1; nothing changes on either side."""
    plain = ["-p"] if mode == "plain" else []
    key = None if mode == "plain" else KEY
    old = nodes("old", key=key, extra=plain, max_protocol=1)
    old.write("from-old", "old")
    old.listen()
    b = nodes("b", key=key, extra=plain)
    b.write("from-b", "b")
    old_before, b_before = old.files(), b.files()
    r = b.connect(old, "--min-protocol", "2")
    assert r.returncode == 1, r.stdout
    err = one_error_line(r.stderr)
    assert f"failed: {refusal(socket.gethostname())}" in err, err
    assert summary(r)["protocol"] == 1
    old.wait_log("sync with 127.0.0.1")
    assert old.files() == old_before and b.files() == b_before
    assert no_temp_files(old.dir) and no_temp_files(b.dir)
    assert summary(b.sync_ok(old))["protocol"] == 1  # without the option: v1, as ever
    assert old.files() == b.files()


# --- our nodes negotiate v2 -----------------------------------------------------------------


@pytest.mark.parametrize("min_protocol", ["1", "2"])
@pytest.mark.parametrize("mode", MODES)
def test_two_of_our_nodes_negotiate_v2_whoever_connects(nodes, mode, min_protocol):
    plain = ["-p"] if mode == "plain" else []
    key = None if mode == "plain" else KEY
    a = nodes("a", key=key, extra=[*plain, "--min-protocol", min_protocol])
    b = nodes("b", key=key, extra=[*plain, "--min-protocol", min_protocol])
    a.write("from-a", "a")
    b.write("from-b", "b")
    a.listen()
    r = b.sync_ok(a)
    assert summary(r)["protocol"] == 2 and r.stdout.strip().endswith("protocol 2")
    assert a.wait_log("ok: received 1").splitlines()[-1].endswith("protocol 2")
    a.stop()
    b.write("from-b", "b, edited")
    b.listen()
    r = a.sync_ok(b)
    assert summary(r)["protocol"] == 2
    assert b.wait_log("ok: received 0, sent 1").splitlines()[-1].endswith("protocol 2")
    assert a.files() == b.files() == {"from-a": b"a", "from-b": b"b, edited"}
