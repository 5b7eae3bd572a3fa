"""The local control API: one JSON request, one JSON reply, on a Unix socket.

Requests: ``{"method": "status"}``,
``{"method": "sync", "peer": "<optional>", "wait": false}``,
``{"method": "versions", "path": "<optional>"}``, ``{"method": "diff", "id": N}``,
``{"method": "restore", "id": N}`` (N: a version of main, or ``"GROUP:ID"`` one of
another sync group, as ``versions`` names them) and ``{"method": "vrrp", "instance": NAME,
"role": "MASTER"|"BACKUP"|"FAULT"}`` (keepalived's transition).  Replies are
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The same
methods, with the same results, are what the ubus object publishes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable

from .config import MAIN

log = logging.getLogger("owsync")

MAX_REQUEST = 64 * 1024


class ControlError(Exception):
    pass


class NotRunning(ControlError):
    """No daemon answers on the control socket."""


class ControlServer(threading.Thread):
    def __init__(self, path: str, handle: Callable[[dict], dict]) -> None:
        super().__init__(name="owsync-control", daemon=True)
        self.path = path
        self.handle = handle
        self.sock = self._bind(path)

    @staticmethod
    def _bind(path: str) -> socket.socket:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                raise ControlError(f"another owsync daemon answers on {path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # left over from a daemon that died
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600
        try:
            s.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(16)
        return s

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while b"\n" not in data and len(data) < MAX_REQUEST:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                try:
                    req = json.loads(data)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError:
                    reply = {"ok": False, "error": "request is not a JSON object"}
                else:
                    conn.settimeout(None)  # a waited-for sync may take a while
                    reply = self.handle(req)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                pass


def request(path: str, req: dict, timeout: float | None = 10.0) -> dict:
    """Send one request to a running daemon; ControlError when none answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(
                f"owsync daemon is not running (no control socket at {path})"
            ) from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (run as root)") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        raise ControlError("the daemon did not answer in time") from None
    finally:
        s.close()
    try:
        return json.loads(data)
    except ValueError:
        raise ControlError("the daemon sent an unreadable reply") from None


def handle(d, req: dict) -> dict:
    """One control request to daemon ``d``: its status model, or a sync."""
    method = req.get("method")
    if method == "status":
        return {"ok": True, **d.status()}
    if method == "sync":
        peer = req.get("peer") or None
        if peer is not None and not isinstance(peer, str):
            return {"ok": False, "error": "peer must be a string"}
        try:
            out = d.request_sync(peer, manual=True, wait=bool(req.get("wait")))
        except KeyError:
            return {"ok": False, "error": f"unknown peer {peer!r}"}
        if req.get("wait"):
            return {"ok": all(r.ok for r in out), "results": [r.as_dict() for r in out]}
        return {"ok": True, "started": out}
    if method in ("versions", "diff", "restore"):
        return versions_request(d, method, req)
    if method == "vrrp":
        return vrrp_request(d, req)
    return {"ok": False, "error": f"unknown method {method!r}"}


def vrrp_request(d, req: dict) -> dict:
    """keepalived's transition of a VRRP instance: ``instance`` and ``role``."""
    try:
        return {"ok": True, **d.vrrp(req.get("instance"), req.get("role"))}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}


def versions_request(d, method: str, req: dict) -> dict:
    """``versions`` (an optional ``path``), ``diff`` and ``restore`` (an ``id``)."""
    # lazy: `owsync status` and `owsync sync` import this module, not the version store
    from ..io.database import LockBusy
    from . import versions_view

    if method == "versions":
        path = req.get("path") or None
        if path is not None and not isinstance(path, str):
            return {"ok": False, "error": "path must be a string"}
        return {"ok": True, **versions_view.listing(d.cfg, path)}
    try:
        group, vid = versions_view.parse_ref(req.get("id"))
    except ValueError:
        return {"ok": False, "error": "id must be a version number, or GROUP:NUMBER in a group"
                " other than main (owsync versions lists them)"}  # fmt: skip
    try:
        if method == "diff":
            return {"ok": True, **versions_view.diff(d.cfg, versions_view.ref(group, vid))}
        if group == MAIN:
            return {"ok": True, **d.restore(vid)}
        versions_view.find_group(d.cfg, group)  # LookupError for a group not configured
        return {"ok": True, **d.restore(vid, group)}
    except LookupError as exc:
        return {"ok": False, "error": str(exc)}
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    except LockBusy:
        return {"ok": False, "error": "a sync session is using the directory: try again"}
    except OSError as exc:
        return {"ok": False, "error": f"cannot restore: {exc.strerror or exc}"}
