"""Wire protocol v1 (owsync 1.2.0): framing and JSON messages.

Pure code, no I/O: bytes in, messages out, and back.  A frame is a 4-byte
big-endian length followed by that many payload bytes; the payload is the
JSON text of one message (encryption, when on, wraps the payload and lives
in :mod:`owsync.crypto`).
"""

from __future__ import annotations

import binascii
import json
import struct
from collections import namedtuple
from collections.abc import Iterator

from .state import Record

PROTOCOL_VERSION = 1
MAX_FRAME = 32 * 1024 * 1024  # 1.2.0 refuses frames over 32 MiB
# The largest frame at all, whatever max_file_size says: a file travels as hex
# in one frame, held whole by both sides (and cryptography cannot open a
# sealed payload of 2 GiB).  So v1 carries files of up to 512 MiB; v2 streams
# files of any size.
FRAME_CAP = 1024 * 1024 * 1024
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not protocol v1."""


def frame_limit(max_file_size: int) -> int:
    """Largest frame accepted: 32 MiB, or what a max_file_size raised past 16 MiB needs.

    Contents travel as hex, so a 32 MiB frame carries files of just under 16 MiB.
    """
    if max_file_size <= MAX_FRAME // 2:
        return MAX_FRAME
    return min(2 * max_file_size + 64 * 1024, FRAME_CAP)


def frame_header(length: int) -> bytes:
    return _LEN.pack(length)


FIRST_FRAME_LIMIT = 64 * 1024  # the first frame is a Hello: small
# Every message but FileContent: json.loads makes a SyncState about eight
# times its size in objects, so one of 32 MiB would cost 250-290 MiB.  8 MiB
# carries about 60,000 records (owsync 1.2.0's whole state, for 60,000 files).
MESSAGE_LIMIT = 8 * 1024 * 1024


class FrameDecoder:
    """Accumulates received bytes and yields complete frame payloads.

    The first frame (a Hello) may not exceed 64 KiB, so a peer that has not
    said who it is cannot make this node hold 32 MiB.  A large frame is
    gathered in a buffer of its own and handed out as that buffer, never
    copied once more; it grows only as its bytes arrive.
    """

    BIG = 1024 * 1024

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.full_limit = limit
        self.limit = min(limit, FIRST_FRAME_LIMIT)
        self._buf = bytearray()
        self._big: bytearray | None = None  # a large frame being gathered
        self._need = 0

    def feed(self, data: bytes) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        if self._big is not None:
            take = min(len(data), self._need - len(self._big))
            self._big += data[:take]
            if len(self._big) < self._need:
                return frames
            frames.append(self._big)
            self._big = None
            data = data[take:]
        self._buf += data
        while len(self._buf) >= 4:
            (n,) = _LEN.unpack_from(self._buf)
            if n > self.limit:
                raise ProtocolError(f"frame of {n} bytes exceeds the limit of {self.limit}")
            if len(self._buf) < 4 + n:
                if n >= self.BIG:
                    self._big = self._buf[4:]
                    self._need = n
                    self._buf = bytearray()
                break
            with memoryview(self._buf) as view:
                frames.append(bytes(view[4 : 4 + n]))
            del self._buf[: 4 + n]
            self.limit = self.full_limit
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf) + (len(self._big) if self._big is not None else 0)


# --- messages ---------------------------------------------------------------


class _Message(tuple):
    """Messages are tuples; equal only to a message of the same type."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__


class Hello(
    _Message, namedtuple("Hello", "hostname timestamp version", defaults=(PROTOCOL_VERSION,))
):
    __slots__ = ()


class SyncState(_Message, namedtuple("SyncState", "files")):
    __slots__ = ()


class RequestFiles(_Message, namedtuple("RequestFiles", "paths")):
    __slots__ = ()


class FileContent(_Message, namedtuple("FileContent", "path mode data")):
    __slots__ = ()


class EndOfSync(_Message, namedtuple("EndOfSync", "")):
    __slots__ = ()


Message = Hello | SyncState | RequestFiles | FileContent | EndOfSync

_SEP = (",", ":")


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=_SEP, ensure_ascii=False).encode("utf-8")


def record_to_wire(r: Record) -> dict:
    # 1.2.0 writes its 64-bit numbers as doubles; do the same for its parser.
    return {
        "path": r.path,
        "hash": r.hash,
        "mtime": float(r.mtime),
        "size": float(r.size),
        "mode": r.mode,
        "deleted": r.deleted,
    }


HEX_CHUNK = 1024 * 1024  # a large file's content is hexed this much at a time


def _file_content_parts(msg: FileContent, head: bytes) -> Iterator[bytes]:
    yield head
    with memoryview(msg.data) as view:
        for i in range(0, len(view), HEX_CHUNK):
            yield binascii.hexlify(view[i : i + HEX_CHUNK])
    yield b'"}'


