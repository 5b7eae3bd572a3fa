"""One sync group of the daemon: a directory and everything that is its own.

A group is a directory, its filters, its database and version store, its
watcher, its in-process owner and flock, its live links (a Mesh: the live
offer and a link's dedup are per group) and one worker per peer.  The node's
own (the listener, the control socket, the front ends, the VRRP roles, the
history, the configuration and the cipher) stays in the Daemon, which a
group reaches through :class:`Node`.

Groups other than main sync only with peers that speak protocol 2 (learned
from main's sessions with them): v1 carries no group.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..core.filters import Filter
from ..core.peer import Peer
from ..core.protocol2 import NO_SUCH_GROUP
from ..core.state import Record
from ..io import database, net
from . import status
from .actions import run_actions
from .config import MAIN, Config, Group, group_filter, state_paths
from .context import Context, SessionResult
from .engine import restore, run_session
from .live import Link, LocalNode, Mesh
from .status import SessionHistory
from .vrrp import VrrpRoles
from .watcher import Watcher

log = logging.getLogger("owsync")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
BUSY_RETRIES = 5  # quick retries of a session that met a busy directory, before backing off
INCOMING_LOCK_TIMEOUT = 0.5  # short: every wait-for cycle between nodes passes through one
OUTGOING_LOCK_TIMEOUT = 30.0
RESTORE_LOCK_TIMEOUT = 5.0  # a restore asked on ubus waits no longer for a session to end

Waiter = tuple[threading.Event, list]


def _uniform(lo: float, hi: float) -> float:
    """A jitter in [lo, hi) from os.urandom: the random module (with _sha512
    and bisect) is not worth 0.1 MiB of every daemon for three draws."""
    return lo + (hi - lo) * int.from_bytes(os.urandom(7), "big") / (1 << 56)


def backoff_delay(failures: int) -> float:
    """Exponential backoff, capped, with jitter (50-100% of the step)."""
    step = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))
    return step * _uniform(0.5, 1.0)


# how many links a waited-for reconcile follows when one gives way to another
RECONCILE_RELINKS = 3


def _reconciled(peer: str, box: list, group: str = MAIN) -> SessionResult:
    """A live link's reconcile, as the result of a waited-for sync."""
    ok = bool(box) and box[0] is True
    error = "" if ok else (str(box[0]) if box else "stopped")
    return SessionResult(peer=peer, ok=ok, error=error, protocol=2, live=True, group=group)


class Node(Protocol):
    """What a group uses of the daemon that runs it: the node's own."""

    cfg: Config
    cipher: object
    node_id: str
    stopping: threading.Event
    history: SessionHistory
    vrrp_roles: VrrpRoles
    on_session: list[Callable[[SessionResult, str], list[str]]]

    def clock(self) -> float: ...

    def speaks_v2(self) -> bool: ...

    def protocol_of(self, peer: str) -> int | None: ...

    def learned(self, peer: str, protocol: int) -> None: ...


