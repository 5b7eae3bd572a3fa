"""The daemon's status model: the one place that says what the daemon, its
peers and its recent sessions look like.

The control socket (``owsync status``), the ubus objects and through them
LuCI only present :func:`snapshot`.  Times are epoch seconds; a field that
is unknown is None (ubus drops it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque

from .. import __version__
from ..core.peer import Peer
from .versions_view import recent_conflicts
from .vrrp import roles_view

HISTORY = 50  # sessions kept for "recent activity"
MAX_PATHS = 20  # paths kept per session and per kind (arrived, removed)


def host_of(label: str) -> str:
    """The address of an incoming peer without its ephemeral port."""
    if label.startswith("["):
        return label[1 : label.find("]")]
    host, sep, port = label.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else label


def _packed(address: str) -> bytes | None:
    """An IP address as its family and bytes (None: not one).  inet_pton, not
    ipaddress: that module is 1 MiB of every daemon's RSS for this one check."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return bytes((family,)) + socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
    return None


def _same_host(a: str, b: str) -> bool:
    pa, pb = _packed(a), _packed(b)
    if pa is None or pb is None:
        return a.lower() == b.lower()
    return pa == pb


def match_peer(label: str, peers, default_port: int, port: int | None = None) -> Peer | None:
    """The configured peer an incoming connection from ``label`` (its address
    and ephemeral port) comes from: the one at that address listening on
    ``port``, where the peer says it (our daemons' live offer), or the only
    one at that address (owsync 1.2.0, ``owsync connect``: they do not say).
    None when there is none, or several."""
    host = host_of(label)
    mine = [p for p in peers if _same_host(p.host, host)]
    if port is not None:
        mine = [p for p in mine if (p.port or default_port) == port]
    return mine[0] if len(mine) == 1 else None


def incoming_name(label: str, peers, default_port: int, port: int | None = None) -> str:
    """What logs, the history and kept versions call an incoming peer: the
    configured peer it is (as written), else its address without the port."""
    peer = match_peer(label, peers, default_port, port)
    return str(peer) if peer is not None else host_of(label)


class SessionHistory:
    """The last sessions that changed something here or there, or failed.

    A failure that repeats the previous entry of the same peer and direction
    (a peer down, retried every minute) updates that entry instead of
    pushing the others out.
    """

    def __init__(self, size: int = HISTORY) -> None:
        self._entries: deque[dict] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, result, direction: str, reloaded: list[str], now: float | None = None) -> None:
        if result.ok and not (result.received or result.sent or result.deleted):
            return  # nothing happened: a no-op sync is not activity
        if not result.ok and (getattr(result, "busy", False) or result.error == "stopped"):
            return  # contention (retried) or this daemon's own stop: no failure
        peer = result.peer  # an incoming one named already (incoming_name)
        removed = set(result.removed)
        group = getattr(result, "group", "main")
        entry = {
            "time": time.time() if now is None else now,
            "direction": direction,
            "group": group,  # the sync group it was for
            "peer": peer,
            "ok": result.ok,
            "error": None if result.ok else result.error,
            "received": result.received,
            "sent": result.sent,
            "deleted": result.deleted,
            "arrived": [p for p in result.changed if p not in removed][:MAX_PATHS],
            "removed": list(result.removed[:MAX_PATHS]),
            "reloaded": list(reloaded),
            "conflicts": list(result.conflicts[:MAX_PATHS]),  # writes made here that lost
            "protocol": getattr(result, "protocol", None),  # 1, 2; None: no Hellos exchanged
        }
        with self._lock:
            last = next((e for e in self._entries if e["peer"] == peer
                         and e["direction"] == direction and e["group"] == group),
                        None)  # fmt: skip
            if (
                last is not None
                and not result.ok
                and not last["ok"]
                and last["error"] == entry["error"]
                and not (result.received or result.deleted)
            ):
                last["time"] = entry["time"]
                last["repeats"] = last.get("repeats", 1) + 1
                self._entries.remove(last)
                self._entries.appendleft(last)
                return
            self._entries.appendleft(entry)

    def entries(self) -> list[dict]:
        with self._lock:
            return [dict(e) for e in self._entries]


def link_view(link) -> dict:
    """A live link's figures (``messages``: frames, control and content alike)."""
    st = link.stats
    return {
        "node": link.peer_node,
        "connected_since": st.since,
        "last_update_sent": st.last_sent,
        "last_update_received": st.last_received,
        "messages_sent": st.frames_sent,
        "messages_received": st.frames_received,
        "updates_sent": st.updates_sent,
        "updates_received": st.updates_received,
        "files_sent": st.files_sent,
        "files_received": st.files_received,
        "deleted": st.deleted,
        "reconciles": st.reconciles,
        "last_reconcile": st.last_reconcile,
    }


def peer_link(worker, mesh):
    """The live link that serves a configured peer, whoever connected."""
    return mesh.link_for(worker.node) if worker.node is not None else None


