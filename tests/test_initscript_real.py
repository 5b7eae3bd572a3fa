"""openwrt/owsync/files/etc/init.d/owsync under OpenWrt's real rc.common, procd, ubusd, logd, uci,
jsonfilter and validate_data, with busybox ash as /bin/sh, typed as a router's
admin types it (tests/owrt_chroot.py builds the root; opt-in, see the README).

The steps are the admin's, in order, on one router; a second owsync node in the
same network namespace (a plain `owsync listen` on another port of loopback)
stands for the other router.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest
from conftest import KEY, wait_for
from owrt_chroot import OpenWrtRoot, skip_reason

from owsync.core.crypto import fingerprint

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

PEER_PORT = 4400  # inside the test's own network namespace: nothing else is there
PEER2_PORT = 4401


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    r = OpenWrtRoot(tmp_path_factory.mktemp("router"))
    yield r
    r.stop()


def instances(r: OpenWrtRoot) -> dict:
    listed = json.loads(r.ok('ubus call service list \'{"name":"owsync"}\'') or "{}")
    return listed.get("owsync", {}).get("instances", {})


def running_pid(r: OpenWrtRoot) -> int | None:
    running = [i["pid"] for i in instances(r).values() if i.get("running")]
    assert len(running) <= 1, running
    return running[0] if running else None


def status(r: OpenWrtRoot) -> dict | None:
    res = r.sh("ubus call owsync status")
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


def test_the_admins_day_with_the_init_script(router):
    r = router
    # 1. enable, then start with the shipped config (enabled=0): nothing runs, exit 0
    r.ok("/etc/init.d/owsync enable")
    assert r.ok("ls /etc/rc.d").split() == ["K10owsync", "S95owsync"]
    for action in ("start", "reload"):  # reload: what LuCI's Save & Apply runs
        res = r.sh(f"/etc/init.d/owsync {action}")
        assert res.returncode == 0 and res.stderr == "", (action, res.stderr)
    assert instances(r) == {}

    # 2. enabled=1 without key or peer: the script says what to do, no instance
    r.ok("uci set owsync.main.enabled=1; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "no encryption key" in res.stderr and "owsync genkey" in res.stderr, res.stderr
    assert instances(r) == {}
    # a key now, the README's way (the group's key here, not a new one); still no peer
    r.ok(f"mkdir -p /etc/owsync; (umask 077; printf '%s\\n' {KEY} > /etc/owsync/key)")
    res = r.sh("/etc/init.d/owsync restart")
    assert "no peer" in res.stderr and "uci add_list owsync.main.peer" in res.stderr
    assert instances(r) == {}

    # the other router: a plain listener on loopback, with the same key
    r.ok("mkdir -p /srv/peer /srv/peer2 && echo 'config dnsmasq' > /srv/peer/dhcp")
    for port, d in ((PEER_PORT, "/srv/peer"), (PEER2_PORT, "/srv/peer2")):
        r.ok(
            f"(OWSYNC_KEY={KEY} owsync listen -H 127.0.0.1 -P {port} -d {d}"
            f" -b {d}.db -i '*' </dev/null >{d}.log 2>&1 &)"
        )

    # 3. key and peer, start: one running instance, the expected command, ubus answers
    r.ok(f"uci add_list owsync.main.peer=127.0.0.1:{PEER_PORT}; uci commit owsync")
    r.ok("/etc/init.d/owsync start")
    assert wait_for(lambda: running_pid(r) is not None), logread(r)
    inst = instances(r)
    assert [i["command"] for i in inst.values()] == [["/usr/bin/owsync", "daemon"]]
    # procd waits as long as the daemon's slowest stop before a SIGKILL (5 s by default)
    assert [i["term_timeout"] for i in inst.values()] == [15]
    assert wait_for(lambda: status(r) is not None, 20), logread(r)
    st = status(r)
    assert st["pid"] == running_pid(r) and st["encryption"] is True
    assert st["key"] == {"set": True, "fingerprint": fingerprint(bytes.fromhex(KEY))}
    assert [p["address"] for p in st["peers"]] == [f"127.0.0.1:{PEER_PORT}"]

    # 4. `ubus call owsync sync`, as typed: accepted, a sync starts, the peer's dhcp arrives
    assert json.loads(r.ok("ubus call owsync sync")) == {"started": [f"127.0.0.1:{PEER_PORT}"]}
    assert wait_for(lambda: r.sh("cat /etc/config/dhcp").stdout == "config dnsmasq\n", 15)

    # 5. add a peer, commit, reload (and reload_config): same PID, the new peer in status
    pid = running_pid(r)
    r.ok(f"uci add_list owsync.main.peer=127.0.0.1:{PEER2_PORT}; uci commit owsync")
    r.ok("service owsync reload")
    assert wait_for(lambda: len((status(r) or {}).get("peers", [])) == 2), logread(r)
    assert running_pid(r) == pid
    assert wait_for(lambda: reloads(r) == 1)
    r.ok("uci set owsync.main.poll_interval=30; uci commit owsync; reload_config")
    assert wait_for(lambda: reloads(r) == 2), logread(r)
    assert running_pid(r) == pid

    # a warning reads as a warning, once, with one prefix: an option owsync does not know
    r.ok("uci set owsync.main.bogus=1; uci commit owsync; service owsync reload")
    warned = r"daemon\.warn owsync\[\d+\]: owsync\.main\.bogus: unknown option ignored$"
    assert wait_for(lambda: re.search(warned, logread(r), re.M)), logread(r)
    assert wait_for(lambda: reloads(r) == 3)
    time.sleep(1)  # room for a second copy (procd's stderr capture) to show up
    assert len([ln for ln in logread(r).splitlines() if "bogus" in ln]) == 1, logread(r)
    r.ok("uci delete owsync.main.bogus; uci commit owsync; service owsync reload")
    assert wait_for(lambda: reloads(r) == 4)

    # the key set the old way, as typed on a router (uci commit notifies no one:
    # reload_config does): the daemon moves it into the root-only key file, and
    # commits nothing else: a change the admin staged meanwhile stays staged
    r.ok("uci set owsync.main.key=$(owsync genkey); uci commit owsync")
    r.ok("uci set owsync.main.poll_interval=45")  # staged, not applied
    committed = r.ok("cat /etc/config/owsync")
    r.ok("reload_config")
    assert wait_for(lambda: r.sh("uci -q get owsync.main.key").returncode != 0, 15), logread(r)
    assert r.ok("uci changes owsync").strip() == "owsync.main.poll_interval='45'"
    assert r.ok("cat /etc/config/owsync") == re.sub(r"\toption key '[0-9a-f]{64}'\n", "",
                                                     committed)  # fmt: skip
    r.ok("uci revert owsync")
    new_key = r.ok("cat /etc/owsync/key")
    assert re.fullmatch(r"[0-9a-f]{64}\n", new_key) and new_key.strip() != KEY, new_key
    new_key = new_key.strip()
    assert r.ok("stat -c %a /etc/owsync/key").strip() == "600"
    assert "owsync.main.key=" not in r.ok("uci show owsync")
    assert new_key not in r.ok("cat /etc/config/owsync")
    assert r.ok("ls /etc/owsync").split().count("key") == 1  # no temp file left
    expected = fingerprint(bytes.fromhex(new_key))
    assert wait_for(lambda: (status(r) or {}).get("key", {}).get("fingerprint") == expected)
    assert status(r)["encryption"] is True and running_pid(r) == pid
    assert re.search(r"daemon\.info owsync\[\d+\]: the key moved from UCI to /etc/owsync/key$",
                     logread(r), re.M)  # fmt: skip
    assert new_key not in logread(r)

    # a key that is not 64 hex characters stays in UCI: refused, the key file untouched
    r.ok("uci set owsync.main.key=not-a-key; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "owsync.main.key=not-a-key validates as" in res.stderr, res.stderr
    assert wait_for(lambda: running_pid(r) is None)
    assert r.ok("cat /etc/owsync/key").strip() == new_key
    # back to the group's key, the README's way
    r.ok("uci delete owsync.main.key; uci commit owsync")
    r.ok(f"printf '%s\\n' {KEY} > /etc/owsync/key; /etc/init.d/owsync start")
    assert wait_for(lambda: running_pid(r) is not None)
    group = fingerprint(bytes.fromhex(KEY))
    assert wait_for(lambda: (status(r) or {}).get("key", {}).get("fingerprint") == group, 20)

    # 6. an invalid value: restart reports the validation error, no broken instance runs
    r.ok("uci set owsync.main.port=notaport; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    port_type = "and(uinteger,range(1,65535))"  # the schema's, verbatim in the init script
    assert f"owsync.main.port=notaport validates as {port_type} with false" in res.stderr
    assert "invalid configuration" in res.stderr
    assert wait_for(lambda: running_pid(r) is None)
    r.ok("uci set owsync.main.port=4321; uci commit owsync; /etc/init.d/owsync start")
    assert wait_for(lambda: running_pid(r) is not None)

    # 7. kill -9: procd respawns it
    victim = running_pid(r)
    assert wait_for(lambda: status(r) is not None, 20)
    killed = time.monotonic()
    r.ok(f"kill -9 {victim}")
    assert wait_for(lambda: running_pid(r) not in (None, victim), 20, 0.1), logread(r)
    assert 3 < time.monotonic() - killed < 15  # respawn's timeout: 5 s
    assert wait_for(lambda: status(r) is not None, 20)

    # the log as logread shows it: info as info, warnings as warnings, once, one prefix
    log = logread(r)
    lines = [ln for ln in log.splitlines() if "owsync[" in ln]
    assert any(re.search(r"daemon\.info owsync\[\d+\]: sync with 127\.0\.0\.1", ln) for ln in lines)
    assert not any(re.search(r"owsync\[\d+\]: owsync:", ln) for ln in lines), log
    assert not any("daemon.err" in ln and "sync with" in ln and " ok" in ln for ln in lines)
    started = [ln for ln in lines if "daemon: /etc/config, listening" in ln]
    assert len(started) == len({re.search(r"owsync\[(\d+)\]", ln).group(1) for ln in started})
    assert any("daemon.info" in ln and "moved from UCI" in ln for ln in log.splitlines())
    # nothing doubled by procd's capture of stderr: each message with one priority
    levels: dict[str, set[str]] = {}
    for prio, msg in re.findall(r"daemon\.(\w+) owsync\[\d+\]: (.*)", log):
        levels.setdefault(msg, set()).add(prio)
    assert levels and all(len(p) == 1 for p in levels.values()), levels

    # a crash before the daemon's logging starts (a module missing on the router)
    # still reaches logread: procd captures stderr, as daemon.err
    r.ok("cp /usr/bin/owsync /tmp/owsync.wrapper")
    r.ok(f"printf '#!/bin/sh\\nexec {sys.executable} -c \"import owsync_not_installed\"\\n'"
         " > /usr/bin/owsync; /etc/init.d/owsync restart")  # fmt: skip
    crashed = (
        r"daemon\.err owsync\[\d+\]: ModuleNotFoundError: No module named 'owsync_not_installed'"
    )
    assert wait_for(lambda: re.search(crashed, logread(r)), 15), logread(r)
    r.ok("cp /tmp/owsync.wrapper /usr/bin/owsync; /etc/init.d/owsync restart")
    assert wait_for(lambda: status(r) is not None, 20), logread(r)

    # 8. stop, disable: no process, no rc.d link
    r.ok("/etc/init.d/owsync stop")
    assert wait_for(lambda: instances(r) == {})
    assert wait_for(lambda: daemons(r) == []), daemons(r)
    # disabled, the script touches nothing in UCI: a key there stays (no daemon
    # reads it), what is staged stays staged, nothing is committed
    r.ok("uci set owsync.main.enabled=0; uci set owsync.main.key=$(owsync genkey)")
    r.ok("uci commit owsync; uci set owsync.main.poll_interval=77")
    committed = r.ok("cat /etc/config/owsync")
    for action in ("start", "reload"):  # reload: what LuCI's Save & Apply runs
        res = r.sh(f"/etc/init.d/owsync {action}")
        assert res.returncode == 0 and res.stderr == "", (action, res.stderr)
    assert instances(r) == {} and r.ok("cat /etc/config/owsync") == committed
    assert r.ok("uci changes owsync").strip() == "owsync.main.poll_interval='77'"
    r.ok("uci revert owsync; uci delete owsync.main.key; uci commit owsync")
    r.ok("/etc/init.d/owsync disable")
    assert r.ok("ls /etc/rc.d").split() == []
    assert r.sh("/etc/init.d/owsync enabled").returncode != 0


def logread(r: OpenWrtRoot) -> str:
    """OpenWrt's logread by its path: busybox has an applet of the same name."""
    return r.ok("/sbin/logread")


