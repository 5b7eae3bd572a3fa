"""The live link between two owsync daemons.  Pure code, no I/O.

Two daemons that both advertise it keep one connection open between them
instead of running a session per change.  The link starts like a v2 session
(v1 Hellos that advertise v2, then AUTH both ways), with an ephemeral X25519
exchange mixed into the keys (forward secrecy); then each side sends its
whole state once, and after that only what changes: a record when a file
changes, the content when the peer asks for it.  docs/PROTOCOL.md has the
whole of it; this module is its codec and its state machine, h11 style:
bytes in, typed events out, frames made on request, every transition in
the one table :data:`TRANSITIONS`.

    keys = live.link_keys(psk, initiator, our_hello, peer_hello, our_secret)
    link = LiveLink(accept, max_file_size, keys)
    send(link.start())                                      # AUTH
    on bytes: link.receive_data(data), then
    while (event := link.next_event()) is not None: handle it (match event: ...)
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from . import crypto
from .protocol import ProtocolError
from .protocol2 import (
    ACK,
    AUTH,
    BYE,
    CHUNK,
    ERROR,
    FILE,
    FILE_END,
    INDEX_END,
    LIMITS,
    MAIN_GROUP,
    NAMES,
    PEERS,
    PING,
    REKEY,
    REQUEST,
    SKIP,
    STATE,
    VRRP,
    FileHeader,
    Frame,
    FrameReader,
    FrameTable,
    FrameWriter,
    Keys,
    PeerError,
    _clip,
    _dumps,
    _json_body,
    _uint,
    decode_error,
    decode_file_end,
    decode_file_header,
    decode_request,
    decode_state,
    encode_error,
    encode_file_header,
    hello_fields,
    peer_nonce,
    request_bodies,
    state_bodies,
    transcript,
    with_group,
)
from .session2 import FileInFlight, FileSender, FrameInbox
from .state import Record

LIVE_INFO = b"owsync live keys"
NODE_BYTES = 16
REKEY_BYTES = 1 << 30  # a direction moves to its next key after this much sealed...
REKEY_SECONDS = 3600.0  # ...or this long, whichever comes first
PING_SECONDS = 15.0  # a side silent this long sends PING
DEAD_SECONDS = 60.0  # a link silent this long is dead

# The live link's frame types: v2's AUTH, STATE (records), REQUEST, FILE,
# CHUNK, FILE_END and ERROR, and its own (protocol2 numbers them all).
LIVE_NAMES = {t: NAMES[t] for t in (AUTH, STATE, REQUEST, FILE, CHUNK, FILE_END, ERROR)} | {
    INDEX_END: "INDEX_END",
    SKIP: "SKIP",
    ACK: "ACK",
    PEERS: "PEERS",
    PING: "PING",
    REKEY: "REKEY",
    BYE: "BYE",
    VRRP: "VRRP",
}
LIVE_LIMITS = {t: LIMITS[t] for t in (AUTH, STATE, REQUEST, FILE, CHUNK, FILE_END, ERROR)} | {
    INDEX_END: (2, 256),
    SKIP: (2, 4096),
    ACK: (2, 256),
    PEERS: (2, 64 * 1024),
    PING: (0, 0),
    REKEY: (0, 0),
    BYE: (0, 4096),
    VRRP: (2, 8192),
}
LIVE_FRAMES = FrameTable(LIVE_NAMES, LIVE_LIMITS, 0, frozenset((ERROR, BYE)), REKEY)
MAX_PEERS = 64  # node ids in one PEERS
ROLES = ("MASTER", "BACKUP", "FAULT")  # a router's role in a VRRP instance
MAX_INSTANCES = 32  # VRRP instances in one VRRP frame
MAX_INSTANCE_NAME = 64


# --- negotiation and keys -----------------------------------------------------


def advertise(
    nonce: bytes,
    node: str,
    x25519_public: bytes | None,
    port: int | None = None,
    group: str = MAIN_GROUP,
) -> dict:
    """The Hello fields of a node that offers a live link: v2's, plus ``live``
    (``port``: where it listens, so that a peer it connects to can tell which
    of its configured peers it is), and the group, unless main."""
    live: dict = {"node": node}
    if port is not None:
        live["port"] = port
    if x25519_public is not None:
        live["x25519"] = x25519_public.hex()
    return {"v2": with_group({"nonce": nonce.hex(), "live": live}, group)}


class PeerLive(NamedTuple):
    node: str  # the peer daemon's id (hex)
    x25519: bytes | None  # its ephemeral public key (None in plain mode)
    port: int | None = None  # where it listens, if it says


def peer_live(hello_obj: dict) -> PeerLive | None:
    """What a Hello says of a live link; None when it offers none.

    An offer that is there but malformed is a ProtocolError: a node that
    means a live link and says it wrongly must not fall back silently."""
    adv = hello_obj.get("v2")
    live = adv.get("live") if isinstance(adv, dict) else None
    if live is None:
        return None
    node = live.get("node") if isinstance(live, dict) else None
    if not isinstance(node, str) or len(node) != 2 * NODE_BYTES or not _is_hex(node):
        raise ProtocolError("Hello: malformed live offer (node)")
    port = live.get("port")
    if port is not None and (type(port) is not int or not 0 < port < 65536):
        raise ProtocolError("Hello: malformed live offer (port)")
    pub = live.get("x25519")
    if pub is None:
        return PeerLive(node.lower(), None, port)
    if not isinstance(pub, str) or len(pub) != 64 or not _is_hex(pub):
        raise ProtocolError("Hello: malformed live offer (x25519)")
    return PeerLive(node.lower(), bytes.fromhex(pub), port)


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True


def x25519_public(secret: bytes) -> bytes:
    """The public key of a 32-byte X25519 secret."""
    return crypto.x25519_public(secret)


def x25519_shared(secret: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret; ProtocolError for a low-order peer key (all zero)."""
    try:
        shared = crypto.x25519_shared(secret, peer_public)
    except ValueError:
        raise ProtocolError("the peer's X25519 key is of low order") from None
    if not any(shared):
        raise ProtocolError("the peer's X25519 key is of low order")
    return shared