def peer_view(worker, mesh=None) -> dict:
    """One peer's row, from its worker's scheduling state and last session,
    and its live link if one is up."""
    r = worker.last
    retry_at = worker.retry_at
    link = peer_link(worker, mesh) if mesh is not None else None
    return {
        "address": str(worker.peer),
        "source": worker.peer.source,
        "state": "connected" if link is not None else worker.state,
        "live": link_view(link) if link is not None else None,
        # its VRRP roles, as it tells them over the live link
        "vrrp": roles_view(link.peer_roles) if link is not None and link.peer_roles else None,
        "last_success": time.time() if link else worker.last_success,
        # a live link's "attempt" is its last full reconcile (what "Sync now" asks for)
        "last_attempt": (link.stats.last_reconcile or link.stats.since)
        if link
        else worker.last_attempt,
        "last_result": "ok" if link else None if r is None else ("ok" if r.ok else r.error),
        # a live link's since it came up; else the last session's
        "received": link.stats.files_received if link else r.received if r else 0,
        "sent": link.stats.files_sent if link else r.sent if r else 0,
        "deleted": link.stats.deleted if link else r.deleted if r else 0,
        "bytes": r.bytes if r and not link else 0,
        # the protocol of the last session (1: owsync 1.2.0's); None before the Hellos
        "protocol": 2 if link is not None else (getattr(r, "protocol", None) if r else None),
        "consecutive_failures": worker.failures,
        "next_retry": (
            time.time() + max(0.0, retry_at - time.monotonic())
            if worker.state == "backing off" and retry_at is not None
            else None
        ),
    }


def key_view(cipher) -> dict:
    """Whether a key is in use and its fingerprint: never the key."""
    fp = getattr(cipher, "fingerprint", None)
    return {"set": True, "fingerprint": fp} if fp else {"set": False}


def snapshot(d) -> dict:
    """The status of daemon ``d``, as every surface presents it."""
    files, tombstones = d.record_counts()
    mesh = getattr(d, "mesh", None)  # the live links (a daemon of this release has them)
    cfg = d.cfg
    watcher = getattr(d, "watcher", None)
    roles = getattr(d, "vrrp_roles", None)
    groups = getattr(d, "groups", None)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": int(time.time() - d.started),
        "started": d.started,
        "sync_dir": cfg.sync_dir,
        "encryption": d.cipher.encrypted,
        "key": key_view(d.cipher),
        "listen": f"{cfg.bind_host} port {cfg.port}",
        "listen_error": d.serving.error if d.serving else None,  # None while listening
        "min_protocol": cfg.min_protocol,  # 2: peers of protocol 1 only are refused
        "change_detection": watcher.mode if watcher else None,
        "files": files,
        "tombstones": tombstones,
        "node": mesh.node_id if mesh is not None else None,
        # this router's role per VRRP instance, as keepalived reported it
        "vrrp": roles.view() if roles is not None else {},
        "peers": [peer_view(w, mesh) for w in list(d.workers.values())],
        # every sync group, main first (the fields above describe main)
        "groups": [group_view(g) for g in list(groups.values())] if groups else [],
        "history": d.history.entries(),
        "conflicts": _conflicts(cfg),
        **legacy_fields(d),
    }


def group_view(g) -> dict:
    """One sync group's row: its directory, state, counts and each peer's
    state in it (synced, absent: the peer has no such group, v1: the peer
    speaks protocol 1 only, which syncs main only, pending)."""
    group = g.group
    files, tombstones = g.record_counts()
    view = {
        "name": g.name,
        "dir": group.sync_dir,
        "enabled": bool(group.enabled),
        "state": g.state,
        "files": files,
        "tombstones": tombstones,
        "last_change": g.last_change,
        "reload": list(group.reload),
        "restart": list(group.restart),
        "peers": g.peer_states(),
    }
    if g.state == "waiting":
        view["reason"] = g.reason
    return view


def legacy_fields(d) -> dict:
    """What owsync 1.2.0's package published as ``ubus call owsync status``
    (its rpcd plugin), so that scripts and pages written for it keep working:
    ``status``, ``enabled``, ``database`` and ``config`` (``pid`` and
    ``uptime`` are the model's own).  Only a running daemon answers, so
    ``status`` is always RUNNING here; 1.2.0's STOPPED is the absent object."""
    cfg = d.cfg
    try:
        db_mtime = int(os.stat(cfg.database).st_mtime)
    except OSError:
        db_mtime = 0  # as 1.2.0: no database yet
    return {
        "status": "RUNNING",
        "enabled": bool(cfg.enabled),
        "database": {"path": cfg.database, "last_modified": db_mtime},
        "config": {
            "encryption_enabled": bool(d.cipher.encrypted),
            "peer_count": len(cfg.peers),
            "sync_dir": cfg.sync_dir,
        },
    }


def _conflicts(cfg) -> list[dict]:
    """Recent writes made here that lost to a peer's (kept in the version store)."""
    try:
        return recent_conflicts(cfg)
    except OSError:
        return []
