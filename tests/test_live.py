"""The live link's codec and state machine (owsync.core.live), on their own."""

from __future__ import annotations

import hashlib
import os

import pytest

from owsync.core import live as lv
from owsync.core import protocol2 as p2
from owsync.core.protocol import Hello, ProtocolError
from owsync.core.state import Record

PSK = bytes(range(32))


def hellos(psk=PSK, secrets=(b"\x11" * 32, b"\x22" * 32), nodes=("a" * 32, "b" * 32)):
    """Both Hello payloads of a live link and each side's X25519 secret."""
    out = []
    for i in range(2):
        pub = lv.x25519_public(secrets[i]) if psk else None
        fields = lv.advertise(bytes([i + 1]) * 32, nodes[i], pub)
        out.append(p2.hello_payload(Hello(f"n{i}", 1_700_000_000.0 + i, 1), fields))
    return out


def pair(psk=PSK, accept=lambda p: True, max_file_size=1 << 20, **kw):
    hi, hr = hellos(psk, **kw)
    secrets = kw.get("secrets", (b"\x11" * 32, b"\x22" * 32))
    ki = lv.link_keys(psk, True, hi, hr, secrets[0] if psk else None)
    kr = lv.link_keys(psk, False, hr, hi, secrets[1] if psk else None)
    return lv.LiveLink(accept, max_file_size, ki), lv.LiveLink(accept, max_file_size, kr)


def events(m: lv.LiveLink, data: bytes) -> list:
    m.receive_data(data)
    out = []
    while (e := m.next_event()) is not None:
        out.append(e)
    return out


def opened(psk=PSK, **kw):
    a, b = pair(psk, **kw)
    fa, fb = a.start(), b.start()
    assert events(b, fa) == [lv.Authenticated()]
    assert events(a, fb) == [lv.Authenticated()]
    return a, b


def rec(path, data=b"x", mtime=1000, deleted=False):
    if deleted:
        return Record(path, None, mtime, 0, 0o644, True)
    return Record(path, hashlib.sha256(data).hexdigest(), mtime, len(data), 0o644, False)


@pytest.mark.parametrize("psk", [PSK, None], ids=["encrypted", "plain"])
def test_a_change_travels_as_records_then_request_then_file(psk):
    a, b = opened(psk)
    r = rec("etc/dhcp", b"v2")
    got = events(b, b"".join(a.state([r])))
    assert got == [lv.Records((r,))]
    req = b"".join(b.request(["etc/dhcp"]))
    assert b.is_pending("etc/dhcp")
    assert events(a, req) == [lv.Requested(("etc/dhcp",))]
    frames = [a.file_start(r, 0o100600), a.file_chunk(b"v2")]
    end, why = a.file_end()
    assert why is None
    got = events(b, b"".join(frames + [end]))
    assert [type(e) for e in got] == [lv.FileStart, lv.FileChunk, lv.FileDone]
    assert got[0].record.mode == 0o600 and got[-1].record.hash == r.hash
    assert not b.pending


def test_the_keys_mix_in_a_fresh_x25519_exchange():
    """The same PSK and Hellos with other ephemeral secrets give other keys:
    a recording cannot be opened with the PSK alone."""
    hi, hr = hellos()
    k1 = lv.link_keys(PSK, True, hi, hr, b"\x11" * 32)
    hi2, hr2 = hellos(secrets=(b"\x33" * 32, b"\x22" * 32))
    k2 = lv.link_keys(PSK, True, hi2, hr2, b"\x33" * 32)
    assert k1.send != k2.send and k1.recv != k2.recv
    # and both sides agree
    kr = lv.link_keys(PSK, False, hr, hi, b"\x22" * 32)
    assert (k1.send, k1.recv) == (kr.recv, kr.send)
    # v2's session keys from the same PSK and nonces are not these
    shared = lv.x25519_shared(b"\x11" * 32, lv.x25519_public(b"\x22" * 32))
    assert lv.derive_link_keys(PSK, shared, b"\1" * 32, b"\2" * 32, k1.transcript) != (
        p2.derive_keys(PSK, b"\1" * 32, b"\2" * 32, k1.transcript)
    )


def test_a_low_order_peer_key_is_refused():
    with pytest.raises(ProtocolError, match="low order"):
        lv.x25519_shared(b"\x11" * 32, bytes(32))


def test_a_reflected_hello_is_refused():
    hi, _ = hellos()
    with pytest.raises(ProtocolError, match="reflection"):
        lv.link_keys(PSK, True, hi, hi, b"\x11" * 32)


@pytest.mark.parametrize(
    "live",
    [{"node": "zz" * 16}, {"node": "ab"}, {"node": 5}, {"node": "a" * 32, "x25519": "12"}, 7],
)
def test_a_malformed_live_offer_is_an_error_not_a_fallback(live):
    with pytest.raises(ProtocolError, match="malformed live offer"):
        lv.peer_live({"v2": {"nonce": "00" * 32, "live": live}})