def derive_link_keys(
    psk: bytes, shared: bytes, nonce_i: bytes, nonce_r: bytes, t: bytes
) -> tuple[bytes, bytes]:
    """(k_i2r, k_r2i) = HKDF-SHA256(PSK || X25519 shared secret, salt nonce_i ||
    nonce_r, info "owsync live keys" || T)."""
    if len(psk) != 32 or len(shared) != 32:
        raise ValueError("the pre-shared key and the shared secret have 32 bytes each")
    okm = crypto.hkdf_sha256(psk + shared, nonce_i + nonce_r, LIVE_INFO + t, 64)
    return okm[:32], okm[32:]


def link_keys(
    psk: bytes | None, initiator: bool, our_hello: bytes, peer_hello: bytes, secret: bytes | None
) -> Keys:
    """This side's keys for a live link, from both Hellos as they travelled and
    this side's ephemeral X25519 secret (None, with ``psk`` None, in plain mode)."""
    ours_obj, theirs_obj = hello_fields(our_hello), hello_fields(peer_hello)
    ours, theirs = peer_nonce(ours_obj), peer_nonce(theirs_obj)
    our_live, peer = peer_live(ours_obj), peer_live(theirs_obj)
    if ours is None or theirs is None or our_live is None or peer is None:
        raise ProtocolError("live keys need both Hellos to offer a live link")
    if hmac.compare_digest(ours, theirs) or our_live.node == peer.node:
        raise ProtocolError("the peer's Hello carries this node's own nonce or id (a reflection?)")
    hello_i, hello_r = (our_hello, peer_hello) if initiator else (peer_hello, our_hello)
    t = transcript(hello_i, hello_r)
    if psk is None:
        return Keys(t, None, None, initiator)
    if secret is None or peer.x25519 is None:
        raise ProtocolError("an encrypted live link needs an X25519 key from both sides")
    shared = x25519_shared(secret, peer.x25519)
    nonce_i, nonce_r = (ours, theirs) if initiator else (theirs, ours)
    k_i2r, k_r2i = derive_link_keys(psk, shared, nonce_i, nonce_r, t)
    return Keys(t, *((k_i2r, k_r2i) if initiator else (k_r2i, k_i2r)), initiator)


