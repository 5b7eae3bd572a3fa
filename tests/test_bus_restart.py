"""ubusd killed and restarted under load: owsync's objects come back, no sync is lost.

Opt-in, with OpenWrt's real ubusd, ubus CLI, procd and the python bindings
(README, "Tests that need outside components"), as in test_openwrt_real.py:

    OWSYNC_UBUSD=... OWSYNC_UBUS=... OWSYNC_PROCD=... OWSYNC_PYBINDINGS=... \
    [OWSYNC_OPENWRT_ROOT=...] pytest tests/test_bus_restart.py

Each test is skipped, saying what is missing, when its components are absent.
OWSYNC_BUS_SEED=N replays one sequence of kill moments (default 1) and
OWSYNC_BUS_RESTARTS=N sets how many restarts (default 5).

What is restarted, and why only ubusd: on a router procd is PID 1 and
never restarts (its death is a kernel panic), while ubusd is one of its
services, with respawn, so a crash of ubusd is followed by a new ubusd on the
same socket within a second or so and every client reconnecting on its own.
These tests play procd's part in that: they kill ubusd with SIGKILL (its
socket file stays behind, as after a crash) at seeded random moments, under
a steady churn of changes on both nodes (bench/soak.py's driver: creates,
edits, deletes, last-writer-wins edits on both sides), and start a new
ubusd on the same socket after a seeded random outage, at once or up to two
seconds later.  After each restart, ``ubus call owsync status`` must answer
again (same PID) within a few seconds, ``ubus call owsync sync`` must start
a sync, and when the churn ends both trees must hold exactly the churn's
last writes, and the daemon at rest no more descriptors or threads than
before the first kill (each reconnection opens a new ubus connection; the
first two tests, where the daemon's PID is ours to read).

- ``test_ubusd_killed_under_churn``: the daemon run directly, as in
  test_openwrt_real.py; also the LuCI object and the ``owsync.sync`` event
  after the last restart.
- ``test_ubusd_killed_while_procd_runs_owsync``: the real procd, as an
  ordinary process serving ``service`` on the bus (test_openwrt_real.py's
  way), runs the daemon as the instance the init script declares.  procd
  reconnects on its own; after each restart its ``service`` object is back,
  it still lists the instance running with the same PID (it neither lost nor
  restarted it), and ``service signal`` still reaches it (SIGHUP, a reload).
- ``test_ubusd_killed_in_the_openwrt_root``: with OWSYNC_OPENWRT_ROOT (root,
  namespaces), the chroot of tests/owrt_chroot.py, where owsync runs from its
  real init script under rc.common and procd on the default bus socket, with
  a second daemon in the same namespace as its peer; ubusd, started by the
  chroot's boot script, is killed and started again the same way.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ENV, KEY, Bus, bindings_env, need, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # noqa: E402 - bench/ is not a package

SEED = int(os.environ.get("OWSYNC_BUS_SEED", "1"))
RESTARTS = int(os.environ.get("OWSYNC_BUS_RESTARTS", "5"))
BACK_WITHIN = 10.0  # seconds for the object to answer after ubusd is back (RETRY is 2 s)
RATE = 5.0  # changes per second


class RestartingBus(Bus):
    """The test's ubusd, killed with SIGKILL and started again on the same socket."""

    def kill9(self) -> None:
        self.ubusd.kill()  # by PID: our own child
        self.ubusd.wait(5)
        assert self.sock.exists()  # left behind, as after a crash

    def restart(self) -> None:
        self.start()  # ubusd unlinks the stale socket itself
        assert wait_for(lambda: self.ubus("list").returncode == 0, 5)

    def answer(self, obj: str, method: str, data: dict | None = None) -> dict | None:
        """The reply of a call, or None when it fails (ubusd down, no such object)."""
        args = ["-t", "5", "call", obj, method] + ([json.dumps(data)] if data else [])
        r = self.ubus(*args)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout or "{}")
        except ValueError:
            return None


@pytest.fixture
def bus(tmp_path):
    need("UBUSD", "UBUS")
    b = RestartingBus(tmp_path)
    yield b
    b.stop()


def daemon_env() -> dict:
    env = bindings_env()
    env.pop("OWSYNC_KEY", None)
    return env


def restarts(bus: RestartingBus, churn: soak.Churn, rng: random.Random, check) -> list[float]:
    """Kill ubusd at random moments under the churn; after each restart, ``check(i)``.

    Returns how long the owsync object took to answer after each restart.
    """
    back = []
    for i in range(RESTARTS):
        time.sleep(rng.uniform(0.3, 3.0))  # a random moment of the churn
        before = churn.ops
        bus.kill9()
        time.sleep(rng.choice([0.0, rng.uniform(0.1, 2.0)]))  # the outage
        bus.restart()
        up = time.monotonic()
        assert wait_for(lambda: bus.answer("owsync", "status") is not None, BACK_WITHIN), i
        back.append(time.monotonic() - up)
        check(i)
        # the churn went on meanwhile (a restart may take less than its step)
        assert wait_for(lambda n=before: churn.ops > n, 2), f"the churn stalled: {churn.error!r}"
    return back


