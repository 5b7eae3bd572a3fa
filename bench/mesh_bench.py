"""Full meshes of 2, 3 and 5 daemons: how long a write takes to reach every node.

    python bench/mesh_bench.py [--nodes 2,3,5] [--writes 20] [--churn-rate 2.0]
                               [--big-files 10000] [--big-edits 20] [--skip-big]
                               [--timeout 10] [--idle-gap 0.2] [--churn-gap 1.0]
                               [--settle-timeout 180] [--seed 1] [--no-source] [--keep]
                               [--mixed v1|1.2.0] [--c-poll 30]

For each mesh size N: N real `owsync daemon` processes, encrypted with a
generated key, node i listening on 127.0.0.i (the same port on every
address), each listing every other node as a peer (``peer=127.0.0.j``, bound
to its own address as source, ``,127.0.0.i``, so that each node's
connections come from its own address as between routers), include=*, log
level 2, their output captured to files.  Once the mesh is up (every peer's
last session ok, every tree equal), two phases:

- idle: --writes measured writes, one at a time, each on a random node (a
  new file or an edit of an existing one, unique content, renamed into
  place as `uci commit` does), timed from just before the write until every
  other node's copy holds that content (polled every 2 ms); a write not
  everywhere within --timeout seconds is a miss.  Each write waits for a
  quiet mesh (every peer of every node idle, from the status) and then
  --idle-gap seconds (0.5-1.5 times, at random);
- churn: the same, while a background thread writes --churn-rate files a
  second (others than the measured ones) on random nodes; a measured write
  follows the arrival of the previous one after --churn-gap seconds
  (0.5-1.5 times), so the measured writes add at most one a second.

Per phase: median, p95 and max of those times, the misses, the lines the
daemons logged at level ERROR ("owsync: error: ...") during the phase, the
outgoing sessions they logged ("sync with PEER ok|failed"; each session is
logged by both ends, the outgoing line is counted) per change (measured
writes plus churn writes), and messages per change from the per-peer
live-connection counters of the status (``peers[].live``) when the daemons
have them ("n/a" when they do not); the logs and counters are read from the
phase's start until the mesh has settled after its last write: every tree
equal, every peer idle after an ok session ("settled after", in seconds from
the end of the writes; NO when not within --settle-timeout).

Then the big tree: 2 daemons whose tree holds --big-files files; after the
initial sync, --big-edits single-file edits (alternating between the
nodes; after each, until it has arrived and neither daemon has used CPU
for a second, so that no session of one overlaps the next); the CPU time
(utime + stime from /proc/PID/stat) each daemon used over them, per change.

--mixed puts one node of another kind in each mesh, as node 1: ``v1``, one
of ours that speaks protocol v1 only (OWSYNC_MAX_PROTOCOL=1: sessions, no
live link); ``1.2.0``, owsync 1.2.0's daemon (OWSYNC_C_BIN), polling every
--c-poll seconds (its default 30).  With 1.2.0 the measured writes are made
on our nodes only (one made on 1.2.0 waits for its poll), timed until every
other node, 1.2.0 included, holds it; churn writes are made on every node;
1.2.0 has no status, so "quiet" and "settled" look at ours only and at the
trees, and its log is not counted.

Goals (the issue): p95 <= 0.3 s for 5 nodes under churn, <= 0.2 s for 3,
0 misses, 0 error lines; a one-file change in a 10,000-file tree costs each
node less than 20 ms of CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib import (
    ROOT,
    Paced,
    cpu_seconds,
    fill,
    listening_on,
    scratch,
    stop_child,
    tree,
    wait_for,
    write_daemon_conf,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from owsync.service import control  # noqa: E402 - after the checkout is on the path

POLL = 0.002  # seconds between two looks at the other nodes' copies
SESSION_LINE = re.compile(r"^owsync: (?:error: )?sync with (\S+) (ok|failed)\b")
ERROR_LINE = re.compile(r"^owsync: error: ")


def addr(i: int) -> str:
    return f"127.0.0.{i}"


def common_port(n: int, tries: int = 50) -> int:
    """A port free on every one of 127.0.0.1..n."""
    for _ in range(tries):
        with socket.socket() as s:
            s.bind((addr(1), 0))
            port = s.getsockname()[1]
        socks = []
        try:
            for i in range(1, n + 1):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr(i), port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on every loopback address")


def put(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """A complete file renamed into place (its temp a dot-file: never synced;
    for 1.2.0, which skips a leading dot only, in the top directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = (tmp_dir or path.parent) / f".bench-{path.name}-{threading.get_ident()}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- one daemon ----------------------------------------------------------------


class Node:
    def __init__(self, work: Path, i: int, port: int, key: str) -> None:
        self.i = i
        self.host = addr(i)
        self.port = port
        self.key = key
        self.dir = work / f"n{i}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = work / f"n{i}.db"
        self.sock = work / f"n{i}.sock"
        self.conf = work / f"n{i}.conf"
        self.log = work / f"n{i}.log"
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self.peers: list[str] = []

    def configure(self, others: list[int], source: bool) -> Node:
        self.peers = [addr(j) + (f",{self.host}" if source else "") for j in others]
        write_daemon_conf(self.conf, self.host, self.port, self.dir, self.db, self.key,
                          self.peers, sock=self.sock, log_level=2)  # fmt: skip
        return self

    c = False  # owsync 1.2.0 (CNode)
    v1_only = False  # OWSYNC_MAX_PROTOCOL=1

    def tmp_dir(self) -> Path | None:
        return None

    def start(self) -> None:
        env = {
            k: v for k, v in os.environ.items() if k not in ("OWSYNC_KEY", "OWSYNC_MAX_PROTOCOL")
        }
        if self.v1_only:
            env["OWSYNC_MAX_PROTOCOL"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "owsync", "daemon", "--no-syslog", "-c", str(self.conf)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=self._logf)

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon n{self.i} exited: {self.text()[-2000:]}")
        return self.sock.exists() and listening_on(self.host, self.port)

    def stop(self) -> None:
        """SIGTERM by PID (our own child), SIGKILL if it will not end."""
        stop_child(self.proc)
        if self._logf:
            self._logf.close()
            self._logf = None

    def text(self, start: int = 0) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def status(self) -> dict | None:
        try:
            return control.request(str(self.sock), {"method": "status"}, timeout=10)
        except (control.ControlError, OSError):
            return None

    def sync_now(self) -> None:
        with contextlib.suppress(control.ControlError, OSError):
            control.request(str(self.sock), {"method": "sync"}, timeout=10)

    def idle(self) -> bool:
        """No session running or due with any peer (incoming ones are some other
        node's outgoing ones)."""
        st = self.status()
        return st is not None and all(
            p.get("state") in ("idle", "connected") for p in st.get("peers", [])
        )

    def synced(self) -> bool:
        """Every peer idle and its last session ok."""
        st = self.status()
        return st is not None and all(
            p.get("state") in ("idle", "connected") and p.get("last_result") == "ok"
            for p in st.get("peers", [])
        )


class CNode(Node):
    """owsync 1.2.0's daemon: no control socket, no status; its own log format."""

    c = True
    poll = 30

    def tmp_dir(self) -> Path | None:
        return self.dir

    def configure(self, others: list[int], source: bool) -> Node:
        self.peers = [addr(j) + (f",{self.host}" if source else "") for j in others]
        write_daemon_conf(self.conf, self.host, self.port, self.dir, self.db, self.key,
                          self.peers, poll=self.poll)  # fmt: skip
        return self

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "OWSYNC_KEY"}
        self._logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [os.environ["OWSYNC_C_BIN"], "daemon", "-f", "-c", str(self.conf)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=self._logf)

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"1.2.0 daemon n{self.i} exited: {self.text()[-2000:]}")
        return listening_on(self.host, self.port)

    def status(self) -> dict | None:
        return None

    def sync_now(self) -> None:
        pass

    def idle(self) -> bool:
        return True

    def synced(self) -> bool:
        return True


