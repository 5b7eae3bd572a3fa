"""Sync groups (issue 17): real daemons run every group of their configuration.

Each node is laid out as a router (conftest.GroupDaemonNode): ``etc/config``
is main's directory, ``keys`` a dropbear-like key directory (group
``dropbear``), and ``etc`` holds ``passwd``, ``shadow`` and ``group``
(group ``passwd``, whose patterns match nothing of ``etc/config``), each
given in the node's key=value file (``group.NAME.dir=``, ...).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time

import pytest
from conftest import (
    CDaemonNode,
    GroupDaemonNode,
    base_env,
    c_bin,
    common_port,
    free_port,
    tracked,
    wait_for,
    write_at,
)

SYNC = 30.0  # a change reaches the peer over the live link well within this


@pytest.fixture
def routers(tmp_path):
    yield from tracked(tmp_path, GroupDaemonNode)


@pytest.fixture
def c_routers(tmp_path):
    yield from tracked(tmp_path, CDaemonNode)


def pair(routers, b_groups=None, b_env=None, poll=60):
    a, b = routers("a"), routers("b")
    a.configure([b.addr], poll=poll)
    b.configure([a.addr], poll=poll, groups=b_groups)
    a.start()
    b.start(env=b_env)
    return a, b


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def restarts(init_dir, name: str) -> list[str]:
    """What a recording init script NAME in ``init_dir`` was called with, one line a run."""
    log = init_dir / f"{name}.calls"
    return log.read_text().splitlines() if log.exists() else []


def test_three_groups_converge_both_ways_each_in_its_own_tree(routers, tmp_path):
    init = tmp_path / "init.d"  # b's /etc/init.d: dropbear records each call
    init.mkdir()
    script = init / "dropbear"
    script.write_text(f'#!/bin/sh\necho "$1" >> {init}/dropbear.calls\n')
    script.chmod(0o755)
    a, b = routers("a"), routers("b")
    a.configure([b.addr])
    restart = {"restart": ["dropbear"]}
    b.configure([a.addr], groups={**b.standard_groups(), "dropbear": (b.keys, ["*"], restart)})
    a.start()
    b.start(env={**base_env(None), "OWSYNC_INIT_DIR": str(init)})
    write_at(a.dir / "network", b"config interface 'lan'\n")
    write_at(a.keys / "dropbear_rsa_host_key", b"RSA KEY A", mode=0o600)
    write_at(a.etc / "passwd", b"root:x:0:0:root:/root:/bin/ash\n", mode=0o644)
    write_at(a.etc / "shadow", b"root:$1$a:19000:0:99999:7:::\n", mode=0o600)
    write_at(a.etc / "hosts", b"127.0.0.1 localhost\n")  # in no group
    assert wait_for(lambda: b.has("network", b"config interface 'lan'\n")
                    and (b.keys / "dropbear_rsa_host_key").exists()
                    and (b.etc / "shadow").exists() and (b.etc / "passwd").exists(),
                    SYNC), b.text()  # fmt: skip
    # each in its own tree, with its mode; nothing of one group in another's
    assert (b.keys / "dropbear_rsa_host_key").read_bytes() == b"RSA KEY A"
    assert mode(b.keys / "dropbear_rsa_host_key") == 0o600
    assert mode(b.etc / "shadow") == 0o600 and mode(b.etc / "passwd") == 0o644
    assert sorted(os.listdir(b.keys)) == ["dropbear_rsa_host_key"]
    assert sorted(os.listdir(b.dir)) == ["network"]
    assert not (b.etc / "hosts").exists()  # the passwd group's patterns do not match it
    assert sorted(os.listdir(b.etc)) == ["config", "passwd", "shadow"]
    # dropbear's keys arrived on b: its init script restarted it, once per batch
    assert wait_for(lambda: restarts(init, "dropbear") == ["restart"], SYNC), b.text()
    hist = [e for e in b.status()["history"] if e["group"] == "dropbear"]
    assert [e["reloaded"] for e in hist if e["arrived"]] == [["dropbear restart"]], hist
    assert all(e["reloaded"] == [] for e in hist if not e["arrived"]), hist

    # edits and a new file from b, deletions from a
    write_at(b.keys / "dropbear_ed25519_host_key", b"ED KEY B", mode=0o600)
    write_at(b.etc / "group", b"root:x:0:\n")
    write_at(b.dir / "network", b"config interface 'wan'\n")
    (a.etc / "passwd").unlink()
    assert wait_for(lambda: a.has("network", b"config interface 'wan'\n")
                    and (a.keys / "dropbear_ed25519_host_key").exists()
                    and (a.etc / "group").exists() and not (b.etc / "passwd").exists(),
                    SYNC), a.text() + b.text()  # fmt: skip
    assert mode(a.keys / "dropbear_ed25519_host_key") == 0o600

    # a conflict in the passwd group: both write shadow while b is down; b's later write wins
    b.stop()
    now = time.time()
    write_at(a.etc / "shadow", b"root:$1$A:19001:0:99999:7:::\n", mtime=now, mode=0o600)
    write_at(b.etc / "shadow", b"root:$1$B:19002:0:99999:7:::\n", mtime=now + 1, mode=0o600)
    b.start()
    assert wait_for(lambda: (a.etc / "shadow").read_bytes() == b"root:$1$B:19002:0:99999:7:::\n",
                    SYNC), a.text()  # fmt: skip
    assert mode(a.etc / "shadow") == 0o600
    assert (b.etc / "shadow").read_bytes() == b"root:$1$B:19002:0:99999:7:::\n"
    st = a.status()
    lost = [e for e in st["history"] if "shadow" in e["conflicts"]]
    assert lost and all(e["group"] == "passwd" for e in lost), st["history"]

    # the status: every group, main first, each syncing with b
    groups = {g["name"]: g for g in st["groups"]}
    assert [g["name"] for g in st["groups"]] == ["main", "dropbear", "passwd"]
    assert groups["main"]["dir"] == str(a.dir) and groups["passwd"]["dir"] == str(a.etc)
    assert groups["dropbear"]["files"] == 2 and groups["passwd"]["files"] == 2
    assert groups["passwd"]["tombstones"] == 1  # passwd, deleted
    assert all(g["state"] == "syncing" and g["enabled"] for g in groups.values())
    assert wait_for(lambda: all(g["peers"] == {b.addr: "synced"} for g in a.status()["groups"]))
    assert st["sync_dir"] == str(a.dir) and st["files"] == 1  # the top level is main's
    assert {e["group"] for e in st["history"]} == {"main", "dropbear", "passwd"}
    # a sync asked for (ubus, control, `owsync sync`) is every group's, with every peer
    r = a.ctl("sync", "--wait", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)["results"]
    assert sorted((x["group"], x["peer"], x["ok"]) for x in got) == [
        ("dropbear", b.addr, True), ("main", b.addr, True), ("passwd", b.addr, True)]  # fmt: skip
    assert restarts(init, "dropbear") == ["restart"]  # b's own key written there: none
    assert a.errors() == [] and b.errors() == []


def test_a_peer_without_the_group_is_absent_and_no_error(routers):
    a, b = pair(routers, b_groups={})  # b has main only
    write_at(a.dir / "system", b"config system\n")
    write_at(a.keys / "key", b"K", mode=0o600)
    assert wait_for(lambda: b.has("system", b"config system\n"), SYNC), b.text()
    assert wait_for(lambda: a.group("dropbear")["peers"] == {b.addr: "absent"}, SYNC), a.text()
    assert a.group("passwd")["peers"] == {b.addr: "absent"}
    assert a.group("main")["peers"] == {b.addr: "synced"}
    assert not (b.keys / "key").exists() and not (b.dir / "key").exists()
    said = [line for line in a.text().splitlines() if "is not synced with" in line]
    assert len(said) == 2 and all("no such group" in line for line in said), a.text()
    assert a.errors() == [] and b.errors() == [], a.text() + b.text()
    assert all(e["group"] == "main" for e in a.status()["history"])
    asked = [line for line in b.text().splitlines() if "asked for group dropbear" in line]
    assert len(asked) == 1 and "no such group dropbear" in asked[0], b.text()


def test_a_peer_that_comes_back_with_the_group_is_asked_at_once(routers):
    """b had no such group; it restarts with it, and never calls a itself: a's
    main link with it comes up again, and a asks for the group then, not at
    its next poll (600 s here)."""
    a, b = pair(routers, b_groups={}, poll=600)
    write_at(a.keys / "key", b"K", mode=0o600)
    assert wait_for(lambda: a.group("dropbear")["peers"] == {b.addr: "absent"}, SYNC), a.text()
    b.stop()
    b.configure([f"127.0.0.1:{free_port()}"], poll=600)  # the standard groups; a unknown to it
    b.start()
    key = b.keys / "key"
    assert wait_for(lambda: key.exists() and key.read_bytes() == b"K", SYNC), a.text() + b.text()
    assert wait_for(lambda: a.group("dropbear")["peers"] == {b.addr: "synced"}, SYNC), a.text()
    assert a.errors() == [], a.text()


def test_a_v1_only_node_syncs_main_only_and_the_other_says_so_once(routers):
    a, b = pair(routers, b_env=base_env(None, max_protocol=1))
    write_at(a.dir / "dhcp", b"config dnsmasq\n")
    write_at(a.keys / "key", b"K", mode=0o600)
    write_at(b.dir / "firewall", b"config defaults\n")
    assert wait_for(lambda: b.has("dhcp") and a.has("firewall"), SYNC), a.text() + b.text()
    assert wait_for(lambda: a.group("dropbear")["peers"] == {b.addr: "v1"}, SYNC), a.text()
    assert a.group("passwd")["peers"] == {b.addr: "v1"}
    assert b.group("dropbear")["peers"] == {a.addr: "v1"}
    a.ctl("sync", "--wait")  # a manual sync: main again, the groups still not
    assert not (b.keys / "key").exists()
    said = [line for line in a.text().splitlines() if "speaks protocol 1" in line]
    assert said == [f"owsync: groups dropbear, passwd are not synced with {b.addr}: it speaks"
                    " protocol 1 (owsync 1.2.0), which syncs main only"], a.text()  # fmt: skip
    assert a.errors() == [] and b.errors() == [], a.text() + b.text()


def test_a_group_added_and_reloaded_syncs_without_a_restart(routers):
    a, b = pair(routers, poll=2)
    for n in (a, b):  # main only at first
        n.set_groups({})
        n.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: [g["name"] for g in a.status()["groups"]] == ["main"], SYNC)
    assert wait_for(lambda: [g["name"] for g in b.status()["groups"]] == ["main"], SYNC)
    pids = (a.proc.pid, b.proc.pid)
    write_at(a.keys / "key", b"K1", mode=0o600)
    # a group whose directory is missing waits, then starts once it is there
    missing = a.etc / "acme"
    for n in (a, b):
        n.set_groups({**n.standard_groups(), "acme": (n.etc / "acme", ["*"])})
        n.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: (b.keys / "key").exists(), SYNC), a.text() + b.text()
    assert (b.keys / "key").read_bytes() == b"K1"
    assert (a.proc.pid, b.proc.pid) == pids and a.proc.poll() is None
    acme = a.group("acme")
    assert acme["state"] == "waiting" and str(missing) in acme["reason"], acme
    assert sum("group acme waits" in line for line in a.text().splitlines()) == 1
    for n in (a, b):
        (n.etc / "acme").mkdir()
    write_at(missing / "cert.pem", b"CERT")
    assert wait_for(lambda: (b.etc / "acme" / "cert.pem").exists(), SYNC), a.text() + b.text()
    assert a.group("acme")["state"] == "syncing"
    # disabled: shown so, not synced, its peer's link to it refused
    a.set_groups({**a.standard_groups(), "acme": (a.etc / "acme", ["*"], {"enabled": False})})
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: a.group("acme")["state"] == "disabled", SYNC), a.text()
    assert a.group("acme")["enabled"] is False
    write_at(missing / "cert1.pem", b"CERT1")
    assert wait_for(lambda: b.group("acme")["peers"] == {a.addr: "absent"}, SYNC), b.text()
    assert not (b.etc / "acme" / "cert1.pem").exists()
    # removed: no longer synced
    for n in (a, b):
        n.set_groups(n.standard_groups())
        n.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "acme" not in {g["name"] for g in a.status()["groups"]}, SYNC)
    write_at(missing / "cert2.pem", b"CERT2")
    write_at(a.keys / "key2", b"K2", mode=0o600)
    assert wait_for(lambda: (b.keys / "key2").exists(), SYNC)
    assert not (b.etc / "acme" / "cert2.pem").exists()
    # its directory moved to one not there yet: it waits for it
    a.set_groups({**a.standard_groups(), "dropbear": (a.etc / "dropbear", ["*"])})
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: a.group("dropbear")["state"] == "waiting", SYNC), a.text()
    assert (a.proc.pid, b.proc.pid) == pids
    assert a.errors() == [] and b.errors() == [], a.text() + b.text()


@pytest.mark.skipif(c_bin() is None, reason="OWSYNC_C_BIN (owsync 1.2.0) is not set")
def test_owsync_1_2_0_as_a_peer_syncs_main_and_the_groups_say_v1(tmp_path, routers, c_routers):
    hosts = ["127.0.0.1", "127.0.0.2"]
    port = common_port(hosts)
    a = routers("a", host=hosts[0], port=port)
    c = c_routers("c", host=hosts[1], port=port)
    a.configure([f"{c.host}:{port}"])
    c.configure([a.host])
    write_at(a.dir / "network", b"config interface 'lan'\n")
    write_at(a.keys / "key", b"K", mode=0o600)
    c.start()
    a.start()
    assert wait_for(lambda: (c.dir / "network").exists(), SYNC), a.text() + c.text()
    peer = f"{c.host}:{port}"
    assert wait_for(lambda: a.group("dropbear")["peers"] == {peer: "v1"}, SYNC), a.text()
    assert a.group("passwd")["peers"] == {peer: "v1"}
    assert a.group("main")["peers"] == {peer: "synced"}
    assert sorted(os.listdir(c.dir)) == ["network"]
    said = [line for line in a.text().splitlines() if "speaks protocol 1" in line]
    assert len(said) == 1, a.text()
    assert a.errors() == [], a.text()