def reloads(r: OpenWrtRoot) -> int:
    return logread(r).count("configuration reloaded")


def daemons(r: OpenWrtRoot) -> list[str]:
    """Command lines of owsync daemons running in the router (not the stand-in peers)."""
    out = r.ok("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done")
    return [line for line in out.splitlines() if "-m owsync daemon" in line]


def test_a_fatal_error_at_start_is_logged_once(router):
    """The daemon refuses to start (disabled under its feet, then respawned):
    one line in logread, daemon.err, one prefix."""
    r = router
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=1; uci commit owsync")
    r.ok(f"printf '%s\\n' {KEY} > /etc/owsync/key; /etc/init.d/owsync start")
    assert wait_for(lambda: running_pid(r) is not None, 20)
    victim = running_pid(r)
    r.ok(f"uci set owsync.main.enabled=0; uci commit owsync; kill -9 {victim}")
    refused = "owsync is disabled (uci set owsync.main.enabled=1)"
    assert wait_for(lambda: refused in logread(r), 20), logread(r)
    time.sleep(1)
    lines = [ln for ln in logread(r).splitlines() if refused in ln]
    r.ok("/etc/init.d/owsync stop")
    assert len(lines) == 1 and re.search(r"daemon\.err owsync\[\d+\]: owsync is disabled", lines[0])
    assert "owsync: error:" not in lines[0], lines


