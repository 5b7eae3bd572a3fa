"""The daemon: listener, change detection, per-peer scheduling, control API.

One process owns the sync directory and its database: every session, incoming
or outgoing, and every rescan takes the same in-process lock (and the flock
that keeps other processes out), so no two of them interleave writes.

Threads: the listener (one thread per incoming session), the watcher, one
worker per peer, the poll timer, and the control server.  The main thread
only waits for signals: SIGTERM/SIGINT stop, SIGHUP reloads.
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
from ..core.filters import Filter
from ..core.peer import Peer
from ..core.state import Record
from ..io import database, net
from ..io.heap import release_free_heap
from . import log as logsetup
from . import status
from .config import Config, ConfigError
from .context import Context, SessionResult
from .control import ControlServer, handle
from .engine import restore, run_session
from .live import LocalNode, Mesh
from .status import SessionHistory
from .vrrp import KEEPALIVED_STATUS, STOP, VrrpRoles, check_instance, keepalived_roles, parse_role
from .watcher import Watcher

log = logging.getLogger("owsync")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
BUSY_RETRIES = 5  # quick retries of a session that met a busy directory, before backing off
INCOMING_LOCK_TIMEOUT = 0.5  # short: every wait-for cycle between nodes passes through one
OUTGOING_LOCK_TIMEOUT = 30.0
RESTORE_LOCK_TIMEOUT = 5.0  # a restore asked on ubus waits no longer for a session to end
HEAP_SETTLE = 5.0  # seconds after start when the start-up's freed heap goes back (io/heap.py)
# A stop waits this long at most for the peer workers (one may be in a connect
# of net.CONNECT_TIMEOUT to an unreachable peer), the incoming sessions and a
# live step to end cleanly; the init script's term_timeout allows for it.
STOP_WAIT = 10.0


def _uniform(lo: float, hi: float) -> float:
    """A jitter in [lo, hi) from os.urandom: the random module (with _sha512
    and bisect) is not worth 0.1 MiB of every daemon for three draws."""
    return lo + (hi - lo) * int.from_bytes(os.urandom(7), "big") / (1 << 56)


class FrontEnd(Protocol):
    """Something started with the daemon (the ubus bridge): a thread that ends
    on its own once ``daemon.stopping`` is set."""

    def start(self) -> None: ...


def _reconciled(peer: str, box: list) -> SessionResult:
    """A live link's reconcile, as the result of a waited-for sync."""
    ok = bool(box) and box[0] is True
    error = "" if ok else (str(box[0]) if box else "stopped")
    return SessionResult(peer=peer, ok=ok, error=error, protocol=2, live=True)


def backoff_delay(failures: int) -> float:
    """Exponential backoff, capped, with jitter (50-100% of the step)."""
    step = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))
    return step * _uniform(0.5, 1.0)


