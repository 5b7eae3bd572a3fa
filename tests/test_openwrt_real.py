"""owsync against OpenWrt's real ubusd, ubus and uci CLIs, procd, and the python bindings.

These components build only against OpenWrt's C libraries; point the tests at
them (README, "Tests that need outside components"):

    OWSYNC_UBUSD=/path/ubusd OWSYNC_UBUS=/path/ubus OWSYNC_UCI=/path/uci \
    OWSYNC_PROCD=/path/procd OWSYNC_PYBINDINGS=/dir/with/ubus/and/uci/modules

Each test is skipped, saying what is missing, when its components are absent.
OWSYNC_PROCD is optional: without it, the reload test stands a recording
`service` object up on the real bus in procd's place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    ENV,
    KEY,
    Bus,
    DaemonNode,
    bindings_env,
    free_port,
    need,
    tracked,
    wait_for,
)

from owsync.core.crypto import fingerprint

HERE = Path(__file__).parent


@pytest.fixture
def bus(tmp_path):
    need("UBUSD", "UBUS")
    b = Bus(tmp_path)
    yield b
    b.stop()


class OpenWrtDaemon(DaemonNode):
    """A daemon with the bindings on its path and the test's ubus socket."""

    def configure(self, peers, bus: Bus | None = None, **kw):
        extra = f"ubus_socket={bus.sock}\nreload_services=1\n" if bus else ""
        return super().configure(peers, extra=extra, **kw)

    def start(self, cmd=None, env=None) -> DaemonNode:
        cmd = cmd or [sys.executable, "-m", "owsync", "daemon", "-f", "-c", str(self.conf)]
        return super().start(cmd, env or bindings_env())


@pytest.fixture
def owrt(tmp_path):
    yield from tracked(tmp_path, OpenWrtDaemon)


def registered(bus: Bus) -> bool:
    return bus.has("owsync")


def test_ubus_object_status_and_sync_from_the_real_cli(bus, owrt):
    a, b = owrt("a"), owrt("b")
    a.configure([b.addr], bus=bus)
    b.configure([a.addr])
    (b.dir / "dhcp").write_text("config dnsmasq\n")
    a.start()
    b.start()
    assert wait_for(lambda: registered(bus), 10), a.text()
    st = bus.call("owsync", "status")
    assert st["version"] and st["encryption"] is True and st["sync_dir"] == str(a.dir)
    # and what 1.2.0's rpcd plugin published under the same name
    assert st["status"] == "RUNNING" and st["enabled"] is True and st["pid"] == a.proc.pid
    assert st["database"]["path"] == str(a.db)
    assert st["config"] == {"encryption_enabled": True, "peer_count": 1, "sync_dir": str(a.dir)}
    (peer,) = st["peers"]
    assert peer["address"] == b.addr
    # as typed: `ubus call owsync sync`, no argument at all
    assert bus.call("owsync", "sync") == {"started": [b.addr]}
    assert bus.call("owsync", "sync_peer", {"peer": b.addr}) == {"started": [b.addr]}
    assert "unknown peer" in bus.call("owsync", "sync_peer", {"peer": "10.9.9.9"})["error"]
    assert "empty" in bus.call("owsync", "sync_peer", {"peer": ""})["error"]
    assert wait_for(lambda: a.has("dhcp"), 5)
    # `ubus -v list` shows every method's arguments
    listed = bus.ubus("-v", "list", "owsync").stdout
    assert '"status":{}' in listed and '"sync":{}' in listed, listed
    assert '"sync_peer":{"peer":"String"}' in listed, listed
    # what LuCI calls: the same methods, each declaring the session uhttpd adds
    session = {"ubus_rpc_session": "0" * 32}
    luci = bus.call("luci.owsync", "status", session)
    assert luci["pid"] == st["pid"] and luci["peers"][0]["address"] == b.addr
    assert bus.call("luci.owsync", "sync", session) == {"started": [b.addr]}
    assert bus.call("luci.owsync", "sync_peer", {**session, "peer": b.addr}) == {
        "started": [b.addr]
    }
    # keepalived's transition (the hotplug script's call), on both objects
    assert '"vrrp":{"instance":"String","role":"String"}' in listed, listed
    got = bus.call("owsync", "vrrp", {"instance": "VI_1", "role": "NOTIFY_MASTER"})
    assert got["role"] == "MASTER" and got["peers"] == [b.addr] and got["since"] > 0
    got = bus.call("luci.owsync", "vrrp", {**session, "instance": "VI_1", "role": "BACKUP"})
    assert got["role"] == "BACKUP"
    assert "role must be" in bus.call("owsync", "vrrp", {"instance": "VI_1", "role": "x"})["error"]
    assert bus.call("owsync", "status")["vrrp"]["VI_1"]["role"] == "BACKUP"
    # python-ubus refuses an undeclared argument and a missing declared one: hence two objects
    assert bus.ubus("call", "owsync", "status", json.dumps(session)).returncode != 0
    assert bus.ubus("call", "luci.owsync", "status").returncode != 0
    assert KEY not in json.dumps(luci)
    assert a.proc.poll() is None


