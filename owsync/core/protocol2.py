"""Wire protocol v2 between owsync nodes that both speak it.  Pure code, no I/O.

A session starts in protocol v1 (see :mod:`owsync.protocol`): each side sends
a v1 Hello (``version`` stays 1) that also advertises v2 in a field of its
own, ``"v2": {"nonce": <32 random bytes, hex>}``.  owsync 1.2.0 ignores that
field and carries on with v1.  When both Hellos advertise v2, both sides
switch to the typed frames below right after the Hellos.

The transcript ``T`` is SHA-256 over the two Hello payloads exactly as they
travelled (plain JSON text, before v1's encryption), each prefixed by its
4-byte big-endian length, the initiator's (the side that connected) first.
In encrypted mode::

    k_i2r || k_r2i = HKDF-SHA256(IKM=PSK, salt=nonce_i || nonce_r,
                                 info=b"owsync v2 keys" || T, length=64)

A frame is ``length(4, big-endian) || type(1) || body``, ``length`` counting
the body.  Encrypted, the body is AES-256-GCM of the plaintext under the
direction's key, nonce ``0(4) || counter(8, big-endian)`` (the frame's index
in its direction, from 0), associated data the 5-byte header.  Plain, the
body is the plaintext.  The per-type limits are known from the header alone.
See docs/PROTOCOL.md for the whole of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections import namedtuple
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from . import protocol
from .crypto import frame_cipher, hkdf_sha256, invalid_tag
from .protocol import ProtocolError, record_from_wire
from .state import Record

VERSION = 2
NONCE_BYTES = 32  # each side's fresh randomness in its Hello
TAG = 16  # AES-GCM tag
CHUNK_SIZE = 64 * 1024  # the largest CHUNK body
MAX_BATCH = 1024  # records in one STATE, paths in one REQUEST
CONTROL_LIMIT = 1024 * 1024  # the largest STATE or REQUEST body
COUNTER_LIMIT = 2**63  # frames one direction may seal
MAX_RECORDS = 1_000_000  # default cap on a peer's state (about 100 MiB held to plan it)
KEY_INFO = b"owsync v2 keys"

# Frame types (the header's fifth byte).
AUTH, STATE, STATE_END, REQUEST, REQUEST_END, FILE, CHUNK, FILE_END, END, ERROR, DONE = range(1, 12)
# The live link's own types (owsync.core.live): one numbering for both, but a
# v2 session knows none of them (NAMES below is v2's table).
INDEX_END, SKIP, ACK, PEERS, PING, REKEY, BYE, VRRP = range(12, 20)
NAMES = {
    AUTH: "AUTH",
    STATE: "STATE",
    STATE_END: "STATE_END",
    REQUEST: "REQUEST",
    REQUEST_END: "REQUEST_END",
    FILE: "FILE",
    CHUNK: "CHUNK",
    FILE_END: "FILE_END",
    END: "END",
    ERROR: "ERROR",
    DONE: "DONE",
}
# The plaintext body's (min, max) length per type; sealed adds TAG.
LIMITS = {
    AUTH: (32, 32),
    STATE: (2, CONTROL_LIMIT),
    STATE_END: (0, 0),
    REQUEST: (2, CONTROL_LIMIT),
    REQUEST_END: (0, 0),
    FILE: (2, 64 * 1024),
    CHUNK: (1, CHUNK_SIZE),
    FILE_END: (0, 4096),
    END: (2, 1024),
    ERROR: (0, 4096),
    DONE: (0, 0),
}
_HEADER = struct.Struct(">IB")
HEADER_SIZE = _HEADER.size
_LEN = struct.Struct(">I")


class PeerError(ProtocolError):
    """The peer ended the session with an ERROR frame (``reason``: its text)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


# --- sync groups ------------------------------------------------------------------

MAIN_GROUP = "main"  # the group a Hello without ``group`` names (1.2.0's, every older one)
MAX_GROUP_NAME = 64
NO_SUCH_GROUP = "no such group"  # how a responder's ERROR starts when it has not the group


