"""Replay the sessions recorded between two owsync 1.2.0 nodes (tests/vectors, a copy of
the recordings in ../shared/vectors, so that any clone runs them).

Our node plays A: it is fed B's recorded frames (for AES-GCM, the recorded
ciphertext itself) over a real socket, and must make the same requests, send
the same files, and end with the same files and database records.  Where the
recorded database differs only in the mtimes 1.2.0 re-stamps on arrival, ours
must carry the writer's mtime instead (docs/PROTOCOL.md, "Where owsync differs from 1.2.0").
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from owsync.core import protocol
from owsync.core.crypto import AesGcmCipher, PlainCipher
from owsync.core.filters import Filter
from owsync.service.context import Context
from owsync.service.engine import run_session

VECTORS = Path(__file__).resolve().parent / "vectors"  # a copy of ../shared/vectors
KEY = bytes.fromhex("8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3")


def cipher_for(mode: str):
    return AesGcmCipher(KEY) if mode == "aesgcm" else PlainCipher()


def frames(mode: str, session: int) -> list[tuple[str, bytes]]:
    path = VECTORS / f"{mode}.session{session}.jsonl"
    return [(d["dir"], bytes.fromhex(d["frame"])) for d in map(json.loads, path.open())]


def messages(mode: str, session: int, direction: str) -> list[protocol.Message]:
    c = cipher_for(mode)
    return [protocol.decode(c.open(f)) for d, f in frames(mode, session) if d == direction]


@pytest.mark.parametrize("mode", ["plain", "aesgcm"])
@pytest.mark.parametrize("session", [1, 2])
def test_every_recorded_frame_decodes(mode, session):
    got = [(d, protocol.decode(cipher_for(mode).open(f))) for d, f in frames(mode, session)]
    assert got and all(isinstance(m, protocol.Message) for _, m in got)
    if mode == "aesgcm":  # each direction says what the plain recording says, in order
        for direction in ("c2s", "s2c"):
            plain = [type(m) for m in messages("plain", session, direction)]
            assert [type(m) for d, m in got if d == direction] == plain
    # re-encoding gives JSON that decodes to the same message
    for _, m in got:
        assert protocol.decode(protocol.encode(m)) == m


def test_recorded_payloads_are_what_we_emit():
    """Our encoder produces 1.2.0's bytes, except its optional escaping of '/'."""
    for d, f in frames("plain", 1):
        m = protocol.decode(f)
        assert protocol.encode(m) == f.replace(b"\\/", b"/"), d


def test_encrypted_frames_fail_with_another_key():
    from owsync.core.crypto import AuthError

    _, f = frames("aesgcm", 1)[0]
    with pytest.raises(AuthError):
        AesGcmCipher(b"\x01" * 32).open(f)


def _send_all(sock: socket.socket, frames_: list[bytes]) -> None:
    for f in frames_:
        sock.sendall(struct.pack(">I", len(f)) + f)


def _recv_all(sock: socket.socket) -> list[bytes]:
    dec = protocol.FrameDecoder()
    out = []
    while data := sock.recv(65536):
        out += dec.feed(data)
    return out


def replay_as_a(mode: str, session: int, root: Path, db: Path, now: float):
    """Run our node as A against B's recorded frames; return (result, A's messages)."""
    ours, theirs = socket.socketpair()
    ctx = Context(
        root=str(root),
        db_path=str(db),
        filter=Filter(["*"]),
        cipher=cipher_for(mode),
        hostname="unknown",
        clock=lambda: now,
        idle_timeout=5,
    )
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_session(ours, ctx, "B")))
    t.start()
    _send_all(theirs, [f for d, f in frames(mode, session) if d == "c2s"])
    sent = _recv_all(theirs)
    t.join(10)
    theirs.close()
    c = cipher_for(mode)
    return box["r"], [protocol.decode(c.open(f)) for f in sent]


def _of(msgs, kind):
    return [m for m in msgs if isinstance(m, kind)]


