"""The daemon: the node's listener, control API and groups.

The daemon runs every sync group of its configuration (main first): each
is a :class:`~owsync.service.syncgroup.SyncGroup`, which owns its directory
and database (every session, incoming or outgoing, and every rescan takes
the group's in-process lock and flock), its watcher, live links and peer
workers.  The node's own stays here: one listener (an incoming connection's
Hello names its group), the control socket, the front ends, the VRRP roles,
the history, the configuration and the cipher.

Threads: the listener (one thread per incoming session), per group a
watcher and one worker per peer, the poll timer, and the control server.
The main thread only waits for signals: SIGTERM/SIGINT stop, SIGHUP reloads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from .. import __version__
from ..core.crypto import make_cipher
from ..core.peer import Peer
from ..io import net
from ..io.heap import release_free_heap
from . import log as logsetup
from . import status
from .config import MAIN, Config, ConfigError
from .context import Context, SessionResult
from .control import ControlServer, handle
from .engine import run_session
from .status import SessionHistory
from .syncgroup import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    BUSY_RETRIES,
    INCOMING_LOCK_TIMEOUT,
    OUTGOING_LOCK_TIMEOUT,
    RESTORE_LOCK_TIMEOUT,
    PeerWorker,
    SyncGroup,
    backoff_delay,
)
from .vrrp import KEEPALIVED_STATUS, STOP, VrrpRoles, check_instance, keepalived_roles, parse_role

__all__ = [
    "BACKOFF_BASE", "BACKOFF_CAP", "BUSY_RETRIES", "INCOMING_LOCK_TIMEOUT",
    "OUTGOING_LOCK_TIMEOUT", "RESTORE_LOCK_TIMEOUT", "Daemon", "FrontEnd", "PeerWorker",
    "SyncGroup", "backoff_delay",
]  # fmt: skip

log = logging.getLogger("owsync")

HEAP_SETTLE = 5.0  # seconds after start when the start-up's freed heap goes back (io/heap.py)
# A stop waits this long at most for the peer workers (one may be in a connect
# of net.CONNECT_TIMEOUT to an unreachable peer), the incoming sessions and a
# live step to end cleanly; the init script's term_timeout allows for it.
STOP_WAIT = 10.0


class FrontEnd(Protocol):
    """Something started with the daemon (the ubus bridge): a thread that ends
    on its own once ``daemon.stopping`` is set."""

    def start(self) -> None: ...


class Daemon:
    def __init__(self, cfg: Config, reload: Callable[[], Config] | None = None) -> None:
        if not cfg.peers:
            raise ConfigError(
                "no peer configured: the daemon requires at least one --auto-sync peer"
                " (or peer= in the config file, or owsync.main.peer in UCI)"
            )
        self.reload_config = reload
        self.stopping = threading.Event()
        self.started = time.time()
        self.history = SessionHistory()
        self.vrrp_roles = VrrpRoles()  # this router's VRRP roles, as keepalived reports them
        # hooks called after every session of main; each returns the UCI packages it reloaded
        self.on_session: list[Callable[[SessionResult, str], list[str]]] = []
        # started by start(), after the peer workers: the ubus bridge, which the
        # layer above (cli) attaches, as it attaches its session hook
        self.front_ends: list[FrontEnd] = []
        self._reload_requested = threading.Event()
        self.running = False
        self.serving: net.Serving | None = None
        self.node_id = os.urandom(16).hex()  # this daemon's id in its live offers
        self.groups: dict[str, SyncGroup] = {}  # main first, then the others
        # the protocol main's sessions speak with each peer (1: owsync 1.2.0's):
        # the other groups sync only with peers of protocol 2
        self._protocols: dict[str, int] = {}
        self._told: set[tuple[str, str, str]] = set()  # what the log said once
        self._apply(cfg)

    # --- the main group, as the daemon had it before groups ------------------

    @property
    def main(self) -> SyncGroup:
        return self.groups[MAIN]

    @property
    def workers(self) -> dict[str, PeerWorker]:
        return self.main.workers

    @property
    def mesh(self):
        return self.main.mesh

    @property
    def local(self):
        return self.main.local

    @property
    def ctx_in(self) -> Context:
        return self.main.ctx_in

    @property
    def ctx_out(self) -> Context:
        return self.main.ctx_out

    def _context(self, lock_timeout: float, live: bool = False) -> Context:
        return self.main._context(lock_timeout, live)

    @property
    def watcher(self):
        return self.main.watcher

    @property
    def owner(self) -> threading.Lock:
        return self.main.owner

    # --- configuration ----------------------------------------------------

    clock = staticmethod(time.time)

    def _apply(self, cfg: Config) -> None:
        if not os.path.isdir(cfg.sync_dir):
            raise ConfigError(f"sync directory {cfg.sync_dir} does not exist")
        self.cipher = make_cipher(cfg.key_bytes())
        if not cfg.include:
            log.warning("no include pattern: nothing will be synced (set include=*)")
        self.cfg = cfg
        wanted = {g.name: g for g in cfg.all_groups()}
        for name in list(self.groups):
            if name not in wanted:
                self.groups.pop(name).halt("the group was removed")
                log.info("group %s removed: not synced any more", name)
        for name, group in wanted.items():
            g = self.groups.get(name)
            if g is None:
                g = self.groups[name] = SyncGroup(self, cfg, group)
                if self.running:
                    log.info("group %s added", name)
            else:
                g.apply(cfg, group)
            if self.running:
                g.check()

    def speaks_v2(self) -> bool:
        """Whether this node speaks protocol 2 (not with OWSYNC_MAX_PROTOCOL=1)."""
        return self.main.ctx_out.advertise_v2

    def protocol_of(self, peer: str) -> int | None:
        return self._protocols.get(peer)

    def learned(self, peer: str, protocol: int) -> None:
        """Main's session with ``peer`` spoke ``protocol``: the other groups
        sync with it (2), or not (1: said once in the log)."""
        if peer not in self.main.workers:
            return  # not a configured peer (an incoming session from elsewhere)
        old = self._protocols.get(peer)
        self._protocols[peer] = protocol
        others = [g for g in self.groups.values() if not g.is_main and g.running]
        if protocol == old:
            if protocol == 2:  # main met it again (it may have restarted, reloaded):
                for g in others:  # a group it lacked is asked again now, not at the poll
                    w = g.workers.get(peer)
                    if w is not None and w.unavailable == "absent":
                        w.request(poll=True)
            return
        if protocol == 1 and others and ("v1", peer, "") not in self._told:
            self._told.add(("v1", peer, ""))
            log.info("group%s %s %s not synced with %s: it speaks protocol 1 (owsync 1.2.0),"
                     " which syncs main only", "s" if len(others) > 1 else "",
                     ", ".join(g.name for g in others), "are" if len(others) > 1 else "is",
                     peer)  # fmt: skip
        for g in others:
            w = g.workers.get(peer)
            if w is not None:
                w.request(poll=True)

    def reload(self) -> None:
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration source to reload from")
            return
        try:
            cfg = self.reload_config()
            for w in cfg.warnings:
                log.warning("%s", w)
            if not cfg.peers:
                raise ConfigError("no peer configured")
            old = self.cfg
            self._apply(cfg)
        except ConfigError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        if (cfg.bind_host, cfg.port) != (old.bind_host, old.port):
            log.warning("bind_host/port changed: restart owsync to listen on the new address")
        if cfg.control_path() != old.control_path():
            log.warning("control_socket changed: restart owsync to use the new path")
        logsetup.set_level(cfg.log_level)
        log.info("configuration reloaded: %d peer(s), %d group(s)",
                 len(self.main.workers), len(self.groups))  # fmt: skip
        # the links work with the configuration they started with: start them again
        for g in list(self.groups.values()):
            g.restart_links()
        self.request_sync(reconcile=True)

    # --- syncing -----------------------------------------------------------

    def _group_ctx(self, name: str) -> Context | None:
        """The context an incoming session of group ``name`` is served with;
        None when this node has no such group running (disabled, waiting)."""
        g = self.groups.get(name)
        return g.ctx_in if g is not None and g.running else None

    def _serve(self, sock, label: str, on_hello) -> None:
        main = self.main
        result = run_session(sock, main.ctx_in, label, on_hello, groups=self._group_ctx)
        if result.unavailable:
            if ("asked", result.peer, result.group) not in self._told:
                self._told.add(("asked", result.peer, result.group))
                log.info("%s asked for group %s, which this node does not sync: %s",
                         result.peer, result.group, result.error)  # fmt: skip
            return
        g = self.groups.get(result.group)
        if g is not None:
            g.served(result, label)

    def session_changed(self, result: SessionResult) -> None:
        """A session changed files here: tell the live links of its group."""
        g = self.groups.get(result.group)
        if g is not None:
            g.session_changed(result)

    def request_sync(
        self,
        peer: str | None = None,
        manual: bool = False,
        wait: bool = False,
        exclude: Peer | None = None,
        exclude_host: str | None = None,
        reconcile: bool = False,
        full: bool | None = None,
    ) -> list:
        """Start sessions in every running group; with ``wait``, return their
        results once they end.  KeyError for an unknown ``peer``.

        A live link's reconcile rescans the group's tree first: always with
        ``full`` (by default, a ``reconcile``: the poll, the safety net),
        else unless its watcher has told every change (an asked sync: then
        records and the tree agree).  Groups that rescan are started side by
        side, so that one group's rescan overlaps another's exchange with
        the peer; those that need none start at once, without a thread."""
        if peer is not None:
            self.main.find_peers(peer)  # KeyError here, not in a thread
        if full is None:
            full = reconcile
        groups = [g for g in list(self.groups.values()) if g.running]
        started: list = [None] * len(groups)

        def start(i: int) -> None:
            started[i] = groups[i].start_sync(peer, manual, wait, exclude, reconcile, full)

        slow = manual or wait or reconcile
        if len(groups) > 1 and slow and sum(g.needs_rescan(full) for g in groups) > 1:
            threads = [threading.Thread(target=start, args=(i,), name="owsync-group-sync")
                       for i in range(1, len(groups))]  # fmt: skip
            for t in threads:
                t.start()
            start(0)
            for t in threads:
                t.join()
        else:
            for i in range(len(groups)):
                start(i)
        names: list[str] = []
        waits = []
        for got in started:
            if got is None:  # its thread failed (logged as an internal error)
                continue
            names += [n for n in got[0] if n not in names]
            waits += got[1]
        if not wait:
            return names
        return [get() for get in waits]

    def find_peers(self, name: str) -> list[PeerWorker]:
        return self.main.find_peers(name)

    def rescan(self) -> None:
        self.main.rescan()

    def local_change(self, paths: set[str] | None = None) -> None:
        """Main's directory changed (None: anything may have)."""
        self.main.local_change(paths)

    def vrrp(self, instance: object, role: object) -> dict:
        """keepalived's transition of a VRRP instance: note the role, tell the
        live peers, and reconcile every group with every peer at once (in the
        background: the caller, keepalived's hotplug script, must not wait
        long).  The status shows when that reconcile ended.  ValueError for
        bad input."""
        name, role = check_instance(instance), parse_role(role)
        if role == STOP:  # keepalived stopped it: no role here any more, nothing to sync
            if self.vrrp_roles.stop(name):
                log.info("VRRP instance %s: stopped", name)
                self._tell_roles()
            return {"instance": name, "role": STOP, "peers": []}
        changed, gen = self.vrrp_roles.set(name, role, int(time.time()))
        if changed:
            log.info("VRRP instance %s: %s; reconciling with every peer", name, role)
            self._tell_roles()

        def reconcile() -> None:
            began = time.monotonic()
            results = self.request_sync(manual=True, wait=True, full=True)
            self.vrrp_roles.reconciled(name, gen, time.time())
            peers = {r.peer for r in results}
            ok = sum(1 for p in peers if all(r.ok for r in results if r.peer == p))
            log.info("VRRP instance %s: reconciled with %d of %d peer(s) in %.1f s",
                     name, ok, len(peers), time.monotonic() - began)  # fmt: skip

        threading.Thread(target=reconcile, name="owsync-vrrp", daemon=True).start()
        return {
            "instance": name,
            **self.vrrp_roles.view()[name],
            "peers": [str(w.peer) for w in self.main.workers.values()],
        }

    def _tell_roles(self) -> None:
        for link in self.main.mesh.links():
            link.post(("vrrp", self.vrrp_roles.table))

    # --- status and control -----------------------------------------------

    def record_counts(self) -> tuple[int, int]:
        """Main's files and tombstones (the last known, if it cannot be read)."""
        return self.main.record_counts()

    def status(self) -> dict:
        return status.snapshot(self)

    def restore(self, version_id: int, group: str = MAIN) -> dict:
        """Put a kept version of ``group`` back and sync it (see
        SyncGroup.restore); LookupError for a group this node has not."""
        g = self.groups.get(group)
        if g is None:
            raise LookupError(f"no group {group}")
        return g.restore(version_id)

    # --- running -------------------------------------------------------------

    keepalived_status = KEEPALIVED_STATUS  # where OpenWrt's keepalived keeps its roles

    def start(self) -> None:
        """Bind and start every thread (signals are the caller's business)."""
        # the VRRP roles keepalived reported before this daemon was on the bus
        self.vrrp_roles.load(keepalived_roles(self.keepalived_status))
        self.control = ControlServer(self.cfg.control_path(), lambda req: handle(self, req))
        self.running = True
        for g in list(self.groups.values()):
            g.check(begin=False)  # each scans its directory and makes its workers
        self.serving = net.Serving(self.cfg.bind_host, self.cfg.port, self._serve, self.stopping)
        threading.Thread(target=self.serving.run, name="owsync-listener", daemon=True).start()
        self.serving.tried.wait(5.0)  # "listening" is said once it is so (or why not)
        self.control.start()
        threading.Thread(target=self._poll, name="owsync-poll", daemon=True).start()
        for g in list(self.groups.values()):
            if g.running:
                g.begin()  # the initial sync with every peer
        for front_end in self.front_ends:
            front_end.start()
        log.info(
            "owsync %s daemon: %s, listening on %s port %d, %d peer(s), %s",
            __version__, self.cfg.sync_dir, self.cfg.bind_host, self.cfg.port,
            len(self.main.workers), "encrypted" if self.cipher.encrypted else "PLAIN",
        )  # fmt: skip
        others = [g for g in self.groups.values() if not g.is_main]
        if others:
            log.info("groups: %s", ", ".join(f"{g.name} ({g.group.sync_dir}, {g.state})"
                                            for g in others))  # fmt: skip
            if not self.speaks_v2():
                log.info("groups %s are not synced: protocol 2 is off on this node"
                         " (OWSYNC_MAX_PROTOCOL=1), and protocol 1 syncs main only",
                         ", ".join(g.name for g in others))  # fmt: skip

    def _poll(self) -> None:
        """The safety net: a full sync with every peer every poll_interval (a
        full reconcile on a live link), in every group; a group whose
        directory was missing starts once it is there.  Once the start's
        syncs are over, and before each poll, the heap freed since goes back
        to the system."""
        if self.stopping.wait(min(HEAP_SETTLE, self.cfg.poll_interval)):
            return
        release_free_heap()  # the start-up's and the initial syncs'
        wait = max(0.0, self.cfg.poll_interval - HEAP_SETTLE)
        while not self.stopping.wait(wait):
            release_free_heap()  # the last round's
            for g in list(self.groups.values()):
                g.check()
            self.request_sync(reconcile=True)  # rescans first when a link reconciles
            wait = self.cfg.poll_interval

    def stop(self) -> None:
        assert self.serving is not None, "stop() before start()"
        self.stopping.set()
        groups = list(self.groups.values())
        for g in groups:
            g.mesh.close_all("the peer is shutting down")
            if g.watcher is not None:
                g.watcher.stop.set()
        self.serving.stop()
        self.control.close()
        workers = [w for g in groups for w in list(g.workers.values())]
        for w in workers:
            with w.cond:
                w.cond.notify()
        deadline = time.monotonic() + STOP_WAIT
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        # incoming sessions notice `stopping` within half a second; wait for them
        while self.serving.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        for g in groups:
            with contextlib.suppress(Exception):
                acquired = g.owner.acquire(timeout=max(0.0, deadline - time.monotonic()))
                if acquired:
                    g.owner.release()

    def run(self, reload_asked: threading.Event | None = None) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads.  Returns the exit status.
        ``reload_asked``: set by a SIGHUP that came before run() (while the
        process started): a reload once running."""
        wake = threading.Event()

        def on_stop(*_):
            self.stopping.set()
            wake.set()

        def on_hup(*_):
            self._reload_requested.set()
            wake.set()

        def on_thread_error(args) -> None:  # a defect: one log line, never a traceback
            log.error("internal error in %s: %s: %s", getattr(args.thread, "name", "?"),
                      args.exc_type.__name__, args.exc_value)  # fmt: skip

        threading.excepthook = on_thread_error
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        if reload_asked is not None and reload_asked.is_set():
            self._reload_requested.set()
        self.start()
        while not self.stopping.is_set():
            # Signal handlers run here, in the main thread, once it runs Python
            # code again.  A process-directed signal may be delivered to any
            # thread, and then nothing interrupts this wait: without a timeout
            # a SIGTERM could go unhandled for good (the churn test saw it).
            wake.wait(0.5)
            wake.clear()
            if self._reload_requested.is_set() and not self.stopping.is_set():
                self._reload_requested.clear()
                self.reload()
        log.info("stopping")
        self.stop()
        log.info("stopped")
        return 0