def keeps_link(initiator_node: str, other_initiator_node: str) -> bool:
    """Of two links between the same pair of nodes, the one to keep: the one
    whose initiator has the lower id.  Both ends decide alike."""
    return initiator_node < other_initiator_node


# --- bodies -------------------------------------------------------------------


def encode_index_end(ident: int, reply: bool) -> bytes:
    return _dumps({"id": ident, "reply": reply})


def decode_index_end(body: bytes) -> tuple[int, bool]:
    obj = _json_body(body, "INDEX_END")
    if not isinstance(obj, dict) or type(obj.get("reply")) is not bool:
        raise ProtocolError("INDEX_END: not an object with 'id' and 'reply'")
    return _uint(obj, "id", "INDEX_END"), obj["reply"]


def encode_ack(ident: int) -> bytes:
    return _dumps({"id": ident})


def decode_ack(body: bytes) -> int:
    obj = _json_body(body, "ACK")
    if not isinstance(obj, dict):
        raise ProtocolError("ACK: not a JSON object")
    return _uint(obj, "id", "ACK")


def encode_skip(path: str, reason: str) -> bytes:
    return _dumps({"path": path, "reason": _clip(reason, 500)})


def decode_skip(body: bytes) -> tuple[str, str]:
    obj = _json_body(body, "SKIP")
    if not isinstance(obj, dict) or type(obj.get("path")) is not str:
        raise ProtocolError("SKIP: not an object with a 'path'")
    reason = obj.get("reason")
    return obj["path"], _clip(reason, 200) if isinstance(reason, str) else "no reason given"


def encode_peers(nodes: Iterable[str]) -> bytes:
    return _dumps({"nodes": sorted(nodes)})


def decode_peers(body: bytes) -> frozenset[str]:
    obj = _json_body(body, "PEERS")
    nodes = obj.get("nodes") if isinstance(obj, dict) else None
    if not isinstance(nodes, list) or len(nodes) > MAX_PEERS:
        raise ProtocolError(f"PEERS: not an object with a list of at most {MAX_PEERS} 'nodes'")
    if not all(isinstance(n, str) and len(n) == 2 * NODE_BYTES and _is_hex(n) for n in nodes):
        raise ProtocolError("PEERS: a node id is not 32 hex characters")
    return frozenset(n.lower() for n in nodes)


class Role(NamedTuple):
    """A router's role in one VRRP instance, and since when (unix seconds)."""

    role: str
    since: int


def valid_instance(name: object) -> bool:
    """A VRRP instance's name as keepalived's notify scripts pass it: printable,
    1 to MAX_INSTANCE_NAME characters."""
    return isinstance(name, str) and 0 < len(name) <= MAX_INSTANCE_NAME and name.isprintable()


def encode_vrrp(roles: dict[str, Role]) -> bytes:
    if len(roles) > MAX_INSTANCES:
        raise ValueError(f"more than {MAX_INSTANCES} VRRP instances")
    return _dumps(
        {"instances": {n: {"role": r.role, "since": r.since} for n, r in sorted(roles.items())}}
    )


def decode_vrrp(body: bytes) -> dict[str, Role]:
    obj = _json_body(body, "VRRP")
    inst = obj.get("instances") if isinstance(obj, dict) else None
    if not isinstance(inst, dict) or len(inst) > MAX_INSTANCES:
        raise ProtocolError(f"VRRP: not an object with at most {MAX_INSTANCES} 'instances'")
    out = {}
    for name, value in inst.items():
        if not valid_instance(name):
            raise ProtocolError("VRRP: an instance name is empty, too long or not printable")
        role = value.get("role") if isinstance(value, dict) else None
        if role not in ROLES:
            raise ProtocolError(f"VRRP: the role of {_clip(name, 64)!r} is not one of {ROLES}")
        out[name] = Role(role, _uint(value, "since", "VRRP"))
    return out


# --- events -------------------------------------------------------------------


class Authenticated(NamedTuple):
    """The peer proved it holds this link's keys: send the whole state."""


class Records(NamedTuple):
    """Records of the peer (its whole state at first, then what changed)."""

    records: tuple[Record, ...]


class IndexEnd(NamedTuple):
    """The peer's whole state has been sent (a reconcile); ``reply``: it asks
    for ours in return.  ACK ``ident`` once what it asked for has arrived."""

    ident: int
    reply: bool