def test_group_sections_are_validated_like_main(router):
    """A `config group` section: a valid one starts with main (the daemon
    reads it, its missing dir a warning); a bad value in one is reported by
    validate_data and names the group, and no instance runs, as for main."""
    r = router
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=1; uci commit owsync")
    r.ok(f"mkdir -p /etc/owsync; printf '%s\\n' {KEY} > /etc/owsync/key")
    r.ok(f"uci -q get owsync.main.peer || uci add_list owsync.main.peer=127.0.0.1:{PEER_PORT}")
    r.ok("uci commit owsync; uci set owsync.keys=group; uci set owsync.keys.dir=/etc/dropbear.test;"
         " uci add_list owsync.keys.include='dropbear_*_host_key';"
         " uci add_list owsync.keys.restart=dropbear; uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert wait_for(lambda: running_pid(r) is not None, 20), logread(r)
    waits = "group keys: /etc/dropbear.test does not exist; the group waits until it does"
    assert wait_for(lambda: waits in logread(r), 20), logread(r)
    pid = running_pid(r)
    # a service name that is no init script's: the script refuses, naming the group
    r.ok("uci add_list owsync.keys.restart='dropbear;reboot'; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "owsync.keys.restart[1]=dropbear;reboot validates as list(hostname) with false" in (
        res.stderr
    ), res.stderr
    assert "owsync: invalid configuration in /etc/config/owsync (group keys)" in res.stderr
    assert wait_for(lambda: running_pid(r) is None, 20)
    r.ok("uci del_list owsync.keys.restart='dropbear;reboot'; uci set owsync.keys.enabled=maybe;"
         " uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert "owsync.keys.enabled=maybe validates as bool with false" in res.stderr, res.stderr
    assert instances(r) == {}
    # an unnamed group section (`uci add`): refused with the command that names it
    r.ok("uci set owsync.keys.enabled=0; uci add owsync group;"
         " uci set owsync.@group[-1].dir=/etc/x; uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert res.stderr == (
        "owsync: a group section has no name: uci rename owsync.@group[N]=NAME; uci commit owsync\n"
    ), res.stderr
    assert instances(r) == {}
    r.ok("uci delete owsync.@group[-1]; uci commit owsync")
    # valid again: it starts; then the group goes and a reload keeps the process
    r.ok("uci set owsync.keys.enabled=0; uci commit owsync; /etc/init.d/owsync start")
    assert wait_for(lambda: running_pid(r) not in (None, pid), 20), logread(r)
    assert wait_for(lambda: status(r) is not None, 20), logread(r)  # its SIGHUP handler set
    pid = running_pid(r)
    before = reloads(r)
    r.ok("uci delete owsync.keys; uci commit owsync; service owsync reload")
    assert wait_for(lambda: reloads(r) > before, 20), logread(r)
    assert running_pid(r) == pid
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=0; uci commit owsync")
    assert wait_for(lambda: instances(r) == {})