def start_nodes(nodes: list[Node], timeout: float = 60.0) -> None:
    for n in nodes:
        n.start()
    if not wait_for(lambda: all(n.started() for n in nodes), timeout):
        raise RuntimeError("the daemons did not start listening")
    # the first sessions met peers not yet listening and back off: sync now
    for n in nodes:
        n.sync_now()


def settle(nodes: list[Node], timeout: float) -> float | None:
    """Wait until every tree is equal and every peer idle after an ok session;
    the seconds that took, None if not within ``timeout``."""

    def quiet() -> bool:
        first = tree(nodes[0].dir)
        return all(tree(n.dir) == first for n in nodes[1:]) and all(n.synced() for n in nodes)

    t0 = time.monotonic()
    while not quiet():
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.2)
    took = time.monotonic() - t0
    time.sleep(0.3)  # the sessions that follow the last ones end
    return took if quiet() else None


def peer_states(nodes: list[Node]) -> str:
    """Each node's peers, their state and last result (for a mesh that did not settle)."""
    out = []
    for n in nodes:
        st = n.status() or {}
        out.append(f"n{n.i}: " + ", ".join(
            f"{p.get('address')} {p.get('state')} ({p.get('last_result')})"
            for p in st.get("peers", [])))  # fmt: skip
    return "; ".join(out)