class Requested(NamedTuple):
    """The peer wants the content of these paths: FILE each, or SKIP it."""

    paths: tuple[str, ...]


class FileStart(NamedTuple):
    record: Record


class FileChunk(NamedTuple):
    path: str
    data: bytes | memoryview


class FileDone(NamedTuple):
    """Size and SHA-256 verified: put it in place if it still wins."""

    record: Record


class FileRefused(NamedTuple):
    """The file will not arrive whole (the sender gave it up, or it is over
    max_file_size here): discard what was written of it."""

    path: str
    reason: str


class Skipped(NamedTuple):
    """The peer will not send a requested path."""

    path: str
    reason: str


class Acked(NamedTuple):
    """The peer applied our reconcile ``ident``."""

    ident: int


class PeersChanged(NamedTuple):
    """The daemons the peer is linked to now."""

    nodes: frozenset[str]


class RolesChanged(NamedTuple):
    """The peer's role in each VRRP instance it knows of (the whole table)."""

    roles: dict[str, Role]


class Bye(NamedTuple):
    """The peer closed the link in an orderly way (stopping, a duplicate link)."""

    reason: str


Event = (
    Authenticated
    | Records
    | IndexEnd
    | Requested
    | FileStart
    | FileChunk
    | FileDone
    | FileRefused
    | Skipped
    | Acked
    | PeersChanged
    | RolesChanged
    | Bye
)

# --- the state machine ----------------------------------------------------------

# Where each direction stands; a file on its way adds IN_FILE to OPEN.
AUTHING, OPEN, IN_FILE, CLOSED = "AUTHING", "OPEN", "IN_FILE", "CLOSED"

_CONTROL = (STATE, INDEX_END, REQUEST, SKIP, ACK, PEERS, VRRP, PING, REKEY)
# Every transition of a direction: (stage, frame type) -> (handler, next stage).
# Whatever is not in the table is a protocol error; a handler checks only the
# frame's content.  ERROR and BYE close the direction from any stage.
TRANSITIONS: dict[tuple[str, int], tuple[str, str]] = {
    (AUTHING, AUTH): ("_on_auth", OPEN),
    **{(OPEN, t): ("_on_control", OPEN) for t in _CONTROL},
    (OPEN, FILE): ("_on_file", IN_FILE),
    **{(IN_FILE, t): ("_on_control", IN_FILE) for t in _CONTROL},
    (IN_FILE, CHUNK): ("_on_chunk", IN_FILE),
    (IN_FILE, FILE_END): ("_on_file_end", OPEN),
    **{(s, ERROR): ("_on_error", CLOSED) for s in (AUTHING, OPEN, IN_FILE)},
    **{(s, BYE): ("_on_bye", CLOSED) for s in (AUTHING, OPEN, IN_FILE)},
}