class PeerWorker(threading.Thread):
    """Syncs one group with one peer, one session at a time, retrying with backoff."""

    def __init__(self, group: SyncGroup, peer: Peer) -> None:
        super().__init__(name=f"owsync-peer-{peer}-{group.name}", daemon=True)
        self.g = group
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
        # why the group does not sync with this peer, though nothing failed:
        # "absent" (it has no such group: asked again at each poll), "v1"
        self.unavailable = ""
        self._told: set[str] = set()  # what of that the log has said
        self._waiters: list[Waiter] = []
        self._inflight: list[Waiter] = []  # those of the attempt under way

    def request(self, manual: bool = False, waiter=None, poll: bool = False) -> None:
        with self.cond:
            if self.unavailable == "absent" and not (manual or poll or waiter):
                return  # a peer without the group is asked again at the poll only
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
        g = self.g
        while True:
            with self.cond:
                while not (self._due() or self.retiring or g.stopping.is_set()):
                    wait = None  # until notified: a request, a retirement, the stop
                    if self.pending and self.retry_at is not None:
                        wait = max(0.0, self.retry_at - time.monotonic())
                    self.cond.wait(wait)
                if self.retiring or g.stopping.is_set():
                    self._release_waiters()
                    return
                self.pending = self.manual = False
                waiters, self._waiters = self._waiters, []
                self._inflight = waiters
                self.state = "syncing"
            blocked = g.blocked(self.peer)
            if blocked:  # not attempted: main's sessions say the peer cannot have it
                peer = str(self.peer)
                why = SessionResult(peer, error=blocked, group=g.name, unavailable=blocked)
                self._unavailable(blocked, why)
                continue
            self.last_attempt = time.time()
            self.state = "connecting"
            result = g.sync_once(self.peer)
            if result.unavailable:
                self._unavailable(result.unavailable, result)
                continue
            self.unavailable = ""
            self._told.discard("absent")
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
                g.session_changed(result)
                g.request_sync(exclude=self.peer)
            elif result.local_changes:
                # a local write this session found; if the session failed, its
                # own peer still needs it too
                g.local_change(None)
                g.request_sync(exclude=self.peer if result.ok else None)

    def _unavailable(self, kind: str, result: SessionResult) -> None:
        """The group is not synced with this peer, and nothing failed: no
        backoff, no history; the log says so once."""
        g = self.g
        with self.cond:
            waiters, self._inflight = self._inflight, []
            self.unavailable = kind
            self.failures = self.busy_streak = 0
            self.retry_at = None
            self.state = kind
        for event, box in waiters:
            box.append(result)
            event.set()
        if kind == "v1" and result.protocol == 1:  # the Hellos told it
            g.node.learned(str(self.peer), 1)
        if kind == "absent" and "absent" not in self._told:
            self._told.add("absent")
            why = "it has no such group" if NO_SUCH_GROUP in result.error else result.error
            log.info("group %s is not synced with %s: %s (asked again at each poll)",
                     g.name, self.peer, why)  # fmt: skip

    def _link_ended(self, result: SessionResult, waiters) -> None:
        """After a live link (run in this thread) ended: connect again, soon
        when it had been up or gave way to the peer's link, with backoff when
        it could not be set up."""
        self.node = result.node
        if result.duplicate:
            link = self.g.mesh.link_for(result.node) if result.node else None
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
            self.unavailable = ""

    def take_waiters(self) -> list[Waiter]:
        """The syncs waited for, queued or taken by the attempt under way: a
        live link that has come up answers them with a reconcile."""
        with self.cond:
            out, self._waiters, self._inflight = self._waiters + self._inflight, [], []
        return out

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event, _ in waiters:
            event.set()


