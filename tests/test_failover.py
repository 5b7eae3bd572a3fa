"""Failover: keepalived's VRRP transitions reach owsync as on a router.

1. OpenWrt's real ``/sbin/hotplug-call`` in the OpenWrt chroot
   (tests/owrt_chroot.py: ubusd, procd, the init script), with
   openwrt/owsync/files/etc/hotplug.d/keepalived/100-owsync installed: each ACTION spelling
   (OpenWrt's keepalived package: NOTIFY_MASTER...; ha-cluster: MASTER...),
   called with an empty environment as keepalived's notify lines do; the role
   shows in ``ubus call owsync status`` and at the peer daemon over the live
   link, and a reconcile ran.  With owsync stopped the script is quiet.
   Needs ``OWSYNC_OPENWRT_ROOT`` with ``sbin/hotplug-call`` (README).

2. A real failover: Debian's keepalived in two network namespaces of the
   test's own (unicast VRRP over a veth pair), each with its own ubusd, our
   daemon and the same hotplug script wired through keepalived's notify
   lines; the MASTER's keepalived is stopped: both statuses show the swapped
   roles within seconds, and the new MASTER reconciled.  Needs root,
   keepalived, unshare and ip, and OpenWrt's ubusd, ubus, jsonfilter and
   jshn.sh (``OWSYNC_UBUSD``, ``OWSYNC_UBUS``, ``OWSYNC_OPENWRT_ROOT``) with
   ``OWSYNC_PYBINDINGS``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import KEY, wait_for
from owrt_chroot import REPO, ROOT_ENV, OpenWrtRoot, skip_reason

HOTPLUG = REPO / "openwrt/owsync/files/etc/hotplug.d/keepalived/100-owsync"
PEER_PORT = 4400  # inside the test's own network namespace: nothing else is there


def _chroot_skip() -> str | None:
    why = skip_reason()
    if why is None and not os.path.exists(os.path.join(os.environ[ROOT_ENV], "sbin/hotplug-call")):
        why = f"{ROOT_ENV} lacks sbin/hotplug-call (OpenWrt's base-files, see README)"
    return why


# --- 1. OpenWrt's hotplug-call in the chroot ----------------------------------------


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    why = _chroot_skip()
    if why is not None:
        pytest.skip(why)

    def prepare(staging: Path) -> None:
        d = staging / "etc/hotplug.d/keepalived"
        d.mkdir(parents=True)
        shutil.copy(HOTPLUG, d / "100-owsync")

    r = OpenWrtRoot(tmp_path_factory.mktemp("router"), prepare=prepare)
    yield r
    r.stop()


def status(r: OpenWrtRoot) -> dict:
    res = r.sh("ubus call owsync status")
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else {}


def peer_status(r: OpenWrtRoot) -> dict:
    res = r.sh("owsync status --json --control-socket /srv/peer.sock")
    return json.loads(res.stdout) if res.returncode == 0 else {}


def peer_role(r: OpenWrtRoot, name: str = "VI_LAN") -> str | None:
    """This router's role in ``name`` as the peer daemon heard it over the live link."""
    peers = peer_status(r).get("peers") or [{}]
    return ((peers[0].get("vrrp") or {}).get(name) or {}).get("role")


def hotplug(r: OpenWrtRoot, action: str, name: str = "VI_LAN") -> tuple[float, str]:
    """keepalived's notify line, as OpenWrt's packages write it: an empty environment."""
    began = time.monotonic()
    res = r.sh(f"env -i ACTION={action} TYPE=INSTANCE NAME={name} /sbin/hotplug-call keepalived")
    assert res.returncode == 0, res.stderr
    return time.monotonic() - began, res.stdout + res.stderr


