"""The pure core on its own: codec, plan, state transitions, filters, paths, config."""

from __future__ import annotations

import hashlib
import struct

import pytest

from owsync.core import protocol
from owsync.core.filters import Filter
from owsync.core.paths import is_hidden, path_problem
from owsync.core.peer import parse_hostport, parse_peer
from owsync.core.plan import make_plan, remote_wins
from owsync.core.session import PeerHello, Session, SessionAbort
from owsync.core.state import (
    TOMBSTONE_TTL_MS,
    CorruptDatabase,
    Record,
    deleted_by_peer,
    dumps_db,
    loads_db,
    observe_file,
    reconcile,
)
from owsync.service.config import MAX_PEERS, ConfigError, parse_text

H1, H2 = "1" * 64, "2" * 64


def live(path="f", h=H1, mtime=1000, mode=0o644):
    return Record(path, h, mtime, 3, mode, False)


def dead(path="f", mtime=1000):
    return Record(path, None, mtime, 0, 0o644, True)


# --- framing and messages -----------------------------------------------------


def test_frame_decoder_reassembles_split_frames():
    payloads = [b"a", b"", b"x" * 70000]
    wire = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    dec = protocol.FrameDecoder()
    got = []
    for i in range(0, len(wire), 7):
        got += dec.feed(wire[i : i + 7])
    assert got == payloads and dec.pending == 0


def test_frame_over_32_mib_is_refused_from_its_header():
    dec = protocol.FrameDecoder()
    assert dec.feed(struct.pack(">I", 1) + b"h") == [b"h"]  # a first frame (the Hello)
    assert dec.feed(struct.pack(">I", 32 * 1024 * 1024)) == []  # allowed, incomplete
    dec = protocol.FrameDecoder()
    dec.feed(struct.pack(">I", 0))
    with pytest.raises(protocol.ProtocolError):
        dec.feed(struct.pack(">I", 32 * 1024 * 1024 + 1))


def test_first_frame_is_held_to_64_kib():
    """A peer that has not said Hello cannot make the node gather megabytes."""
    with pytest.raises(protocol.ProtocolError, match="limit of 65536"):
        protocol.FrameDecoder().feed(struct.pack(">I", 64 * 1024 + 1))
    # a Hello and a large SyncState arriving together are fine
    hello = protocol.encode(protocol.Hello("h", 1.0))
    big = b"x" * (200 * 1024)
    wire = struct.pack(">I", len(hello)) + hello + struct.pack(">I", len(big)) + big
    assert protocol.FrameDecoder().feed(wire) == [hello, big]


def test_frame_limit_grows_only_with_a_raised_max_file_size():
    assert protocol.frame_limit(16 * 1024 * 1024) == protocol.MAX_FRAME
    assert protocol.frame_limit(20_000_000) > 40_000_000


@pytest.mark.parametrize(
    "msg",
    [
        protocol.Hello("r1", 1795637800.0),
        protocol.SyncState((live("a/b"), dead("gone"))),
        protocol.RequestFiles(("x", "y/z")),
        protocol.RequestFiles(()),
        protocol.FileContent("bin", 0o755, bytes(range(256))),
        protocol.EndOfSync(),
    ],
)
def test_messages_round_trip(msg):
    assert protocol.decode(protocol.encode(msg)) == msg


def test_decoder_accepts_integers_and_escaped_slashes():
    m = protocol.decode(
        b'{"type":"SyncState","files":[{"path":"a\\/b","hash":"' + b"A" * 64 + b'",'
        b'"mtime":5,"size":3,"mode":420,"deleted":false,"extra":1}]}'
    )
    assert m.files[0] == Record("a/b", "a" * 64, 5, 3, 420, False)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"type":"Nope"}',
        b'{"type":"Hello","timestamp":"x","version":1}',
        b'{"type":"RequestFiles","paths":[1]}',
        b'{"type":"FileContent","path":"a","mode":420,"data":"zz"}',
        b'{"type":"SyncState","files":[{"path":"a","hash":"short","mtime":1,"size":1,'
        b'"mode":1,"deleted":false}]}',
        b'{"type":"SyncState","files":[{"path":"a","hash":null,"mtime":-1,"size":0,'
        b'"mode":1,"deleted":true}]}',
        b"\xff\xfe",
    ],
)
def test_malformed_messages_are_protocol_errors(payload):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(payload)


