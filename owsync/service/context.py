"""What a session is given (:class:`Context`) and what it did (:class:`SessionResult`).

Apart from :mod:`.engine` so that the layers under it (:mod:`.exchange`,
:mod:`.replica`) can name them without importing the engine.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..core.filters import Filter
from ..core.peer import Peer
from ..core.protocol2 import MAIN_GROUP
from ..core.settings import BY_ATTR
from ..io import database
from ..io.versions import Limits, VersionStore

DEFAULT_MAX_FILE_SIZE: int = BY_ATTR["max_file_size"].default


class Context:
    """Everything a session needs; built from a Config (see owsync.config)."""

    def __init__(
        self,
        root: str,
        db_path: str,
        filter: Filter,
        cipher,
        hostname: str | None = None,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        clock: Callable[[], float] = time.time,
        idle_timeout: float = 60.0,  # silence tolerated once a session is under way
        hello_timeout: float = 10.0,  # silence tolerated before the peer's Hello
        session_timeout: float = 1800.0,  # a whole session, however lively
        lock_timeout: float = 30.0,
        should_stop: Callable[[], bool] = lambda: False,
        owner: threading.Lock | None = None,  # in-process owner of the directory
        versions_dir: str | None = None,  # the version store; None: none kept
        versions: Limits | None = None,
        min_protocol: int = 1,  # 2: refuse peers that speak v1 only (owsync 1.2.0)
        advertise_v2: bool | None = None,  # None: unless OWSYNC_MAX_PROTOCOL=1 (tests, bench)
        live=None,  # the daemon's Mesh: offer a live link to peers that offer one
        peers: Sequence[Peer] = (),  # the configured ones: what an incoming peer is called
        port: int = 0,  # where we listen: the port of a peer configured without one
        group: str = MAIN_GROUP,  # the sync group this directory is (named in our Hellos)
    ) -> None:
        self.root = root
        self.db_path = db_path
        self.filter = filter
        self.cipher = cipher
        self.hostname = hostname or socket.gethostname()
        self.max_file_size = max_file_size
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.hello_timeout = hello_timeout
        self.session_timeout = session_timeout
        self.lock_timeout = lock_timeout
        self.should_stop = should_stop
        self.owner = owner
        self.versions_dir = versions_dir if versions is None or versions.keep > 0 else None
        self.versions = versions or Limits()
        self.own_prefix = self._inside(self.versions_dir) if self.versions_dir else None
        self._own: frozenset[str] | None = None  # own_relpaths(), once resolved
        if min_protocol not in (1, 2):
            raise ValueError("min_protocol is 1 or 2")
        self.min_protocol = min_protocol
        if advertise_v2 is None:
            advertise_v2 = os.environ.get("OWSYNC_MAX_PROTOCOL", "2") != "1"
        self.advertise_v2 = advertise_v2
        self.live = live if advertise_v2 else None
        self.peers = tuple(peers)
        self.port = port
        self.group = group

    def _inside(self, path: str) -> str | None:
        """``path`` relative to the root with a trailing slash, when inside it."""
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(self.root))
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return "" if rel == "." else None
        return rel.replace(os.sep, "/") + "/"

    def open_store(self, tidy: bool = True) -> VersionStore | None:
        if not self.versions_dir:
            return None
        return VersionStore.open(self.versions_dir, self.versions, tidy)

    def own_relpaths(self) -> frozenset[str]:
        """owsync's own files that lie inside the sync directory, relative to it
        (resolved once: a daemon's context lives as long as its configuration)."""
        if self._own is None:
            self._own = self._resolve_own()
        return self._own

    def _resolve_own(self) -> frozenset[str]:
        root = os.path.realpath(self.root)
        out = set()
        for f in database.own_files(self.db_path):
            full = os.path.join(
                os.path.realpath(os.path.dirname(os.path.abspath(f))), os.path.basename(f)
            )
            rel = os.path.relpath(full, root)
            if not rel.startswith(".." + os.sep) and rel != "..":
                out.add(rel.replace(os.sep, "/"))
        return frozenset(out)


class SessionResult(NamedTuple):
    """What one session (or a live link's step) did, for logs, the status and
    the summary line; built once, when it is over, by whoever ran it.  (A
    NamedTuple, not a frozen dataclass: dataclasses would load inspect, ast
    and dis into every daemon, 2.6 MiB.)"""

    peer: str
    ok: bool = False
    error: str = ""
    received: int = 0
    sent: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    changed: tuple[str, ...] = ()  # paths written or removed here
    removed: tuple[str, ...] = ()  # those of them removed (deletions from the peer)
    conflicts: tuple[str, ...] = ()  # writes made here that lost to the peer's
    # failed only because a directory was busy (ours, or the peer's: it hung up
    # between its Hello and its SyncState): worth a quick retry, not a backoff
    busy: bool = False
    local_changes: bool = False  # its scan found local writes not yet recorded
    protocol: int | None = None  # 1 or 2 once the Hellos are exchanged
    live: bool = False  # a live link (protocol 2), not a session
    node: str | None = None  # the peer daemon's id, when it offered a live link
    duplicate: bool = False  # the link gave way to another between the same nodes
    was_up: bool = False  # the link was authenticated and registered
    group: str = MAIN_GROUP  # the sync group it was for
    # the group could not be synced with this peer, and that is no failure:
    # "absent" (the peer has no such group), "v1" (it speaks protocol 1 only)
    unavailable: str = ""

    def as_dict(self) -> dict:
        return {
            "peer": self.peer,
            "ok": self.ok,
            "error": self.error,
            "received": self.received,
            "sent": self.sent,
            "deleted": self.deleted,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "conflicts": list(self.conflicts),
            "protocol": self.protocol,
            "live": self.live,
            "group": self.group,
        }

    def summary(self) -> str:
        text = (
            f"received {self.received}, sent {self.sent}, deleted {self.deleted},"
            f" bytes {self.bytes}, seconds {self.seconds:.2f}"
        )
        return text if self.protocol is None else f"{text}, protocol {self.protocol}"
