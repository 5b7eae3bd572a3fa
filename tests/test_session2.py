"""Protocol v2's session machine: whole sessions between two machines, the
recorded vectors reproduced, the ordering rules, and the issue-7 harness aimed
at v2 (replayed, reordered, duplicated, dropped and truncated frames, spliced
sessions, stripped advertisements, wrong keys), each refused with a clear
ProtocolError and no file written; then fuzzing.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from owsync.core import protocol2 as p2
from owsync.core.crypto import AesGcmCipher
from owsync.core.protocol import Hello, ProtocolError, SyncState, encode, frame_header
from owsync.core.session import SessionAbort
from owsync.core.session2 import (
    FileChunk,
    FileDone,
    FileRefused,
    FileStart,
    PeerAuth,
    PeerEnd,
    PeerRequest,
    PeerState,
    Session2,
)
from owsync.core.state import Record

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "vectors", "v2", "session.json")) as _f:
    V = json.load(_f)
PSK = bytes.fromhex(V["psk"])
EXAMPLES = int(os.environ.get("OWSYNC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hellos(nonce_i=b"\x11" * 32, nonce_r=b"\x22" * 32, name_i="a", name_r="b"):
    hi = p2.hello_payload(Hello(name_i, 1795600000.0), p2.advertise(nonce_i))
    hr = p2.hello_payload(Hello(name_r, 1795600000.0), p2.advertise(nonce_r))
    return hi, hr


def key_pair(psk=PSK, hi=None, hr=None):
    if hi is None:
        hi, hr = hellos()
    return p2.session_keys(psk, True, hi, hr), p2.session_keys(psk, False, hr, hi)


def accept(path: str) -> bool:
    return ".." not in path and not path.startswith("/")


class Node:
    """One side: a machine and a toy replica that does what the events say."""

    def __init__(self, keys, files=None, tombstones=(), max_file_size=1 << 30, serve=None):
        self.m = Session2(accept, max_file_size, keys)
        self.files = dict(files or {})  # path -> (data, mtime)
        self.serve = serve or {}  # path -> data actually read when sending (a changed file)
        self.records = {p: Record(p, sha(d), mt, len(d), 0o644, False)
                        for p, (d, mt) in self.files.items()}  # fmt: skip
        for p, mt in tombstones:
            self.records[p] = Record(p, None, mt, 0, 0o644, True)
        self.out: list[bytes] = [self.m.start()]
        self.events: list = []
        self.temp: dict[str, bytearray] = {}
        self.written: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self.refused: list[tuple[str, str]] = []
        self.gave_up: list[str] = []

    def take(self, data: bytes) -> None:
        self.m.receive_data(data)
        while (ev := self.m.next_event()) is not None:
            self.events.append(ev)
            self.handle(ev)
        if self.m.can_close:  # both ENDs: "saved", acknowledged with DONE
            self.out.append(self.m.done())

    def handle(self, ev) -> None:
        m = self.m
        if isinstance(ev, PeerAuth):
            self.out += m.state(self.records)
        elif isinstance(ev, PeerState):
            self.deleted += [r.path for r in ev.plan.deletions]
            self.out += m.request(ev.plan)
        elif isinstance(ev, PeerRequest):
            for path in ev.paths:
                self.send_file(path)
            self.out.append(m.end())
        elif isinstance(ev, FileStart):
            self.temp[ev.record.path] = bytearray()
        elif isinstance(ev, FileChunk):
            assert 0 < len(ev.data) <= p2.CHUNK_SIZE
            self.temp[ev.path] += ev.data
        elif isinstance(ev, FileDone):
            data = bytes(self.temp.pop(ev.record.path))
            assert sha(data) == ev.record.hash and len(data) == ev.record.size
            self.written[ev.record.path] = data
        elif isinstance(ev, FileRefused):
            self.temp.pop(ev.path)
            self.refused.append((ev.path, ev.reason))

    def send_file(self, path: str) -> None:
        m = self.m
        data = self.serve.get(path, self.files[path][0])
        self.out.append(m.file_start(path, 0o644))
        pos = 0
        while m.outgoing_left and pos < len(data):
            n = min(p2.CHUNK_SIZE, m.outgoing_left, len(data) - pos)
            self.out.append(m.file_chunk(data[pos : pos + n]))
            pos += n
        frame, why = m.file_end()
        self.out.append(frame)
        if why is not None:
            self.gave_up.append(path)


def identity(index: int, frame: bytes) -> list[bytes]:
    return [frame]


def run(a: Node, b: Node, a2b=identity, b2a=identity, close=True) -> str | None:
    """Deliver frames both ways until nothing moves; then the peers hang up.

    ``a2b``/``b2a`` see each frame with its index in its direction and say
    what the wire carries instead.  Returns the first ProtocolError's text.
    """
    sent = {id(a): 0, id(b): 0}
    try:
        moved = True
        while moved:
            moved = False
            for src, dst, tamper in ((a, b, a2b), (b, a, b2a)):
                while src.out:
                    frame = src.out.pop(0)
                    for f in tamper(sent[id(src)], frame):
                        dst.take(f)
                    sent[id(src)] += 1
                    moved = True
        if close:
            for n in (a, b):
                n.m.connection_closed()
    except ProtocolError as exc:
        return str(exc)
    return None


def pair(files_a=None, files_b=None, psk=PSK, **kw):
    ki, kr = key_pair(psk)
    return Node(ki, files_a, **kw), Node(kr, files_b, **kw)


FILES_A = {"firewall": (b"config defaults\n" * 10, 1000), "same": (b"s", 5), "big": (b"", 7)}
FILES_B = {"dhcp": (os.urandom(200_000), 2000), "same": (b"s", 5), "sub/x": (b"x", 3)}


# --- whole sessions -------------------------------------------------------------


@pytest.mark.parametrize("psk", [PSK, None], ids=["encrypted", "plain"])
def test_a_session_syncs_both_ways_and_completes(psk):
    a, b = pair(FILES_A, FILES_B, psk=psk)
    assert run(a, b) is None
    assert a.m.complete and b.m.complete and not a.m.missing and not b.m.missing
    assert a.written == {"dhcp": FILES_B["dhcp"][0], "sub/x": b"x"}
    assert b.written == {"firewall": FILES_A["firewall"][0], "big": b""}
    (end,) = [e for e in a.events if isinstance(e, PeerEnd)]
    assert (end.counts.files, end.counts.bytes) == (2, 200_001)
    chunks = [e for e in a.events if isinstance(e, FileChunk) and e.path == "dhcp"]
    assert len(chunks) == 4  # 200,000 bytes in chunks of 64 KiB


def tap(into: list[str]):
    def record(_i, frame):
        into.append(frame.hex())
        return [frame]

    return record


def test_the_vectors_session_is_reproduced_frame_for_frame():
    hi, hr = V["hello_i"].encode(), V["hello_r"].encode()
    files = {
        side: {f["path"]: (bytes.fromhex(f["content"]), f["mtime"])}
        for side, f in V["files"].items()
    }
    for mode, psk in (("encrypted", PSK), ("plain", None)):
        ki, kr = p2.session_keys(psk, True, hi, hr), p2.session_keys(psk, False, hr, hi)
        a, b = Node(ki, files["i"]), Node(kr, files["r"])
        wire: dict[str, list[str]] = {"i2r": [], "r2i": []}
        assert run(a, b, tap(wire["i2r"]), tap(wire["r2i"])) is None
        for d in ("i2r", "r2i"):
            assert wire[d] == [f["wire"] for f in V[mode] if f["dir"] == d], (mode, d)
        assert a.written == {"dhcp": files["r"]["dhcp"][0]}


def test_deletions_plan_and_too_large_files():
    a, b = pair({"keep": (b"k", 1), "gone": (b"g", 1), "huge": (b"h" * 100, 9)},
                {"keep": (b"k", 1)}, max_file_size=50)  # fmt: skip
    b.records["gone"] = Record("gone", None, 5, 0, 0o644, True)
    b.records["huge"] = Record("huge", None, 1, 0, 0o644, True)
    assert run(a, b) is None
    assert a.deleted == ["gone"] and b.written == {}
    state = next(e for e in b.events if isinstance(e, PeerState))
    assert [r.path for r in state.too_large] == ["huge"] and state.plan.requests == []


def test_the_sender_learns_which_of_its_files_are_too_large_for_the_peer():
    """The receiver does not ask for a file over max_file_size, so its sender
    is told by its own PeerState which files the peer lacks and will not
    get (1.2.0's sender says "too large"); one the peer holds as new, or
    newer, or deleted later, is not among them."""
    big = b"h" * 100
    a, b = pair({"new": (big, 9), "tomb-older": (big, 9), "tomb-newer": (big, 9),
                 "same": (big, 9), "theirs-newer": (big, 9), "ok": (b"k", 9)},
                {"same": (big, 9), "theirs-newer": (b"n", 20)},
                max_file_size=50)  # fmt: skip
    b.records["tomb-older"] = Record("tomb-older", None, 5, 0, 0o644, True)
    b.records["tomb-newer"] = Record("tomb-newer", None, 15, 0, 0o644, True)
    assert run(a, b) is None
    mine = next(e for e in a.events if isinstance(e, PeerState))
    assert sorted(r.path for r in mine.withheld) == ["new", "tomb-older"]
    assert all(r.size == 100 for r in mine.withheld)
    theirs = next(e for e in b.events if isinstance(e, PeerState))
    assert sorted(r.path for r in theirs.too_large) == ["new", "tomb-older"]
    assert theirs.withheld == () and b.written == {"ok": b"k"}


def test_thousands_of_files_travel_in_batches():
    files = {f"d/{i}": (str(i).encode(), 1) for i in range(3000)}
    a, b = pair(files, {})
    batches = []
    assert run(a, b, a2b=lambda i, f: batches.append(f[4]) or [f]) is None
    assert batches.count(p2.STATE) == 3 and len(b.written) == 3000


def test_a_file_changed_while_sent_is_given_up_not_written():
    a, b = pair({"f": (b"x" * 100_000, 1), "g": (b"short", 1)}, {})
    a.serve = {"f": b"y" * 100_000, "g": b"sh"}  # same size, other bytes; shrunk
    assert run(a, b) is None
    assert b.written == {} and sorted(a.gave_up) == ["f", "g"]
    assert [p for p, _ in b.refused] == ["f", "g"]
    assert "changed while being sent" in b.refused[0][1]
    assert a.m.complete and b.m.complete


def test_min_protocol_check():
    assert p2.min_protocol_error(1, False) is None
    assert p2.min_protocol_error(2, True) is None
    why = p2.min_protocol_error(2, False, "old")
    assert why == "old speaks protocol 1 only (owsync 1.2.0?); min_protocol 2 refuses it"


# --- the harness: what an attacker can do to a session ---------------------------


def drop(k):
    return lambda i, f: [] if i == k else [f]


def dup(k):
    return lambda i, f: [f, f] if i == k else [f]


def swap(k):
    held = []

    def t(i, f):
        if i == k:
            held.append(f)
            return []
        return [f, *held] if i == k + 1 else [f]

    return t


def cut(k):
    return lambda i, f: [] if i >= k else [f]


def no_writes(*nodes: Node) -> bool:
    return all(not n.written for n in nodes)


A_ONLY = {"f": (os.urandom(150_000), 9)}  # only a has it: a's stream carries it
N_FRAMES = 11  # a's frames: AUTH STATE STATE_END REQUEST_END FILE CHUNK*3 FILE_END END DONE


@pytest.mark.parametrize("k", range(N_FRAMES))
@pytest.mark.parametrize("attack", [drop, dup, swap, cut])
def test_every_frame_dropped_duplicated_reordered_or_cut_is_refused(attack, k):
    a, b = pair(A_ONLY, {})
    if attack is swap and k == N_FRAMES - 1:
        return
    why = run(a, b, a2b=attack(k))
    assert why is not None
    assert any(s in why for s in ("failed authentication", "incomplete", "end of stream")), why
    assert_only_genuine(b, k)
    assert not b.m.complete
    if k < N_FRAMES - 1:  # b never acknowledged a's stream: a does not complete either
        assert not a.m.complete


def assert_only_genuine(b: Node, k: int) -> None:
    """Nothing written when the attack came before the file was whole (FILE_END is
    frame 8); after it, the file had arrived authenticated and verified, as it was
    sent: a cut then loses only the session's completion."""
    if k < 8:
        assert not b.written
    else:
        assert b.written in ({}, {"f": A_ONLY["f"][0]})


@pytest.mark.parametrize("k", range(N_FRAMES))
@pytest.mark.parametrize("attack", [drop, dup, swap, cut])
def test_plain_mode_detects_them_too_by_order_sizes_and_counts(attack, k):
    # plain mode has no integrity against an active attacker; against loss,
    # duplication and reordering (a broken middlebox) it still never completes
    a, b = pair(A_ONLY, {}, psk=None)
    if attack is swap and k == N_FRAMES - 1:
        return
    assert run(a, b, a2b=attack(k)) is not None
    assert not (a.m.complete and b.m.complete)
    assert_only_genuine(b, k)


def test_a_replayed_session_is_refused():
    # record a whole encrypted session's initiator side ...
    hi, hr = hellos()
    ki, kr = p2.session_keys(PSK, True, hi, hr), p2.session_keys(PSK, False, hr, hi)
    a, b = Node(ki, A_ONLY), Node(kr, {})
    recorded = []
    assert run(a, b, a2b=lambda i, f: recorded.append(f) or [f]) is None
    assert "f" in b.written
    # ... and play it again to the same node: its new Hello has a fresh nonce
    _, hr2 = hellos(nonce_r=b"\x33" * 32)
    victim = Node(p2.session_keys(PSK, False, hr2, hi), {})
    for f in recorded:
        with pytest.raises(ProtocolError, match=r"frame 0 \(AUTH\) failed authentication"):
            victim.take(f)
        break
    assert victim.events == [] and not victim.written  # not even PeerAuth: no lock, no scan


def test_a_spliced_session_is_refused():
    hi, hr = hellos()
    hi2, hr2 = hellos(b"\x44" * 32, b"\x55" * 32)
    s1, s2 = key_pair(PSK, hi, hr), key_pair(PSK, hi2, hr2)
    a1, b1 = Node(s1[0], A_ONLY), Node(s1[1], {})
    a2, b2 = Node(s2[0], A_ONLY), Node(s2[1], {})
    other = []
    assert run(a2, b2, a2b=lambda i, f: other.append(f) or [f]) is None
    # session 1 runs until b1 is authenticated, then gets session 2's frames
    why = run(a1, b1, a2b=lambda i, f: [f] if i == 0 else [other[i]])
    assert "frame 1 (STATE) failed authentication" in why and not b1.written


@pytest.mark.parametrize("psk", [PSK, None], ids=["encrypted", "plain"])
def test_a_modified_hello_fails_auth(psk):
    hi, hr = hellos()
    seen_by_b = hi.replace(b'"hostname":"a"', b'"hostname":"z"')  # changed in transit
    a = Node(p2.session_keys(psk, True, hi, hr), A_ONLY)
    b = Node(p2.session_keys(psk, False, hr, seen_by_b), {})
    why = run(a, b)
    if psk is None:
        assert "AUTH does not match this session's Hellos" in why
    else:
        assert "frame 0 (AUTH) failed authentication" in why
    assert not b.written and not a.written


def test_a_stripped_advertisement_leaves_the_sides_apart():
    # b saw no v2 in a's Hello: b speaks v1 (its SyncState), a speaks v2
    a = Node(key_pair()[0], A_ONLY)
    v1 = AesGcmCipher(PSK)
    payload = b"".join(v1.seal_parts([encode(SyncState(()))]))
    with pytest.raises(ProtocolError):  # at its header, or when b hangs up (it cannot
        a.take(frame_header(len(payload)) + payload)  # open a's AUTH either)
        a.m.connection_closed()
    assert not a.written and a.events == []
    # and a b with min_protocol 2 refuses a's v1-only Hello outright
    hi, _ = hellos()
    stripped = hi[: hi.index(b',"v2"')] + b"}"
    v2 = p2.negotiated(p2.advertise(b"\x22" * 32), p2.hello_fields(stripped))
    assert "min_protocol 2 refuses it" in p2.min_protocol_error(2, v2)


def test_wrong_key_is_refused():
    hi, hr = hellos()
    a = Node(p2.session_keys(PSK, True, hi, hr), A_ONLY)
    b = Node(p2.session_keys(b"\x09" * 32, False, hr, hi), {})
    assert "frame 0 (AUTH) failed authentication: wrong key" in run(a, b)


def test_a_giant_chunk_header_is_refused_at_once():
    giant = (2**31).to_bytes(4, "big") + bytes([p2.CHUNK])  # the 5-byte header alone
    b = Node(key_pair()[1], {})
    with pytest.raises(ProtocolError, match="CHUNK of 2147483648 bytes outside its limits"):
        b.take(giant)
    assert b.m._r.pending == 0  # nothing held for it


def test_a_cut_connection_is_never_complete():
    a, b = pair(A_ONLY, {})
    assert "the session is incomplete" in run(a, b, a2b=cut(N_FRAMES - 2))  # END cut
    assert not b.m.complete and not a.m.complete  # b never said DONE: a cannot know
    with pytest.raises(ProtocolError, match="closed before the peer's END"):
        b.m.connection_closed()
    a, b = pair(A_ONLY, {})
    assert run(a, b, a2b=lambda i, f: [f[:-3]] if i == N_FRAMES - 2 else [f]) is not None
    assert not b.m.complete and not a.m.complete


def test_a_lost_done_fails_the_side_that_waited_for_it():
    """a's DONE lost: b has a's file but cannot know a saved b's stream, so b
    reports an incomplete session; a got b's DONE and completes."""
    a, b = pair(A_ONLY, {})
    why = run(a, b, a2b=cut(N_FRAMES - 1))
    assert "connection closed before the peer's DONE" in why
    assert a.m.complete and not b.m.complete
    assert b.written == {"f": A_ONLY["f"][0]}


def test_the_sender_of_a_file_the_receiver_refused_is_not_complete():
    """The receiver finds a file cut short: it never says DONE, so the side
    that sent the file, its own END given, does not complete either."""
    a, b = pair(A_ONLY, {})
    assert run(a, b, a2b=lambda i, f: [] if i == 6 else [f]) is not None  # a CHUNK lost
    assert not a.m.complete and not b.m.complete and not b.written


# --- ordering rules ------------------------------------------------------------


class Peer:
    """A scripted peer: well-sealed frames in any order, to one machine under test."""

    def __init__(self, psk=PSK, files=None):
        ki, kr = key_pair(psk)
        self.node = Node(ki, files or {"mine": (b"12345", 1)})
        self.w = p2.FrameWriter(kr.send)
        self.t = kr.transcript

    def send(self, kind, body=b""):
        self.w.ended = False  # a hostile peer may go on after its END
        self.node.take(self.w.frame(kind, body))

    def auth(self):
        self.send(p2.AUTH, self.t)

    def state(self, *records):
        if records:
            self.send(p2.STATE, b"".join(p2.state_bodies(records)))
        self.send(p2.STATE_END)

    def to_files(self, theirs=()):
        """AUTH, a state offering ``theirs``, our request of 'mine', to the files stage."""
        self.auth()
        self.state(*theirs)
        self.send(p2.REQUEST, b'["mine"]')
        self.send(p2.REQUEST_END)


REC = Record("new", sha(b"hello"), 50, 5, 0o644, False)


def header(rec=REC, **kw):
    h = p2.FileHeader(rec.path, 0o600, rec.size, rec.hash, rec.mtime)._replace(**kw)
    return p2.encode_file_header(h)


def refused(peer: Peer, match: str, *frames) -> None:
    with pytest.raises(ProtocolError, match=match):
        for kind, body in frames:
            peer.send(kind, body)
    assert not peer.node.written
    with pytest.raises(ProtocolError):  # a failed machine stays failed
        peer.node.m.next_event()


def test_auth_comes_first():
    refused(Peer(), "unexpected STATE_END from the peer where AUTH was due", (p2.STATE_END, b""))
    p = Peer()
    refused(p, "AUTH does not match", (p2.AUTH, b"\0" * 32))


def test_auth_only_once():
    p = Peer()
    p.auth()
    refused(p, "unexpected AUTH", (p2.AUTH, p.t))


def test_request_before_state_end_is_refused():
    p = Peer()
    p.auth()
    refused(p, "unexpected REQUEST", (p2.REQUEST, b'["mine"]'))


def test_request_before_our_state_was_sent_is_refused():
    ki, kr = key_pair()
    m = Session2(accept, 1 << 20, ki)
    m.start()
    w = p2.FrameWriter(kr.send)
    m.receive_data(w.frame(p2.AUTH, kr.transcript) + w.frame(p2.STATE_END))
    assert isinstance(m.next_event(), PeerAuth)
    gen = m.state({})  # our state not yet produced
    assert isinstance(m.next_event(), PeerState)
    m.receive_data(w.frame(p2.REQUEST_END))
    with pytest.raises(ProtocolError, match="before it could have our state"):
        m.next_event()
    del gen


def test_requests_only_for_advertised_live_files_and_once():
    p = Peer()
    p.node.records["dead"] = Record("dead", None, 1, 0, 0o644, True)
    p.auth()
    p.state()
    refused(p, "'dead' is not a file this node advertised", (p2.REQUEST, b'["dead"]'))
    p = Peer()
    p.auth()
    p.state()
    refused(p, "'mine' twice", (p2.REQUEST, b'["mine","mine"]'))


def test_a_path_twice_in_the_state_is_refused():
    p = Peer()
    p.auth()
    body = b"".join(p2.state_bodies([REC]))
    p.send(p2.STATE, body)
    refused(p, "'new' twice", (p2.STATE, body))


def test_a_state_beyond_max_records_is_refused():
    p = Peer()
    p.node.m.max_records = 1500
    p.auth()
    recs = [Record(f"r{i}", "ab" * 32, 1, 1, 0o644, False) for i in range(2000)]
    first, second = p2.state_bodies(recs)
    p.send(p2.STATE, first)
    refused(p, "more than 1500 records", (p2.STATE, second))


def test_files_only_after_the_request_end_and_only_requested():
    p = Peer()
    p.auth()
    p.state(REC)
    refused(p, "unexpected FILE", (p2.FILE, header()))
    p = Peer()
    p.to_files([REC])
    refused(p, "'other' was not requested", (p2.FILE, header(path="other")))


def test_a_file_twice_is_refused():
    p = Peer()
    p.to_files([REC])
    p.send(p2.FILE, header())
    p.send(p2.CHUNK, b"hello")
    p.send(p2.FILE_END)
    assert p.node.written == {"new": b"hello"}
    with pytest.raises(ProtocolError, match="sent already"):
        p.send(p2.FILE, header())


def test_the_file_header_must_be_the_advertised_version():
    for change in ({"size": 6}, {"sha256": "cd" * 32}, {"mtime": 51}):
        p = Peer()
        p.to_files([REC])
        refused(p, "not the version the peer advertised", (p2.FILE, header(**change)))


def test_chunks_must_add_up_and_match_the_hash():
    p = Peer()
    p.to_files([REC])
    refused(p, "CHUNK past the size", (p2.FILE, header()), (p2.CHUNK, b"hello!"))
    p = Peer()
    p.to_files([REC])
    refused(p, "after 4 of 5 bytes", (p2.FILE, header()), (p2.CHUNK, b"hell"), (p2.FILE_END, b""))
    p = Peer()
    p.to_files([REC])
    refused(p, "does not match its SHA-256", (p2.FILE, header()), (p2.CHUNK, b"HELLO"),
            (p2.FILE_END, b""))  # fmt: skip


def test_chunk_only_inside_a_file_and_no_nesting():
    p = Peer()
    p.to_files([REC])
    refused(p, "unexpected CHUNK", (p2.CHUNK, b"x"))
    p = Peer()
    p.to_files([REC])
    refused(p, "unexpected FILE from the peer inside a file", (p2.FILE, header()),
            (p2.FILE, header()))  # fmt: skip
    p = Peer()
    p.to_files([REC])
    refused(p, "unexpected END from the peer inside a file", (p2.FILE, header()),
            (p2.END, p2.encode_end(p2.EndCounts(0, 0, 0))))  # fmt: skip


def test_the_end_counts_must_match():
    p = Peer()
    p.to_files()
    refused(p, r"says it sent \(3, 0, 0\).*\(4, 0, 0\) arrived",
            (p2.END, p2.encode_end(p2.EndCounts(3, 0, 0))))  # fmt: skip
    p = Peer()
    p.to_files()
    p.send(p2.END, p2.encode_end(p2.EndCounts(4, 0, 0)))
    assert isinstance(p.node.events[-1], PeerEnd)


def test_an_error_frame_ends_the_session_with_its_text():
    p = Peer()
    p.auth()
    refused(p, "the peer gave the session up: disk full", (p2.ERROR, b"disk full\x1b[2J"))
    assert not p.node.m.complete


def test_sender_side_misuse_is_a_programming_error():
    ki, _ = key_pair()
    m = Session2(accept, 100, ki)
    with pytest.raises(RuntimeError):
        m.next_event()
    m.start()
    for call in (lambda: m.state({}), lambda: m.request(p2_plan()), lambda: m.end(),
                 lambda: m.file_start("x", 0), lambda: m.file_chunk(b"x"),
                 lambda: m.file_end(), lambda: m.file_abort("x"), lambda: m.start(),
                 lambda: m.outgoing_left):  # fmt: skip
        with pytest.raises(RuntimeError):
            call()
    m.error("bye")
    with pytest.raises(RuntimeError):
        m.error("again")


def p2_plan():
    from owsync.core.plan import Plan

    return Plan()


class Lazy(Node):
    """Serves nothing by itself: the test does, by hand."""

    def handle(self, ev):
        if isinstance(ev, PeerRequest):
            self.asked = ev.paths
        else:
            super().handle(ev)


def test_the_sender_side_file_rules():
    ki, kr = key_pair()
    a, b = Lazy(ki, {"f": (b"abc", 1)}), Node(kr, {})
    assert run(a, b, close=False) is None and a.asked == ("f",)
    m = a.m
    with pytest.raises(RuntimeError, match="not requested"):
        m.file_start("g", 0o644)
    a.out.append(m.file_start("f", 0o644))
    assert m.outgoing_left == 3
    with pytest.raises(ValueError):
        m.file_chunk(b"abcd")  # past the advertised size
    with pytest.raises(RuntimeError):
        m.file_start("f", 0o644)  # inside a file
    with pytest.raises(RuntimeError):
        m.end()  # inside a file
    a.out.append(m.file_chunk(b"abc"))
    frame, why = m.file_end()
    assert why is None
    a.out.append(frame)
    with pytest.raises(RuntimeError, match="sent already"):
        m.file_start("f", 0o644)
    a.out.append(m.end())
    assert run(a, b) is None and b.written == {"f": b"abc"} and a.m.complete


# --- fuzzing --------------------------------------------------------------------

bodies = {
    p2.AUTH: st.sampled_from([b"\0" * 32, None]),  # None: the right transcript
    p2.STATE: st.sampled_from([b"".join(p2.state_bodies([REC])), b"[1]", b"{}"]),
    p2.STATE_END: st.just(b""),
    p2.REQUEST: st.sampled_from([b'["mine"]', b'["new"]', b"[]"]),
    p2.REQUEST_END: st.just(b""),
    p2.FILE: st.sampled_from([header(), header(size=4), b"{}"]),
    p2.CHUNK: st.sampled_from([b"hello", b"hel", b"lo", b"x" * 9]),
    p2.FILE_END: st.sampled_from([b"", b'{"error":"x"}', b"junk"]),
    p2.END: st.sampled_from(
        [p2.encode_end(p2.EndCounts(n, f, b)) for n in range(3, 11) for f in (0, 1) for b in (0, 5)]
        + [b"{}"]
    ),
    p2.ERROR: st.just(b"stop"),
}
frames = st.sampled_from(sorted(bodies)).flatmap(lambda k: bodies[k].map(lambda b, k=k: (k, b)))
# a well-formed prefix makes the later stages reachable
prefixes = st.integers(0, 4)


@FUZZ
@given(prefixes, st.lists(frames, max_size=12), st.booleans())
def test_the_machine_takes_any_sequence_of_frames(prefix, script, plain):
    p = Peer(psk=None if plain else PSK)
    steps = [p.auth, lambda: p.state(REC), lambda: p.send(p2.REQUEST, b'["mine"]'),
             lambda: p.send(p2.REQUEST_END)][:prefix]  # fmt: skip
    try:
        for step in steps:
            step()
        for kind, body in script:
            p.send(kind, p.t if body is None else body)
        p.node.m.connection_closed()
    except (ProtocolError, SessionAbort):
        assert not p.node.m.complete
        event("refused")
        return
    event("complete")
    assert p.node.m.complete
    assert all(sha(d) == p.node.records.get(k, REC).hash for k, d in p.node.written.items())


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=8), st.booleans())
def test_the_machine_takes_any_bytes(chunks, plain):
    node = Node(key_pair(None if plain else PSK)[0], {"mine": (b"12345", 1)})
    try:
        for c in chunks:
            node.take(c)
    except ProtocolError:
        return
    assert not node.written