# --- the plan ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "remote,local,wins",
    [
        (dead(), None, False),
        (dead(mtime=5), dead(mtime=1), False),
        (dead(mtime=2000), live(mtime=1000), True),
        (dead(mtime=1000), live(mtime=1000), False),
        (dead(mtime=500), live(mtime=1000), False),
        (live(), None, True),
        (live(mtime=2000), dead(mtime=1000), True),
        (live(mtime=1000), dead(mtime=1000), True),  # tie: live beats a tombstone
        (live(mtime=999), dead(mtime=1000), False),
        (live(h=H1, mtime=9), live(h=H1, mtime=1), False),
        (live(h=H1, mtime=2000), live(h=H2, mtime=1000), True),
        (live(h=H2, mtime=1000), live(h=H1, mtime=2000), False),
        (live(h=H2, mtime=1000), live(h=H1, mtime=1000), True),  # tie: larger hash
        (live(h=H1, mtime=1000), live(h=H2, mtime=1000), False),
    ],
)
def test_lww_matrix(remote, local, wins):
    assert remote_wins(remote, local) is wins


def test_plan_keeps_peer_order_and_filters():
    local = {"b": live("b", mtime=1), "gone": live("gone", mtime=1)}
    remote = [live("z"), live("b", H2, 5), dead("gone", 9), live("net"), live("a")]
    plan = make_plan(local, remote, Filter(["*"], ["net"]))
    assert plan.requests == ["z", "b", "a"]
    assert [r.path for r in plan.deletions] == ["gone"]


def test_plan_notes_what_the_peer_holds_as_we_do():
    """Same content, any mtime: the peer has our write (no conflict later)."""
    local = {"old": live("old", mtime=1), "new": live("new", mtime=9), "other": live("other"),
             "gone": dead("gone"), "dead": dead("dead"), "net": live("net")}  # fmt: skip
    remote = [live("old", mtime=9), live("new", mtime=1), live("other", H2, 1),
              live("gone"), dead("dead", 2), live("net")]  # fmt: skip
    plan = make_plan(local, remote, Filter(["*"], ["net"]))
    assert plan.same == [("old", H1), ("new", H1)]
    assert plan.requests == ["gone"] and not plan.deletions


# --- state transitions -------------------------------------------------------------


def test_unchanged_content_keeps_its_version():
    prev = live(mtime=1000)
    assert observe_file(prev, "f", H1, 3, 0o600, 5000, (3, 1, 1, 1)).mtime == 1000


def test_new_content_never_goes_back_in_time():
    prev = live(mtime=1000)
    assert observe_file(prev, "f", H2, 3, 0o644, 400, (3, 1, 1, 1)).mtime == 1001
    assert observe_file(dead(mtime=7000), "f", H2, 3, 0o644, 400, None).mtime == 7001
    assert observe_file(prev, "f", H2, 3, 0o644, 8000, None).mtime == 8000
    assert observe_file(None, "f", H2, 3, 0o644, 400, None).mtime == 400


def test_reconcile_tombstones_expiry_and_scope():
    now = 10 * TOMBSTONE_TTL_MS
    records = {
        "kept": live("kept"),
        "vanished": live("vanished"),
        "out": live("out"),
        "unreadable": live("unreadable"),
        "old-tomb": dead("old-tomb", now - TOMBSTONE_TTL_MS - 1),
        "new-tomb": dead("new-tomb", now - 5),
    }
    out = reconcile(records, {"kept": records["kept"]}, lambda p: p != "out", {"unreadable"}, now)
    assert out["vanished"].deleted and out["vanished"].mtime == now
    assert out["out"] == records["out"] and out["unreadable"] == records["unreadable"]
    assert "old-tomb" not in out and out["new-tomb"] == records["new-tomb"]


def test_remote_deletion_keeps_the_peers_time():
    t = deleted_by_peer(live(mtime=100), dead(mtime=555))
    assert t.deleted and t.mtime == 555 and t.hash is None and t.size == 0


