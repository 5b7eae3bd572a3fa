"""The server half of the LuCI stand-in (tests/luci/standin/luci-standin.js): CI only.

It serves the app's htdocs as uhttpd would (``/www`` = the app's htdocs), a
page that loads the stand-in runtime and shows one view
(``/view/owsync/status``, ``?ro=1`` for a read-only user), and a ``/ubus``
JSON-RPC endpoint that behaves as uhttpd in front of rpcd and ubusd do, for
the calls the owsync views make:

- The order of uhttpd's checks: an object that does not exist is the JSON-RPC
  error -32000 "Object not found" (so ``luci.owsync`` while no daemon answers
  on the control socket, as when the daemon's ubus object is gone); a method
  the session's ACL does not grant is -32002 "Access denied"; arguments that
  already carry ``ubus_rpc_session`` are -32602 "Invalid parameters".  A
  method the object lacks is ubus status 3.
- The ACL is the app's own file (root/usr/share/rpcd/acl.d): the admin
  session gets its read and write grants, the read-only session
  (``11…1``) its read grants alone; both get what luci-base grants every
  user here (``uci get``, ``session access``).  ``uci get`` of a package the
  session may not read is ubus status 6; ``session access`` answers from the
  same grants, which is how LuCI's form.Map decides it is read-only.
- ``luci.owsync status|sync|sync_peer``: relayed to a real owsync daemon's
  control socket (``{"method": "status"}``, ``{"method": "sync", "peer": ...}``;
  what the daemon's ubus object answers is the same status model, which
  tests/test_openwrt_real.py checks against the real ubusd), with null
  values dropped as blobmsg drops them.  ``versions``, ``diff {"id"}`` and
  ``restore {"id"}`` are relayed the same way (``{"method": "diff", "id": N}``).
- ``groups``: when a test sets it (a function), the relayed status's
  ``groups`` is what it returns: the shape of status["groups"] in
  notes/groups-design.md, for a daemon of a tree that does not publish it yet.
- ``SampleStandIn``: the same, with ``luci.owsync versions|diff|restore``
  answered from a version store the test describes (no daemon needed): an
  unknown id is ``{"error": "no version N"}`` as the daemon answers it (README),
  or with ``not_found_status`` ubus status 4 (NOT_FOUND); an id that is
  neither an integer (a version of main) nor a string ``"GROUP:ID"`` (of a
  group's own store; a version's ``group`` absent means main) is status 2
  (INVALID_ARGUMENT), as ubusd's policy check.
- ``owsync.key info|set``: the real rpcd plugin openwrt/owsync/files/usr/libexec/rpcd/owsync.key
  (owsync.rpcd_key), run as rpcd runs it, on the test's key file.
- ``uci get``: the test's UCI file, read with the test parser of
  tests/test_openwrt_files.py.
- ``rc list``: a fixed answer given by the test (no init system here).

Every call is recorded in ``calls`` (object, method, arguments as the browser
sent them) and every response body in ``responses``, so a test can search them.
"""

from __future__ import annotations

import json
import mimetypes
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import base_env, read_uci

from owsync.openwrt.ubus_bridge import blob_safe  # what survives blobmsg, as the daemon sends it
from owsync.service.control import ControlError, request

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "luci/luci-app-owsync"
HTDOCS = APP / "htdocs"
ACL_FILE = APP / "root/usr/share/rpcd/acl.d/luci-app-owsync.json"
STANDIN = Path(__file__).resolve().parent / "luci/standin"
PLUGIN = ROOT / "openwrt/owsync/files/usr/libexec/rpcd/owsync.key"