VALID = [(p2.AUTH, None), (p2.STATE, b"".join(p2.state_bodies([REC]))), (p2.STATE_END, b""),
         (p2.REQUEST, b'["mine"]'), (p2.REQUEST_END, b""), (p2.FILE, header()),
         (p2.CHUNK, b"hel"), (p2.CHUNK, b"lo"), (p2.FILE_END, b""),
         (p2.END, p2.encode_end(p2.EndCounts(9, 1, 5)))]  # fmt: skip
mutations = st.lists(
    st.tuples(st.sampled_from(["drop", "dup", "swap", "insert", "replace"]),
              st.integers(0, len(VALID) - 1), frames),
    max_size=3,
)  # fmt: skip


@FUZZ
@given(mutations, st.booleans())
def test_the_machine_takes_any_mutation_of_a_valid_session(muts, plain):
    script = list(VALID)
    for op, i, frame in muts:
        i = min(i, len(script) - 1) if script else 0
        if op == "drop" and script:
            del script[i]
        elif op == "dup" and script:
            script.insert(i, script[i])
        elif op == "swap" and i + 1 < len(script):
            script[i], script[i + 1] = script[i + 1], script[i]
        elif op == "insert":
            script.insert(i, frame)
        elif op == "replace" and script:
            script[i] = frame
    p = Peer(psk=None if plain else PSK)
    try:
        for kind, body in script:
            p.send(kind, p.t if body is None else body)
        p.node.m.connection_closed()
    except (ProtocolError, SessionAbort):
        event("refused")
        assert not p.node.m.complete
        assert p.node.written in ({}, {"new": b"hello"})
        return
    event("complete")
    assert p.node.m.complete and p.node.written in ({}, {"new": b"hello"})  # {}: given up