# --- counters from the logs and the status ---------------------------------------


class Marks:
    """Where each daemon's log ended, and its live counters, at a point in time."""

    def __init__(self, nodes: list[Node]) -> None:
        self.offsets = {n.i: n.log_size() for n in nodes}
        self.live = live_counters(nodes)


def live_counters(nodes: list[Node]) -> dict[str, float] | None:
    """The numeric fields of every ``peers[].live`` object, summed over the nodes.

    None when any peer of any node has no ``live`` object (today's daemons),
    but for the peer that speaks v1 only or is 1.2.0 (--mixed): it has none."""
    total: dict[str, float] = {}
    odd = {n.host for n in nodes if n.c or n.v1_only}
    for n in nodes:
        if n.host in odd:
            continue  # no live link: 1.2.0 (no status either), or v1 only
        st = n.status()
        if st is None:
            return None
        for p in st.get("peers", []):
            live = p.get("live")
            if str(p.get("address", "")).split(",")[0] in odd:
                continue
            if not isinstance(live, dict):
                return None
            for k, v in live.items():
                if k in COUNTERS and isinstance(v, int):
                    total[k] = total.get(k, 0) + v
    return total


# the counters of a peers[].live object (the others are times: connected
# since, last update sent or received, last reconcile; a difference of two
# of them is no count, and one may be null in the earlier snapshot)
COUNTERS = frozenset(("messages_sent", "messages_received", "updates_sent", "updates_received",
                      "files_sent", "files_received", "deleted", "reconciles"))  # fmt: skip


def log_figures(nodes: list[Node], since: Marks) -> dict:
    """Sessions (outgoing, ok and failed) and ERROR lines logged since ``since``."""
    ok = failed = 0
    errors: list[str] = []
    for n in nodes:
        if n.c:
            continue  # 1.2.0's log: its own format, not counted
        for line in n.text(since.offsets[n.i]).splitlines():
            m = SESSION_LINE.match(line)
            if m and m.group(1) in n.peers:  # an incoming one names an ephemeral port
                if m.group(2) == "ok":
                    ok += 1
                else:
                    failed += 1
            if ERROR_LINE.match(line) or line.startswith("Traceback"):
                errors.append(f"n{n.i}: {line}")
    return {"sessions": ok, "failed": failed, "errors": errors}


# --- writes ----------------------------------------------------------------------