def valid_group(name: object) -> bool:
    """A group name as a Hello may carry it: a UCI identifier, 1 to 64 characters."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_GROUP_NAME
        and name.isascii()
        and all(c.isalnum() or c == "_" for c in name)
    )


def no_such_group(name: str) -> str:
    """The text of the ERROR that answers a Hello naming a group this node has not."""
    return f"{NO_SUCH_GROUP} {name} on this node"


def is_no_such_group(reason: str) -> bool:
    return reason.startswith(NO_SUCH_GROUP)


# --- negotiation inside v1 ----------------------------------------------------


def new_nonce() -> bytes:
    """Fresh randomness for one Hello (the only non-pure helper here)."""
    return os.urandom(NONCE_BYTES)


def advertise(nonce: bytes, group: str = MAIN_GROUP) -> dict:
    """The fields a v1 Hello carries to advertise v2, and the sync group it
    is for (a member only for a group other than main: main's Hello stays as
    it always was)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a v2 nonce has {NONCE_BYTES} bytes")
    return {"v2": with_group({"nonce": nonce.hex()}, group)}


def with_group(adv: dict, group: str) -> dict:
    """``adv`` (a v2 advertisement) naming ``group``, unless it is main."""
    if group == MAIN_GROUP:
        return adv
    if not valid_group(group):
        raise ValueError(f"not a group name: {group!r}")
    return {**adv, "group": group}


def peer_group(hello_obj: dict) -> str:
    """The sync group a Hello names: ``v2.group``, main when there is none
    (a v1 Hello, 1.2.0's, an older owsync's, main's).  A ``group`` that is
    there but malformed is a ProtocolError."""
    adv = hello_obj.get("v2")
    if not isinstance(adv, dict) or "group" not in adv:
        return MAIN_GROUP
    group = adv["group"]
    if not valid_group(group):
        raise ProtocolError("Hello: malformed group")
    return group


def hello_payload(hello: protocol.Hello, fields: dict) -> bytes:
    """The v1 Hello's JSON text as :func:`owsync.protocol.encode` makes it, plus ``fields``.

    These are the exact bytes the transcript covers: keep them.
    """
    base = protocol.encode(hello)
    if not fields:
        return base
    extra = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base[:-1] + b"," + extra[1:]


def hello_fields(payload: bytes) -> dict:
    """The JSON object of a Hello payload (already accepted by the v1 decoder)."""
    try:
        obj = _loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("Hello: undecodable") from None
    if not isinstance(obj, dict):
        raise ProtocolError("Hello: not a JSON object")
    return obj


def peer_nonce(hello_obj: dict) -> bytes | None:
    """The v2 nonce a Hello advertises; None when it advertises no v2.

    A ``v2`` field that is there but malformed is a ProtocolError, not a v1
    peer: a node that means v2 and says it wrongly must not fall back silently.
    """
    adv = hello_obj.get("v2")
    if adv is None:
        return None
    nonce = adv.get("nonce") if isinstance(adv, dict) else None
    if not isinstance(nonce, str) or len(nonce) != 2 * NONCE_BYTES:
        raise ProtocolError("Hello: malformed v2 advertisement")
    try:
        return bytes.fromhex(nonce)
    except ValueError:
        raise ProtocolError("Hello: malformed v2 advertisement") from None


def negotiated(our_hello_fields: dict, peer_hello_obj: dict) -> bool:
    """Whether both Hellos advertise v2 (then both sides switch after the Hellos)."""
    return "v2" in our_hello_fields and peer_nonce(peer_hello_obj) is not None


def split_hello_frame(
    buf: bytes, limit: int = protocol.FIRST_FRAME_LIMIT
) -> tuple[bytes | None, bytes]:
    """The first v1 frame's payload (the peer's Hello, still sealed) and the bytes after it.

    A peer that speaks v2 sends its AUTH right behind its Hello, so one read
    may hold both: the bytes after the Hello belong to the v2 reader, and must
    not go through v1's frame decoder.  (None, buf) until the frame is whole.
    """
    if len(buf) < 4:
        return None, buf
    n = int.from_bytes(buf[:4], "big")
    if n > limit:
        raise ProtocolError(f"frame of {n} bytes exceeds the limit of {limit}")
    if len(buf) < 4 + n:
        return None, buf
    return bytes(buf[4 : 4 + n]), bytes(buf[4 + n :])