def test_hotplug_call_with_each_action_spelling(router):
    r = router
    # the other router: a daemon on loopback (no ubus of its own: the bus is this router's)
    r.ok(
        "mkdir -p /srv/peer && echo 'config dnsmasq' > /srv/peer/dhcp && cat > /srv/peer.conf"
        f" <<EOF\nbind_host=127.0.0.1\nport={PEER_PORT}\nsync_dir=/srv/peer\n"
        f"database=/srv/peer.db\nencryption_key={KEY}\ncontrol_socket=/srv/peer.sock\n"
        "include=*\npeer=127.0.0.1:4321\nubus_socket=/nonexistent\nlog_level=3\nEOF\n"
        "chmod 600 /srv/peer.conf; (owsync daemon -c /srv/peer.conf </dev/null"
        " >/srv/peer.log 2>&1 & echo $! >/srv/peer.pid)"
    )
    r.ok(f"mkdir -p /etc/owsync; (umask 077; printf '%s\\n' {KEY} > /etc/owsync/key)")
    r.ok(
        "uci set owsync.main.enabled=1; uci set owsync.main.host=127.0.0.1;"
        f" uci add_list owsync.main.peer=127.0.0.1:{PEER_PORT}; uci commit owsync;"
        " /etc/init.d/owsync start"
    )
    assert wait_for(lambda: (status(r).get("peers") or [{}])[0].get("live"), 30), r.sh(
        "logread; cat /srv/peer.log"
    ).stdout
    assert r.ok("cat /etc/config/dhcp") == "config dnsmasq\n"  # the peer's, already here

    def now() -> dict:
        """The status; a call that fails (a loaded machine) is asked again."""
        assert wait_for(lambda: status(r), 30), r.sh("logread").stdout
        return status(r)

    def lan(key: str):
        return (status(r).get("vrrp") or {}).get("VI_LAN", {}).get(key)

    timings = {}
    for action, role in (("NOTIFY_MASTER", "MASTER"), ("BACKUP", "BACKUP"),
                         ("NOTIFY_FAULT", "FAULT"), ("MASTER", "MASTER"),
                         ("NOTIFY_BACKUP", "BACKUP"), ("FAULT", "FAULT")):  # fmt: skip
        before = now()
        reconciles = before["peers"][0]["live"]["reconciles"]
        began = int(time.time())
        timings[action], out = hotplug(r, action)
        assert out == "", out  # quiet
        if role == "MASTER":  # the script waited for the reconcile
            assert lan("reconciling") is False, (now(), r.sh("logread").stdout)
        assert wait_for(lambda: lan("reconciling") is False, 10), r.sh("logread").stdout
        st = now()
        here = st["vrrp"]["VI_LAN"]
        assert here["role"] == role, (action, here)
        assert began <= here["since"] <= time.time()
        assert here["reconciled"] >= here["since"]
        assert st["peers"][0]["live"]["reconciles"] > reconciles, (action, st["peers"])
        # the peer daemon sees it over the live link
        assert wait_for(lambda want=role: peer_role(r) == want, 10), (action, peer_status(r))
    assert all(t < 6.0 for t in timings.values()), timings
    logs = r.ok("/sbin/logread")
    assert "VRRP instance VI_LAN: MASTER" in logs and "reconciled with 1 of 1" in logs, logs
    # a sync group's transition and an ACTION the script does not know change nothing
    res = r.sh("env -i ACTION=NOTIFY_MASTER TYPE=GROUP NAME=G1 /sbin/hotplug-call keepalived")
    assert res.returncode == 0 and res.stderr == ""
    res = r.sh("env -i ACTION=NOTIFY_STOP TYPE=INSTANCE NAME=VI_2 /sbin/hotplug-call keepalived")
    assert res.returncode == 0 and res.stderr == ""
    assert set(now()["vrrp"]) == {"VI_LAN"}

    # the peer hangs (SIGSTOP): the reconcile cannot end, and the script gives
    # up waiting after about 5 s; keepalived's next scripts run
    r.ok("kill -STOP $(cat /srv/peer.pid)")
    try:
        took, out = hotplug(r, "NOTIFY_MASTER")
        # (5 s by `date +%s`, whole seconds: at least 4 s of real time)
        assert out == "" and 3.9 <= took < 8.0, (took, out)
        assert lan("role") == "MASTER" and lan("reconciling") is True
    finally:
        r.ok("kill -CONT $(cat /srv/peer.pid)")
    assert wait_for(lambda: lan("reconciling") is False, 30), r.sh("logread").stdout
    timings["MASTER, the peer stopped"] = took

    # owsync stopped: the script neither fails nor speaks, and returns at once
    r.ok("/etc/init.d/owsync stop")
    assert wait_for(lambda: not status(r), 15)
    took, out = hotplug(r, "NOTIFY_MASTER")
    assert out == "" and took < 2.0, (took, out)
    timings["owsync stopped"] = took
    print("hotplug-call keepalived, seconds:", {k: round(v, 3) for k, v in timings.items()})

    # keepalived (START=70) reported before owsync (START=95) was on the bus: the
    # daemon starts from what OpenWrt's keepalived package recorded, as its
    # hotplug script 01-ubus writes it (the last ACTION and its time per instance)
    r.ok(
        "for i in VI_BOOT_INSTANCE:NOTIFY_MASTER VI_OFF_INSTANCE:NOTIFY_STOP G1_GROUP:MASTER; do"
        " d=/var/run/keepalived/${i%%:*}; mkdir -p $d; echo ${i#*:} > $d/STATUS;"
        " echo 1795600000 > $d/TIME; done; /etc/init.d/owsync start"
    )
    assert wait_for(lambda: status(r).get("vrrp"), 30), r.sh("logread").stdout
    assert status(r)["vrrp"] == {
        "VI_BOOT": {"role": "MASTER", "since": 1795600000, "reconciling": False}
    }
    assert wait_for(lambda: peer_role(r, "VI_BOOT") == "MASTER", 20), peer_status(r)