def assert_converged(churn: soak.Churn) -> None:
    churn.stop()
    diffs = soak.converge(churn.dirs, churn, timeout=60)
    assert not any(diffs.values()), diffs
    assert churn.ops >= RATE * RESTARTS, churn.ops


def assert_no_leak(node: soak.SoakDaemon, pid: int, rest: dict) -> None:
    """Descriptors and threads at rest are what they were before the restarts."""
    assert wait_for(node.idle, 30)
    now = soak.settle(pid)
    assert now["fds"] <= rest["fds"] + 2, (rest, now)
    assert now["threads"] <= rest["threads"] + 2, (rest, now)
    print(f"at rest before / after: {rest} / {now}")


def test_ubusd_killed_under_churn(bus, tmp_path):
    rng = random.Random(SEED)
    a, b = soak.SoakDaemon(tmp_path, "a"), soak.SoakDaemon(tmp_path, "b")
    a.configure([b.addr], extra=f"ubus_socket={bus.sock}\n")
    b.configure([a.addr])
    churn = soak.Churn({"a": a.dir, "b": b.dir}, rate=RATE, seed=SEED)
    try:
        a.start(env=daemon_env())
        b.start()
        assert wait_for(lambda: bus.has("owsync"), 10), a.text()
        pid = bus.answer("owsync", "status")["pid"]
        assert pid == a.proc.pid
        assert wait_for(a.idle, 10)
        rest = soak.settle(pid)
        churn.start()

        def check(i: int) -> None:
            assert bus.answer("owsync", "status")["pid"] == pid, i
            assert bus.answer("owsync", "sync") == {"started": [b.addr]}, i
            luci = bus.answer("luci.owsync", "status", {"ubus_rpc_session": "0" * 32})
            assert luci is not None and luci["pid"] == pid, i
            assert a.alive() and b.alive()

        back = restarts(bus, churn, rng, check)
        print(f"owsync answered again {', '.join(f'{t:.1f}' for t in back)} s after each restart")
        assert_converged(churn)
        # the events still reach the bus: a change arriving from B is announced
        events = tmp_path / "events"
        with open(events, "w") as out:
            listener = bus.spawn([ENV["UBUS"], "-s", str(bus.sock), "-t", "15", "listen",
                                  "owsync.sync"], stdout=out)  # fmt: skip
            time.sleep(0.5)
            (b.dir / "after-restarts").write_text("last\n")
            assert wait_for(lambda: "after-restarts" in events.read_text(), 10), a.text()
            listener.terminate()
            listener.wait(5)
        assert a.text().count("re-registered") >= RESTARTS, a.text()
        assert "Traceback" not in a.text() and "internal error" not in a.text()
        assert_no_leak(a, pid, rest)
    finally:
        churn.halt.set()
        for n in (a, b):
            n.stop()


def test_ubusd_killed_while_procd_runs_owsync(bus, tmp_path):
    need("UBUSD", "UBUS", "PROCD")
    rng = random.Random(SEED + 1)
    bus.start_procd(tmp_path)
    a, b = soak.SoakDaemon(tmp_path, "a"), soak.SoakDaemon(tmp_path, "b")
    a.configure([b.addr], extra=f"ubus_socket={bus.sock}\n")
    b.configure([a.addr])
    daemon = f"exec {sys.executable} -m owsync daemon --no-syslog -c {a.conf}"
    service = {
        "name": "owsync",
        "instances": {
            "owsync": {  # what openwrt/owsync/files/etc/init.d/owsync declares, but the command
                "command": ["/bin/sh", "-c", f"{daemon} 2>>{a.log}"],
                "env": {"PYTHONPATH": daemon_env()["PYTHONPATH"]},
                "respawn": [3600, 1, 5],
                "stderr": True,
                "file": [str(a.conf)],
                "reload_signal": signal.SIGHUP.value,
            }
        },
    }

    def instance() -> dict:
        listed = bus.answer("service", "list", {"name": "owsync"}) or {}
        return listed.get("owsync", {}).get("instances", {}).get("owsync", {})

    churn = soak.Churn({"a": a.dir, "b": b.dir}, rate=RATE, seed=SEED + 1)
    try:
        bus.call("service", "set", service)
        assert wait_for(lambda: bus.has("owsync"), 15), a.text()
        pid = instance()["pid"]
        assert bus.answer("owsync", "status")["pid"] == pid
        b.start()
        assert wait_for(a.idle, 10)
        rest = soak.settle(pid)
        churn.start()

        def check(i: int) -> None:
            assert wait_for(lambda: bus.has("service"), 5), f"procd not back on the bus ({i})"
            inst = instance()
            assert inst.get("running") and inst["pid"] == pid, (i, inst)
            assert bus.answer("owsync", "status")["pid"] == pid, i
            assert bus.answer("owsync", "sync") == {"started": [b.addr]}, i

        back = restarts(bus, churn, rng, check)
        print(f"owsync answered again {', '.join(f'{t:.1f}' for t in back)} s after each restart")
        # procd still controls its instance through the new bus: SIGHUP, a reload
        reloads = a.text().count("configuration reloaded")
        bus.answer("service", "signal", {"name": "owsync", "signal": signal.SIGHUP.value})
        assert wait_for(lambda: a.text().count("configuration reloaded") > reloads, 5), a.text()
        assert_converged(churn)
        assert instance()["pid"] == pid
        assert "Traceback" not in a.text() and "internal error" not in a.text()
        assert_no_leak(a, pid, rest)
    finally:
        churn.halt.set()
        b.stop()
        bus.answer("service", "delete", {"name": "owsync"})
        wait_for(lambda: not instance(), 10)


