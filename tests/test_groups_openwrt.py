"""Sync groups on OpenWrt's real procd, uci, ubusd and rc.common (opt-in).

tests/owrt_chroot.py's OpenWrt root is the router: owsync runs from its init
script under procd.  The other router is a daemon of ours in the same root
with the same groups.  An admin adds a group with uci and `service owsync
reload`: the same owsync process starts syncing it, and the service the
group names (an init script of its own under procd, as dropbear's is)
is restarted once for a batch of arrivals: a new PID.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import (
    KEY,
    owrt_logread,
    owrt_running_pid,
    owrt_status,
    wait_for,
)
from owrt_chroot import OpenWrtRoot, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

PEER_PORT = 4410  # inside the root's own network namespace: nothing else is there

# a service of the router, as dropbear's init script declares one to procd
KEYSVC = """#!/bin/sh /etc/rc.common
START=50
USE_PROCD=1
start_service() {
\tprocd_open_instance
\tprocd_set_param command /bin/sleep 3600
\tprocd_close_instance
}
"""


def service_pid(r: OpenWrtRoot, name: str) -> int | None:
    listed = json.loads(r.ok(f'ubus call service list \'{{"name":"{name}"}}\'') or "{}")
    pids = [i["pid"] for i in listed.get(name, {}).get("instances", {}).values() if i["running"]]
    return pids[0] if pids else None


def group_row(r: OpenWrtRoot, name: str) -> dict | None:
    st = owrt_status(r) or {}
    return next((g for g in st.get("groups", []) if g["name"] == name), None)


@pytest.fixture
def router(tmp_path):
    r = OpenWrtRoot(tmp_path)
    yield r
    r.stop()


def test_a_group_added_with_uci_syncs_in_the_same_process_and_restarts_its_service(router):
    r = router
    # the service the group belongs to, running under procd
    r.ok(f"cat > /etc/init.d/keysvc <<'EOF'\n{KEYSVC}EOF\nchmod 755 /etc/init.d/keysvc")
    r.ok("/etc/init.d/keysvc start")
    assert wait_for(lambda: service_pid(r, "keysvc") is not None, 20)
    svc_pid = service_pid(r, "keysvc")

    # the other router: our daemon with main and the keys group
    conf = "\n".join([
        "bind_host=127.0.0.1", f"port={PEER_PORT}", "sync_dir=/srv/peer",
        "database=/srv/peer.db", "control_socket=/srv/peer.sock", f"encryption_key={KEY}",
        "poll_interval=600", "include=*", "peer=127.0.0.1:4321",
        "ubus_socket=/nonexistent/ubus.sock",
        "group.keys.dir=/srv/peer-keys", "group.keys.include=*_key",
    ])  # fmt: skip
    r.ok("mkdir -p /srv/peer /srv/peer-keys && echo 'config x' > /srv/peer/dhcp")
    r.ok(f"cat > /srv/peer.conf <<'EOF'\n{conf}\nEOF\nchmod 600 /srv/peer.conf")
    r.ok("(owsync daemon -c /srv/peer.conf --no-syslog </dev/null >/srv/peer.log 2>&1 &)")
    assert wait_for(lambda: r.sh("test -S /srv/peer.sock").returncode == 0, 20), r.sh(
        "cat /srv/peer.log"
    ).stdout

    # the router: main only, running under procd
    r.ok(f"mkdir -p /etc/owsync; (umask 077; printf '%s\\n' {KEY} > /etc/owsync/key)")
    r.ok(f"uci set owsync.main.enabled=1; uci add_list owsync.main.peer=127.0.0.1:{PEER_PORT};"
         " uci commit owsync; /etc/init.d/owsync start")  # fmt: skip
    assert wait_for(lambda: r.sh("cat /etc/config/dhcp").stdout == "config x\n", 30), owrt_logread(
        r
    )
    pid = owrt_running_pid(r)
    assert pid is not None

    # the keys wait on the other router, root's and 0600
    names = ("dropbear_rsa_host_key", "dropbear_ed25519_host_key", "dropbear_ecdsa_host_key")
    r.ok("cd /srv/peer-keys && umask 077 && for n in " + " ".join(names) + "; do"
         " echo \"$n-secret\" > $n; done")  # fmt: skip

    # the admin adds the group, as typed on a router
    r.ok("mkdir -p /etc/keys; uci set owsync.keys=group; uci set owsync.keys.dir=/etc/keys;"
         " uci add_list owsync.keys.include='*_key'; uci add_list owsync.keys.restart=keysvc;"
         " uci commit owsync; service owsync reload")  # fmt: skip

    def arrived() -> bool:
        return all(r.sh(f"test -f /etc/keys/{n}").returncode == 0 for n in names)

    assert wait_for(arrived, 30), (owrt_status(r), owrt_logread(r))
    assert owrt_running_pid(r) == pid  # a reload, not a restart
    peer = f"127.0.0.1:{PEER_PORT}"
    assert wait_for(lambda: (group_row(r, "keys") or {}).get("peers", {}).get(peer) == "synced")
    modes = r.ok("stat -c '%a %U %n' /etc/keys/*_key").splitlines()
    assert len(modes) == 3 and all(m.startswith("600 root ") for m in modes), modes

    # the three keys came in one batch: the service restarted once, a new PID
    assert wait_for(lambda: service_pid(r, "keysvc") not in (None, svc_pid), 20), owrt_logread(r)

    def ran() -> list[tuple[str, str]]:  # logged once the script is back (after procd's restart)
        return re.findall(r"group keys: /etc/init\.d/keysvc (\w+): exit (\d+)", owrt_logread(r))

    assert wait_for(lambda: ran() != [], 20), owrt_logread(r)
    assert ran() == [("restart", "0")], owrt_logread(r)
    assert not re.search(r"daemon\.err owsync", owrt_logread(r)), owrt_logread(r)
    assert owrt_running_pid(r) == pid