def test_uci_commit_and_sighup_change_the_peers(bus, owrt, tmp_path):
    need("UBUSD", "UBUS", "UCI")
    a, b = owrt("a"), owrt("b")
    b.configure([f"127.0.0.1:{free_port()}"])  # B neither pushes to A nor pulls from it
    confdir = tmp_path / "uci"
    confdir.mkdir()
    (confdir / "owsync").write_text("config owsync 'main'\n")

    def uci(*args):
        r = subprocess.run([ENV["UCI"], "-c", str(confdir), *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    for opt, value in [
        ("enabled", "1"), ("host", "127.0.0.1"), ("port", str(a.port)), ("dir", str(a.dir)),
        ("db", str(a.db)), ("control_socket", str(a.sock)), ("ubus_socket", str(bus.sock)),
    ]:  # fmt: skip
        uci("set", f"owsync.main.{opt}={value}")
    # the key in its root-only file beside the UCI directory, not in UCI
    (tmp_path / "owsync").mkdir()
    (tmp_path / "owsync" / "key").write_text(KEY + "\n")
    uci("add_list", "owsync.main.include=*")
    uci("add_list", f"owsync.main.peer=127.0.0.1:{b.port + 1 if b.port < 65535 else 1}")
    uci("commit", "owsync")
    a.start([sys.executable, "-m", "owsync", "daemon", "-f", "--uci-dir", str(confdir)])
    b.start()
    (a.dir / "from-a").write_text("a")
    assert wait_for(lambda: registered(bus), 10), a.text()
    assert len(bus.call("owsync", "status")["peers"]) == 1
    time.sleep(0.5)
    assert not b.has("from-a")
    uci("add_list", f"owsync.main.peer={b.addr}")
    uci("commit", "owsync")
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(bus.call("owsync", "status")["peers"]) == 2, 5), a.text()
    assert wait_for(lambda: b.has("from-a", b"a"), 5), a.text()


def test_received_dhcp_reloads_dhcp_through_the_bus(bus, owrt, tmp_path):
    a, b = owrt("a"), owrt("b")
    a.configure([b.addr], bus=bus)
    b.configure([a.addr])
    out = tmp_path / "reloads"
    if os.access(ENV["PROCD"], os.X_OK):
        # the real thing: procd runs the reload trigger an init script would register
        bus.start_procd(tmp_path)
        script = tmp_path / "dnsmasq-reload.sh"
        script.write_text(f'#!/bin/sh\necho "dhcp $1" >> {out}\n')
        script.chmod(0o755)
        trigger = ["if", ["eq", "package", "dhcp"], ["run_script", str(script), "reload"]]
        bus.call(
            "service", "set", {"name": "dnsmasq-test", "triggers": [["config.change", trigger]]}
        )
        expect = "dhcp reload"
    else:
        # no procd here: a recording `service` object on the real bus stands in for it
        bus.spawn([sys.executable, str(HERE / "fake_service.py"), str(bus.sock), str(out)],
                  env=bindings_env())  # fmt: skip
        assert wait_for(lambda: bus.has("service"), 10)
        expect = '"package": "dhcp"'
    a.start()
    b.start()
    assert wait_for(lambda: registered(bus), 10)
    (b.dir / "dhcp").write_text("config dnsmasq\n")
    (b.dir / "notes.txt").write_text("x\n")
    assert wait_for(lambda: a.has("dhcp"), 5)
    assert wait_for(lambda: out.exists() and expect in out.read_text(), 10), a.text()
    assert "notes" not in out.read_text()


def test_ubusd_restart_leaves_the_daemon_syncing_and_re_registered(bus, owrt):
    a, b = owrt("a"), owrt("b")
    a.configure([b.addr], bus=bus)
    b.configure([a.addr])
    a.start()
    b.start()
    assert wait_for(lambda: registered(bus), 10)
    bus.kill_ubusd()
    (b.dir / "while-down").write_text("x")
    assert wait_for(lambda: a.has("while-down", b"x"), 5), a.text()
    assert wait_for(lambda: "lost ubus" in a.text() or "ubus unavailable" in a.text(), 5)
    bus.start()
    assert wait_for(lambda: registered(bus), 15), a.text()
    assert bus.call("owsync", "status")["peers"][0]["address"] == b.addr
    (b.dir / "after").write_text("y")
    assert wait_for(lambda: a.has("after", b"y"), 5)
    assert a.proc.poll() is None


def test_procd_runs_the_instance_as_the_init_script_declares_it(bus, tmp_path):
    """procd itself: reload sends SIGHUP (same PID, listener kept), a dead daemon respawns.

    OpenWrt's rc.common and procd.sh (openwrt/openwrt) are not here, so the
    instance is registered with the parameters openwrt/owsync/files/etc/init.d/owsync sets:
    command, respawn, stdout/stderr, file /etc/config/owsync, reload_signal HUP.
    """
    need("UBUSD", "UBUS", "UCI", "PROCD")
    bus.start_procd(tmp_path)
    confdir, sync_dir, log = tmp_path / "uci", tmp_path / "a", tmp_path / "daemon.log"
    confdir.mkdir()
    sync_dir.mkdir()
    port = free_port()
    (confdir / "owsync").write_text(
        "config owsync 'main'\n\toption enabled '1'\n\toption host '127.0.0.1'\n"
        f"\toption port '{port}'\n\toption dir '{sync_dir}'\n\toption db '{tmp_path}/a.db'\n"
        f"\toption key '{KEY}'\n\toption control_socket '{tmp_path}/a.sock'\n"
        f"\toption ubus_socket '{bus.sock}'\n\tlist include '*'\n"
        f"\tlist peer '127.0.0.1:{free_port()}'\n"
    )
    daemon = f"exec {sys.executable} -m owsync daemon -f --no-syslog --uci-dir {confdir}"
    service = {
        "name": "owsync",
        "instances": {
            "owsync": {
                "command": ["/bin/sh", "-c", f"{daemon} 2>>{log}"],
                "env": {"PYTHONPATH": bindings_env()["PYTHONPATH"]},
                "respawn": [3600, 1, 5],
                "stdout": True,
                "stderr": True,
                "file": [str(confdir / "owsync")],
                "reload_signal": signal.SIGHUP.value,
            }
        },
    }

    def pid() -> int | None:
        listed = bus.call("service", "list", {"name": "owsync"})
        return listed.get("owsync", {}).get("instances", {}).get("owsync", {}).get("pid")

    try:
        bus.call("service", "set", service)
        assert wait_for(lambda: registered(bus), 15), log.read_text() if log.exists() else ""
        first = pid()
        # uci commit, then what `service owsync reload` does: the same instance, a changed file
        subprocess.run([ENV["UCI"], "-c", str(confdir), "add_list",
                        f"owsync.main.peer=127.0.0.1:{free_port()}"], check=True)  # fmt: skip
        subprocess.run([ENV["UCI"], "-c", str(confdir), "commit", "owsync"], check=True)
        bus.call("service", "set", service)
        assert wait_for(lambda: len(bus.call("owsync", "status")["peers"]) == 2, 10)
        assert pid() == first and "configuration reloaded" in log.read_text()
        # the listener survived the reload
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        # killed: procd starts it again
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: pid() not in (None, first), 15)
        assert wait_for(lambda: registered(bus), 15)
    finally:
        bus.call("service", "delete", {"name": "owsync"})
    assert wait_for(lambda: pid() is None, 10)