class Churn(Paced):
    """``rate`` writes a second, evenly paced, each on a random node: creates and
    edits of ``churn/nI-K`` files that only node I writes (so churn writes do
    not race each other on one path)."""

    what = "the churn thread"

    def __init__(self, nodes: list[Node], rate: float, seed: int, pool: int = 10) -> None:
        super().__init__("mesh-churn", rate)
        self.nodes = nodes
        self.rng = random.Random(seed)
        self.pool = pool
        self.ops = 0

    def step(self) -> None:
        n = self.rng.choice(self.nodes)
        path = n.dir / "churn" / f"n{n.i}-{self.rng.randrange(self.pool)}"
        data = f"churn {self.ops} on n{n.i} at {time.time():.6f}\n".encode()
        put(path, data, n.tmp_dir())
        self.ops += 1


def holds(path: Path, data: bytes, seen: dict) -> bool:
    """Whether ``path`` holds ``data``; reads it only when its stat changed."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    if seen.get(path) == key:
        return False
    if st.st_size != len(data):
        seen[path] = key
        return False
    try:
        ok = path.read_bytes() == data
    except OSError:
        return False
    if not ok:
        seen[path] = key
    return ok


def measure(nodes: list[Node], writes: int, timeout: float, rng: random.Random,
            tag: str, gap: float, quiet: bool) -> tuple[list[float], int, int]:  # fmt: skip
    """``writes`` timed writes on random nodes; (the times, the misses, the
    waits for a quiet mesh that timed out).

    With ``quiet``, each write waits until no session runs or is due anywhere
    (every peer of every node idle) and then 0.5-1.5 ``gap``; without, after
    the previous write arrived, it waits 0.5-1.5 ``gap`` only."""
    times: list[float] = []
    misses = unquiet = 0
    existing = sorted(names(nodes[0].dir / "m")) if (nodes[0].dir / "m").exists() else []
    for k in range(writes):
        if quiet and not mesh_quiet(nodes, timeout):
            unquiet += 1
        time.sleep(gap * rng.uniform(0.5, 1.5))
        src = rng.choice([n for n in nodes if not n.c])  # 1.2.0's waits for its poll
        if existing and rng.random() < 0.5:
            name = rng.choice(existing)
        else:
            name = f"{tag}-{k}"
            existing.append(name)
        data = f"{tag} write {k} on n{src.i} at {time.time():.6f} {rng.getrandbits(64):x}\n"
        data = data.encode()
        others = [n.dir / "m" / name for n in nodes if n is not src]
        seen: dict = {}
        t0 = time.perf_counter()
        put(src.dir / "m" / name, data)
        pending = list(others)
        while pending:
            pending = [p for p in pending if not holds(p, data, seen)]
            if not pending:
                break
            if time.perf_counter() - t0 > timeout:
                break
            time.sleep(POLL)
        if pending:
            misses += 1
        else:
            times.append(time.perf_counter() - t0)
    return times, misses, unquiet


def mesh_quiet(nodes: list[Node], timeout: float) -> bool:
    """Wait until every peer of every node is idle, twice 50 ms apart."""

    def idle() -> bool:
        return all(n.idle() for n in nodes)

    def twice() -> bool:
        if not idle():
            return False
        time.sleep(0.05)
        return idle()

    return wait_for(twice, timeout, 0.05)


def cpu_quiet(pids: list[int], timeout: float, window: float = 1.0) -> bool:
    """Wait until none of ``pids`` used CPU for ``window`` seconds (read from
    /proc: the status request would cost the daemons CPU itself)."""
    deadline = time.monotonic() + timeout
    last = [cpu_seconds(p) for p in pids]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = [cpu_seconds(p) for p in pids]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= window:
            return True
    return False


def p95(xs: list[float]) -> float:
    """Nearest rank."""
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def run_mesh(n: int, opts, work: Path, key: str, rng: random.Random, say) -> list[dict]:
    port = common_port(n)
    nodes = [(CNode if opts.mixed == "1.2.0" and i == 1 else Node)(work / f"mesh{n}", i, port, key)
             for i in range(1, n + 1)]  # fmt: skip
    for node in nodes:
        node.v1_only = opts.mixed == "v1" and node.i == 1
        if isinstance(node, CNode):
            node.poll = opts.c_poll
    rows = []
    churn = None
    try:
        for node in nodes:
            node.configure([j for j in range(1, n + 1) if j != node.i], not opts.no_source)
        for j in range(5):  # something in the tree to edit from the first write on
            put(nodes[0].dir / "m" / f"seed-{j}", f"seed {j}\n".encode())
        t_up = time.monotonic()
        start_nodes(nodes)
        if settle(nodes, opts.settle_timeout) is None:
            raise RuntimeError(f"mesh of {n} did not converge at start")
        say(f"mesh of {n} up in {time.monotonic() - t_up:.1f} s (port {port})")
        for phase in ("idle", "churn"):
            marks = Marks(nodes)
            churn = Churn(nodes, opts.churn_rate, rng.getrandbits(32)) if phase == "churn" else None
            if churn:
                churn.start()
                time.sleep(1.0)  # the churn under way before the first measured write
            t0 = time.monotonic()
            quiet = phase == "idle"
            gap = opts.idle_gap if quiet else opts.churn_gap
            times, misses, unquiet = measure(nodes, opts.writes, opts.timeout, rng,
                                             f"{phase}{n}", gap, quiet)  # fmt: skip
            churn_ops = 0
            if churn:
                churn.stop()
                churn_ops = churn.ops
            elapsed = time.monotonic() - t0
            settled = settle(nodes, opts.settle_timeout)
            converged = settled is not None
            if not converged:
                say(f"  not settled after {opts.settle_timeout:.0f} s: {peer_states(nodes)}")
            logs = log_figures(nodes, marks)
            after = live_counters(nodes)
            changes = opts.writes + churn_ops
            live = None
            if marks.live is not None and after is not None:
                live = {k: (after.get(k, 0) - v) / changes for k, v in marks.live.items()}
            rows.append({
                "nodes": n, "phase": phase, "times": times, "misses": misses,
                "churn": churn_ops, "changes": changes, "converged": converged,
                "seconds": elapsed, **logs, "live": live, "unquiet": unquiet,
                "settled": settled,
            })  # fmt: skip
            say(f"  {phase}: {len(times)} timed, {misses} missed, {churn_ops} churn writes,"
                f" {logs['sessions']} sessions, converged {converged}")  # fmt: skip
    finally:
        if churn is not None:
            churn.halt.set()
            churn.join(10)
        for node in nodes:
            node.stop()
    return rows


# --- the big tree ------------------------------------------------------------------


def run_big(opts, work: Path, key: str, rng: random.Random, say) -> dict:
    port = common_port(2)
    nodes = [Node(work / "big", i, port, key) for i in (1, 2)]
    try:
        for node in nodes:
            node.configure([3 - node.i], not opts.no_source)
        fill(nodes[0].dir, opts.big_files, 1024)
        t_up = time.monotonic()
        start_nodes(nodes)
        want = len(names(nodes[0].dir))
        if not wait_for(lambda: len(names(nodes[1].dir)) >= want, 300, 0.5):
            raise RuntimeError("the big tree did not reach the second node")
        if not wait_for(lambda: all(n.synced() for n in nodes), 120, 0.5):
            raise RuntimeError("the big-tree daemons did not settle")
        say(f"big tree of {want} files synced in {time.monotonic() - t_up:.1f} s")
        time.sleep(2.0)  # the watchers' and sessions' after-effects end
        marks = Marks(nodes)  # status asked now, not during the edits: it reads the database
        pids = [n.proc.pid for n in nodes]
        unquiet = 0 if cpu_quiet(pids, 60) else 1
        before = [cpu_seconds(p) for p in pids]
        times, misses = [], 0
        t0 = time.monotonic()
        for k in range(opts.big_edits):
            src, dst = nodes[k % 2], nodes[1 - k % 2]
            name = f"d{rng.randrange(100):02d}/f{rng.randrange(opts.big_files):05d}"
            data = f"big edit {k} on n{src.i} {rng.getrandbits(64):x}\n".encode()
            seen: dict = {}
            t = time.perf_counter()
            put(src.dir / name, data)
            ok = wait_for(lambda p=dst.dir / name, d=data, s=seen: holds(p, d, s),
                          opts.timeout, POLL)  # fmt: skip
            if ok:
                times.append(time.perf_counter() - t)
            else:
                misses += 1
            # the sessions that follow (the echo back, retries) end before the next
            if not cpu_quiet(pids, 60):
                unquiet += 1
        elapsed = time.monotonic() - t0
        after = [cpu_seconds(p) for p in pids]
        logs = log_figures(nodes, marks)
        return {
            "files": want,
            "edits": opts.big_edits,
            "times": times,
            "misses": misses,
            "unquiet": unquiet,
            "seconds": elapsed,
            "cpu_ms": [(a - b) * 1000 / opts.big_edits for a, b in zip(after, before, strict=True)],
            **logs,
        }
    finally:
        for node in nodes:
            node.stop()


# --- output ------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def header() -> str:
    try:
        git = ["git", "-C", str(ROOT)]
        run = dict(capture_output=True, text=True, check=True)
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], **run).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"mesh_bench {time.strftime('%Y-%m-%d %H:%M:%S')}, commit {commit},"
        f" Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores,"
        f" load average {load}"
    )


def error_kinds(errors: list[str], most: int = 5) -> list[tuple[int, str]]:
    """The commonest ERROR lines, without their node and peer: (count, text)."""
    kinds: dict[str, int] = {}
    for line in errors:
        what = re.sub(r"^n\d+: owsync: error: (sync with \S+ failed: )?", "", line)
        kinds[what] = kinds.get(what, 0) + 1
    return sorted(((c, w) for w, c in kinds.items()), reverse=True)[:most]


def table(rows: list[dict]) -> str:
    out = [
        "| nodes | phase | median | p95 | max | misses | error lines | sessions/change"
        " | failed sessions | msgs/change | writes (measured + churn) | settled after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t = r["times"]
        lat = [f"{ms(statistics.median(t))} ms", f"{ms(p95(t))} ms", f"{ms(max(t))} ms"]
        msgs = "n/a"
        if r["live"] is not None and "messages_sent" in r["live"]:
            msgs = f"{r['live']['messages_sent']:.2f}"
        cells = [
            str(r["nodes"]),
            r["phase"],
            *(lat if t else ["-"] * 3),
            str(r["misses"]),
            str(len(r["errors"])),
            f"{(r['sessions'] + r['failed']) / r['changes']:.2f}",
            str(r["failed"]),
            msgs,
            f"{r['changes'] - r['churn']} + {r['churn']}",
            f"{r['settled']:.1f} s" if r["converged"] else "NO",
        ]
        out.append("| " + " | ".join(cells) + " |")
    lives = [r for r in rows if r["live"]]
    for r in lives:
        out.append(f"live counters per change, {r['nodes']} nodes {r['phase']} (sum over nodes): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["live"].items())))  # fmt: skip
    if not lives:
        out.append("msgs/change: n/a (no peers[].live object in the daemons' status)")
    for r in rows:
        if r["unquiet"]:
            out.append(f"{r['nodes']} nodes idle: {r['unquiet']} writes made before the mesh"
                       " was quiet (it did not settle within --timeout)")  # fmt: skip
        for count, what in error_kinds(r["errors"]):
            out.append(f"error lines, {r['nodes']} nodes {r['phase']}: {count} x {what}")
    return "\n".join(out)


def big_table(b: dict) -> str:
    t = b["times"]
    lat = f"median {ms(statistics.median(t))} ms, max {ms(max(t))} ms" if t else "none arrived"
    cpu = ", ".join(f"n{i + 1} {c:.1f}" for i, c in enumerate(b["cpu_ms"]))
    out = [
        f"big tree: {b['files']} files, 2 nodes, {b['edits']} one-file edits (alternating nodes)"
        f" over {b['seconds']:.1f} s",
        f"  CPU per change: {cpu} ms (max {max(b['cpu_ms']):.1f} ms; goal < 20 ms)",
        f"  latency {lat}, misses {b['misses']}, sessions/change"
        f" {(b['sessions'] + b['failed']) / b['edits']:.2f} ({b['failed']} failed),"
        f" error lines {len(b['errors'])}",
    ]
    if b["unquiet"]:
        out.append(f"  {b['unquiet']} edits made before the daemons were quiet")
    out += [f"  error lines: {count} x {what}" for count, what in error_kinds(b["errors"])]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="2,3,5", help="mesh sizes, comma-separated (at most 9)")
    ap.add_argument("--writes", type=int, default=20, help="measured writes per phase")
    ap.add_argument("--churn-rate", type=float, default=2.0, help="background writes a second")
    ap.add_argument(
        "--idle-gap",
        type=float,
        default=0.2,
        help="idle: mean pause between a quiet mesh and the next write, s",
    )
    ap.add_argument(
        "--churn-gap",
        type=float,
        default=1.0,
        help="churn: mean pause between a write's arrival and the next write, s",
    )
    ap.add_argument("--big-files", type=int, default=10000, help="files in the big tree")
    ap.add_argument("--big-edits", type=int, default=20, help="one-file edits in the big tree")
    ap.add_argument("--skip-big", action="store_true", help="no big-tree phase")
    ap.add_argument("--timeout", type=float, default=10.0, help="a write later than this: a miss")
    ap.add_argument(
        "--settle-timeout",
        type=float,
        default=180.0,
        help="how long a mesh may take to converge after a phase, s",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-source", action="store_true",
                    help="peer=127.0.0.j, no source address: connect from 127.0.0.1")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    ap.add_argument(
        "--mixed",
        choices=("v1", "1.2.0"),
        help="node 1 speaks v1 only (ours), or is owsync 1.2.0 (OWSYNC_C_BIN)",
    )
    ap.add_argument("--c-poll", type=int, default=30, help="1.2.0's poll_interval, s")
    opts = ap.parse_args()
    if opts.mixed == "1.2.0" and not os.access(os.environ.get("OWSYNC_C_BIN", ""), os.X_OK):
        ap.error("--mixed 1.2.0: set OWSYNC_C_BIN to owsync 1.2.0's binary")
    sizes = [int(x) for x in opts.nodes.split(",") if x.strip()]
    if any(not 2 <= s <= 9 for s in sizes):
        ap.error("--nodes: sizes from 2 to 9")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def on_term(*_) -> None:  # the finally blocks stop the daemons and remove the files
        raise SystemExit(f"mesh_bench: stopped by signal {signal.SIGTERM.name}")

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    mixed = {"v1": "speaks v1 only", "1.2.0": f"owsync 1.2.0, poll {opts.c_poll} s"}
    print(header() + (f"; node 1 {mixed[opts.mixed]}" if opts.mixed else ""), flush=True)
    key = os.urandom(32).hex()  # a generated key, as `owsync genkey` makes
    rng = random.Random(opts.seed)
    with scratch("owsync-mesh-", keep=opts.keep, say=say) as work:
        rows = []
        for n in sizes:
            rows += run_mesh(n, opts, work, key, rng, say)
        print(table(rows), flush=True)
        if not opts.skip_big:
            print(big_table(run_big(opts, work, key, rng, say)), flush=True)
        print(f"load average at the end {' '.join(Path('/proc/loadavg').read_text().split()[:3])},"
              f" run time {time.monotonic() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