class LiveLink(FrameInbox[Event], FileSender):
    """One live link's protocol state, both directions.

    What we send is made by the methods below, in the order the caller sends
    it; what we receive comes out of :meth:`next_event`.  The machine checks
    the order of the peer's frames (the table), that every file it sends was
    requested and arrives whole and as its header says, and that we do the
    same; it decides nothing about the files themselves (the caller plans
    against its records, which other links change too).
    """

    def __init__(self, accept: Callable[[str], bool], max_file_size: int, keys: Keys) -> None:
        self.accept = accept
        self.max_file_size = max_file_size
        self._t = keys.transcript
        self._w = FrameWriter(keys.send, LIVE_FRAMES)
        self._r = FrameReader(keys.recv, LIVE_FRAMES)
        self._frames: deque[Frame] = deque()
        self._failed: str | None = None
        self.ours = AUTHING
        self.peers = AUTHING
        self._pending: set[str] = set()  # paths we requested, not yet answered
        self._to_serve: set[str] = set()  # paths the peer requested, not yet answered
        self._out: FileInFlight | None = None
        self._in: FileInFlight | None = None
        self._in_refused = False  # the file on its way is over max_file_size: dropped
        self._sealed = 0  # bytes sealed under the current send key
        self.frames_out = 0
        self.frames_in = 0

    # --- what we send ---------------------------------------------------------

    def start(self) -> bytes:
        if self.ours != AUTHING:
            raise RuntimeError("start() twice")
        self.ours = OPEN
        return self._frame(AUTH, self._t)

    def _open_for(self, what: str) -> None:
        if self.ours not in (OPEN, IN_FILE) or self.peers == AUTHING:
            raise RuntimeError(f"{what} before both AUTHs, or after the link closed")

    def state(self, records: Iterable[Record]) -> Iterator[bytes]:
        """STATE frames for these records (those this node syncs): the whole
        state after AUTH or for a reconcile, a change at a time after that."""
        self._open_for("state()")
        bodies = state_bodies([r for r in records if self.accept(r.path)])
        return (self._frame(STATE, body) for body in bodies)

    def index_end(self, ident: int, reply: bool) -> bytes:
        """The whole state has been sent; ``reply`` asks the peer for its own."""
        self._open_for("index_end()")
        return self._frame(INDEX_END, encode_index_end(ident, reply))

    def request(self, paths: Iterable[str]) -> Iterator[bytes]:
        """REQUEST frames for the paths not already asked for (pending from
        now on; the frames are made as they are taken, in sending order)."""
        self._open_for("request()")
        fresh = [p for p in dict.fromkeys(paths) if p not in self._pending]
        self._pending.update(fresh)
        return (self._frame(REQUEST, body) for body in request_bodies(fresh))

    def is_pending(self, path: str) -> bool:
        return path in self._pending

    @property
    def pending(self) -> frozenset[str]:
        """Paths we requested that the peer has not answered yet."""
        return frozenset(self._pending)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def file_start(self, record: Record, mode: int) -> bytes:
        """FILE: the current version of a path the peer requested."""
        self._open_for("file_start()")
        if self._out is not None:
            raise RuntimeError("file_start() inside a file")
        if record.path not in self._to_serve:
            raise RuntimeError(f"file_start() for {record.path!r}: not requested")
        self._to_serve.discard(record.path)
        self._out = FileInFlight(record)
        header = FileHeader(record.path, mode & 0o777, record.size, record.hash, record.mtime)
        return self._frame(FILE, encode_file_header(header))

    def skip(self, path: str, reason: str) -> bytes:
        """SKIP: a requested path this node will not send."""
        self._open_for("skip()")
        if path not in self._to_serve:
            raise RuntimeError(f"skip() for {path!r}: not requested")
        self._to_serve.discard(path)
        return self._frame(SKIP, encode_skip(path, reason))

    def ack(self, ident: int) -> bytes:
        self._open_for("ack()")
        return self._frame(ACK, encode_ack(ident))

    def peers_frame(self, nodes: Iterable[str]) -> bytes:
        self._open_for("peers_frame()")
        return self._frame(PEERS, encode_peers(nodes))

    def vrrp_frame(self, roles: dict[str, Role]) -> bytes:
        """VRRP: this router's role in each VRRP instance (the whole table)."""
        self._open_for("vrrp_frame()")
        return self._frame(VRRP, encode_vrrp(roles))

    def ping(self) -> bytes:
        self._open_for("ping()")
        return self._frame(PING)

    def needs_rekey(self, seconds_on_key: float) -> bool:
        return self._sealed >= REKEY_BYTES or seconds_on_key >= REKEY_SECONDS

    def rekey(self) -> bytes:
        """REKEY: the last frame under this direction's key; the next ones use
        the key derived from it (the old one is forgotten)."""
        self._open_for("rekey()")
        frame = self._frame(REKEY)
        self._sealed = 0
        return frame

    def bye(self, reason: str) -> bytes:
        """BYE: an orderly close (stopping, a duplicate link); nothing may follow."""
        if self.ours == CLOSED:
            raise RuntimeError("bye() after the link closed")
        self.ours = CLOSED
        return self._frame(BYE, encode_error(reason))

    def error(self, text: str) -> bytes:
        self.ours = CLOSED
        return self._frame(ERROR, encode_error(text))

    def _frame(self, kind: int, body: bytes = b"") -> bytes:
        frame = self._w.frame(kind, body)
        self._sealed += len(frame)
        self.frames_out += 1
        return frame

    def is_serving(self, path: str) -> bool:
        """Whether the peer requested ``path`` and it has not been answered yet."""
        return path in self._to_serve

    @property
    def serving_left(self) -> int:
        """How many of the peer's requests are not answered yet."""
        return len(self._to_serve)

    # --- what we receive --------------------------------------------------------

    def next_event(self) -> Event | None:
        self._check()
        if self.ours == AUTHING:
            raise RuntimeError("next_event() before start()")
        return self._next_handled(self._step)

    def _step(self, frame: Frame) -> Event | None:
        """One frame through its row of TRANSITIONS (none: unexpected there)."""
        step = TRANSITIONS.get((self.peers, frame.type))
        if step is None:
            raise ProtocolError(self._unexpected(frame.type))
        handler, then = step
        event = getattr(self, handler)(frame)
        self.peers = then
        self.frames_in += 1
        return event

    def connection_closed(self) -> None:
        """The peer hung up: a ProtocolError unless it said BYE first."""
        if self.peers != CLOSED:
            self._failed = f"connection closed without BYE (after {self._r.counter} frames)"
            raise ProtocolError(self._failed)

    def _unexpected(self, kind: int) -> str:
        where = {AUTHING: "before its AUTH", IN_FILE: "inside a file", OPEN: "between files"}
        return f"unexpected {LIVE_NAMES.get(kind, kind)} from the peer {where.get(self.peers, '')}"

    # handlers: one per row of TRANSITIONS

    def _on_auth(self, f: Frame) -> Event:
        if not hmac.compare_digest(bytes(f.body), self._t):
            raise ProtocolError(
                "the peer's AUTH does not match this link's Hellos"
                " (a modified Hello, or a spliced connection)"
            )
        return Authenticated()

    def _on_control(self, f: Frame) -> Event | None:
        kind, body = f.type, bytes(f.body)
        if kind == STATE:
            return Records(tuple(decode_state(body)))
        if kind == INDEX_END:
            return IndexEnd(*decode_index_end(body))
        if kind == REQUEST:
            paths = tuple(decode_request(body))
            self._to_serve.update(paths)
            return Requested(paths)
        if kind == SKIP:
            path, reason = decode_skip(body)
            if path not in self._pending:
                raise ProtocolError(f"SKIP: {path!r} was not requested")
            self._pending.discard(path)
            return Skipped(path, reason)
        if kind == ACK:
            return Acked(decode_ack(body))
        if kind == PEERS:
            return PeersChanged(decode_peers(body))
        if kind == VRRP:
            return RolesChanged(decode_vrrp(body))
        return None  # PING; REKEY (the reader moved to the next key)

    def _on_file(self, f: Frame) -> Event:
        h = decode_file_header(bytes(f.body))
        if h.path not in self._pending:
            raise ProtocolError(f"FILE: {h.path!r} was not requested, or was sent already")
        self._pending.discard(h.path)
        rec = Record(h.path, h.sha256, h.mtime, h.size, h.mode, False)
        self._in_refused = h.size > self.max_file_size
        if self._in_refused:
            self._in = FileInFlight(rec)
            return FileRefused(h.path, f"too large ({h.size} bytes, max_file_size"
                                       f" {self.max_file_size})")  # fmt: skip
        self._in = FileInFlight(rec)
        return FileStart(rec)

    def _on_chunk(self, f: Frame) -> Event | None:
        cur = self._in
        assert cur is not None
        if cur.done + len(f.body) > cur.record.size:
            raise ProtocolError(f"CHUNK past the size of {cur.record.path!r} ({cur.record.size})")
        if self._in_refused:
            cur.done += len(f.body)
            return None
        cur.add(f.body)
        return FileChunk(cur.record.path, f.body)

    def _on_file_end(self, f: Frame) -> Event | None:
        cur, self._in = self._in, None
        assert cur is not None
        error = decode_file_end(bytes(f.body))
        if self._in_refused:
            return None  # refused at its FILE already
        if error is not None:
            return FileRefused(cur.record.path, f"the peer gave it up: {error}")
        cur.check_received()
        return FileDone(cur.record)

    def _on_error(self, f: Frame) -> Event:
        reason = decode_error(bytes(f.body))
        raise PeerError(f"the peer gave the link up: {reason}", reason)

    def _on_bye(self, f: Frame) -> Event:
        return Bye(decode_error(bytes(f.body)))