def test_database_round_trip_and_corruption():
    recs = {"a": Record("a", H1, 5, 3, 0o755, False, (3, 4, 5, 6)), "b": dead("b")}
    assert loads_db(dumps_db(recs)) == recs
    for bad in (b"", b"{", b"[]", b'{"files":[]}', b'{"files":{"a":{"hash":1}}}'):
        with pytest.raises(CorruptDatabase):
            loads_db(bad)


# --- session ordering ----------------------------------------------------------------


def test_session_rejects_skew_and_version_before_anything_else():
    s = Session(Filter(["*"]), 100)
    s.hello("me", 1000)
    with pytest.raises(SessionAbort, match="clock skew"):
        s.receive(protocol.Hello("p", 1061), 1000)
    s = Session(Filter(["*"]), 100)
    s.hello("me", 1000)
    with pytest.raises(SessionAbort, match="version 2"):
        s.receive(protocol.Hello("p", 1000, 2), 1000)
    s = Session(Filter(["*"]), 100)
    s.hello("me", 1000)
    assert isinstance(s.receive(protocol.Hello("p", 1060), 1000), PeerHello)


def test_session_refuses_out_of_order_messages():
    s = Session(Filter(["*"]), 100)
    s.hello("me", 0)
    with pytest.raises(protocol.ProtocolError):
        s.receive(protocol.EndOfSync(), 0)


# --- filters and paths ---------------------------------------------------------------


def test_filter_semantics_of_1_2_0():
    f = Filter(["*.conf", "dhcp"], ["secret*"])
    assert f("a/b/c.conf")  # '*' crosses '/'
    assert f("dhcp") and not f("dhcp.bak") and not f("DHCP")
    assert not f("secret.conf")  # excludes win
    assert not Filter([], [])("anything")
    assert Filter(["sub/[ab]?"])("sub/ax") and not Filter(["sub/[ab]?"])("sub/cx")


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a//b", "./a", "a/./b", "nul\0", "x" * 256],
)
def test_unsafe_paths(path):
    assert path_problem(path)


def test_safe_paths_and_hidden():
    for p in ("a", "a/b.c", "my.dbx", "..a", "a..", "ü/ß"):
        assert path_problem(p) is None
    assert is_hidden(".a") and is_hidden("x/.git/config") and not is_hidden("x/a.b")


# --- configuration -------------------------------------------------------------------


def test_config_file_parsing():
    cfg = parse_text(
        "\n".join(
            [
                "# comment",
                "",
                "  bind_host = 0.0.0.0  ",
                "port=9000",
                "sync_dir=/etc/config",
                "database=/etc/owsync.db",
                "plain_mode=true",
                "poll_interval=abc",
                "log_level=9",
                "max_file_size=1000",
                "peer=192.168.1.2",
                "peer=[fd00::2]:4000,fd00::1",
                "peer=fd00::3",
                "include=*",
                "exclude=network",
                "exclude=system",
                "what=ever",
                "no equals sign",
            ]
        ),
        "t.conf",
    )
    assert cfg.bind_host == "0.0.0.0" and cfg.port == 9000 and cfg.plain_mode
    assert cfg.sync_dir == "/etc/config" and cfg.database == "/etc/owsync.db"
    assert cfg.poll_interval == 60 and cfg.log_level == 3 and cfg.max_file_size == 1000
    assert [(p.host, p.port, p.source) for p in cfg.peers] == [
        ("192.168.1.2", None, None),
        ("fd00::2", 4000, "fd00::1"),
        ("fd00::3", None, None),
    ]
    assert cfg.include == ["*"] and cfg.exclude == ["network", "system"]
    joined = "\n".join(cfg.warnings)
    assert "t.conf:8: bad value for poll_interval" in joined
    assert "unknown key 'what'" in joined and "t.conf:18: malformed" in joined
    assert cfg.key_bytes() is None  # plain mode