def test_an_offer_without_live_is_plain_v2():
    assert lv.peer_live({"v2": {"nonce": "00" * 32}}) is None
    assert lv.peer_live({}) is None


def test_both_ends_keep_the_same_one_of_two_links():
    a, b = "0" * 32, "f" * 32
    assert lv.keeps_link(a, b) and not lv.keeps_link(b, a)


def test_rekey_moves_both_directions_on_and_forgets_the_old_key():
    a, b = opened()
    before = b"".join(a.state([rec("f", b"1")]))
    events(b, before)
    rk = a.rekey()
    after = b"".join(a.state([rec("g", b"2")]))
    assert [type(e) for e in events(b, rk + after)] == [lv.Records]
    # a frame sealed under the old key, replayed after the rekey, fails
    with pytest.raises(ProtocolError, match="failed authentication"):
        events(b, before)


def test_rekey_is_due_after_an_hour_or_a_gibibyte():
    a, _ = opened()
    assert not a.needs_rekey(10.0)
    assert a.needs_rekey(lv.REKEY_SECONDS)


# --- the transition table -------------------------------------------------------

ALL_TYPES = sorted(lv.LIVE_NAMES)


def frame_of(kind: int) -> tuple[bytes, bool]:
    """A well-formed body for each type, and whether it needs a request first."""
    bodies = {
        p2.AUTH: b"\0" * 32,
        p2.STATE: p2._dumps([p2.record_to_v2(rec("f"))]),
        p2.REQUEST: p2._dumps(["f"]),
        p2.FILE: p2.encode_file_header(p2.FileHeader("f", 0o644, 1, rec("f").hash, 1000)),
        p2.CHUNK: b"x",
        p2.FILE_END: p2.encode_file_end("the sender gave it up"),
        p2.ERROR: b"why",
        p2.INDEX_END: lv.encode_index_end(1, False),
        p2.SKIP: lv.encode_skip("f", "gone"),
        p2.ACK: lv.encode_ack(1),
        p2.PEERS: lv.encode_peers(["c" * 32]),
        p2.VRRP: lv.encode_vrrp({"VI_1": lv.Role("MASTER", 1795600000)}),
        p2.PING: b"",
        p2.REKEY: b"",
        p2.BYE: b"bye",
    }
    return bodies[kind]


@pytest.mark.parametrize("stage", [lv.OPEN, lv.IN_FILE])
@pytest.mark.parametrize("kind", ALL_TYPES, ids=lambda k: lv.LIVE_NAMES[k])
def test_every_frame_in_every_stage_is_what_the_table_says(stage, kind):
    """Plain mode (no keys): the table alone decides.  B has asked for "f"
    and "g"; in IN_FILE, "g" is on its way.  Frames are forged past the
    sender's own checks."""
    a, b = opened(None)
    events(a, b"".join(b.request(["f", "g"])))
    if stage == lv.IN_FILE:
        events(b, a.file_start(rec("g"), 0o644))
        assert b.peers == lv.IN_FILE
    frame = a._w.frame(kind, frame_of(kind))
    if kind == p2.ERROR:
        with pytest.raises(p2.PeerError):
            events(b, frame)
    elif (stage, kind) in lv.TRANSITIONS:
        events(b, frame)
        assert b.peers == lv.TRANSITIONS[(stage, kind)][1]
    else:
        with pytest.raises(ProtocolError, match="unexpected"):
            events(b, frame)


def test_before_auth_only_auth_error_or_bye_pass():
    for kind in ALL_TYPES:
        a, b = pair(None)
        b.start()
        frame = a._w.frame(kind, frame_of(kind))
        if kind == p2.AUTH:
            with pytest.raises(ProtocolError, match="does not match"):
                events(b, frame)  # the wrong transcript
        elif kind in (p2.ERROR, p2.BYE):
            assert (lv.AUTHING, kind) in lv.TRANSITIONS
        else:
            with pytest.raises(ProtocolError, match="unexpected"):
                events(b, frame)


def test_a_file_that_was_not_requested_is_refused():
    a, b = opened()
    a._to_serve.add("secret")  # a hostile sender: it serves what nobody asked for
    with pytest.raises(ProtocolError, match="not requested"):
        events(b, a.file_start(rec("secret"), 0o644))


def test_a_skip_for_a_path_not_requested_is_refused():
    a, b = opened()
    a._to_serve.add("x")
    with pytest.raises(ProtocolError, match="was not requested"):
        events(b, a.skip("x", "no"))


def test_a_file_whose_content_is_not_its_hash_is_refused():
    a, b = opened()
    events(a, b"".join(b.request(["f"])))
    r = rec("f", b"good")
    frames = a.file_start(r, 0o644) + a.file_chunk(b"evil")
    frames += a._w.frame(p2.FILE_END, b"")
    with pytest.raises(ProtocolError, match="does not match its SHA-256"):
        events(b, frames)


