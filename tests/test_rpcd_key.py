"""The rpcd exec plugin owsync.key, run as rpcd runs it: `list`, and `call METHOD`
with the arguments on stdin (rpcd itself, with its ACL checks, is exercised by the
opt-in LuCI tests).  The init script it reloads is a recording script of the
test's own: procd cannot run here (tests/test_initscript_real.py runs the real
one)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import KEY, base_env

from owsync.core.crypto import fingerprint

PLUGIN = Path(__file__).parent.parent / "openwrt/owsync/files/usr/libexec/rpcd/owsync.key"


def run(tmp: Path, *args: str, stdin: str = "") -> tuple[int, str]:
    env = base_env(None)
    env["OWSYNC_KEY_FILE"] = str(tmp / "owsync" / "key")
    env["OWSYNC_INIT_SCRIPT"] = str(tmp / "init")
    r = subprocess.run([sys.executable, str(PLUGIN), *args], input=stdin, env=env,
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def test_list_declares_info_and_set(tmp_path):
    code, out = run(tmp_path, "list")
    assert code == 0 and json.loads(out) == {"info": {}, "set": {"key": "str"}}


def test_set_writes_a_root_only_key_and_reloads_and_info_never_shows_it(tmp_path):
    init = tmp_path / "init"
    init.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/reloads\n')
    init.chmod(0o755)
    assert run(tmp_path, "call", "info", stdin="{}") == (0, '{"set": false}\n')
    args = json.dumps({"key": KEY.upper(), "ubus_rpc_session": "x" * 32})
    code, out = run(tmp_path, "call", "set", stdin=args)
    fp = fingerprint(bytes.fromhex(KEY))
    assert code == 0 and json.loads(out) == {"fingerprint": fp}
    key_file = tmp_path / "owsync" / "key"
    assert key_file.read_text() == KEY + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert os.listdir(key_file.parent) == ["key"]  # no temp file left behind
    assert (tmp_path / "reloads").read_text() == "reload\n"
    code, out = run(tmp_path, "call", "info", stdin='{"ubus_rpc_session": "s"}')
    assert json.loads(out) == {"set": True, "fingerprint": fp} and KEY not in out


def test_bad_keys_are_refused_and_leave_the_old_one(tmp_path):
    run(tmp_path, "call", "set", stdin=json.dumps({"key": KEY}))
    key_file = tmp_path / "owsync" / "key"
    for bad in ("", "abc", "g" * 64, KEY + "00", 42):
        code, out = run(tmp_path, "call", "set", stdin=json.dumps({"key": bad}))
        assert code == 0 and "error" in json.loads(out), (bad, out)
    for junk in ("not json", "[1]"):
        code, out = run(tmp_path, "call", "set", stdin=junk)
        assert "error" in json.loads(out)
    assert key_file.read_text() == KEY + "\n"
    code, _ = run(tmp_path, "call", "nosuch")
    assert code == 2


def test_a_broken_key_file_is_reported_without_its_content(tmp_path):
    key_file = tmp_path / "owsync" / "key"
    key_file.parent.mkdir()
    key_file.write_text("secret-not-a-key\n")
    _, out = run(tmp_path, "call", "info")
    reply = json.loads(out)
    assert reply["set"] is False and "64 hex" in reply["error"] and "secret" not in out
