"""The ubus objects ``owsync`` and ``luci.owsync``, session events, service reloads.

The python ``ubus`` bindings keep one global connection, and libubus is not
thread-safe, so one thread owns it: it registers the object, runs
``ubus.loop()`` in short slices (the GIL is released while it waits), and in
between sends what other threads queued (events, ``service event`` calls).
If ubusd is absent or restarts, the daemon goes on syncing; this thread logs
it once and reconnects and re-registers when it can.

Signals: the daemon installs its Python handlers for SIGTERM, SIGINT and
SIGHUP before this thread first calls ``ubus.loop()``; libubox's uloop only
takes over signals whose handler is still the default, so they keep reaching
owsync.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..service.context import SessionResult
from ..service.control import versions_request, vrrp_request
from ..service.daemon import Daemon

log = logging.getLogger("owsync")

OBJECT = "owsync"  # for the shell: ubus call owsync status|sync|sync_peer|vrrp|...
LUCI_OBJECT = "luci.owsync"  # the same methods for LuCI, through rpcd's ACL
SESSION_ARG = "ubus_rpc_session"
EVENT = "owsync.sync"
RETRY = 2.0  # seconds between reconnection attempts
HEALTH = 2.0  # seconds between checks that the object is still registered
_PACKAGE = re.compile(r"[A-Za-z0-9_-]+")
MAX_EVENT_FILES = 100
MAX_EVENTS = 64  # events queued between two turns of the ubus loop


def changed_packages(paths: Iterable[str]) -> list[str]:
    """The UCI packages among changed paths: files directly in the config directory."""
    return sorted({p for p in paths if "/" not in p and _PACKAGE.fullmatch(p)})


def blob_safe(value):
    """Drop None values (blobmsg has no null) from nested dicts and lists."""
    if isinstance(value, dict):
        return {k: blob_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [blob_safe(v) for v in value if v is not None]
    return value


class SessionNotifier:
    """A daemon session hook: reload services whose UCI package changed, then tell the bus.

    ``call(obj, method, data)`` and ``send(event, data)`` are the bus; the
    UbusBridge provides them on OpenWrt, tests may provide their own.
    """

    def __init__(
        self,
        call: Callable[[str, str, dict], None],
        send: Callable[[str, dict], None],
        reload_enabled: Callable[[], bool],
    ) -> None:
        self.call = call
        self.send = send
        self.reload_enabled = reload_enabled

    def __call__(self, result: SessionResult, direction: str) -> list[str]:
        """Returns the packages whose services it asked procd to reload."""
        if not result.changed:
            return []
        packages = changed_packages(result.changed) if self.reload_enabled() else []
        for pkg in packages:
            # what OpenWrt's reload_config does: procd runs the reload triggers
            self.call("service", "event", {"type": "config.change", "data": {"package": pkg}})
        self.send(
            EVENT,
            {
                "peer": result.peer,
                "direction": direction,
                "received": result.received,
                "deleted": result.deleted,
                "files": list(result.changed[:MAX_EVENT_FILES]),
                "reloaded": packages,
                "conflicts": list(result.conflicts[:MAX_EVENT_FILES]),
            },
        )
        return packages


def attach(daemon: Daemon) -> UbusBridge:
    """Give ``daemon`` its ubus objects and service reloads, from its start on.

    The bridge is one of the daemon's front ends (started by ``Daemon.start``,
    after the peer workers) and its SessionNotifier one of its session hooks.
    Absent bindings just log, when the bridge starts.
    """
    bus = UbusBridge(daemon, daemon.cfg.ubus_socket)
    daemon.on_session.append(SessionNotifier(bus.call, bus.send, lambda: daemon.cfg.reload_enabled))
    daemon.front_ends.append(bus)
    return bus


class UbusBridge(threading.Thread):
    def __init__(self, daemon: Daemon, socket_path: str | None = None) -> None:
        super().__init__(name="owsync-ubus", daemon=True)
        self.d = daemon
        self.socket_path = socket_path
        # What other threads ask of the bus, bounded whatever ubusd does: service
        # reloads by their arguments (a package's reload asked twice while ubusd
        # is away is one reload once it is back), events only while connected
        # (a notification is stale once ubusd is back), at most MAX_EVENTS.
        self._lock = threading.Lock()
        self._calls: dict[tuple, tuple[str, str, dict]] = {}
        self._events: deque = deque(maxlen=MAX_EVENTS)
        self.available = True  # False once the bindings are found missing
        self.connected = False
        self.registered_once = False

    # called from any thread
    def call(self, obj: str, method: str, data: dict) -> None:
        if not self.available:
            return
        key = (obj, method, json.dumps(data, sort_keys=True))
        with self._lock:
            self._calls[key] = (obj, method, data)

    def send(self, event: str, data: dict) -> None:
        if not (self.available and self.connected):
            return
        with self._lock:
            self._events.append((event, data))

    # --- the ubus thread ----------------------------------------------------

    def run(self) -> None:
        try:
            import ubus  # lazy: optional binding, absent off OpenWrt
        except ImportError:
            level = logging.WARNING if self.d.cfg.reload_enabled else logging.INFO
            log.log(level, "no ubus python bindings: no ubus object, no service reloads")
            self.available = False
            with self._lock:
                self._calls.clear()
                self._events.clear()
            return
        self.ubus = ubus
        down_logged = False
        last_check = 0.0
        while not self.d.stopping.is_set():
            if not self.connected:
                try:
                    self._connect()
                except Exception as exc:
                    if not down_logged:
                        why = str(exc).strip()
                        log.warning("ubus unavailable (%s); syncing goes on, retrying", why)
                        down_logged = True
                    self._drop()
                    self.d.stopping.wait(RETRY)
                    continue
                down_logged = False
            self._flush()
            started = time.monotonic()
            try:
                ubus.loop(500)
            except Exception as exc:
                self._lost(f"loop: {exc}")
                continue
            now = time.monotonic()
            # uloop ends at once when the connection is gone; check then, and now and again
            if now - started < 0.4 or now - last_check >= HEALTH:
                last_check = now
                if not self._healthy():
                    self._lost("ubusd went away")
        self._drop()

    def _connect(self) -> None:
        ubus = self.ubus
        if ubus.get_connected():
            ubus.disconnect()
        ubus.connect(socket_path=self.socket_path) if self.socket_path else ubus.connect()
        for name, session_arg in ((OBJECT, False), (LUCI_OBJECT, True)):
            try:
                ubus.add(name, self._methods(session_arg))
            except Exception as exc:
                why = f"cannot register {name} (another owsync daemon?): {exc}"
                raise RuntimeError(why) from None
        self.connected = True
        log.info("ubus objects %s, %s %sregistered", OBJECT, LUCI_OBJECT,
                 "re-" if self.registered_once else "")  # fmt: skip
        self.registered_once = True

    def _methods(self, session_arg: bool) -> dict:
        """The methods of one object; the LuCI one declares ``ubus_rpc_session``.

        python-ubus 0.1.3 refuses a call that lacks a declared argument or
        carries an undeclared one, and uhttpd adds ``ubus_rpc_session`` to
        every call a browser makes.  So the shell's methods (typed as
        ``ubus call owsync sync``) and the browser's cannot be the same
        methods: the same handlers are published twice.
        """
        string = self.ubus.BLOBMSG_TYPE_STRING
        integer = self.ubus.BLOBMSG_TYPE_INT32
        common = {SESSION_ARG: string} if session_arg else {}
        # a version: main's by its number; LuCI's object takes a sync group's too,
        # "GROUP:ID", a string (any type passes python-ubus's check of UNSPEC)
        version = self.ubus.BLOBMSG_TYPE_UNSPEC if session_arg else integer
        return {
            "status": {"method": self._status, "signature": dict(common)},
            "sync": {"method": self._sync, "signature": dict(common)},
            "sync_peer": {"method": self._sync, "signature": {**common, "peer": string}},
            "versions": {"method": self._versions, "signature": dict(common)},
            "diff": {"method": self._diff, "signature": {**common, "id": version}},
            "restore": {"method": self._restore, "signature": {**common, "id": version}},
            # keepalived's hotplug script: /etc/hotplug.d/keepalived/100-owsync
            "vrrp": {"method": self._vrrp,
                     "signature": {**common, "instance": string, "role": string}},
        }  # fmt: skip

    def _healthy(self) -> bool:
        try:
            return OBJECT in self.ubus.objects(OBJECT)
        except Exception:
            return False

    def _lost(self, why: str) -> None:
        log.warning("lost ubus (%s); syncing goes on, reconnecting", why)
        self._drop()

    def _drop(self) -> None:
        self.connected = False
        try:
            if self.ubus.get_connected():
                self.ubus.disconnect()
        except Exception:
            pass

    def _flush(self) -> None:
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            events = list(self._events)
            self._events.clear()
        for obj, method, data in calls:
            try:
                self.ubus.call(obj, method, data)
            except Exception as exc:
                log.warning("ubus call %s %s failed: %s", obj, method, exc)
        for event, data in events:
            try:
                self.ubus.send(event, data)
            except Exception as exc:
                log.warning("ubus send %s failed: %s", event, exc)

    def _status(self, handler, data) -> None:
        handler.reply(blob_safe(self.d.status()))

    def _versions(self, handler, data) -> None:
        self._answer(handler, {"method": "versions"})

    def _diff(self, handler, data) -> None:
        self._answer(handler, {"method": "diff", "id": (data or {}).get("id")})

    def _restore(self, handler, data) -> None:
        self._answer(handler, {"method": "restore", "id": (data or {}).get("id")})

    def _vrrp(self, handler, data) -> None:
        data = data or {}
        out = vrrp_request(self.d, {"instance": data.get("instance"), "role": data.get("role")})
        out.pop("ok", None)
        handler.reply(blob_safe(out))

    def _answer(self, handler, req: dict) -> None:
        """The control request's reply, its ``ok`` dropped; a failure as ``error``."""
        out = versions_request(self.d, req["method"], req)
        out.pop("ok", None)
        handler.reply(blob_safe(out))

    def _sync(self, handler, data) -> None:
        peer = (data or {}).get("peer")
        if peer is not None and not peer:
            handler.reply({"error": "peer is empty: name a configured peer, or call sync"})
            return
        try:
            started = self.d.request_sync(peer, manual=True)
        except KeyError:
            handler.reply({"error": f"unknown peer {peer!r}"})
            return
        handler.reply({"started": started})