class SyncGroup:
    """One group's directory, database, watcher, live links and peer workers."""

    def __init__(self, node: Node, cfg: Config, group: Group) -> None:
        self.node = node
        self.name = group.name
        self.stopping = node.stopping
        self.owner = threading.Lock()  # the in-process owner of the directory
        self.workers: dict[str, PeerWorker] = {}
        self.running = False  # started, and not halted since
        self.state = "waiting"  # "syncing" | "waiting" (its dir is missing) | "disabled"
        self.reason = ""
        self.last_change: float | None = None  # when files last changed here (either way)
        self.watcher: Watcher | None = None
        self._counts = (0, 0)
        self._warned_missing = False
        # live links with peer daemons; `local` is the directory between sessions
        self._step_ctx: Context | None = None
        self.local = LocalNode(self._step_context)
        self.local.current = self._current
        self.mesh = Mesh(node.node_id, self.local, self._applied)
        self.mesh.on_up = self._link_up
        self.mesh.is_current = lambda ctx: ctx is self.ctx_in or ctx is self.ctx_out
        self.apply(cfg, group)

    @property
    def is_main(self) -> bool:
        return self.name == MAIN

    # --- configuration ----------------------------------------------------

    def _context(self, lock_timeout: float, live: bool = False) -> Context:
        cfg, group = self.cfg, self.group
        return Context(
            root=group.sync_dir,
            db_path=cfg.group_database(self.name),
            filter=group_filter(cfg, group),
            cipher=self.node.cipher,
            max_file_size=cfg.max_file_size,
            clock=self.node.clock,
            lock_timeout=lock_timeout,
            should_stop=self.stopping.is_set,
            owner=self.owner,
            versions_dir=cfg.group_versions_path(self.name),
            versions=cfg.versions_limits(),
            min_protocol=cfg.min_protocol,
            live=self.mesh if live else None,
            peers=cfg.peers,
            port=cfg.port,
            group=self.name,
        )

    def _step_context(self, lock_timeout: float) -> Context:
        """The context of the live steps (``local``): made once per
        configuration, not once a step (making one resolves its paths, which
        cost a no-change step of a small group half its time)."""
        ctx = self._step_ctx
        if ctx is None or ctx.lock_timeout != lock_timeout:
            ctx = self._step_ctx = self._context(lock_timeout)
        return ctx

    def apply(self, cfg: Config, group: Group) -> None:
        """Take a (re)loaded configuration: contexts, and the workers of a
        running group (a peer added starts syncing now)."""
        old = getattr(self, "group", None)
        self.cfg, self.group = cfg, group
        self._step_ctx = None
        self.database = cfg.group_database(self.name)
        self.ctx_in = self._context(INCOMING_LOCK_TIMEOUT, live=True)
        self.ctx_out = self._context(OUTGOING_LOCK_TIMEOUT, live=True)
        self.mesh.port = cfg.port
        if not self.running:
            return
        if old is not None and old.sync_dir != group.sync_dir:
            if not self.is_main:  # check() starts it on the new one, or waits for it
                self.halt("the group's directory changed")
                return
            self._watch()  # main's exists (the daemon refuses it otherwise)
        wanted = {str(p): p for p in cfg.peers}
        for name in list(self.workers):
            if name not in wanted:
                self.workers.pop(name).retire()
                if self.is_main:
                    log.info("peer %s removed", name)
        for name, peer in wanted.items():
            if name not in self.workers:
                w = self.workers[name] = PeerWorker(self, peer)
                w.start()
                w.request()
                if self.is_main:
                    log.info("peer %s added", name)

    def check(self, begin: bool = True) -> bool:
        """Start or halt as the configuration and the directory say (at the
        start, each poll and each reload); True when it started now (its
        workers syncing unless not ``begin``: see :meth:`start`)."""
        group = self.group
        if not group.enabled:
            if self.running:
                self.halt("the group was disabled")
            self.state, self.reason = "disabled", ""
            return False
        if self.running:
            return False
        if not os.path.isdir(group.sync_dir):
            self.state = "waiting"
            self.reason = f"directory {group.sync_dir} does not exist"
            if not self._warned_missing:
                self._warned_missing = True
                log.warning("group %s waits: %s; it starts once it does", self.name, self.reason)
            return False
        self.start(begin)
        if self._warned_missing:
            log.info("group %s: %s exists now; syncing", self.name, group.sync_dir)
        self._warned_missing = False
        return True

    def start(self, begin: bool = True) -> None:
        """Watch the directory, scan it, make a worker per peer, and (with
        ``begin``, else at :meth:`begin`) start them syncing.  The daemon's
        start makes them before it listens: a peer's link coming in at once
        finds the worker it serves."""
        self.running = True
        self.state, self.reason = "syncing", ""
        self._watch()
        try:  # what the live links start from: the tree as it is now
            self.local.rescan(None, first=True)
        except Exception as exc:  # a busy lock, a disk error: a link's start rescans
            log.warning("initial scan of group %s failed: %s", self.name, exc)
        for name, peer in {str(p): p for p in self.cfg.peers}.items():
            self.workers[name] = PeerWorker(self, peer)
        if begin:
            self.begin()

    def begin(self) -> None:
        """Start the workers made and not started yet, and sync."""
        for w in list(self.workers.values()):
            if w.ident is None:
                w.start()
        self.request_sync()

    def halt(self, reason: str) -> None:
        """Stop syncing (the group was removed or disabled); its files stay."""
        self.running = False
        for w in self.workers.values():
            w.retire()
        self.workers = {}
        if self.watcher is not None:
            self.watcher.stop.set()
            self.watcher = None
        self.mesh.close_all(reason)

    def restart_links(self) -> None:
        """A reload: the links work with the configuration they started with."""
        self.local.forget()
        self.mesh.close_all("the peer reloaded its configuration")
        if self.running:
            self.local_change(None)

    def _watch(self) -> None:
        """(Re)start change detection on the group's directory."""
        if self.watcher is not None:
            self.watcher.stop.set()
        stop = threading.Event()
        # only the directories its patterns can match: not all of /etc for passwd
        scope = Filter(self.group.include, self.group.exclude)
        # and no news of any group's owsync state in its tree (never synced)
        files, dirs = state_paths(self.cfg, self.group)
        ignore = (lambda rel: rel in files or rel.startswith(dirs)) if files or dirs else None
        self.watcher = Watcher(self.group.sync_dir, self.local_change, stop, self.local.not_placed,
                               scope=scope, ignore=ignore)  # fmt: skip
        self.watcher.start()

    def _current(self, full_at: float | None) -> bool:
        """Whether the records hold the tree as it is, with no rescan: the
        watcher is live (inotify), has told every change it saw, and the last
        full rescan began after its watches were in place."""
        w = self.watcher
        armed = w.armed if w is not None else None
        if w is None or armed is None or full_at is None:
            return False
        return full_at >= armed and w.quiet()

    def needs_rescan(self, full: bool = False) -> bool:
        """Whether a reconcile now would rescan the tree (``full``: always)."""
        return full or not self.local.up_to_date()

    # --- which peers -------------------------------------------------------

    def blocked(self, peer: Peer) -> str:
        """Why this group is not attempted with ``peer`` ("" when it is): a
        group other than main needs protocol 2 on both sides ("v1"), and
        waits until main's sessions with the peer told its protocol
        ("pending")."""
        if self.is_main:
            return ""
        if not self.node.speaks_v2():
            return "v1"
        known = self.node.protocol_of(str(peer))
        return "v1" if known == 1 else "pending" if known is None else ""

    def peer_states(self) -> dict[str, str]:
        """Each peer's state in this group: synced, absent, v1 or pending."""
        out = {}
        for w in list(self.workers.values()):
            if w.unavailable:
                out[str(w.peer)] = w.unavailable
                continue
            blocked = self.blocked(w.peer)
            linked = w.node is not None and self.mesh.link_for(w.node) is not None
            if blocked:
                out[str(w.peer)] = blocked
            elif linked or (w.last is not None and w.last.ok):
                out[str(w.peer)] = "synced"
            else:
                out[str(w.peer)] = "pending"
        if not self.running:
            out = {str(p): "pending" for p in self.cfg.peers}
        return out

    # --- syncing -----------------------------------------------------------

    def sync_once(self, peer: Peer) -> SessionResult:
        try:
            sock = net.connect(peer, self.cfg.port)
        except OSError as exc:
            if self.stopping.is_set():  # a connect the stop outlasted: nothing failed
                return SessionResult(peer=str(peer), error="stopped", group=self.name)
            result = SessionResult(
                peer=str(peer), error=f"cannot connect: {exc.strerror or exc}", group=self.name
            )
            log.error("sync with %s failed: %s", peer, result.error)
            self._after_session(result, "outgoing")
            return result
        result = run_session(sock, self.ctx_out, str(peer), initiator=True)
        self._after_session(result, "outgoing")
        return result

    def served(self, result: SessionResult, label: str) -> None:
        """After an incoming session of this group (run by the daemon's listener)."""
        if result.live:  # a live link, served in that thread until it ended
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
        for w in list(self.workers.values()):
            if w.peer.host == host and not (w.node and self.mesh.link_for(w.node)):
                w.request()

    def _applied(self, result: SessionResult, direction: str) -> None:
        """A live link put a batch of a peer's files in place (or the peer
        took ours): reloads, history, and sessions with the peers that have
        no live link (owsync 1.2.0)."""
        self._after_session(result._replace(group=self.name), direction)
        if direction == "incoming":
            self.request_sync()

    def _link_up(self, link) -> None:
        """Which configured peer a new live link serves: the one it was made
        for, or (incoming) the one at its address listening where it says.  It
        hears this router's VRRP roles (main's links), if keepalived told of any."""
        roles = self.node.vrrp_roles
        if self.is_main and roles.table():
            link.post(("vrrp", roles.table))
        # an incoming link's label names the configured peer it is, if any
        # (status.incoming_name: its address and the port its offer says)
        mine = [w for w in list(self.workers.values()) if str(w.peer) == link.label]
        if len(mine) == 1:
            w = mine[0]
            w.node = link.peer_node
            w.linked()
            link.known_as(str(w.peer))
            if self.is_main:
                self.node.learned(str(w.peer), 2)
            waiters = w.take_waiters()  # asked for while the link was being made
            if waiters:
                self.rescan()
            for waiter in waiters:
                self._answer(waiter, str(w.peer), link.reconcile())

    def _answer(self, waiter, peer: str, reconcile) -> None:
        """Answer a waited-for sync with a live link's reconcile, once it is done."""
        name = self.name

        def wait() -> None:
            event, box = reconcile
            event.wait()
            waiter[1].append(_reconciled(peer, box, name))
            waiter[0].set()

        threading.Thread(target=wait, name="owsync-reconcile-wait", daemon=True).start()

    def session_changed(self, result: SessionResult) -> None:
        """A session (protocol v1 or v2) changed files here: tell the live links."""
        try:
            self.mesh.local_change(set(result.changed))
        except Exception as exc:  # a busy lock, a disk error: the poll catches up
            log.warning("cannot tell the live links of %s's changes: %s", result.peer, exc)

    def _after_session(self, result: SessionResult, direction: str) -> None:
        """History, and what arrivals set off: main's session hooks (procd's
        config.change, ubus), another group's service actions."""
        if result.unavailable:
            return  # not a failure, not activity: the status says it
        if result.changed:
            self.last_change = time.time()
        reloaded: list[str] = []
        if self.is_main:
            for hook in self.node.on_session:
                try:
                    reloaded += hook(result, direction) or []
                except Exception:
                    log.exception("session hook failed")
            if result.protocol is not None:
                self.node.learned(result.peer, result.protocol)
        elif result.changed:
            try:
                ran = run_actions(self.group, result.changed)
            except Exception:
                log.exception("service actions of group %s failed", self.name)
                ran = []
            reloaded = [f"{service} {action}" for service, action, _ in ran]
        self.node.history.add(result, direction, reloaded)

    def start_sync(
        self,
        peer: str | None = None,
        manual: bool = False,
        wait: bool = False,
        exclude: Peer | None = None,
        reconcile: bool = False,
        full: bool = False,
    ) -> tuple[list[str], list[Callable[[], SessionResult]]]:
        """Start sessions (and live reconciles): the peers asked, and with
        ``wait`` a function per peer that waits for its result.  KeyError for
        an unknown ``peer``.  A peer the group is not synced with (absent,
        v1) is left to the poll.  A live reconcile rescans the tree first,
        unless the watcher has told every change (``full``: in any case)."""
        targets = self.find_peers(peer) if peer else list(self.workers.values())
        targets = [w for w in targets if w.peer != exclude]
        if manual or wait:
            targets = [w for w in targets if not (w.unavailable or self.blocked(w.peer))]
        linked = []
        for w in list(targets):
            link = self.mesh.link_for(w.node) if w.node else None
            if link is None:
                continue
            targets.remove(w)  # its live link carries every change already
            if manual or wait or reconcile:  # a full reconcile, both ways
                linked.append((w, link))
        if linked:
            self.rescan(full)  # once, for every link's reconcile
        links = [(w, link.reconcile()) for w, link in linked]
        waits: list[Callable[[], SessionResult]] = []
        for w in targets:
            waiter: Waiter | None = (threading.Event(), []) if wait else None
            w.request(manual=manual, waiter=waiter, poll=reconcile)
            if waiter is not None:
                waits.append(self._waiting(str(w.peer), waiter))
        names = [str(w.peer) for w in targets] + [str(w.peer) for w, _ in links]

        def link_result(w: PeerWorker, link: Link, rec: Waiter) -> Callable[[], SessionResult]:
            def get() -> SessionResult:
                return self._link_reconciled(w, link, rec)

            return get

        return names, [link_result(w, link, rec) for (w, link), (_, rec) in
                       zip(linked, links, strict=True)] + waits  # fmt: skip

    def _link_reconciled(self, w: PeerWorker, link: Link, rec: Waiter) -> SessionResult:
        """Wait for a live reconcile.  A link that ends before it completed
        because another link to the same node replaced it (both ends
        connected at once, or the peer reconnected) is no failure: the
        reconcile is asked again on the link that replaced it."""
        for _ in range(RECONCILE_RELINKS):
            rec[0].wait()
            result = _reconciled(str(w.peer), rec[1], self.name)
            new = self.mesh.link_for(w.node) if w.node and not result.ok else None
            if new is None or new is link or not link.done.is_set():
                break
            log.debug("reconcile with %s: its link gave way to another; asked again there", w.peer)
            link, rec = new, new.reconcile()
        else:
            rec[0].wait()
            result = _reconciled(str(w.peer), rec[1], self.name)
        return result

    def _waiting(self, peer: str, waiter: Waiter) -> Callable[[], SessionResult]:
        name = self.name

        def get() -> SessionResult:
            event, box = waiter
            event.wait()
            return box[0] if box else SessionResult(peer=peer, error="stopped", group=name)

        return get

    def request_sync(self, peer: str | None = None, exclude: Peer | None = None) -> None:
        """Start sessions with this group's peers (those without a live link)."""
        if self.running:
            self.start_sync(peer, exclude=exclude)

    def find_peers(self, name: str) -> list[PeerWorker]:
        found = [
            w for w in self.workers.values()
            if name in (str(w.peer), w.peer.host, f"{w.peer.host}:{w.peer.port or self.cfg.port}")
        ]  # fmt: skip
        if not found:
            raise KeyError(name)
        return found

    def rescan(self, full: bool = True) -> None:
        """Rescan the tree and tell the live links what changed, before their
        reconciles (a failure is the next poll's to catch up).  Not ``full``:
        only if the watcher has not told every change (:meth:`_current`)."""
        try:
            if full:
                self.mesh.local_change(None)
            else:
                self.mesh.refresh()
        except Exception as exc:  # a busy lock, a disk error
            log.warning("rescan before a reconcile failed: %s", exc)

    def local_change(self, paths: set[str] | None = None) -> None:
        """Called by the watcher with what changed (None: anything may have):
        rescan that, send the changes over the live links, and start sessions
        with the peers that have none."""
        if self.stopping.is_set() or not self.running:
            return
        try:
            changed = self.mesh.local_change(paths)
        except Exception as exc:  # a busy lock, a disk error: the poll catches up
            log.warning("rescan after a local change failed: %s", exc)
            return
        if changed:
            self.last_change = time.time()
            if self.is_main:
                log.info("local change detected: %d file(s)", len(changed))
            else:
                log.info("local change detected in group %s: %d file(s)", self.name, len(changed))
            self.request_sync()

    # --- status -----------------------------------------------------------

    def record_counts(self) -> tuple[int, int]:
        """Files and tombstones in the database (the last known, if it cannot be read)."""
        try:
            records: dict[str, Record] = database.load(self.database, set_aside=False)
        except OSError:
            return self._counts
        live = sum(1 for r in records.values() if not r.deleted)
        self._counts = (live, len(records) - live)
        return self._counts

    def restore(self, version_id: int) -> dict:
        """Put a kept version back (a local write, under the directory lock) and
        sync it to every peer.  LookupError, ValueError, LockBusy for the caller."""
        out = restore(self._context(RESTORE_LOCK_TIMEOUT), version_id)
        if not out["unchanged"]:
            self.request_sync()
        return out
