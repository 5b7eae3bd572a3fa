"""Protocol v2's pure codec: negotiation, transcript, key schedule, framing, bodies.

The fixed vectors in tests/vectors/v2/ come from an independent implementation
(tests/vectors/v2/generate.py); every byte must match.  Then the framing's
defences, each refused with a clear ProtocolError and nothing else: replayed,
reordered, duplicated, dropped, truncated and foreign frames, wrong keys, giant
headers; and fuzzing of the reader and the body decoders.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from owsync.core import protocol2 as p2
from owsync.core.protocol import Hello, ProtocolError, decode
from owsync.core.state import Record

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS_DIR = os.path.join(HERE, "vectors", "v2")
with open(os.path.join(VECTORS_DIR, "session.json")) as _f:
    V = json.load(_f)
PSK = bytes.fromhex(V["psk"])
NONCE_I, NONCE_R = bytes.fromhex(V["nonce_i"]), bytes.fromhex(V["nonce_r"])
HELLO_I, HELLO_R = V["hello_i"].encode(), V["hello_r"].encode()

EXAMPLES = int(os.environ.get("OWSYNC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEY_A, KEY_B = b"\x01" * 32, b"\x02" * 32


def _generator():
    spec = importlib.util.spec_from_file_location("v2gen", os.path.join(VECTORS_DIR, "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- fixed vectors ----------------------------------------------------------


def test_the_vector_generator_hkdf_is_rfc5869():
    # RFC 5869, A.1: the independent HKDF the vectors were derived with
    gen = _generator()
    okm = gen.hkdf_sha256(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("000102030405060708090a0b0c"),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_the_recorded_vectors_are_what_the_generator_derives(tmp_path):
    gen = _generator()
    assert gen.T.hex() == V["transcript"] and gen.K_I2R.hex() == V["k_i2r"]
    assert [f["wire"] for f in gen.frames(True)] == [f["wire"] for f in V["encrypted"]]
    assert [f["wire"] for f in gen.frames(False)] == [f["wire"] for f in V["plain"]]


def test_hello_payloads_are_v1_hellos_plus_the_advertisement():
    ours = p2.hello_payload(Hello("router-a", 1795600000.0), p2.advertise(NONCE_I))
    assert ours == HELLO_I
    assert p2.hello_payload(Hello("router-b", 1795600001.0), p2.advertise(NONCE_R)) == HELLO_R
    # a v1 decoder (as 1.2.0's) takes it as an ordinary version-1 Hello
    assert decode(ours) == Hello("router-a", 1795600000.0, 1)
    # without an advertisement it is v1's Hello, byte for byte
    from owsync.core.protocol import encode

    assert p2.hello_payload(Hello("x", 5.0), {}) == encode(Hello("x", 5.0))


def test_transcript_and_keys_match_the_vectors():
    t = p2.transcript(HELLO_I, HELLO_R)
    assert t.hex() == V["transcript"]
    k_i2r, k_r2i = p2.derive_keys(PSK, NONCE_I, NONCE_R, t)
    assert (k_i2r.hex(), k_r2i.hex()) == (V["k_i2r"], V["k_r2i"])
    ki = p2.session_keys(PSK, True, HELLO_I, HELLO_R)
    kr = p2.session_keys(PSK, False, HELLO_R, HELLO_I)
    assert ki == p2.Keys(t, k_i2r, k_r2i, True)
    assert kr == p2.Keys(t, k_r2i, k_i2r, False)
    plain = p2.session_keys(None, True, HELLO_I, HELLO_R)
    assert plain == p2.Keys(t, None, None, True)


@pytest.mark.parametrize("mode", ["encrypted", "plain"])
def test_frames_match_the_vectors_byte_for_byte(mode):
    keys = {"i2r": V["k_i2r"], "r2i": V["k_r2i"]}
    for direction in ("i2r", "r2i"):
        key = bytes.fromhex(keys[direction]) if mode == "encrypted" else None
        w, r = p2.FrameWriter(key), p2.FrameReader(key)
        for f in (f for f in V[mode] if f["dir"] == direction):
            assert w.counter == f["counter"]
            kind = getattr(p2, f["type"])
            wire = w.frame(kind, bytes.fromhex(f["plaintext"]))
            assert wire.hex() == f["wire"], (direction, f["type"])
            assert r.feed(wire) == [p2.Frame(kind, bytes.fromhex(f["plaintext"]))]
        assert w.ended and r.ended and r.pending == 0


# --- negotiation ------------------------------------------------------------


def test_negotiation():
    ours = p2.advertise(NONCE_I)
    assert p2.negotiated(ours, p2.hello_fields(HELLO_R))
    v1_peer = json.loads(b'{"type":"Hello","hostname":"old","timestamp":1.0,"version":1}')
    assert not p2.negotiated(ours, v1_peer)
    assert not p2.negotiated({}, p2.hello_fields(HELLO_R))  # we do not advertise
    assert p2.peer_nonce(p2.hello_fields(HELLO_R)) == NONCE_R


@pytest.mark.parametrize(
    "v2", [5, "x", {}, {"nonce": 3}, {"nonce": "ab"}, {"nonce": "zz" * 32}, [1], True]
)
def test_a_malformed_advertisement_is_refused_not_taken_for_v1(v2):
    with pytest.raises(ProtocolError, match="malformed v2 advertisement"):
        p2.negotiated(p2.advertise(NONCE_I), {"type": "Hello", "v2": v2})


def test_the_hello_frame_is_split_from_what_follows_it():
    auth = p2.FrameWriter(KEY_A).frame(p2.AUTH, b"T" * 32)
    stream = struct.pack(">I", len(HELLO_I)) + HELLO_I + auth
    for cut in range(len(stream)):
        first, rest = p2.split_hello_frame(stream[:cut])
        if cut < 4 + len(HELLO_I):
            assert first is None and rest == stream[:cut]
        else:
            assert first == HELLO_I and rest == auth[: cut - 4 - len(HELLO_I)]
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        p2.split_hello_frame(struct.pack(">I", 70_000))


def test_min_protocol_policy():
    assert p2.min_protocol_error(1, False) is None
    assert p2.min_protocol_error(2, True) is None
    assert p2.min_protocol_error(2, False, "10.0.0.2") == (
        "10.0.0.2 speaks protocol 1 only (owsync 1.2.0?); min_protocol 2 refuses it"
    )
    with pytest.raises(ValueError):
        p2.min_protocol_error(3, True)


def test_session_keys_need_both_advertisements_and_distinct_nonces():
    v1 = b'{"type":"Hello","hostname":"old","timestamp":1.0,"version":1}'
    with pytest.raises(ProtocolError, match="both Hellos"):
        p2.session_keys(PSK, True, HELLO_I, v1)
    with pytest.raises(ProtocolError, match="reflection"):
        p2.session_keys(PSK, True, HELLO_I, HELLO_I)
    with pytest.raises(ProtocolError, match="Hello"):
        p2.session_keys(PSK, True, HELLO_I, b"[1]")
    with pytest.raises(ProtocolError, match="Hello"):
        p2.session_keys(PSK, True, HELLO_I, b"\xff{")


def test_a_changed_hello_changes_transcript_and_keys():
    changed = HELLO_R.replace(b"router-b", b"router-c")
    assert p2.transcript(HELLO_I, changed) != p2.transcript(HELLO_I, HELLO_R)
    assert p2.session_keys(PSK, True, HELLO_I, changed).send != V["k_i2r"]
    # the roles are bound: swapping who connected gives other keys
    swapped = p2.session_keys(PSK, True, HELLO_R, HELLO_I)
    assert swapped.transcript != bytes.fromhex(V["transcript"])


# --- framing: round trips -----------------------------------------------------


def _body(kind: int, n: int) -> bytes:
    lo, hi = p2.LIMITS[kind]
    return bytes(range(256)) * (max(lo, min(n, hi)) // 256) + bytes(max(lo, min(n, hi)) % 256)


frame_specs = st.lists(
    st.tuples(
        st.sampled_from([p2.STATE, p2.REQUEST, p2.FILE, p2.CHUNK, p2.FILE_END, p2.STATE_END]),
        st.integers(0, 3000),
    ),
    max_size=12,
)


@FUZZ
@given(frame_specs, st.booleans(), st.integers(1, 5000), st.booleans())
def test_frames_round_trip_through_any_chunking(specs, encrypted, step, with_end):
    key = KEY_A if encrypted else None
    w, r = p2.FrameWriter(key), p2.FrameReader(key)
    sent = [p2.Frame(kind, _body(kind, n)) for kind, n in specs]
    if with_end:
        sent.append(p2.Frame(p2.END, b'{"frames":0,"files":0,"bytes":0}'))
    stream = b"".join(w.frame(f.type, f.body) for f in sent)
    got = []
    for i in range(0, len(stream), step):
        got += r.feed(stream[i : i + step])
    assert got == sent and r.pending == 0 and r.counter == len(sent)


def test_a_full_size_chunk_is_sealed_and_opened():
    w, r = p2.FrameWriter(KEY_A), p2.FrameReader(KEY_A)
    data = os.urandom(p2.CHUNK_SIZE)
    wire = w.frame(p2.CHUNK, data)
    assert len(wire) == p2.HEADER_SIZE + p2.CHUNK_SIZE + p2.TAG
    assert r.feed(wire) == [p2.Frame(p2.CHUNK, data)]


def test_the_writer_keeps_to_the_limits():
    w = p2.FrameWriter(KEY_A)
    with pytest.raises(ValueError, match="CHUNK"):
        w.frame(p2.CHUNK, b"x" * (p2.CHUNK_SIZE + 1))
    with pytest.raises(ValueError, match="CHUNK"):
        w.frame(p2.CHUNK, b"")
    with pytest.raises(ValueError, match="AUTH"):
        w.frame(p2.AUTH, b"short")
    w.counter = p2.COUNTER_LIMIT  # never seal under a nonce that could repeat
    with pytest.raises(ProtocolError, match="counter exhausted"):
        w.frame(p2.CHUNK, b"x")
    w = p2.FrameWriter(None)
    w.frame(p2.ERROR, b"bye")
    with pytest.raises(RuntimeError, match="after the end"):
        w.frame(p2.CHUNK, b"x")


# --- framing: what an attacker can try ------------------------------------------


def _stream(key=KEY_A, n=4) -> list[bytes]:
    w = p2.FrameWriter(key)
    return [w.frame(p2.AUTH, b"T" * 32)] + [w.frame(p2.CHUNK, bytes([i]) * 100) for i in range(n)]


def _refused(frames: list[bytes], key=KEY_A, match="failed authentication") -> str:
    r = p2.FrameReader(key)
    with pytest.raises(ProtocolError, match=match) as exc:
        for f in frames:
            r.feed(f)
    with pytest.raises(ProtocolError):  # and it stays refused
        r.feed(b"")
    return str(exc.value)


def test_replayed_frame_is_refused():
    s = _stream()
    msg = _refused([s[0], s[1], s[1]])
    assert "frame 2 (CHUNK)" in msg and "replayed" in msg


def test_reordered_frames_are_refused():
    s = _stream()
    _refused([s[0], s[2], s[1]])


def test_duplicated_frame_is_refused():
    s = _stream()
    _refused([s[0], s[0]])


def test_dropped_frame_is_refused():
    s = _stream()
    _refused([s[0], s[1], s[3]])


def test_frames_of_another_session_are_refused():
    # same PSK, another session: other nonces, so other keys
    other_r = p2.hello_payload(Hello("router-b", 1795600001.0), p2.advertise(b"\x07" * 32))
    k1 = p2.session_keys(PSK, True, HELLO_I, HELLO_R).send
    k2 = p2.session_keys(PSK, True, HELLO_I, other_r).send
    assert k1 != k2
    _refused([_stream(k2)[0]], key=k1)


def test_the_other_directions_frames_are_refused():
    keys = p2.session_keys(PSK, True, HELLO_I, HELLO_R)
    _refused([_stream(keys.send)[0]], key=keys.recv)  # a frame reflected back


def test_wrong_key_is_refused():
    _refused([_stream(KEY_B)[0]], key=KEY_A)


def test_a_plain_peer_is_refused_by_an_encrypted_reader():
    _refused([_stream(None)[0]], key=KEY_A, match="outside its limits")


def test_a_tampered_header_is_refused():
    s = bytearray(_stream()[1])
    s[4] = p2.FILE_END  # same length, another type: the header is associated data
    _refused([_stream()[0], bytes(s)])


@pytest.mark.parametrize("key", [KEY_A, None])
def test_a_giant_chunk_header_is_refused_from_the_header_alone(key):
    r = p2.FrameReader(key)
    with pytest.raises(ProtocolError, match=r"CHUNK of 2147483648 bytes outside its limits"):
        r.feed(struct.pack(">IB", 2**31, p2.CHUNK))  # 5 bytes, nothing more needed
    r = p2.FrameReader(key)
    with pytest.raises(ProtocolError, match="STATE of"):
        r.feed(struct.pack(">IB", p2.CONTROL_LIMIT + 17, p2.STATE))
    r = p2.FrameReader(key)
    with pytest.raises(ProtocolError, match="unknown frame type 200"):
        r.feed(struct.pack(">IB", 1, 200))


def test_nothing_may_follow_the_end():
    w, r = p2.FrameWriter(KEY_A), p2.FrameReader(KEY_A)
    end = w.frame(p2.END, b"{}")
    w.ended = False  # a forged continuation, sealed properly
    more = w.frame(p2.CHUNK, b"x")
    with pytest.raises(ProtocolError, match="after the peer's end"):
        r.feed(end + more)


def test_truncation_leaves_bytes_pending():
    s = _stream()
    r = p2.FrameReader(KEY_A)
    assert len(r.feed(s[0] + s[1][:50])) == 1
    assert r.pending == 50 and not r.ended


# --- bodies -----------------------------------------------------------------

H = "ab" * 32


def test_state_batches_by_count_and_by_size():
    records = [Record(f"f{i}", H, i, i, 0o644, False) for i in range(2500)]
    bodies = list(p2.state_bodies(records))
    assert [len(json.loads(b)) for b in bodies] == [1024, 1024, 452]
    assert [r for b in bodies for r in p2.decode_state(b)] == records
    big = [Record("d/" * 1000 + f"{i}", H, 1, 1, 0o644, False) for i in range(1024)]
    bodies = list(p2.state_bodies(big))
    assert len(bodies) > 1 and all(len(b) <= p2.CONTROL_LIMIT for b in bodies)
    assert [r for b in bodies for r in p2.decode_state(b)] == big
    assert list(p2.state_bodies([])) == []


def test_a_record_too_large_for_any_batch_is_not_sent():
    with pytest.raises(ValueError, match="single record"):
        list(p2.state_bodies([Record("x" * p2.CONTROL_LIMIT, H, 1, 1, 0o644, False)]))


def test_request_batches():
    paths = [f"p{i}" for i in range(3000)]
    bodies = list(p2.request_bodies(paths))
    assert [len(json.loads(b)) for b in bodies] == [1024, 1024, 952]
    assert [p for b in bodies for p in p2.decode_request(b)] == paths


@pytest.mark.parametrize(
    "body,match",
    [
        (b"[]", "1..1024"),
        (b"{}", "1..1024"),
        (b"[1]", "malformed file record"),
        (b"[" + b",".join([b"{}"] * 1025) + b"]", "1..1024"),
        (b"[NaN]", "undecodable"),
        (b"\xff", "undecodable"),
        (b"[" * 50000, "undecodable"),
    ],
)
def test_bad_state_bodies(body, match):
    with pytest.raises(ProtocolError, match=match):
        p2.decode_state(body)


def test_bad_request_bodies():
    with pytest.raises(ProtocolError, match="not a string"):
        p2.decode_request(b'["a",1]')
    with pytest.raises(ProtocolError, match="1..1024"):
        p2.decode_request(b"[]")


def test_file_header_round_trip_and_refusals():
    h = p2.FileHeader("a/b", 0o755, 10, H, 1795599990123)
    assert p2.decode_file_header(p2.encode_file_header(h)) == h
    for bad in (
        b"[]",
        b'{"path":1}',
        b'{"path":"a","sha256":"x"}',
        b'{"path":"a","sha256":"' + H.encode() + b'","mode":1,"size":-1,"mtime":1}',
        b'{"path":"a","sha256":"' + H.encode() + b'","mode":1,"size":1.5,"mtime":1}',
        b'{"path":"a","sha256":"' + H.encode() + b'","mode":true,"size":1,"mtime":1}',
    ):
        with pytest.raises(ProtocolError, match="FILE"):
            p2.decode_file_header(bad)


def test_end_file_end_and_error_bodies():
    c = p2.EndCounts(3, 1, 99)
    assert p2.decode_end(p2.encode_end(c)) == c
    with pytest.raises(ProtocolError, match="END"):
        p2.decode_end(b'{"frames":1}')
    assert p2.decode_file_end(p2.encode_file_end()) is None
    assert p2.decode_file_end(p2.encode_file_end("gone\n")) == "gone?"
    with pytest.raises(ProtocolError, match="FILE_END"):
        p2.decode_file_end(b'{"ok":1}')
    assert p2.decode_error(p2.encode_error("x" * 5000)).endswith("...")
    assert len(p2.encode_error("\U0001f600" * 5000)) <= p2.LIMITS[p2.ERROR][1]
    assert len(p2.encode_file_end('"' * 5000)) <= p2.LIMITS[p2.FILE_END][1]


# --- fuzzing ----------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=10), st.booleans())
@example([struct.pack(">IB", 16, p2.STATE_END)], True)
@example([struct.pack(">IB", 0, p2.STATE_END) * 3], False)
def test_the_reader_takes_any_bytes(chunks, encrypted):
    r = p2.FrameReader(KEY_A if encrypted else None)
    try:
        for c in chunks:
            for f in r.feed(c):
                lo, hi = p2.LIMITS[f.type]
                assert lo <= len(f.body) <= hi
    except ProtocolError:
        return
    assert r.pending < p2.HEADER_SIZE + p2.CONTROL_LIMIT + p2.TAG


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from([p2.CHUNK, p2.STATE, p2.FILE_END]),
                       st.binary(max_size=3000)), min_size=1, max_size=12),
    st.lists(st.integers(1, 9000), min_size=1, max_size=40),
    st.booleans(),
)  # fmt: skip
@example([(p2.CHUNK, b"a" * 3000)] * 3, [100, 9000], True)
@example([(p2.CHUNK, b"b" * 3000), (p2.STATE, b"")], [2, 1, 4000, 3], False)
def test_frames_come_out_the_same_however_the_bytes_are_cut(frames, cuts, encrypted):
    """The reader opens whole frames in place and gathers split ones: the
    frames it gives are the same whatever the reads' boundaries."""
    key = KEY_A if encrypted else None
    w = p2.FrameWriter(key)
    bodies = [
        (t, b or b"x" if t == p2.CHUNK else b"[1]" if t == p2.STATE else b"") for t, b in frames
    ]
    stream = b"".join(w.frame(t, b) for t, b in bodies)
    r, out, i, k = p2.FrameReader(key), [], 0, 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        out += [(f.type, bytes(f.body)) for f in r.feed(stream[i : i + n])]
        i, k = i + n, k + 1
    assert out == bodies and r.pending == 0


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6), st.data())
def test_any_tampering_with_a_sealed_stream_is_refused(frames_data, data):
    w = p2.FrameWriter(KEY_A)
    stream = bytearray(b"".join(w.frame(p2.CHUNK, d) for d in frames_data))
    i = data.draw(st.integers(0, len(stream) - 1))
    stream[i] ^= data.draw(st.integers(1, 255))
    r = p2.FrameReader(KEY_A)
    try:
        got = r.feed(bytes(stream))
    except ProtocolError:
        return
    # a header byte changed to a longer length: the rest is still awaited
    assert [f.body for f in got] == frames_data[: len(got)] and len(got) < len(frames_data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@FUZZ
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_the_body_decoders_take_anything(body):
    for decoder in (
        p2.decode_state,
        p2.decode_request,
        p2.decode_file_header,
        p2.decode_end,
        p2.decode_file_end,
    ):
        with contextlib.suppress(ProtocolError):
            decoder(body)
    assert isinstance(p2.decode_error(body), str)


def test_hello_fields_refuses_what_is_not_an_object():
    for bad in (b"[]", b"nope", b"\xff"):
        with pytest.raises(ProtocolError, match="Hello"):
            p2.hello_fields(bad)
    assert p2.hello_fields(HELLO_I)["hostname"] == "router-a"
    assert hashlib.sha256(HELLO_I).digest() != p2.transcript(HELLO_I, HELLO_R)


@given(
    path=st.text(min_size=1, max_size=300),
    mode=st.integers(0, 0o777),
    size=st.integers(0, 2**63 - 1),
    mtime=st.integers(0, 2**63 - 1),
    digest=st.text("0123456789abcdef", min_size=64, max_size=64),
)
@example(path='a"b\\c\n\x7f\u00e9\u2028', mode=0o644, size=0, mtime=0, digest="0" * 64)
def test_the_file_header_is_what_the_json_encoder_writes(path, mode, size, mtime, digest):
    """encode_file_header writes its object out by hand (it runs once per
    file): byte for byte what the JSON encoder of every other body makes."""
    h = p2.FileHeader(path, mode, size, digest, mtime)
    obj = {"path": path, "mode": mode, "size": size, "sha256": digest, "mtime": mtime}
    try:
        want = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it either way
        with pytest.raises(UnicodeEncodeError):
            p2.encode_file_header(h)
        return
    assert p2.encode_file_header(h) == want
    assert p2.decode_file_header(want) == h