class PeerWorker(threading.Thread):
    """Syncs with one peer, one session at a time, retrying with backoff."""

    def __init__(self, daemon: Daemon, peer: Peer) -> None:
        super().__init__(name=f"owsync-peer-{peer}", daemon=True)
        self.d = daemon
        self.peer = peer
        self.cond = threading.Condition()
        self.state = "idle"
        self.pending = False
        self.manual = False
        self.retiring = False
        self.failures = 0
        self.busy_streak = 0
        self.retry_at: float | None = None  # time.monotonic(): immune to clock steps
        self.last_attempt: float | None = None
        self.last_success: float | None = None
        self.last: SessionResult | None = None
        self.node: str | None = None  # the peer daemon's id, once it offered a live link
        self._waiters: list[tuple[threading.Event, list]] = []
        self._inflight: list[tuple[threading.Event, list]] = []  # those of the attempt under way

    def request(self, manual: bool = False, waiter=None) -> None:
        with self.cond:
            self.pending = True
            self.manual = self.manual or manual
            if waiter is not None:
                self._waiters.append(waiter)
            self.cond.notify()

    def retire(self) -> None:
        with self.cond:
            self.retiring = True
            self.cond.notify()

    def _due(self) -> bool:
        return self.pending and (
            self.manual or self.retry_at is None or time.monotonic() >= self.retry_at
        )

    def run(self) -> None:
        while True:
            with self.cond:
                while not (self._due() or self.retiring or self.d.stopping.is_set()):
                    wait = None  # until notified: a request, a retirement, the stop
                    if self.pending and self.retry_at is not None:
                        wait = max(0.0, self.retry_at - time.monotonic())
                    self.cond.wait(wait)
                if self.retiring or self.d.stopping.is_set():
                    self._release_waiters()
                    return
                self.pending = self.manual = False
                waiters, self._waiters = self._waiters, []
                self._inflight = waiters
                self.state = "syncing"
            self.last_attempt = time.time()
            self.state = "connecting"
            result = self.d.sync_once(self.peer)
            with self.cond:
                waiters, self._inflight = self._inflight, []  # a live link took them?
            if result.live:
                self._link_ended(result, waiters)
                continue
            with self.cond:
                self.last = result
                if result.ok:
                    self.failures = self.busy_streak = 0
                    self.retry_at = None
                    self.last_success = time.time()
                    self.state = "idle"
                elif result.error == "stopped":
                    self.state = "idle"
                elif result.busy and self.busy_streak < BUSY_RETRIES:
                    # contention, not a failing peer: try again shortly, with jitter
                    self.busy_streak += 1
                    self.retry_at = time.monotonic() + _uniform(0.1, 0.5) * self.busy_streak
                    self.pending = True
                    self.state = "backing off"
                else:
                    self.failures += 1
                    self.retry_at = time.monotonic() + backoff_delay(self.failures)
                    self.pending = True  # retried when the backoff ends
                    self.state = "backing off"
            for event, box in waiters:
                box.append(result)
                event.set()
            if result.ok and (result.received or result.deleted):
                self.d.session_changed(result)
                self.d.request_sync(exclude=self.peer)
            elif result.local_changes:
                # a local write this session found; if the session failed, its
                # own peer still needs it too
                self.d.local_change(None)
                self.d.request_sync(exclude=self.peer if result.ok else None)

    def _link_ended(self, result: SessionResult, waiters) -> None:
        """After a live link (run in this thread) ended: connect again, soon
        when it had been up or gave way to the peer's link, with backoff when
        it could not be set up."""
        self.node = result.node
        if result.duplicate:
            link = self.d.mesh.link_for(result.node) if result.node else None
            if link is not None:
                self.state = "connected"
                link.done.wait()  # the peer's link serves us; reconnect when it ends
        with self.cond:
            if result.ok or result.duplicate or result.was_up:
                self.last = result if not result.duplicate else self.last
                self.failures = self.busy_streak = 0
                if result.was_up:
                    self.last_success = time.time()
                self.retry_at = time.monotonic() + _uniform(0.2, 1.0)
            else:
                self.last = result
                self.failures += 1
                self.retry_at = time.monotonic() + backoff_delay(self.failures)
            self.pending = True
            self.state = "backing off"
        for event, box in waiters:
            box.append(result)
            event.set()

    def linked(self) -> None:
        """A live link with this peer came up (this worker's or the peer's): the
        peer is not failing, whatever the attempts before it counted."""
        with self.cond:
            self.failures = self.busy_streak = 0

    def take_waiters(self) -> list[tuple[threading.Event, list]]:
        """The syncs waited for, queued or taken by the attempt under way: a
        live link that has come up answers them with a reconcile."""
        with self.cond:
            out, self._waiters, self._inflight = self._waiters + self._inflight, [], []
        return out

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event, _ in waiters:
            event.set()


