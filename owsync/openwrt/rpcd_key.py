"""rpcd exec plugin ``owsync.key``: the pre-shared key, seen from LuCI.

Installed as ``/usr/libexec/rpcd/owsync.key``; rpcd runs it as
``owsync.key list`` (print the methods) and ``owsync.key call METHOD`` (the
arguments as JSON on stdin, the answer as JSON on stdout), and checks the
caller's ACL before it does.

- ``info`` -> ``{"set": true, "fingerprint": "3f9a:1c0d:e2b4:7a58"}``, or
  ``{"set": false}``: never the key itself, so a user who may only look at
  LuCI cannot read it.
- ``set`` ``{"key": "<64 hex>"}`` -> ``{"fingerprint": ...}``: writes the
  root-only key file atomically and reloads owsync.

It works whether or not the daemon runs (a fresh install has no key and no
daemon yet).  ``OWSYNC_KEY_FILE`` and ``OWSYNC_INIT_SCRIPT`` move the file and
the init script for tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from ..core.crypto import fingerprint, parse_key
from ..service.config import ConfigError, read_key_text
from .uci_config import key_file_for
from .uci_key import write_key

METHODS = {"info": {}, "set": {"key": "str"}}


def key_path() -> str:
    return os.environ.get("OWSYNC_KEY_FILE") or key_file_for(None)


def info() -> dict:
    try:
        text = read_key_text(key_path())
        if text is None:
            return {"set": False}
        key = parse_key(text)
    except ConfigError as exc:
        return {"set": False, "error": str(exc)}
    except ValueError as exc:
        return {"set": False, "error": f"{key_path()}: {exc}"}
    return {"set": True, "fingerprint": fingerprint(key)}


def set_key(args: dict) -> dict:
    text = args.get("key")
    if not isinstance(text, str):
        return {"error": "key must be a string of 64 hex characters"}
    try:
        key = parse_key(text)
    except ValueError as exc:
        return {"error": str(exc)}
    try:
        write_key(key_path(), key.hex())
    except OSError as exc:
        return {"error": f"cannot write {key_path()}: {exc.strerror or exc}"}
    reload_service()
    return {"fingerprint": fingerprint(key)}


def reload_service() -> None:
    """Tell procd: the init script declares the key file, so a running daemon gets SIGHUP."""
    script = os.environ.get("OWSYNC_INIT_SCRIPT", "/etc/init.d/owsync")
    if not os.access(script, os.X_OK):
        return
    quiet = subprocess.DEVNULL
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # the key is in place
        subprocess.run([script, "reload"], stdin=quiet, stdout=quiet, stderr=quiet, timeout=30)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["list"]:
        print(json.dumps(METHODS))
        return 0
    if len(argv) == 2 and argv[0] == "call" and argv[1] in METHODS:
        try:
            args = json.loads(sys.stdin.read() or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            print(json.dumps({"error": "arguments must be a JSON object"}))
            return 0
        print(json.dumps(info() if argv[1] == "info" else set_key(args)))
        return 0
    print("usage: owsync.key list | call info|set", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