def _setup_a(root: Path, mode: str) -> None:
    """A's files before session 1, from what A advertised and sent in it."""
    s2c = messages(mode, 1, "s2c")
    (state,) = _of(s2c, protocol.SyncState)
    contents = {m.path: m for m in _of(s2c, protocol.FileContent)}
    for rec in state.files:
        p = root / rec.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(contents[rec.path].data)
        os.chmod(p, rec.mode)
        ns = rec.mtime * 1_000_000
        os.utime(p, ns=(ns, ns))


def _key(r):
    return (r.path, r.hash, r.mtime, r.size, r.mode, r.deleted)


@pytest.mark.parametrize("mode", ["plain", "aesgcm"])
def test_replay_both_sessions_as_node_a(mode, tmp_path):
    root, db = tmp_path / "a", tmp_path / "a.db"
    root.mkdir()
    _setup_a(root, mode)

    # --- session 1 ---------------------------------------------------------
    hello_1 = _of(messages(mode, 1, "c2s"), protocol.Hello)[0]
    result, ours = replay_as_a(mode, 1, root, db, hello_1.timestamp + 0.5)
    assert result.ok, result.error
    rec_s2c = messages(mode, 1, "s2c")
    assert [type(m) for m in ours][:2] == [protocol.Hello, protocol.SyncState]
    # same advertised state, same requests, same files sent
    assert {_key(r) for r in _of(ours, protocol.SyncState)[0].files} == {
        _key(r) for r in _of(rec_s2c, protocol.SyncState)[0].files
    }
    assert _of(ours, protocol.RequestFiles) == _of(rec_s2c, protocol.RequestFiles)
    assert sorted(_of(ours, protocol.FileContent), key=lambda m: m.path) == sorted(
        _of(rec_s2c, protocol.FileContent), key=lambda m: m.path
    )
    assert isinstance(ours[-1], protocol.EndOfSync)
    b_state_1 = {r.path: r for r in _of(messages(mode, 1, "c2s"), protocol.SyncState)[0].files}

    # --- between the sessions: A deletes old.txt ----------------------------
    (root / "old.txt").unlink()

    # --- session 2 ---------------------------------------------------------
    expected_db = json.loads((VECTORS / f"{mode}.a.db.json").read_text())["files"]
    tomb_time = expected_db["old.txt"]["mtime"] / 1000  # A's scan time in the recording
    result, ours = replay_as_a(mode, 2, root, db, tomb_time)
    assert result.ok, result.error
    assert _of(ours, protocol.RequestFiles) == _of(messages(mode, 2, "s2c"), protocol.RequestFiles)
    assert _of(ours, protocol.FileContent) == []
    assert (result.received, result.sent, result.deleted) == (2, 0, 0)
    b_state_2 = {r.path: r for r in _of(messages(mode, 2, "c2s"), protocol.SyncState)[0].files}

    # --- end state: files ----------------------------------------------------
    listed = (VECTORS / f"{mode}.a.files").read_text().split()
    assert sorted("./" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == listed
    assert (root / "blob.bin").read_bytes() == b"\x00\x01\x02\xff"

    # --- end state: database -------------------------------------------------
    ours_db = json.loads(db.read_text())["files"]
    assert ours_db.keys() == expected_db.keys()
    received_from_b = {"firewall": b_state_2, "blob.bin": b_state_2}
    for path, exp in expected_db.items():
        got = ours_db[path]
        for field in ("hash", "size", "mode", "deleted"):
            assert got[field] == exp[field], (path, field)
        if path in received_from_b:
            # 1.2.0 re-stamped the arrival time; we keep the writer's mtime
            assert got["mtime"] == received_from_b[path][path].mtime, path
            assert os.stat(root / path).st_mtime_ns // 1_000_000 == got["mtime"]
        else:
            assert got["mtime"] == exp["mtime"], path
    # firewall was first received in session 1 with B's mtime, then replaced
    assert b_state_1["firewall"].hash != ours_db["firewall"]["hash"]