def min_protocol_error(min_protocol: int, v2: bool, who: str = "peer") -> str | None:
    """The refusal text when policy ``min_protocol`` rejects the outcome, else None."""
    if min_protocol not in (1, 2):
        raise ValueError("min_protocol is 1 or 2")
    if min_protocol == 2 and not v2:
        return f"{who} speaks protocol 1 only (owsync 1.2.0?); min_protocol 2 refuses it"
    return None


# --- transcript and key schedule -----------------------------------------------


Keys = namedtuple("Keys", "transcript send recv initiator")


def transcript(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    """T: SHA-256 of both Hello payloads, each prefixed by its 4-byte length."""
    h = hashlib.sha256()
    for part in (initiator_hello, responder_hello):
        h.update(_LEN.pack(len(part)))
        h.update(part)
    return h.digest()


def derive_keys(psk: bytes, nonce_i: bytes, nonce_r: bytes, t: bytes) -> tuple[bytes, bytes]:
    """(k_i2r, k_r2i): HKDF-SHA256 of the PSK, salted with both nonces, bound to T."""
    if len(psk) != 32:
        raise ValueError("the pre-shared key has 32 bytes")
    okm = hkdf_sha256(psk, nonce_i + nonce_r, KEY_INFO + t, 64)
    return okm[:32], okm[32:]


def session_keys(psk: bytes | None, initiator: bool, our_hello: bytes, peer_hello: bytes) -> Keys:
    """This side's keys from the two Hello payloads as they were on the wire.

    ``psk`` None is plain mode: T still, no keys.  ProtocolError when either
    Hello lacks a v2 nonce, or when both carry the same one (a reflection).
    """
    ours = peer_nonce(hello_fields(our_hello))
    theirs = peer_nonce(hello_fields(peer_hello))
    if ours is None or theirs is None:
        raise ProtocolError("v2 keys need both Hellos to advertise v2")
    if hmac.compare_digest(ours, theirs):
        raise ProtocolError("the peer's Hello carries this node's own v2 nonce (a reflection?)")
    hello_i, hello_r = (our_hello, peer_hello) if initiator else (peer_hello, our_hello)
    t = transcript(hello_i, hello_r)
    if psk is None:
        return Keys(t, None, None, initiator)
    nonce_i, nonce_r = (ours, theirs) if initiator else (theirs, ours)
    k_i2r, k_r2i = derive_keys(psk, nonce_i, nonce_r, t)
    return Keys(t, *((k_i2r, k_r2i) if initiator else (k_r2i, k_i2r)), initiator)


_NONCE = struct.Struct(">4xQ")  # 0(4) || counter(8, big-endian)


def frame_nonce(counter: int) -> bytes:
    return _NONCE.pack(counter)


def _aead(key: bytes | None, encrypt: bool):
    """The frame cipher of one direction (a context of its own: see
    crypto.frame_cipher); None in plain mode."""
    if key is None:
        return None
    return frame_cipher(key, encrypt)


# --- framing ----------------------------------------------------------------


class FrameTable(NamedTuple):
    """What a framing knows of its frame types: names, body limits, which type
    ends a stream (only DONE or ERROR may follow it), which close it, which
    moves the sealing key on (0: none)."""

    names: dict[int, str]
    limits: dict[int, tuple[int, int]]
    end: int
    closing: frozenset[int]
    rekey: int


V2_FRAMES = FrameTable(NAMES, LIMITS, END, frozenset((DONE, ERROR)), 0)
REKEY_INFO = b"owsync live rekey"


def next_key(key: bytes | None) -> bytes | None:
    """The key that follows a REKEY frame: HKDF-SHA256 of the current one
    (no salt, info ``owsync live rekey``).  The old key is dropped, so frames
    sealed before cannot be opened with what a later leak reveals."""
    if key is None:
        return None
    return hkdf_sha256(key, None, REKEY_INFO, 32)


Frame = namedtuple("Frame", "type body")
_new_frame = tuple.__new__  # Frame(t, b) without the Python-level __new__ of a namedtuple


class FrameWriter:
    """Seals one direction's frames: counter nonces from 0, never reused."""

    def __init__(self, key: bytes | None, table: FrameTable | None = None) -> None:
        self._key = key
        self._aead = _aead(key, True)
        self.table = table or V2_FRAMES
        self.counter = 0  # frames written (under the current key)
        self.ended = False  # END written: only DONE or ERROR may follow
        self.closed = False  # DONE or ERROR written: nothing may follow

    def frame(self, ftype: int, body: bytes = b"") -> bytes:
        table = self.table
        names = table.names
        lo, hi = table.limits[ftype]
        if not lo <= len(body) <= hi:
            raise ValueError(f"{names[ftype]} body of {len(body)} bytes outside {lo}..{hi}")
        if self.closed or (self.ended and ftype not in (DONE, ERROR)):
            raise RuntimeError(f"{names[ftype]} after the end of this side's stream")
        if ftype == DONE and not self.ended:
            raise RuntimeError("DONE before END")
        if self.counter >= COUNTER_LIMIT:
            raise ProtocolError("frame counter exhausted; the session cannot go on")
        aead = self._aead
        if aead is None:
            frame = _HEADER.pack(len(body), ftype) + body
        else:
            header = _HEADER.pack(len(body) + TAG, ftype)
            frame = aead.seal_frame(_NONCE.pack(self.counter), header, body)
        self.counter += 1
        if ftype in table.closing:
            self.ended = self.closed = True
        elif ftype == table.end:
            self.ended = True
        elif ftype == table.rekey:
            self._key = next_key(self._key)
            self._aead = _aead(self._key, True)
            self.counter = 0
        return frame


class FrameReader:
    """Checks and opens one direction's frames as their bytes arrive.

    Limits are checked from the 5-byte header, before the body is waited
    for.  In encrypted mode each frame must open under the nonce of the next
    expected counter: a replayed, reordered, duplicated, dropped or foreign
    frame fails authentication.  Only DONE or ERROR may follow END, and
    nothing DONE or ERROR.  After a ProtocolError the reader refuses everything.
    """

    def __init__(self, key: bytes | None, table: FrameTable | None = None) -> None:
        self._key = key
        self.table = table or V2_FRAMES
        self._aead = _aead(key, False)
        self._over = TAG if self._aead is not None else 0
        if self._aead is not None:
            self._invalid_tag = invalid_tag()
        self._buf = bytearray()
        self.counter = 0  # frames accepted
        self.ended = False  # END accepted: only DONE or ERROR may follow
        self.closed = False  # DONE or ERROR accepted: nothing may follow
        self._failed: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a whole frame."""
        return len(self._buf)

    def _fail(self, why: str) -> ProtocolError:
        self._failed = why
        self._buf = bytearray()
        return ProtocolError(why)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``.

        Frames that lie whole within ``data`` are opened from it in place (a
        plain CHUNK's body is a memoryview of it, not a copy); only the piece
        of a frame split across reads is gathered in a buffer.
        """
        if self._failed is not None:
            raise ProtocolError(self._failed)
        frames: list[Frame] = []
        view = memoryview(data)
        pos = 0
        buf = self._buf
        if buf:  # complete the frame begun by earlier reads
            if len(buf) < HEADER_SIZE:
                pos = min(HEADER_SIZE - len(buf), len(view))
                buf += view[:pos]
                if len(buf) < HEADER_SIZE:
                    return frames
            n, ftype, name = self._header(buf, 0)
            take = min(HEADER_SIZE + n - len(buf), len(view) - pos)
            buf += view[pos : pos + take]
            pos += take
            if len(buf) < HEADER_SIZE + n:
                return frames
            self._buf = bytearray()
            frames.append(self._next(bytes(buf), 0, n, ftype, name))
        end = len(view)
        while end - pos >= HEADER_SIZE:
            n, ftype, name = self._header(data, pos)
            if end - pos < HEADER_SIZE + n:
                break
            frames.append(self._next(data, pos, n, ftype, name))
            pos += HEADER_SIZE + n
        if pos < end:
            self._buf = bytearray(view[pos:])
        return frames

    def _header(self, src, pos: int) -> tuple[int, int, str]:
        """The checked length and type of the frame at ``pos``."""
        n, ftype = _HEADER.unpack_from(src, pos)
        table = self.table
        name = table.names.get(ftype)
        if name is None:
            raise self._fail(f"frame {self.counter}: unknown frame type {ftype}")
        lo, hi = table.limits[ftype]
        if not lo + self._over <= n <= hi + self._over:
            raise self._fail(
                f"frame {self.counter}: {name} of {n} bytes outside its limits"
                f" ({lo + self._over}..{hi + self._over})"
            )
        if self.closed or (self.ended and ftype not in (DONE, ERROR)):
            raise self._fail(f"frame {self.counter}: {name} after the peer's end of stream")
        return n, ftype, name

    def _next(self, src: bytes, pos: int, n: int, ftype: int, name: str) -> Frame:
        frame = _new_frame(Frame, (ftype, self._open(src, pos, n, ftype, name)))
        self.counter += 1
        table = self.table
        if ftype in table.closing:
            self.ended = self.closed = True
        elif ftype == table.end:
            self.ended = True
        elif ftype == table.rekey:  # what follows is sealed under the next key
            self._key = next_key(self._key)
            self._aead = _aead(self._key, False)
            self.counter = 0
        return frame

    def _open(self, src: bytes, pos: int, n: int, ftype: int, name: str):
        if self._aead is None:
            start = pos + HEADER_SIZE
            body = memoryview(src)[start : start + n]
            return body if ftype == CHUNK else bytes(body)
        try:
            return self._aead.open_frame(_NONCE.pack(self.counter), src, pos, HEADER_SIZE, n)
        except self._invalid_tag:
            raise self._fail(
                f"frame {self.counter} ({name}) failed authentication: wrong key, or a"
                " replayed, reordered, dropped or spliced frame"
            ) from None


# --- bodies -----------------------------------------------------------------


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# one decoder for every body: json.loads(..., parse_constant=...) builds a new
# one per call, and a FILE header is decoded once per file
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(payload: bytes | str):
    try:
        if isinstance(payload, (bytes, bytearray)):  # as json.loads takes them
            payload = payload.decode(json.detect_encoding(payload), "surrogatepass")
        elif payload.startswith("\ufeff"):
            raise ValueError("unexpected UTF-8 BOM")
        return _DECODER.decode(payload)
    except RecursionError:
        raise ValueError("nested too deeply") from None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one for every body
_string = json.encoder.encode_basestring  # a str as JSON, as _ENCODER writes it


def _dumps(obj) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


def _json_body(body: bytes, what: str):
    try:
        return _loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what}: undecodable body ({exc.__class__.__name__})") from None


