"""The server half of the LuCI stand-in (tests/luci/standin/luci-standin.js): CI only.

It serves the app's htdocs as uhttpd would, a page that loads the stand-in
runtime and shows one view, and a ``/ubus`` JSON-RPC endpoint that answers
what the owsync views call, from real things:

- ``luci.owsync status|sync|sync_peer``: relayed to a real owsync daemon's
  control socket (what the daemon's ubus object answers is the same status
  model; tests/test_openwrt_real.py checks that against the real ubusd).
  With no daemon there, ``Object not found`` (ubus status 4), as ubusd says.
- ``owsync.key info|set``: the real rpcd plugin, run as rpcd runs it.
- ``uci get``: the test's UCI file, read with the test parser of
  tests/test_openwrt_files.py.
- ``rc list``: a fixed answer given by the test.

Every response body is kept in ``responses`` so a test can search them.
"""

from __future__ import annotations

import json
import mimetypes
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import base_env

from owsync.control import ControlError, request

ROOT = Path(__file__).resolve().parents[1]
HTDOCS = ROOT / "luci/luci-app-owsync/htdocs"
STANDIN = Path(__file__).resolve().parent / "luci/standin"
PLUGIN = ROOT / "files/usr/libexec/rpcd/owsync.key"
NOT_FOUND = 4  # UBUS_STATUS_NOT_FOUND

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>owsync - stand-in LuCI</title>
<style>body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px;text-align:left}
.owsync-health-in-sync{background:#e6f6e6} .owsync-health-retrying{background:#fff6d6}
.owsync-health-failing{background:#fbe0e0} .alert-message{padding:6px;border:1px solid #caa}</style>
<script src="/standin/luci-standin.js"></script></head>
<body><div id="notifications"></div><div id="view"></div>
<script>showView(__VIEW__);</script></body></html>
"""


class StandIn:
    def __init__(self, control_socket: Path, uci_file: Path, key_file: Path, rc: dict) -> None:
        self.control_socket = control_socket
        self.uci_file = uci_file
        self.key_file = key_file
        self.rc = rc
        self.responses: list[str] = []
        self.calls: list[tuple[str, str, dict]] = []
        handler = type("Handler", (_Handler,), {"standin": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the ubus objects ----------------------------------------------------

    def call(self, obj: str, method: str, args: dict) -> list:
        self.calls.append((obj, method, args))
        if obj == "luci.owsync":
            return self._daemon(method, args)
        if obj == "owsync.key" and method in ("info", "set"):
            return [0, self._plugin(method, args)]
        if obj == "rc" and method == "list":
            return [0, self.rc]
        if obj == "uci" and method == "get" and args.get("config") == "owsync":
            from test_openwrt_files import read_uci

            return [0, {"values": read_uci(self.uci_file)}]
        return [NOT_FOUND]

    def _daemon(self, method: str, args: dict) -> list:
        if method == "sync_peer" and not args.get("peer"):
            return [0, {"error": "peer is empty: name a configured peer, or call sync"}]
        req = {"status": {"method": "status"}, "sync": {"method": "sync"},
               "sync_peer": {"method": "sync", "peer": args.get("peer")}}.get(method)  # fmt: skip
        if req is None:
            return [NOT_FOUND]
        try:
            reply = request(str(self.control_socket), req, timeout=10)
        except ControlError:
            return [NOT_FOUND]
        reply.pop("ok", None)
        return [0, reply]

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
        if self.path != "/ubus":
            return self._send(404, b"not found", "text/plain")
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _sid, obj, method, args = req["params"]
        result = self.standin.call(obj, method, args or {})
        body = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result})
        return self._send(200, body.encode(), "application/json")


def chromium_path() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(p, os.X_OK):
            return p
    return None