# --- 2. a real failover with keepalived -------------------------------------------


def _busybox() -> str | None:
    tree = os.path.join(os.environ.get(ROOT_ENV, ""), "bin/busybox")
    return tree if os.access(tree, os.X_OK) else shutil.which("busybox")


def _keepalived_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, a veth pair)"
    missing = [t for t in ("keepalived", "unshare", "ip") if not shutil.which(t)]
    if missing:
        return f"needs {', '.join(missing)} (Debian: apt-get install keepalived iproute2)"
    if _busybox() is None:
        return f"needs busybox: in {ROOT_ENV}/bin or on the host (Debian's busybox-static)"
    root = os.environ.get(ROOT_ENV, "")
    need = {"OWSYNC_UBUSD": os.environ.get("OWSYNC_UBUSD", ""),
            "OWSYNC_UBUS": os.environ.get("OWSYNC_UBUS", ""),
            "OWSYNC_PYBINDINGS": os.environ.get("OWSYNC_PYBINDINGS", ""),
            f"{ROOT_ENV} (usr/bin/jsonfilter, jshn, usr/share/libubox/jshn.sh)": root}  # fmt: skip
    unset = [k for k, v in need.items() if not v or not os.path.exists(v)]
    if not unset and not all(
        os.path.exists(os.path.join(root, p))
        for p in ("usr/bin/jsonfilter", "usr/bin/jshn", "usr/share/libubox/jshn.sh")
    ):
        unset.append(f"{ROOT_ENV} with usr/bin/jsonfilter, jshn and usr/share/libubox/jshn.sh")
    if unset:
        return f"needs OpenWrt's components: {', '.join(unset)} (README)"
    return None


# Runs as PID 1 of new mount, PID and network namespaces: two routers, each a
# network namespace and a mount namespace of its own (its own /var/run/ubus,
# /usr/share/libubox), with ubusd, owsync's daemon and keepalived.
TOPOLOGY = r"""set -e
T="$1"
mount -t tmpfs run /run
mkdir -p /run/netns /run/ubus
ip netns add ra
ip netns add rb
ip link add va netns ra type veth peer name vb netns rb
ip -n ra addr add 10.99.0.1/24 dev va
ip -n rb addr add 10.99.0.2/24 dev vb
for r in ra rb; do ip -n $r link set lo up; done
ip -n ra link set va up
ip -n rb link set vb up
for r in ra rb; do
    ip netns exec $r unshare --mount --propagation private sh "$T/router.sh" "$T" $r &
done
trap 'exit 0' TERM
while :; do sleep 1; done
"""