def _batches(items: Iterable, convert, what: str) -> Iterator[bytes]:
    """JSON lists of at most MAX_BATCH items and CONTROL_LIMIT bytes each.

    Lazy: a batch's objects exist only while it is encoded.
    """
    batch: list = []
    for item in items:
        batch.append(convert(item))
        if len(batch) == MAX_BATCH:
            yield from _fit(batch, what)
            batch = []
    if batch:
        yield from _fit(batch, what)


def _fit(items: list, what: str) -> Iterator[bytes]:
    body = _dumps(items)
    if len(body) <= CONTROL_LIMIT:
        yield body
    elif len(items) == 1:
        raise ValueError(f"a single {what} of {len(body)} bytes exceeds {CONTROL_LIMIT}")
    else:
        half = len(items) // 2
        yield from _fit(items[:half], what)
        yield from _fit(items[half:], what)


def record_to_v2(r: Record) -> dict:
    """A record on the v2 wire: v1's fields, numbers as integers."""
    return {
        "path": r.path,
        "hash": r.hash,
        "mtime": r.mtime,
        "size": r.size,
        "mode": r.mode,
        "deleted": r.deleted,
    }


def state_bodies(records: Iterable[Record]) -> Iterator[bytes]:
    return _batches(records, record_to_v2, "record")