def test_a_file_over_max_file_size_is_refused_here_and_its_chunks_dropped():
    a, b = opened(max_file_size=2)
    events(a, b"".join(b.request(["f"])))
    r = rec("f", b"toolong")
    frames = a.file_start(r, 0o644) + a.file_chunk(b"toolong") + a.file_end()[0]
    got = events(b, frames)
    assert [type(e) for e in got] == [lv.FileRefused] and "too large" in got[0].reason


def test_a_control_frame_may_pass_between_the_chunks_of_a_file():
    a, b = opened()
    events(a, b"".join(b.request(["big"])))
    data = os.urandom(3 * p2.CHUNK_SIZE)
    r = rec("big", data)
    out = a.file_start(r, 0o644) + a.file_chunk(data[: p2.CHUNK_SIZE])
    out += b"".join(a.state([rec("small", b"s")]))
    for i in range(1, 3):
        out += a.file_chunk(data[i * p2.CHUNK_SIZE : (i + 1) * p2.CHUNK_SIZE])
    out += a.file_end()[0]
    kinds = [type(e) for e in events(b, out)]
    assert kinds == [lv.FileStart, lv.FileChunk, lv.Records, lv.FileChunk, lv.FileChunk,
                     lv.FileDone]  # fmt: skip


def test_a_cut_connection_is_not_an_orderly_close():
    a, b = opened()
    with pytest.raises(ProtocolError, match="without BYE"):
        b.connection_closed()
    a2, b2 = opened()
    assert events(b2, a2.bye("stopping")) == [lv.Bye("stopping")]
    b2.connection_closed()  # after BYE: fine


@pytest.mark.parametrize("kind", ["drop", "duplicate", "swap"])
def test_encrypted_frames_dropped_duplicated_or_swapped_fail(kind):
    a, b = opened()
    frames = [b"".join(a.state([rec(f"f{i}")])) for i in range(3)]
    if kind == "drop":
        frames = [frames[0], frames[2]]
    elif kind == "duplicate":
        frames = [frames[0], frames[0], frames[1]]
    else:
        frames = [frames[1], frames[0], frames[2]]
    with pytest.raises(ProtocolError, match="failed authentication"):
        events(b, b"".join(frames))


def test_index_end_ack_and_peers_bodies_round_trip():
    assert lv.decode_index_end(lv.encode_index_end(7, True)) == (7, True)
    assert lv.decode_ack(lv.encode_ack(9)) == 9
    nodes = {"a" * 32, "b" * 32}
    assert lv.decode_peers(lv.encode_peers(nodes)) == frozenset(nodes)
    with pytest.raises(ProtocolError):
        lv.decode_peers(p2._dumps({"nodes": ["x"]}))
    with pytest.raises(ProtocolError):
        lv.decode_index_end(p2._dumps({"id": -1, "reply": False}))


# --- VRRP roles ---------------------------------------------------------------------


def test_vrrp_roles_travel_as_the_whole_table():
    a, b = opened()
    roles = {"VI_1": lv.Role("MASTER", 1795600000), "lan 6": lv.Role("BACKUP", 1795600001)}
    assert events(b, a.vrrp_frame(roles)) == [lv.RolesChanged(roles)]
    assert events(b, a.vrrp_frame({})) == [lv.RolesChanged({})]


@pytest.mark.parametrize(
    "body, why",
    [
        (b'{"instances": []}', "at most 32"),
        (b"[]", "at most 32"),
        (p2._dumps({"instances": {f"v{i}": {"role": "MASTER", "since": 1} for i in range(33)}}),
         "at most 32"),
        (b'{"instances": {"": {"role": "MASTER", "since": 1}}}', "name"),
        (p2._dumps({"instances": {"x" * 65: {"role": "MASTER", "since": 1}}}), "name"),
        (b'{"instances": {"a\\nb": {"role": "MASTER", "since": 1}}}', "name"),
        (b'{"instances": {"VI_1": {"role": "master", "since": 1}}}', "role"),
        (b'{"instances": {"VI_1": {"role": "STOP", "since": 1}}}', "role"),
        (b'{"instances": {"VI_1": "MASTER"}}', "role"),
        (b'{"instances": {"VI_1": {"role": "MASTER", "since": -1}}}', "since"),
        (b'{"instances": {"VI_1": {"role": "MASTER", "since": 1.5}}}', "since"),
        (b'{"instances": {"VI_1": {"role": "MASTER"}}}', "since"),
    ],
)  # fmt: skip
def test_a_malformed_vrrp_frame_is_a_protocol_error(body, why):
    a, b = opened(None)
    with pytest.raises(ProtocolError, match=why):
        events(b, a._w.frame(p2.VRRP, body))


def test_more_instances_than_a_frame_carries_are_refused_on_sending():
    a, _ = opened(None)
    with pytest.raises(ValueError, match="more than 32"):
        a.vrrp_frame({f"v{i}": lv.Role("BACKUP", 1) for i in range(33)})