class Daemon:
    def __init__(self, cfg: Config, reload: Callable[[], Config] | None = None) -> None:
        if not cfg.peers:
            raise ConfigError(
                "no peer configured: the daemon requires at least one --auto-sync peer"
                " (or peer= in the config file, or owsync.main.peer in UCI)"
            )
        self.reload_config = reload
        self.stopping = threading.Event()
        self.owner = threading.Lock()
        self.started = time.time()
        self.workers: dict[str, PeerWorker] = {}
        self.history = SessionHistory()
        self.vrrp_roles = VrrpRoles()  # this router's VRRP roles, as keepalived reports them
        # hooks called after every session; each returns the UCI packages it reloaded
        self.on_session: list[Callable[[SessionResult, str], list[str]]] = []
        # started by start(), after the peer workers: the ubus bridge, which the
        # layer above (cli) attaches, as it attaches its session hook
        self.front_ends: list[FrontEnd] = []
        self._reload_requested = threading.Event()
        self._counts = (0, 0)
        self.running = False
        self.serving: net.Serving | None = None
        # live links with peer daemons; `local` is the directory between sessions
        self.local = LocalNode(self._context)
        self.node_id = os.urandom(16).hex()
        self.mesh = Mesh(self.node_id, self.local, self._applied)
        self.mesh.on_up = self._link_up
        self.mesh.port = cfg.port
        self.mesh.is_current = lambda ctx: ctx is self.ctx_in or ctx is self.ctx_out
        self._apply(cfg)

    # --- configuration ----------------------------------------------------

    def _context(self, lock_timeout: float, live: bool = False) -> Context:
        cfg = self.cfg
        return Context(
            root=cfg.sync_dir,
            db_path=cfg.database,
            filter=Filter(cfg.include, cfg.exclude),
            cipher=self.cipher,
            max_file_size=cfg.max_file_size,
            clock=self.clock,
            lock_timeout=lock_timeout,
            should_stop=self.stopping.is_set,
            owner=self.owner,
            versions_dir=cfg.versions_path(),
            versions=cfg.versions_limits(),
            min_protocol=cfg.min_protocol,
            live=self.mesh if live else None,
            peers=cfg.peers,
            port=cfg.port,
        )

    clock = staticmethod(time.time)

    def _apply(self, cfg: Config) -> None:
        if not os.path.isdir(cfg.sync_dir):
            raise ConfigError(f"sync directory {cfg.sync_dir} does not exist")
        self.cipher = make_cipher(cfg.key_bytes())
        if not cfg.include:
            log.warning("no include pattern: nothing will be synced (set include=*)")
        self.cfg = cfg
        self.ctx_in = self._context(INCOMING_LOCK_TIMEOUT, live=True)
        self.ctx_out = self._context(OUTGOING_LOCK_TIMEOUT, live=True)
        wanted = {str(p): p for p in cfg.peers}
        for name in list(self.workers):
            if name not in wanted:
                self.workers.pop(name).retire()
                log.info("peer %s removed", name)
        for name, peer in wanted.items():
            if name not in self.workers:
                w = self.workers[name] = PeerWorker(self, peer)
                if self.running:  # a reload: start it and sync now
                    w.start()
                    w.request()
                    log.info("peer %s added", name)

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
        if cfg.sync_dir != old.sync_dir:
            self._watch(cfg.sync_dir)
        logsetup.set_level(cfg.log_level)
        log.info("configuration reloaded: %d peer(s)", len(self.workers))
        # the links work with the configuration they started with: start them again
        self.local.forget()
        self.mesh.close_all("the peer reloaded its configuration")
        self.local_change(None)
        self.request_sync(reconcile=True)

    # --- syncing -----------------------------------------------------------

    def sync_once(self, peer: Peer) -> SessionResult:
        try:
            sock = net.connect(peer, self.cfg.port)
        except OSError as exc:
            result = SessionResult(peer=str(peer), error=f"cannot connect: {exc.strerror or exc}")
            log.error("sync with %s failed: %s", peer, result.error)
            self._after_session(result, "outgoing")
            return result
        result = run_session(sock, self.ctx_out, str(peer), initiator=True)
        self._after_session(result, "outgoing")
        return result

    def _serve(self, sock, label: str, on_hello) -> None:
        result = run_session(sock, self.ctx_in, label, on_hello)
        if result.live:  # a live link, served in this thread until it ended
            if not (result.ok or result.duplicate):
                self._after_session(result, "incoming")
            return
        self._after_session(result, "incoming")
        if result.busy:
            self._sync_back(label)
        if result.ok and (result.received or result.deleted):
            self.session_changed(result)
        elif result.local_changes:
            self.local_change(None)
        if (result.ok and (result.received or result.deleted)) or result.local_changes:
            # which configured peer connected cannot be told from its address
            # (its source port is ephemeral), so all are told; for the sender
            # that is a session with nothing to do
            self.request_sync()

    def _sync_back(self, label: str) -> None:
        """An incoming session refused because the directory was busy: what the
        peer had for us comes over in a session of ours, soon.  owsync 1.2.0
        tries again only once it finds another change of its own."""
        host = status.host_of(label)
        for w in self.workers.values():
            if w.peer.host == host and not (w.node and self.mesh.link_for(w.node)):
                w.request()

    def _applied(self, result: SessionResult, direction: str) -> None:
        """A live link put a batch of a peer's files in place (or the peer
        took ours): reloads, history, and sessions with the peers that have
        no live link (owsync 1.2.0)."""
        self._after_session(result, direction)
        if direction == "incoming":
            self.request_sync()

    def _link_up(self, link) -> None:
        """Which configured peer a new live link serves: the one it was made
        for, or (incoming) the one at its address listening where it says.  It
        hears this router's VRRP roles, if keepalived told of any."""
        if self.vrrp_roles.table():
            link.post(("vrrp", self.vrrp_roles.table))
        # an incoming link's label names the configured peer it is, if any
        # (status.incoming_name: its address and the port its offer says)
        mine = [w for w in list(self.workers.values()) if str(w.peer) == link.label]
        if len(mine) == 1:
            w = mine[0]
            w.node = link.peer_node
            w.linked()
            link.known_as(str(w.peer))
            waiters = w.take_waiters()  # asked for while the link was being made
            if waiters:
                self.rescan()
            for waiter in waiters:
                self._answer(waiter, str(w.peer), link.reconcile())

    def _answer(self, waiter, peer: str, reconcile) -> None:
        """Answer a waited-for sync with a live link's reconcile, once it is done."""

        def wait() -> None:
            event, box = reconcile
            event.wait()
            waiter[1].append(_reconciled(peer, box))
            waiter[0].set()

        threading.Thread(target=wait, name="owsync-reconcile-wait", daemon=True).start()

    def session_changed(self, result: SessionResult) -> None:
        """A session (protocol v1 or v2) changed files here: tell the live links."""
        try:
            self.mesh.local_change(set(result.changed))
        except Exception as exc:  # a busy lock, a disk error: the poll catches up
            log.warning("cannot tell the live links of %s's changes: %s", result.peer, exc)

    def _after_session(self, result: SessionResult, direction: str) -> None:
        reloaded: list[str] = []
        for hook in self.on_session:
            try:
                reloaded += hook(result, direction) or []
            except Exception:
                log.exception("session hook failed")
        self.history.add(result, direction, reloaded)

    def request_sync(
        self,
        peer: str | None = None,
        manual: bool = False,
        wait: bool = False,
        exclude: Peer | None = None,
        exclude_host: str | None = None,
        reconcile: bool = False,
    ) -> list:
        """Start sessions; with ``wait``, return their results once they end."""
        targets = self.find_peers(peer) if peer else list(self.workers.values())
        targets = [w for w in targets if w.peer != exclude]
        boxes = []
        linked = []
        for w in list(targets):
            link = self.mesh.link_for(w.node) if w.node else None
            if link is None:
                continue
            targets.remove(w)  # its live link carries every change already
            if manual or wait or reconcile:  # a full reconcile, both ways
                linked.append((w, link))
        if linked:
            self.rescan()  # once, for every link's reconcile
        links = [(w, link.reconcile()) for w, link in linked]
        for w in targets:
            waiter: tuple[threading.Event, list] | None = (threading.Event(), []) if wait else None
            w.request(manual=manual, waiter=waiter)
            if waiter:
                boxes.append((w, waiter))
        if not wait:
            return [str(w.peer) for w in targets] + [str(w.peer) for w, _ in links]
        results = []
        for w, (event, box) in links:
            event.wait()
            results.append(_reconciled(str(w.peer), box))
        for w, (event, box) in boxes:
            event.wait()
            results.append(box[0] if box else SessionResult(peer=str(w.peer), error="stopped"))
        return results

    def find_peers(self, name: str) -> list[PeerWorker]:
        found = [
            w for w in self.workers.values()
            if name in (str(w.peer), w.peer.host, f"{w.peer.host}:{w.peer.port or self.cfg.port}")
        ]  # fmt: skip
        if not found:
            raise KeyError(name)
        return found

    def rescan(self) -> None:
        """Rescan the tree and tell the live links what changed, before their
        reconciles (a failure is the next poll's to catch up)."""
        try:
            self.mesh.local_change(None)
        except Exception as exc:  # a busy lock, a disk error
            log.warning("rescan before a reconcile failed: %s", exc)

    def local_change(self, paths: set[str] | None = None) -> None:
        """Called by the watcher with what changed (None: anything may have):
        rescan that, send the changes over the live links, and start sessions
        with the peers that have none."""
        if self.stopping.is_set():
            return
        try:
            changed = self.mesh.local_change(paths)
        except Exception as exc:  # a busy lock, a disk error: the poll catches up
            log.warning("rescan after a local change failed: %s", exc)
            return
        if changed:
            log.info("local change detected: %d file(s)", len(changed))
            self.request_sync()

    def vrrp(self, instance: object, role: object) -> dict:
        """keepalived's transition of a VRRP instance: note the role, tell the
        live peers, and reconcile with every peer at once (in the background:
        the caller, keepalived's hotplug script, must not wait long).  The
        status shows when that reconcile ended.  ValueError for bad input."""
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
            results = self.request_sync(manual=True, wait=True)
            self.vrrp_roles.reconciled(name, gen, time.time())
            ok = sum(1 for r in results if r.ok)
            log.info("VRRP instance %s: reconciled with %d of %d peer(s) in %.1f s",
                     name, ok, len(results), time.monotonic() - began)  # fmt: skip

        threading.Thread(target=reconcile, name="owsync-vrrp", daemon=True).start()
        return {
            "instance": name,
            **self.vrrp_roles.view()[name],
            "peers": [str(w.peer) for w in self.workers.values()],
        }

    def _tell_roles(self) -> None:
        for link in self.mesh.links():
            link.post(("vrrp", self.vrrp_roles.table))

    # --- status and control -----------------------------------------------

    def record_counts(self) -> tuple[int, int]:
        """Files and tombstones in the database (the last known, if it cannot be read)."""
        try:
            records: dict[str, Record] = database.load(self.cfg.database, set_aside=False)
        except OSError:
            return self._counts
        live = sum(1 for r in records.values() if not r.deleted)
        self._counts = (live, len(records) - live)
        return self._counts

    def status(self) -> dict:
        return status.snapshot(self)

    def restore(self, version_id: int) -> dict:
        """Put a kept version back (a local write, under the directory lock) and
        sync it to every peer.  LookupError, ValueError, LockBusy for the caller."""
        out = restore(self._context(RESTORE_LOCK_TIMEOUT), version_id)
        if not out["unchanged"]:
            self.request_sync()
        return out

    # --- running -------------------------------------------------------------

    keepalived_status = KEEPALIVED_STATUS  # where OpenWrt's keepalived keeps its roles

    def start(self) -> None:
        """Bind and start every thread (signals are the caller's business)."""
        # the VRRP roles keepalived reported before this daemon was on the bus
        self.vrrp_roles.load(keepalived_roles(self.keepalived_status))
        self.control = ControlServer(self.cfg.control_path(), lambda req: handle(self, req))
        self.running = True
        self._watch(self.cfg.sync_dir)
        try:  # what the live links start from: the tree as it is now
            self.local.rescan(None, first=True)
        except Exception as exc:  # a busy lock, a disk error: a link's start rescans
            log.warning("initial scan failed: %s", exc)
        self.serving = net.Serving(self.cfg.bind_host, self.cfg.port, self._serve, self.stopping)
        threading.Thread(target=self.serving.run, name="owsync-listener", daemon=True).start()
        self.serving.tried.wait(5.0)  # "listening" is said once it is so (or why not)
        self.control.start()
        threading.Thread(target=self._poll, name="owsync-poll", daemon=True).start()
        for w in self.workers.values():
            w.start()
        for front_end in self.front_ends:
            front_end.start()
        log.info(
            "owsync %s daemon: %s, listening on %s port %d, %d peer(s), %s",
            __version__, self.cfg.sync_dir, self.cfg.bind_host, self.cfg.port,
            len(self.workers), "encrypted" if self.cipher.encrypted else "PLAIN",
        )  # fmt: skip
        self.request_sync()  # the initial sync with every peer

    def _watch(self, root: str) -> None:
        """(Re)start change detection on ``root``."""
        old = getattr(self, "watcher", None)
        if old is not None:
            old.stop.set()
        stop = threading.Event()
        self.watcher = Watcher(root, self.local_change, stop, self.local.not_placed)
        self.watcher.start()

    def _poll(self) -> None:
        """The safety net: a full sync with every peer every poll_interval (a
        full reconcile on a live link).  Once the start's syncs are over, and
        before each poll, the heap freed since goes back to the system."""
        if self.stopping.wait(min(HEAP_SETTLE, self.cfg.poll_interval)):
            return
        release_free_heap()  # the start-up's and the initial syncs'
        wait = max(0.0, self.cfg.poll_interval - HEAP_SETTLE)
        while not self.stopping.wait(wait):
            release_free_heap()  # the last round's
            self.request_sync(reconcile=True)  # rescans first when a link reconciles
            wait = self.cfg.poll_interval

    def stop(self) -> None:
        assert self.serving is not None, "stop() before start()"
        self.stopping.set()
        self.mesh.close_all("the peer is shutting down")
        self.watcher.stop.set()
        self.serving.stop()
        self.control.close()
        for w in list(self.workers.values()):
            with w.cond:
                w.cond.notify()
        deadline = time.monotonic() + STOP_WAIT
        for w in list(self.workers.values()):
            w.join(max(0.0, deadline - time.monotonic()))
        # incoming sessions notice `stopping` within half a second; wait for them
        while self.serving.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            acquired = self.owner.acquire(timeout=max(0.0, deadline - time.monotonic()))
            if acquired:
                self.owner.release()

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads.  Returns the exit status."""
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