def _json_batch(body: bytes, what: str, items_are: str) -> list:
    """A STATE or REQUEST body: a JSON list of 1..MAX_BATCH items."""
    items = _json_body(body, what)
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ProtocolError(f"{what}: not a list of 1..{MAX_BATCH} {items_are}")
    return items


def decode_state(body: bytes) -> list[Record]:
    items = _json_batch(body, "STATE", "records")
    try:
        return [record_from_wire(item) for item in items]
    except ProtocolError as exc:
        raise ProtocolError(str(exc).replace("SyncState", "STATE")) from None


def request_bodies(paths: Iterable[str]) -> Iterator[bytes]:
    return _batches(paths, str, "path")


def decode_request(body: bytes) -> list[str]:
    items = _json_batch(body, "REQUEST", "paths")
    if not all(type(p) is str for p in items):
        raise ProtocolError("REQUEST: a path is not a string")
    return items


FileHeader = namedtuple("FileHeader", "path mode size sha256 mtime")


def encode_file_header(h: FileHeader) -> bytes:
    """What _dumps makes of the header's object, byte for byte, written out:
    this runs once per file."""
    return (
        f'{{"path":{_string(h.path)},"mode":{int(h.mode)},"size":{int(h.size)},'
        f'"sha256":{_string(h.sha256)},"mtime":{int(h.mtime)}}}'
    ).encode()