def test_seventeenth_peer_is_an_error_naming_the_limit():
    text = "\n".join(f"peer=10.0.0.{i}" for i in range(MAX_PEERS + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_PEERS}"):
        parse_text(text)


def test_key_rules():
    cfg = parse_text("encryption_key=" + "ab" * 32)
    assert cfg.key_bytes({}) == bytes.fromhex("ab" * 32)
    with pytest.raises(ConfigError, match="64 hex"):
        parse_text("encryption_key=abc").key_bytes({})
    with pytest.raises(ConfigError, match="owsync genkey"):
        parse_text("").key_bytes({})
    assert parse_text("").key_bytes({"OWSYNC_KEY": "cd" * 32}) == bytes.fromhex("cd" * 32)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("host", ("host", None)),
        ("host:99", ("host", 99)),
        ("[::1]:5", ("::1", 5)),
        ("[::1]", ("::1", None)),
        ("fe80::1", ("fe80::1", None)),
        ("10.0.0.1:4321", ("10.0.0.1", 4321)),
    ],
)
def test_peer_addresses(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:x", "[::1", "[::1]x", ":5", "a,"])
def test_bad_peer_addresses(text):
    with pytest.raises(ValueError):
        parse_peer(text)


def test_large_file_content_decodes_the_same_whatever_the_layout():
    data = bytes(range(256)) * 40
    msg = protocol.FileContent('we"ird/pa\\th,"data":"x', 0o755, data)
    wire = protocol.encode(msg)
    assert protocol.decode(wire) == msg  # the fast path
    hexed = data.hex()
    for layout in (
        b'{"type":"FileContent","data":"' + hexed.encode() + b'","path":"p","mode":420}',
        b'{"type":"FileContent","path":"p","mode":420,"data":"' + hexed.encode() + b'","x":"y"}',
        b'{"mode":420,"type":"FileContent","path":"p","data":"' + hexed.encode() + b'"}',
    ):
        assert protocol.decode(layout) == protocol.FileContent("p", 0o644, data)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(
            b'{"type":"FileContent","path":"p","mode":420,"data":"' + b"zz" * 3000 + b'"}'
        )


def test_large_messages_are_sealed_in_pieces_and_open_whole():
    from owsync.core.crypto import AesGcmCipher

    c = AesGcmCipher(b"k" * 32)
    msg = protocol.FileContent("big", 0o644, bytes(range(256)) * 8192)  # 2 MiB
    sealed = b"".join(c.seal_parts(protocol.encode_parts(msg)))
    assert protocol.decode(c.open(sealed)) == msg
    small = b"".join(c.seal_parts(protocol.encode_parts(protocol.FileContent("s", 1, b"x"))))
    assert protocol.decode(c.open(small)).data == b"x"


def test_frame_decoder_large_frames_between_small_ones():
    big = bytes(range(256)) * 8000  # over FrameDecoder.BIG
    payloads = [b"a", big, b"bc", big[:-1], b""]  # the first frame is small, as a Hello is
    wire = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    for step in (3, 4096, 65536, 1 << 20, len(wire)):
        dec = protocol.FrameDecoder()
        got = []
        for i in range(0, len(wire), step):
            got += dec.feed(wire[i : i + step])
        assert [bytes(g) for g in got] == payloads, step
        assert dec.pending == 0


def test_a_key_file_readable_by_others_is_warned_about(tmp_path):
    from owsync.service.config import load_file

    p = tmp_path / "owsync.conf"
    p.write_text("encryption_key=" + "ab" * 32 + "\n")
    p.chmod(0o644)
    assert any("chmod 600" in w for w in load_file(str(p)).warnings)
    p.chmod(0o600)
    assert load_file(str(p)).warnings == []
    q = tmp_path / "plain.conf"
    q.write_text("plain_mode=1\n")
    q.chmod(0o644)
    assert load_file(str(q)).warnings == []


def _versions():
    for mtime in (1000, 1001):
        yield dead(mtime=mtime)
        for h in (H1, H2):
            yield live(h=h, mtime=mtime)


def test_lww_is_a_total_order_on_versions():
    """Exhaustively: of two different versions exactly one wins, whichever side holds it;
    the same content (or two tombstones) never moves; nothing beats no record but a file."""
    for a in _versions():
        assert remote_wins(a, None) is (not a.deleted)
        for b in _versions():
            ab, ba = remote_wins(a, b), remote_wins(b, a)
            same_content = not a.deleted and not b.deleted and a.hash == b.hash
            if a.same_version(b) or (a.deleted and b.deleted) or same_content:
                assert not ab and not ba, (a, b)
            else:
                assert ab != ba, (a, b)


def _exchanged(s: Session):
    """A session machine past Hello and the SyncState exchange, B advertising two files."""
    s.hello("me", 0)
    s.receive(protocol.Hello("b", 0), 0)
    s.state_message({})
    good = Record("ok", hashlib.sha256(b"data").hexdigest(), 5, 4, 0o644)
    big = Record("big", hashlib.sha256(b"x" * 200).hexdigest(), 5, 200, 0o644)
    plan = s.receive(protocol.SyncState((good, big)), 0).plan
    s.request(plan)
    return plan


def test_session_machine_file_rules():
    from owsync.core.session import FileRefused, PeerEnd, PeerRequest

    flt = Filter(["*"], ["secret"])
    s = Session(lambda p: path_problem(p) is None and flt(p), max_file_size=100)
    assert _exchanged(s).requests == ["ok", "big"]
    ev = s.receive(protocol.FileContent("nobody-asked", 0o644, b"x"), 0)
    assert isinstance(ev, FileRefused) and ev.reason == "not requested"
    ev = s.receive(protocol.FileContent("big", 0o644, b"x" * 200), 0)
    assert isinstance(ev, FileRefused) and "too large" in ev.reason
    ev = s.receive(protocol.FileContent("ok", 0o600, b"tampered"), 0)
    assert isinstance(ev, FileRefused) and "advertised hash" in ev.reason
    assert s.missing == set()  # each request was answered once, if not well
    assert not s.complete
    ev = s.receive(protocol.RequestFiles(("ok", "ok", "secret", "../x")), 0)
    assert isinstance(ev, PeerRequest) and ev.paths == ("ok",)  # deduplicated, filtered
    with pytest.raises(protocol.ProtocolError):
        s.receive(protocol.RequestFiles(()), 0)
    assert isinstance(s.receive(protocol.EndOfSync(), 0), PeerEnd)
    assert s.complete
    with pytest.raises(protocol.ProtocolError):
        s.receive(protocol.EndOfSync(), 0)


def test_session_machine_accepts_a_good_file_with_the_writers_version():
    from owsync.core.session import FileArrived

    s = Session(Filter(["*"]), max_file_size=100)
    _exchanged(s)
    ev = s.receive(protocol.FileContent("ok", 0o600, b"data"), 0)
    assert isinstance(ev, FileArrived) and ev.data == b"data"
    assert (ev.record.mtime, ev.record.mode, ev.record.size) == (5, 0o600, 4)
    assert s.missing == {"big"}


def test_session_machine_order_errors():
    s = Session(Filter(["*"]), 100)
    s.hello("me", 0)
    s.receive(protocol.Hello("b", 0), 0)
    with pytest.raises(protocol.ProtocolError):  # SyncState before ours was sent
        s.receive(protocol.SyncState(()), 0)
    s = Session(Filter(["*"]), 100)
    s.hello("me", 0)
    s.receive(protocol.Hello("b", 0), 0)
    s.state_message({})
    with pytest.raises(protocol.ProtocolError):  # a file before the exchange
        s.receive(protocol.FileContent("x", 0, b""), 0)
    with pytest.raises(protocol.ProtocolError):  # a second Hello
        s.receive(protocol.Hello("b", 0), 0)


def test_a_local_deletion_is_stamped_after_the_version_it_deletes():
    """A file whose mtime lies ahead of this node's clock must still be deletable:
    its tombstone is stamped after it, or the file would beat it everywhere."""
    from owsync.core.state import reconcile

    ahead = Record("f", "a" * 64, 1_900_000_000_000, 1, 0o644)
    out = reconcile({"f": ahead}, {}, lambda p: True, set(), now_ms=1_800_000_000_000)
    assert out["f"].deleted and out["f"].mtime == ahead.mtime + 1
    behind = ahead._replace(mtime=1_700_000_000_000)
    out = reconcile({"f": behind}, {}, lambda p: True, set(), now_ms=1_800_000_000_000)
    assert out["f"].mtime == 1_800_000_000_000


def test_a_deletion_during_the_walk_is_stamped_after_it(tmp_path):
    """The tombstone takes the time the walk ended: a deletion made while the scan
    walked must not get a stamp before itself (a write made elsewhere in between
    would beat it, and the deleted file come back)."""
    import os
    import time

    from owsync.core.plan import remote_wins
    from owsync.io import scanner

    (tmp_path / "sub").mkdir()
    for name in ("a", "sub/f"):
        (tmp_path / name).write_text("v1\n")
    known = scanner.scan(str(tmp_path), {}, lambda p: True, frozenset(), 0).records
    events: dict[str, int] = {}

    def accept(path: str) -> bool:  # the root's files are walked before sub/
        if path == "a" and not events:
            time.sleep(0.01)
            events["edit"] = int(time.time() * 1000)  # a write elsewhere, its mtime
            time.sleep(0.01)
            os.unlink(tmp_path / "sub" / "f")  # then the deletion here
        return True

    clock = lambda: int(time.time() * 1000)  # noqa: E731
    res = scanner.scan(str(tmp_path), known, accept, frozenset(), clock)
    tomb = res.records["sub/f"]
    assert tomb.deleted and tomb.mtime > events["edit"]
    assert not remote_wins(Record("sub/f", "ab" * 32, events["edit"], 3, 0o644), tomb)


def test_the_plan_learns_deletions_of_paths_never_had():
    """A peer's tombstone for a path with no record here is neither a
    deletion to apply nor a request: it is to be recorded (plan.learned);
    one for a path we hold live and older is a deletion, as ever."""
    tomb = Record("gone", None, 200, 0, 0o644, True)
    older = Record("kept", "ab" * 32, 100, 3, 0o644)
    plan = make_plan({"kept": older}, [tomb, tomb._replace(path="kept")], lambda p: True)
    assert plan.learned == [tomb]
    assert [r.path for r in plan.deletions] == ["kept"] and plan.requests == []
    # outside the filter: not learned either
    assert make_plan({}, [tomb], lambda p: False).learned == []


@pytest.mark.parametrize("size", [0, 1, 2048, 65535, 65536, 65537, 300_000])
def test_hash_file_reads_a_file_whole_whatever_its_size(tmp_path, size):
    """Small files are read in one call, larger ones a buffer at a time:
    both give the SHA-256 of the whole content and the file's stat."""
    import os

    from owsync.io.scanner import hash_file

    f = tmp_path / "f"
    f.write_bytes(data := os.urandom(size))
    digest, st = hash_file(str(f))
    assert digest == hashlib.sha256(data).hexdigest()
    assert (st.st_ino, st.st_size) == (f.stat().st_ino, size)


def test_hash_file_reads_past_a_size_the_stat_understated(tmp_path):
    """A file longer than its stat said (it grew between the stat and the
    read; /proc's files say 0) is hashed to its end; a symlink or a FIFO is
    not read at all."""
    import os

    from owsync.io.scanner import hash_file

    with open("/proc/self/cmdline", "rb") as f:
        content = f.read()
    assert os.stat("/proc/self/cmdline").st_size == 0 < len(content)
    got = hash_file("/proc/self/cmdline")
    assert got is not None and got[0] == hashlib.sha256(content).hexdigest()
    (tmp_path / "link").symlink_to("/proc/self/cmdline")
    os.mkfifo(tmp_path / "fifo")
    assert hash_file(str(tmp_path / "link")) is None
    assert hash_file(str(tmp_path / "fifo")) is None


# --- v1 behind v2's API (core/session1.py) ---------------------------------------------


def _v1_pair(files_a: dict[str, bytes], files_b: dict[str, bytes]):
    from owsync.core.crypto import PlainCipher
    from owsync.core.session1 import Session1

    out = []
    for me, peer in (("a", "b"), ("b", "a")):
        s = Session(Filter(["*"]), max_file_size=100)
        s.hello(me, 0)
        s.receive(protocol.Hello(peer, 0), 0)
        m = Session1(s, PlainCipher(), protocol.MAX_FRAME)
        assert m.start() == b""
        out.append(m)
    recs = [
        {p: Record(p, hashlib.sha256(d).hexdigest(), 5, len(d), 0o644) for p, d in f.items()}
        for f in (files_a, files_b)
    ]
    return out, recs


def _v1_frame(msg) -> bytes:
    payload = protocol.encode(msg)
    return protocol.frame_header(len(payload)) + payload


def test_the_v1_adapter_speaks_1_2_0s_frames_and_v2s_events():
    from owsync.core import session2 as s2
    from owsync.core.session1 import Refused

    (a, b), (ra, rb) = _v1_pair({"f": b"from a", "gone": b"g"}, {"g": b"from b!"})
    assert isinstance(a.next_event(), s2.PeerAuth) and a.next_event() is None
    state = b"".join(a.state(ra))
    assert state == _v1_frame(protocol.SyncState(tuple(ra.values())))
    assert isinstance(b.next_event(), s2.PeerAuth)
    b_state = b"".join(b.state(rb))
    a.receive_data(b_state[:7])  # a frame cut anywhere
    assert a.next_event() is None
    a.receive_data(b_state[7:])
    ev = a.next_event()
    assert isinstance(ev, s2.PeerState) and ev.plan.requests == ["g"] and ev.too_large == []
    req = b"".join(a.request(ev.plan))
    assert req == _v1_frame(protocol.RequestFiles(("g",)))
    b.receive_data(state + req)
    ev = b.next_event()
    assert isinstance(ev, s2.PeerState) and ev.plan.requests == ["f", "gone"]
    b_req = b"".join(b.request(ev.plan))
    ev = b.next_event()
    assert isinstance(ev, s2.PeerRequest) and ev.paths == ("g",)
    # a file whose content is read whole goes as one FileContent; one that
    # changed since the scan does not go at all
    assert b.file_start("g", 0o600) == b"" and b.outgoing_left == 7
    assert b.file_chunk(b"from") == b"" and b.file_chunk(b" b!") == b""
    frame, why = b.file_end()
    assert why is None and frame == _v1_frame(protocol.FileContent("g", 0o600, b"from b!"))
    end = b.end()
    assert end == _v1_frame(protocol.EndOfSync()) and not b.complete
    planted = _v1_frame(protocol.FileContent("planted", 0o644, b"x"))
    a.receive_data(b_req + planted + frame + end)
    assert a.next_event() == s2.PeerRequest(("f", "gone"))
    assert a.next_event() == Refused("planted", "not requested")
    start, chunk, done = a.next_event(), a.next_event(), a.next_event()
    assert isinstance(start, s2.FileStart) and start.record.mode == 0o600
    assert chunk == s2.FileChunk("g", b"from b!") and done == s2.FileDone(start.record)
    assert isinstance(a.next_event(), s2.PeerEnd) and not a.complete
    assert not a.can_close and a.error("why") == b""  # v1 has neither DONE nor ERROR
    assert a.next_event() is None
    # b asked for f and gone: gone changed since the scan, and goes as read
    # (b refuses it, as 1.2.0 would)
    a.file_start("f", 0o644)
    a.file_chunk(b"from a")
    a.file_end()
    a.file_start("gone", 0o644)
    a.file_chunk(b"G")
    frame, why = a.file_end()
    assert why is None and frame == _v1_frame(protocol.FileContent("gone", 0o644, b"G"))
    b.receive_data(frame)
    assert b.next_event() == Refused("gone", "content does not match the advertised hash")
    a.end()
    assert a.complete and a.missing == set()
    with pytest.raises(RuntimeError):
        a.end()


def test_the_v1_adapter_refuses_what_1_2_0_would_not_send():
    from owsync.core.session import SessionAbort

    (a, _), (ra, _) = _v1_pair({"f": b"x"}, {})
    a.next_event()
    a.receive_data(_v1_frame(protocol.RequestFiles(("f",))))
    with pytest.raises(protocol.ProtocolError, match="before the SyncState exchange"):
        a.next_event()
    (a, _), _ = _v1_pair({}, {})
    a.next_event()
    a.frame_limit = 100  # a state that no v1 frame carries
    big = {f"p{i}": Record(f"p{i}", "0" * 64, 1, 1, 0o644) for i in range(5)}
    with pytest.raises(SessionAbort, match="more than protocol v1 carries"):
        a.state(big)