# One router: its mounts, ubusd, the daemon, keepalived (stopped with SIGTERM
# from inside its PID namespace once the test creates $T/$r.stop, started
# again once it creates $T/$r.start).
ROUTER = r"""set -e
T="$1"; r="$2"
mount -t tmpfs ubus /run/ubus
mkdir -p /usr/share/libubox
mount --bind "$T/libubox" /usr/share/libubox
"$T/bin/ubusd" &
while [ ! -S /run/ubus/ubus.sock ]; do sleep 0.05; done
PYTHONPATH="$PYB:$REPO" "$PY" -m owsync daemon -c "$T/$r.conf" --no-syslog \
    >"$T/$r.log" 2>&1 &
# keepalived after owsync, as a router boots them: a notify line before the
# daemon is on the bus is lost (the hotplug script is quiet about it)
while ! "$T/bin/ubus" -t 1 wait_for owsync 2>/dev/null; do sleep 0.1; done
keepalived_() {
    keepalived -n -l -D -f "$T/$r.keepalived.conf" -p "$T/$r.k.pid" -r "$T/$r.v.pid" \
        --no-syslog >>"$T/$r.keepalived.log" 2>&1 &
    k=$!
}
keepalived_
while [ ! -e "$T/$r.stop" ]; do sleep 0.1; done
kill -TERM $k
wait $k || true
while [ ! -e "$T/$r.start" ]; do sleep 0.1; done
keepalived_
wait
"""

# keepalived's notify line, as OpenWrt's: an empty environment, then the
# hotplug script sourced in a subshell as hotplug-call does, by busybox ash as
# on OpenWrt (jshn.sh needs ash's `export -n`).
NOTIFY = r"""#!/bin/sh
exec env -i ACTION="$1" TYPE=INSTANCE NAME="$2" PATH="{bin}:/usr/sbin:/usr/bin:/sbin:/bin" \
    {busybox} sh -c '( . "{hotplug}" )' 2>>"{log}"
"""

KEEPALIVED = """global_defs {{
    router_id {name}
    script_user root
}}
vrrp_instance VI_LAN {{
    state BACKUP
    nopreempt
    interface {dev}
    virtual_router_id 51
    priority {prio}
    advert_int 1
    unicast_src_ip {me}
    unicast_peer {{
        {other}
    }}
    virtual_ipaddress {{
        10.99.0.254/24
    }}
    notify_master "{notify} NOTIFY_MASTER VI_LAN"
    notify_backup "{notify} BACKUP VI_LAN"
    notify_fault "{notify} NOTIFY_FAULT VI_LAN"
    notify_stop "{notify} NOTIFY_STOP VI_LAN"
}}
"""