def test_versions_diff_and_restore_on_the_real_bus(bus, owrt):
    """`ubus call owsync versions`, `diff {"id": N}` and `restore {"id": N}` as an
    admin types them; the restore reaches the peer.  The same on luci.owsync."""
    a, b = owrt("a"), owrt("b")
    a.configure([b.addr], bus=bus)
    b.configure([a.addr])
    (b.dir / "firewall").write_text("config zone lan\n")
    a.start()
    b.start()
    assert wait_for(lambda: registered(bus) and a.has("firewall"), 10), a.text()
    (b.dir / "firewall").write_text("config zone oops\n")
    assert wait_for(lambda: a.has("firewall", b"config zone oops\n"), 10)
    listed = bus.ubus("-v", "list", "owsync").stdout
    assert '"versions":{}' in listed and '"restore":{"id":"Integer"}' in listed, listed
    assert '"diff":{"id":"Integer"}' in listed, listed
    kept = bus.call("owsync", "versions")
    (v,) = [v for v in kept["versions"] if v["path"] == "firewall"]
    assert v["reason"] == "replaced" and v["text"] is True
    assert v["peer"] == b.addr  # b's session, or a's (incoming: the peer it is, no port)
    assert v["kept"] > 1_700_000_000_000  # milliseconds: blobmsg carries 64-bit integers
    assert kept["store"]["max_size"] == 1024 * 1024
    d = bus.call("owsync", "diff", {"id": v["id"]})
    assert "-config zone lan" in d["diff"] and "+config zone oops" in d["diff"], d
    assert "no version" in bus.call("owsync", "diff", {"id": 9999})["error"]
    session = {"ubus_rpc_session": "0" * 32}
    assert bus.call("luci.owsync", "versions", session)["versions"][0]["id"] == v["id"]
    out = bus.call("owsync", "restore", {"id": v["id"]})
    assert out == {"restored": "firewall", "id": v["id"], "unchanged": False}, out
    assert wait_for(lambda: b.has("firewall", b"config zone lan\n"), 10), b.text()
    assert a.has("firewall", b"config zone lan\n")