def encode_parts(msg: Message) -> list[bytes] | Iterator[bytes]:
    """Encode a message as payload pieces (joined, they are the JSON text).

    FileContent is split so that the hex of a file is not copied again; a
    large one comes as an iterator that hexes a piece at a time, so that an
    encrypting sender never holds all of its hex at once.
    """
    if isinstance(msg, FileContent):
        head = _dumps({"type": "FileContent", "path": msg.path, "mode": msg.mode})
        head = head[:-1] + b',"data":"'
        if len(msg.data) > HEX_CHUNK:
            return _file_content_parts(msg, head)
        return [head, binascii.hexlify(msg.data), b'"}']
    if isinstance(msg, Hello):
        obj = {
            "type": "Hello",
            "hostname": msg.hostname,
            "timestamp": float(msg.timestamp),
            "version": msg.version,
        }
    elif isinstance(msg, SyncState):
        obj = {"type": "SyncState", "files": [record_to_wire(r) for r in msg.files]}
    elif isinstance(msg, RequestFiles):
        obj = {"type": "RequestFiles", "paths": list(msg.paths)}
    elif isinstance(msg, EndOfSync):
        obj = {"type": "EndOfSync"}
    else:  # pragma: no cover - programming error
        raise TypeError(f"not a message: {msg!r}")
    return [_dumps(obj)]


def encode(msg: Message) -> bytes:
    return b"".join(encode_parts(msg))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # Python's json would take NaN and Infinity


def _loads(payload: bytes):
    """JSON as the standard has it; ValueError for anything else, deep nesting included."""
    try:
        return json.loads(payload, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _field(obj: dict, name: str, types: type | tuple[type, ...], what: str):
    value = obj.get(name)
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(f"{what}: field {name!r} has the wrong type")
    if not isinstance(value, types):
        raise ProtocolError(f"{what}: field {name!r} missing or of the wrong type")
    return value


def _int(obj: dict, name: str, what: str) -> int:
    value = _field(obj, name, (int, float), what)
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ProtocolError(f"{what}: field {name!r} out of range")
    return int(value)


def _count(value: object) -> int:
    """A non-negative JSON number (1.2.0 writes doubles) as an int."""
    if type(value) is int:
        if value >= 0:
            return value
    elif type(value) is float and 0 <= value < 1e19:
        return int(value)
    raise ValueError("bad number")


def record_from_wire(obj: object) -> Record:
    """One file record of a SyncState; this runs once per file, so it stays lean."""
    try:
        path = obj["path"]  # type: ignore[index]
        deleted = obj["deleted"]  # type: ignore[index]
        if type(path) is not str or type(deleted) is not bool:
            raise ValueError("bad path or deleted flag")
        h = None
        if not deleted:
            h = obj["hash"]  # type: ignore[index]
            if type(h) is not str or len(h) != 64:
                raise ValueError("bad hash")
            h = h.lower()
        return Record(
            path,
            h,
            _count(obj["mtime"]),  # type: ignore[index]
            _count(obj["size"]),  # type: ignore[index]
            _count(obj["mode"]) & 0o777,  # type: ignore[index]
            deleted,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"SyncState: malformed file record ({exc})") from None


_DATA_KEY = b',"data":"'


def _decode_file_content(payload: bytes) -> FileContent | None:
    """FileContent as senders lay it out (data last), without a str of its hex.

    ``,"data":"`` cannot occur inside a JSON string (a quote there is
    escaped), so the first one is the key.  Any other layout returns None and
    decode() takes the general path.
    """
    if not payload.startswith(b'{"type":"FileContent"') or not payload.endswith(b'"}'):
        return None
    i = payload.find(_DATA_KEY)
    if i < 0:
        return None
    try:
        meta = _loads(payload[:i] + b"}")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or "path" not in meta or "mode" not in meta:
        return None
    with memoryview(payload) as view:
        try:
            raw = binascii.unhexlify(view[i + len(_DATA_KEY) : -2])
        except (binascii.Error, ValueError):
            return None  # not data-last after all, or not hex: the general path decides
    return FileContent(
        path=_field(meta, "path", str, "FileContent"),
        mode=_int(meta, "mode", "FileContent") & 0o777,
        data=raw,
    )


def decode(payload: bytes) -> Message:
    """Decode one frame payload (plain JSON text) into a message."""
    if len(payload) > 4096:
        fast = _decode_file_content(payload)
        if fast is not None:
            return fast
        if len(payload) > MESSAGE_LIMIT:
            raise ProtocolError(
                f"a message of {len(payload)} bytes that is not a file's content"
                f" exceeds the limit of {MESSAGE_LIMIT} (a state of over 60,000 files?)"
            )
    try:
        obj = _loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"undecodable message ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    kind = obj.get("type")
    if kind == "Hello":
        try:
            return Hello(
                hostname=str(obj.get("hostname", "")),
                timestamp=float(_field(obj, "timestamp", (int, float), "Hello")),
                version=int(_field(obj, "version", (int, float), "Hello")),
            )
        except OverflowError:  # a number no float holds
            raise ProtocolError("Hello: a number out of range") from None
    if kind == "SyncState":
        files = _field(obj, "files", list, "SyncState")
        return SyncState(tuple(record_from_wire(f) for f in files))
    if kind == "RequestFiles":
        paths = _field(obj, "paths", list, "RequestFiles")
        if not all(isinstance(p, str) for p in paths):
            raise ProtocolError("RequestFiles: a path is not a string")
        return RequestFiles(tuple(paths))
    if kind == "FileContent":
        data = _field(obj, "data", str, "FileContent")
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raise ProtocolError("FileContent: data is not hex") from None
        return FileContent(
            path=_field(obj, "path", str, "FileContent"),
            mode=_int(obj, "mode", "FileContent") & 0o777,
            data=raw,
        )
    if kind == "EndOfSync":
        return EndOfSync()
    raise ProtocolError(f"unknown message type {kind!r}")