class Pair:
    """Two routers in namespaces of the test's own; stopped by killing its PID 1."""

    def __init__(self, tmp: Path) -> None:
        self.t = tmp
        bindir = tmp / "bin"
        bindir.mkdir()
        root = Path(os.environ[ROOT_ENV])
        for name, src in (("ubusd", os.environ["OWSYNC_UBUSD"]),
                          ("ubus", os.environ["OWSYNC_UBUS"]),
                          ("jsonfilter", str(root / "usr/bin/jsonfilter")),
                          ("jshn", str(root / "usr/bin/jshn"))):  # fmt: skip
            (bindir / name).symlink_to(src)
        (tmp / "libubox").mkdir()
        shutil.copy(root / "usr/share/libubox/jshn.sh", tmp / "libubox/jshn.sh")
        (tmp / "router.sh").write_text(ROUTER)
        (tmp / "topology.sh").write_text(TOPOLOGY)
        notify = tmp / "notify.sh"
        notify.write_text(NOTIFY.format(bin=bindir, hotplug=HOTPLUG, log=tmp / "notify.log",
                                        busybox=_busybox()))  # fmt: skip
        notify.chmod(0o755)
        for r, me, other, dev, prio in (("ra", "10.99.0.1", "10.99.0.2", "va", 150),
                                        ("rb", "10.99.0.2", "10.99.0.1", "vb", 100)):  # fmt: skip
            d = tmp / r
            d.mkdir()
            (tmp / f"{r}.conf").write_text(
                f"bind_host={me}\nport=4321\nsync_dir={d}\ndatabase={tmp}/{r}.db\n"
                f"encryption_key={KEY}\ncontrol_socket={tmp}/{r}.sock\ninclude=*\n"
                f"peer={other}\nlog_level=3\npoll_interval=300\n"
            )
            (tmp / f"{r}.conf").chmod(0o600)
            (tmp / f"{r}.keepalived.conf").write_text(KEEPALIVED.format(
                name=r, dev=dev, prio=prio, me=me, other=other, notify=notify))  # fmt: skip
        env = {**os.environ, "PY": sys.executable, "PYB": os.environ["OWSYNC_PYBINDINGS"],
               "REPO": str(REPO)}  # fmt: skip
        self.log = open(tmp / "namespace.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private",
             "sh", str(tmp / "topology.sh"), str(tmp)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def status(self, r: str) -> dict:
        res = subprocess.run(
            [sys.executable, "-m", "owsync", "status", "--json", "--control-socket",
             str(self.t / f"{r}.sock")],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        return json.loads(res.stdout) if res.returncode == 0 else {}

    def role(self, r: str) -> str | None:
        return self.status(r).get("vrrp", {}).get("VI_LAN", {}).get("role")

    def peer_role(self, r: str) -> str | None:
        peers = self.status(r).get("peers") or [{}]
        return ((peers[0].get("vrrp") or {}).get("VI_LAN") or {}).get("role")

    def logs(self) -> str:
        out = []
        for name in ("namespace.log", "notify.log", "ra.log", "rb.log", "ra.keepalived.log",
                     "rb.keepalived.log"):  # fmt: skip
            p = self.t / name
            out.append(f"--- {name}\n" + (p.read_text()[-3000:] if p.exists() else ""))
        return "\n".join(out)

    def pid1(self) -> int | None:
        """The namespaces' PID 1 (topology.sh), seen from here: unshare's child."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        return int(kids.split()[0]) if kids.split() else None

    def stop(self) -> None:
        pid1 = self.pid1()
        if pid1 is not None:
            os.kill(pid1, 9)  # PID 1 of our namespaces: everything in them goes with it
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def pair(tmp_path):
    why = _keepalived_skip()
    if why is not None:
        pytest.skip(why)
    p = Pair(tmp_path)
    yield p
    p.stop()


def test_a_real_failover_swaps_the_roles_in_both_statuses(pair):
    p = pair
    # both start as BACKUP; the higher priority (ra) becomes MASTER some seconds later
    assert wait_for(lambda: p.role("ra") == "MASTER" and p.role("rb") == "BACKUP", 30), p.logs()
    assert wait_for(lambda: p.peer_role("rb") == "MASTER" and p.peer_role("ra") == "BACKUP", 15)
    (p.t / "rb" / "dhcp").write_text("config dnsmasq\n")  # the BACKUP's change, synced
    assert wait_for(lambda: (p.t / "ra" / "dhcp").exists(), 15), p.logs()
    before = p.status("rb")
    assert before["vrrp"]["VI_LAN"]["reconciled"], before["vrrp"]
    reconciles = before["peers"][0]["live"]["reconciles"]

    # the MASTER's keepalived stops: the BACKUP takes over
    began = time.monotonic()
    (p.t / "ra.stop").touch()  # its router's shell sends keepalived SIGTERM
    assert wait_for(lambda: p.role("rb") == "MASTER" and p.peer_role("ra") == "MASTER", 20), (
        p.logs()
    )
    took_master = time.monotonic() - began
    # ra's keepalived said STOP: ra has no role, here or as rb sees it
    assert wait_for(lambda: p.role("ra") is None and p.peer_role("rb") is None, 10), p.logs()
    # the new MASTER reconciled with its peer after it became MASTER
    assert wait_for(lambda: not p.status("rb")["vrrp"]["VI_LAN"]["reconciling"], 10)
    st = p.status("rb")
    here = st["vrrp"]["VI_LAN"]
    assert here["reconciled"] >= here["since"] >= before["vrrp"]["VI_LAN"]["since"]
    assert st["peers"][0]["live"]["reconciles"] > reconciles
    assert "VRRP instance VI_LAN: MASTER" in (p.t / "rb.log").read_text()
    assert "reconciled with 1 of 1 peer(s)" in (p.t / "rb.log").read_text()

    # ra's keepalived back (nopreempt): ra is BACKUP, the roles are swapped on both sides
    began = time.monotonic()
    (p.t / "ra.start").touch()
    assert wait_for(lambda: p.role("ra") == "BACKUP" and p.peer_role("rb") == "BACKUP", 20), (
        p.logs()
    )
    took_backup = time.monotonic() - began
    assert p.role("rb") == "MASTER" and p.peer_role("ra") == "MASTER"
    assert (p.t / "notify.log").read_text() == ""  # the hotplug script said nothing
    print(
        f"failover: rb MASTER in both statuses {took_master:.1f} s after ra's keepalived"
        f" stopped; ra BACKUP in both {took_backup:.1f} s after it started again"
    )