# --- in the OpenWrt root: the real init script ------------------------------------


def _chroot_skip() -> str | None:
    from owrt_chroot import skip_reason

    return skip_reason()


PEER_PORT = 4400  # in the test's own network namespace: nothing else is there
PEER_CONF = f"""bind_host=127.0.0.1
port={PEER_PORT}
sync_dir=/srv/peer
database=/srv/peer.db
encryption_key={KEY}
control_socket=/srv/peer.sock
ubus_socket=/nonexistent/ubus.sock
log_level=2
include=*
peer=127.0.0.1:4321
"""


@pytest.mark.skipif(_chroot_skip() is not None, reason=_chroot_skip() or "")
def test_ubusd_killed_in_the_openwrt_root(tmp_path):
    from owrt_chroot import OpenWrtRoot

    def prepare(staging: Path) -> None:
        (staging / "srv/peer").mkdir(parents=True)
        (staging / "srv/router").mkdir(parents=True)
        (staging / "srv/peer.conf").write_text(PEER_CONF)
        (staging / "srv/peer.conf").chmod(0o600)
        (staging / "etc/owsync").mkdir(parents=True, exist_ok=True)
        (staging / "etc/owsync/key").write_text(KEY + "\n")
        (staging / "etc/owsync/key").chmod(0o600)

    r = OpenWrtRoot(tmp_path, prepare=prepare)
    churn = None
    try:
        r.ok("(owsync daemon --no-syslog -c /srv/peer.conf </dev/null >/srv/peer.log 2>&1 &)")
        r.ok(
            "uci set owsync.main.enabled=1; uci set owsync.main.dir=/srv/router;"
            " uci set owsync.main.host=127.0.0.1;"
            f" uci add_list owsync.main.peer=127.0.0.1:{PEER_PORT}; uci commit owsync;"
            " /etc/init.d/owsync start"
        )

        def status() -> dict | None:
            res = r.sh("ubus -t 5 call owsync status", timeout=20)
            return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None

        def instance_pid() -> int | None:
            res = r.sh('ubus -t 5 call service list \'{"name":"owsync"}\'', timeout=20)
            if res.returncode != 0 or not res.stdout.strip():
                return None
            inst = json.loads(res.stdout).get("owsync", {}).get("instances", {})
            running = [i["pid"] for i in inst.values() if i.get("running")]
            return running[0] if len(running) == 1 else None

        def ubusd_pid() -> int:
            """ubusd in our PID namespace, as the chroot sees it (only ours are there)."""
            out = r.ok(
                'for p in /proc/[0-9]*; do [ "$(readlink $p/exe)" = /sbin/ubusd ]'
                " && echo ${p#/proc/}; done; true"
            ).split()
            assert len(out) == 1, out
            return int(out[0])

        assert wait_for(lambda: status() is not None, 20), r.ok("/sbin/logread | tail -30")
        pid = instance_pid()
        assert pid and status()["pid"] == pid
        root = Path(f"/proc/{r.pid1()}/root")  # the chroot's files, seen from here
        dirs = {"router": root / "srv/router", "peer": root / "srv/peer"}
        churn = soak.Churn(dirs, rate=RATE, seed=SEED + 2)
        churn.start()
        rng = random.Random(SEED + 2)
        back = []
        for i in range(RESTARTS):
            time.sleep(rng.uniform(0.3, 3.0))
            before = churn.ops
            r.ok(f"kill -9 {ubusd_pid()}")
            time.sleep(rng.choice([0.0, rng.uniform(0.1, 2.0)]))
            r.ok("(/sbin/ubusd </dev/null >/dev/null 2>&1 &)")
            up = time.monotonic()
            assert wait_for(lambda: status() is not None, BACK_WITHIN), (i, r.ok("/sbin/logread"))
            back.append(time.monotonic() - up)
            assert status()["pid"] == pid, i
            assert wait_for(lambda: instance_pid() == pid, 5), (i, "procd lost the instance")
            assert json.loads(r.ok("ubus call owsync sync")) == {
                "started": [f"127.0.0.1:{PEER_PORT}"]
            }
            assert wait_for(lambda n=before: churn.ops > n, 2), f"churn stalled: {churn.error!r}"
        print(f"owsync answered again {', '.join(f'{t:.1f}' for t in back)} s after each restart")
        assert_converged(churn)
        log = r.ok("/sbin/logread")
        assert log.count("re-registered") >= RESTARTS, log
        assert "Traceback" not in log and "internal error" not in log
    finally:
        if churn is not None:
            churn.halt.set()
        r.stop()