ADMIN = "0" * 32
VIEWER = "1" * 32
METHOD_NOT_FOUND, PERMISSION_DENIED = 3, 6  # ubus status codes
JSONRPC_ERRORS = {
    "object": (-32000, "Object not found"),
    "access": (-32002, "Access denied"),
    "params": (-32602, "Invalid parameters"),
}
# What luci-base grants every logged-in user, as far as these pages need it.
BASE_GRANTS = {("uci", "get"), ("session", "access")}

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>owsync - stand-in LuCI</title>
<style>body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px;text-align:left}
.owsync-health-in-sync{background:#e6f6e6} .owsync-health-retrying{background:#fff6d6}
.owsync-health-failing{background:#fbe0e0} .owsync-health-syncing{background:#e0ecfb}
.alert-message{padding:6px;border:1px solid #caa;margin-bottom:6px}
.alert-message.warning{background:#fff6d6} .spinning{opacity:.6}
.label{padding:1px 5px;border-radius:3px;color:#fff;background:#999}
.label.success{background:#46a546} .label.notice{background:#62cffc}
.label.warning{background:#f89406} .label.important{background:#c43c35}
.cbi-value{margin:4px 0} .cbi-value-title{display:inline-block;width:12em}
.cbi-value-description{font-size:small;color:#555;margin-left:12em}
.table{display:table} .hidden{display:none}</style>
<script src="/standin/luci-standin.js"></script></head>
<body><div id="maincontent"><div id="view"></div></div>
<script>showView(__VIEW__);</script></body></html>
"""


def acl_grants() -> dict[str, dict[str, set]]:
    """Per session: the (object, method) pairs it may call, the UCI packages it may
    read and those it may write, from the app's ACL file as rpcd reads it."""
    (group,) = json.loads(ACL_FILE.read_text()).values()

    def grants(*parts):
        return {
            "ubus": BASE_GRANTS | {(o, m) for n in parts
                                   for o, ms in group[n].get("ubus", {}).items() for m in ms},
            "read": {p for n in parts for p in group[n].get("uci", [])},
            "write": set(group["write"].get("uci", [])) if "write" in parts else set(),
        }  # fmt: skip

    return {ADMIN: grants("read", "write"), VIEWER: grants("read")}


class StandIn:
    def __init__(self, control_socket: Path, uci_file: Path, key_file: Path, rc: dict) -> None:
        self.control_socket = control_socket
        self.uci_file = uci_file
        self.key_file = key_file
        self.rc = rc
        self.grants = acl_grants()
        self.responses: list[str] = []
        self.calls: list[tuple[str, str, dict]] = []
        self.groups: Callable[[], list[dict]] | None = None
        handler = type("Handler", (_Handler,), {"standin": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- uhttpd's checks, then the ubus objects ---------------------------------

    def _daemon_up(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.control_socket))
            except OSError:
                return False
        return True

    def call(self, sid: str, obj: str, method: str, args: dict) -> dict:
        """The JSON-RPC reply's ``result`` or ``error`` member, as uhttpd gives it."""
        self.calls.append((obj, method, args))
        objects = {"owsync.key", "rc", "uci", "session"}
        if obj not in objects and not (obj == "luci.owsync" and self._daemon_up()):
            return self._error("object")
        grants = self.grants.get(sid, {"ubus": set(), "read": set(), "write": set()})
        if (obj, method) not in grants["ubus"]:
            return self._error("access")
        if "ubus_rpc_session" in args:
            return self._error("params")
        if obj == "luci.owsync":
            return {"result": self._daemon(method, args)}
        if obj == "owsync.key" and method in ("info", "set"):
            return {"result": [0, self._plugin(method, args)]}
        if obj == "rc" and method == "list":
            name = args.get("name")
            return {"result": [0, {k: v for k, v in self.rc.items() if name in (None, k)}]}
        if obj == "uci" and method == "get":
            if args.get("config") not in grants["read"]:
                return {"result": [PERMISSION_DENIED]}
            return {"result": [0, {"values": self._uci_values()}]}
        if obj == "session" and method == "access":
            fn = args.get("function")
            allowed = (
                args.get("scope") == "uci"
                and fn in ("read", "write")
                and args.get("object") in grants[fn]
            )
            return {"result": [0, {"access": allowed}]}
        return {"result": [METHOD_NOT_FOUND]}

    @staticmethod
    def _error(kind: str) -> dict:
        code, message = JSONRPC_ERRORS[kind]
        return {"error": {"code": code, "message": message}}

    def _uci_values(self) -> dict:
        sections = read_uci(self.uci_file)
        for i, (name, s) in enumerate(sections.items()):
            s.update({".name": name, ".anonymous": False, ".index": i})
        return sections

    def _daemon(self, method: str, args: dict) -> list:
        req = {"status": {"method": "status"}, "sync": {"method": "sync"},
               "sync_peer": {"method": "sync", "peer": args.get("peer")},
               "versions": {"method": "versions"},
               "diff": {"method": "diff", "id": args.get("id")},
               "restore": {"method": "restore", "id": args.get("id")}}.get(method)  # fmt: skip
        if req is None:
            return [METHOD_NOT_FOUND]
        if method == "sync_peer" and not args.get("peer"):
            return [0, {"error": "peer is empty: name a configured peer, or call sync"}]
        try:
            reply = request(str(self.control_socket), req, timeout=10)
        except ControlError:
            return [10]  # UBUS_STATUS_CONNECTION_FAILED: the daemon went away mid-call
        reply.pop("ok", None)
        if method == "status" and self.groups is not None:
            reply["groups"] = self.groups()
        return [0, blob_safe(reply)]

    def _plugin(self, method: str, args: dict) -> dict:
        env = base_env(None)
        env["OWSYNC_KEY_FILE"] = str(self.key_file)
        env["OWSYNC_INIT_SCRIPT"] = "/nonexistent"  # no procd here: nothing to reload
        r = subprocess.run([sys.executable, str(PLUGIN), "call", method], input=json.dumps(args),
                           env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
        return json.loads(r.stdout)


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.standin.responses.append(body.decode("utf-8", "replace"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/favicon.ico":
            return self._send(200, b"", "image/x-icon")
        if path.startswith("/view/"):
            name = "view." + path[len("/view/") :].replace("/", ".")
            return self._send(200, PAGE.replace("__VIEW__", json.dumps(name)).encode(), "text/html")
        if path.startswith("/standin/"):
            base, rel = STANDIN, path[len("/standin/") :]
        else:
            base, rel = HTDOCS, path.lstrip("/")
        target = (base / rel).resolve()
        if base.resolve() not in target.parents or not target.is_file():
            return self._send(404, b"not found", "text/plain")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return self._send(200, target.read_bytes(), ctype)

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/ubus":
            return self._send(404, b"not found", "text/plain")
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        sid, obj, method, args = req["params"]
        reply = {"jsonrpc": "2.0", "id": req["id"]}
        reply.update(self.standin.call(sid, obj, method, args or {}))
        return self._send(200, json.dumps(reply).encode(), "application/json")


NOT_FOUND, INVALID_ARGUMENT = 4, 2  # ubus status codes


class SampleStandIn(StandIn):
    """The stand-in, with ``luci.owsync versions|diff|restore`` served from
    ``versions`` (newest first, as the daemon lists them), ``store`` and
    ``diffs`` (id -> the diff reply; a missing one is an identical text file).

    ``stores`` (group -> summary) is listed beside ``store`` when set.
    ``running`` false makes ``luci.owsync`` absent, as when no daemon runs.
    A restore keeps the content it replaces as a new version (reason
    ``restored``), as the daemon does, and is recorded in ``restored``.
    Other ``luci.owsync`` methods go to ``control_socket`` as in StandIn.
    """

    def __init__(self, uci_file: Path, key_file: Path, rc: dict, versions: list[dict],
                 store: dict, diffs: dict[int, dict] | None = None,
                 control_socket: Path = Path("/nonexistent/owsync.sock")) -> None:  # fmt: skip
        self.versions = versions
        self.store = store
        self.diffs = diffs or {}
        self.running = True
        self.restored: list[int | str] = []
        self.not_found_status = False
        self.stores: dict | None = None  # each group's store summary, as the daemon lists them
        super().__init__(control_socket, uci_file, key_file, rc)

    def _daemon_up(self) -> bool:
        return self.running

    def _daemon(self, method: str, args: dict) -> list:
        if method not in ("versions", "diff", "restore"):
            return super()._daemon(method, args)
        if method == "versions":
            reply = {"versions": self.versions, "store": self.store}
            if self.stores is not None:
                reply["stores"] = self.stores
            return [0, blob_safe(reply)]
        vid = args.get("id")
        group, number = "main", vid
        if isinstance(vid, str) and vid.rpartition(":")[2].isdigit() and vid.rpartition(":")[0]:
            group, number = vid.rpartition(":")[0], int(vid.rpartition(":")[2])
        elif type(vid) is not int:
            return [INVALID_ARGUMENT]
        v = next((v for v in self.versions
                  if v["id"] == number and v.get("group", "main") == group), None)  # fmt: skip
        if v is None:
            return [NOT_FOUND] if self.not_found_status else [0, {"error": f"no version {vid}"}]
        if method == "diff":
            reply = {"id": number, "group": group, "path": v["path"], "text": v["text"],
                     "current": "present",
                     "diff": "", "truncated": False}  # fmt: skip
            reply.update(self.diffs.get(vid, {}))
            return [0, blob_safe(reply)]
        self.restored.append(vid)
        same = [x["id"] for x in self.versions if x.get("group", "main") == group]
        kept = dict(v, id=max(same) + 1, reason="restored", peer="",
                    kept=int(time.time() * 1000))  # fmt: skip
        self.versions.insert(0, kept)
        return [0, {"restored": v["path"], "id": number}]