def _uint(obj: dict, name: str, what: str) -> int:
    value = obj.get(name)
    if type(value) is not int or not 0 <= value < 2**63:
        raise ProtocolError(f"{what}: field {name!r} missing or not a non-negative integer")
    return value


def decode_file_header(body: bytes) -> FileHeader:
    """A FILE frame's header; this runs once per file, so the usual case is lean."""
    obj = _json_body(body, "FILE")
    if not isinstance(obj, dict):
        raise ProtocolError("FILE: not a JSON object")
    path, digest = obj.get("path"), obj.get("sha256")
    mode, size, mtime = obj.get("mode"), obj.get("size"), obj.get("mtime")
    if type(path) is not str:
        raise ProtocolError("FILE: field 'path' missing or not a string")
    if type(digest) is not str or len(digest) != 64:
        raise ProtocolError("FILE: field 'sha256' missing or not 64 hex characters")
    if not (type(mode) is type(size) is type(mtime) is int
            and 0 <= mode < 2**63 and 0 <= size < 2**63 and 0 <= mtime < 2**63):  # fmt: skip
        for name in ("mode", "size", "mtime"):
            _uint(obj, name, "FILE")  # says which
    assert type(mode) is int  # checked above (_uint raised otherwise)
    return FileHeader(path, mode & 0o777, size, digest.lower(), mtime)


def encode_file_end(error: str | None = None) -> bytes:
    """Empty: the file is whole.  Else the sender gave it up (changed while read...)."""
    return b"" if error is None else _dumps({"error": _clip(error, 500)})


def decode_file_end(body: bytes) -> str | None:
    if not body:
        return None
    obj = _json_body(body, "FILE_END")
    if not isinstance(obj, dict) or type(obj.get("error")) is not str:
        raise ProtocolError("FILE_END: neither empty nor an error")
    return _clip(obj["error"], 200) or "no reason given"


EndCounts = namedtuple("EndCounts", "frames files bytes")


def encode_end(c: EndCounts) -> bytes:
    return _dumps({"frames": c.frames, "files": c.files, "bytes": c.bytes})


def decode_end(body: bytes) -> EndCounts:
    obj = _json_body(body, "END")
    if not isinstance(obj, dict):
        raise ProtocolError("END: not a JSON object")
    return EndCounts(*(_uint(obj, k, "END") for k in EndCounts._fields))


def encode_error(text: str) -> bytes:
    return _clip(text, 500).encode("utf-8")


def decode_error(body: bytes) -> str:
    return _clip(body.decode("utf-8", "replace"), 200) or "no reason given"


def _clip(text: str, n: int) -> str:
    """Printable, at most ``n`` characters: a peer's text goes into our logs."""
    text = "".join(c if c.isprintable() else "?" for c in text[: n + 1])
    return text if len(text) <= n else text[: n - 3] + "..."