def _staging_ns(save: Path) -> list[str]:
    """A command prefix: a mount namespace of its own whose /tmp/.uci (uci's
    staging directory, shared by everything on this machine otherwise) is
    ``save``, so that what the test stages there no other process sees."""
    return ["unshare", "--mount", "--", "sh", "-c",
            f'mount --bind "{save}" /tmp/.uci && exec "$@"', "sh"]  # fmt: skip


def test_a_key_set_in_uci_moves_to_its_file_and_nothing_staged_is_committed(owrt, tmp_path):
    """`uci set owsync.main.key=...; uci commit owsync`, then changes the admin
    staged and did not apply (`uci set` without a commit): the daemon, reading
    UCI, writes the key to its root-only file (atomically, 0600) and deletes
    the option, committing nothing else: the staged changes are still staged
    and not in the file.  A new key committed later moves at the next reload;
    one that is not a key stays in UCI, and the key file keeps the key in use."""
    need("UCI")
    save = tmp_path / "uci-staged"
    save.mkdir()
    os.makedirs("/tmp/.uci", exist_ok=True)  # the mount point (uci makes it too)
    ns = _staging_ns(save)
    probe = subprocess.run([*ns, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot give uci a staging directory of its own: {probe.stderr.strip()}")
    confdir = tmp_path / "uci"
    confdir.mkdir()
    (confdir / "owsync").write_text("config owsync 'main'\n")
    key_file = tmp_path / "owsync" / "key"  # beside the UCI directory, as /etc/owsync/key

    def uci(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*ns, ENV["UCI"], "-c", str(confdir), *args],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0 or not ok, r.stderr
        return r

    a = owrt("a")
    k1, k2 = os.urandom(32).hex(), os.urandom(32).hex()
    for opt, value in [
        ("enabled", "1"), ("host", "127.0.0.1"), ("port", str(a.port)), ("dir", str(a.dir)),
        ("db", str(a.db)), ("control_socket", str(a.sock)), ("key", k1),
    ]:  # fmt: skip
        uci("set", f"owsync.main.{opt}={value}")
    uci("add_list", "owsync.main.include=*")
    uci("add_list", f"owsync.main.peer=127.0.0.1:{free_port()}")
    uci("commit", "owsync")
    # staged, not applied: as `uci set` without a commit leaves them
    uci("set", "owsync.main.log_level=3")
    uci("add_list", "owsync.main.exclude=staged-by-the-admin")
    staged = uci("changes", "owsync").stdout
    assert "log_level='3'" in staged and "staged-by-the-admin" in staged, staged

    daemon = [sys.executable, "-m", "owsync", "daemon", "-f", "--uci-dir", str(confdir)]
    a.start([*ns, *daemon])
    assert wait_for(lambda: key_file.exists(), 10), a.text()
    assert key_file.read_text() == k1 + "\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    committed = (confdir / "owsync").read_text()
    assert "option key" not in committed and k1 not in committed, committed
    assert "log_level" not in committed and "staged-by-the-admin" not in committed, committed
    assert uci("changes", "owsync").stdout == staged  # still staged, nothing committed
    assert uci("-q", "get", "owsync.main.key", ok=False).returncode != 0
    assert f"the key moved from UCI to {key_file}" in a.text()
    assert k1 not in a.text()
    assert a.status()["key"]["fingerprint"] == fingerprint(bytes.fromhex(k1))
    assert [p.name for p in key_file.parent.iterdir()] == ["key"]  # no temp file left

    # a new key, committed (written as `uci commit` writes it): it moves at the reload
    (confdir / "owsync").write_text(committed.rstrip("\n") + f"\n\toption key '{k2}'\n\n")
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: key_file.read_text() == k2 + "\n", 10), a.text()
    assert wait_for(lambda: a.status()["key"]["fingerprint"] == fingerprint(bytes.fromhex(k2)))
    assert k2 not in (confdir / "owsync").read_text()
    assert uci("changes", "owsync").stdout == staged

    # not a key: refused with the reload, left in UCI, the key in use kept
    bad = (confdir / "owsync").read_text().rstrip("\n") + "\n\toption key 'not-a-key'\n\n"
    (confdir / "owsync").write_text(bad)
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in a.text(), 10), a.text()
    assert (confdir / "owsync").read_text() == bad and key_file.read_text() == k2 + "\n"
    assert a.status()["key"]["fingerprint"] == fingerprint(bytes.fromhex(k2))
