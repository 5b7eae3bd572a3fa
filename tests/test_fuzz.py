"""Fuzzing the pure core with hypothesis: the frame decoder, the message decoder
and the session machine take anything a hostile peer can send, and answer with
a message, an event, or the project's own ProtocolError / SessionAbort, and
nothing else, in bounded time.

OWSYNC_FUZZ_EXAMPLES raises the number of examples per test (the long setting);
CI runs the default.
"""

from __future__ import annotations

import json
import os
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from owsync.core.protocol import (
    EndOfSync,
    FileContent,
    FrameDecoder,
    Hello,
    ProtocolError,
    RequestFiles,
    SyncState,
    decode,
)
from owsync.core.session import Session, SessionAbort
from owsync.core.state import Record

EXAMPLES = int(os.environ.get("OWSYNC_FUZZ_EXAMPLES", "1000"))
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SLOW)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
TYPES = ["Hello", "SyncState", "RequestFiles", "FileContent", "EndOfSync", "Other", 7, None]
FIELDS = ["hostname", "timestamp", "version", "files", "paths", "path", "mode", "data", "hash",
          "mtime", "size", "deleted"]  # fmt: skip
messages = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5),
)


def decoded_or_refused(payload: bytes):
    try:
        return decode(payload)
    except ProtocolError:
        return None


@FUZZ
@given(st.binary(max_size=300))
@example(b"[" * 100_000)  # nesting deep enough to exhaust the JSON parser's recursion
@example(b'{"type":"Hello","hostname":"x","timestamp":1e999,"version":1}')
@example(b'{"type":"Hello","hostname":"x","timestamp":1,"version":NaN}')
@example(b'{"type":"Hello","hostname":"x","timestamp":Infinity,"version":Infinity}')
def test_decode_takes_any_bytes(payload):
    decoded_or_refused(payload)


@FUZZ
@given(messages)
def test_decode_takes_any_json_message(obj):
    msg = decoded_or_refused(json.dumps(obj).encode())
    if isinstance(msg, SyncState):
        assert all(isinstance(r, Record) and isinstance(r.path, str) for r in msg.files)
    if isinstance(msg, FileContent):
        assert isinstance(msg.data, bytes) and 0 <= msg.mode <= 0o777


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=12), st.integers(min_value=8, max_value=4096))
def test_frame_decoder_takes_any_chunks(chunks, limit):
    dec = FrameDecoder(limit)
    try:
        for chunk in chunks:
            for frame in dec.feed(chunk):
                assert len(frame) <= limit
    except ProtocolError:
        return
    assert dec.pending <= 4 + limit  # never more than one frame in hand


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8), st.integers(min_value=1, max_value=7))
def test_frames_survive_any_chunking(payloads, step):
    stream = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    dec, got = FrameDecoder(), []
    for i in range(0, len(stream), step):
        got += dec.feed(stream[i : i + step])
    assert [bytes(f) for f in got] == payloads and dec.pending == 0


NOW = 1_795_600_000.0
HASH = "ab" * 32
wire = st.one_of(
    st.builds(Hello, st.text(max_size=8), st.floats(NOW - 100, NOW + 100), st.sampled_from([1, 2])),
    st.builds(lambda fs: SyncState(tuple(fs)), st.lists(st.builds(
        Record, st.sampled_from(["a", "b", "../x", "c/d"]), st.sampled_from([HASH, None]),
        st.integers(0, 2**40), st.integers(0, 100), st.integers(0, 0o7777), st.booleans()),
        max_size=4)),
    st.builds(lambda ps: RequestFiles(tuple(ps)), st.lists(st.sampled_from(["a", "b", "zz"]),
                                                           max_size=3)),
    st.builds(FileContent, st.sampled_from(["a", "b", "c/d", "zz"]), st.integers(0, 0o777),
              st.binary(max_size=40)),
    st.just(EndOfSync()),
)  # fmt: skip


@FUZZ
@given(st.lists(wire, max_size=10), st.booleans())
def test_the_session_machine_takes_any_sequence(msgs, scan_in_between):
    s = Session(accept=lambda p: ".." not in p, max_file_size=32)
    s.hello("me", NOW)
    for msg in msgs:
        try:
            event = s.receive(msg, NOW)
        except (ProtocolError, SessionAbort):
            return
        name = type(event).__name__
        if name == "PeerHello" and scan_in_between:
            s.state_message({})
        elif name == "PeerState":
            s.request(event.plan)
        elif name == "FileArrived":  # only what was requested and matches its hash
            assert event.record.path in s._remote
            assert len(event.data) <= 32
