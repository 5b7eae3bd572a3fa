"""Soak: two daemons under steady churn keep their memory and descriptors flat.

    python bench/soak.py [--duration 60] [--rate 5] [--sample-every S] [--warmup S]
                         [--seed 1] [--json] [--tmp DIR] [--keep]

Two real `owsync daemon` processes on loopback, encrypted, each the other's
peer (key=value configuration, as tests/test_daemon.py's DaemonNode writes
it).  A churn driver makes --rate changes a second, at a steady pace, spread
over both nodes: it creates, edits and deletes files that only its node
writes, and edits files that both nodes write (last writer wins).  Every
change is a rename of a complete file into place, as `uci commit` does.

Every --sample-every seconds it reads each daemon's VmRSS and thread count
from /proc/PID/status and counts its open descriptors (/proc/PID/fd).  The
samples of the first --warmup seconds are left out (imports, first sessions,
the allocator's arenas); a least-squares line through the rest gives the
slopes, in KiB per hour and descriptors per hour.  When the time is up the
churn stops, both trees must converge on what the driver wrote (every last
write present, on both nodes), and the "end" figures are taken once both
daemons are idle, so that a session in flight does not count as growth.

Sessions are counted from the daemons' logs (each outgoing session logs
"sync with PEER ok" or "... failed"): the status model has no session
counter, so `owsync status --json` (asked over the control socket) gives
the peers' state and last results.  --json prints one JSON object; the same
dict is what ``run_soak()`` returns, for tests/test_soak.py and for a summary
script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchlib import (
    ROOT,
    Paced,
    cpu_seconds,
    free_port,
    stop_child,
    tree,
    wait_for,
    write_daemon_conf,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from owsync.service import control  # noqa: E402 - after the checkout is on the path

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


# --- one daemon --------------------------------------------------------------


class SoakDaemon:
    """An `owsync daemon` of ours: its directory, database, control socket, log."""

    def __init__(self, work: Path, name: str) -> None:
        self.name = name
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = work / f"{name}.db"
        self.sock = work / f"{name}.sock"
        self.conf = work / f"{name}.conf"
        self.log = work / f"{name}.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._logf = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def configure(self, peers: list[str], poll: int = 60, extra: str = "") -> SoakDaemon:
        write_daemon_conf(self.conf, "127.0.0.1", self.port, self.dir, self.db, KEY, peers,
                          sock=self.sock, poll=poll, log_level=2, extra=extra)  # fmt: skip
        return self

    def start(self, env: dict | None = None, python: str = sys.executable) -> SoakDaemon:
        if env is None:
            env = {k: v for k, v in os.environ.items() if k != "OWSYNC_KEY"}
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._logf = open(self.log, "a")  # noqa: SIM115 - closed in stop()
        cmd = [python, "-m", "owsync", "daemon", "--no-syslog", "-c", str(self.conf)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=self._logf)
        if not wait_for(lambda: self.sock.exists() or self.proc.poll() is not None, 20):
            raise RuntimeError(f"daemon {self.name} did not start: {self.text()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon {self.name} exited: {self.text()}")
        return self

    def stop(self) -> int | None:
        """SIGTERM by PID (our own child); its exit status."""
        status = stop_child(self.proc)
        if self._logf:
            self._logf.close()
        return status

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self, timeout: float = 10.0) -> dict:
        return control.request(str(self.sock), {"method": "status"}, timeout=timeout)

    def idle(self) -> bool:
        try:
            st = self.status()
        except control.ControlError:
            return False
        return all(p["state"] in ("idle", "connected") for p in st.get("peers", []))

    def sample(self) -> dict:
        return sample(self.proc.pid)

    def sessions(self, peer: str) -> tuple[int, int]:
        """Outgoing sessions with ``peer`` this daemon logged: (ok, failed)."""
        text = self.text()
        return text.count(f"sync with {peer} ok"), text.count(f"sync with {peer} failed")

    def files(self) -> dict[str, bytes]:
        return tree(self.dir)


def sample(pid: int) -> dict:
    """VmRSS (KiB), threads and open descriptors of process ``pid``, now."""
    out = {"t": time.monotonic()}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


# --- the churn ---------------------------------------------------------------


class Churn(Paced):
    """Steady changes on several nodes, with the model of what must win.

    Each node owns ``own`` files (``<node>/<i>.conf``, every third in a
    subdirectory) that only it creates, edits and deletes; ``shared`` files
    (``shared/<i>``) are edited on every node.  The changes are sequential, at
    least 1/rate apart, and every write gives its file a new mtime, so the
    last write of each path is what last-writer-wins must keep: ``expected``
    (a deleted path maps to None).
    """

    what = "the churn driver"

    def __init__(self, dirs: dict[str, Path], rate: float = 5.0, seed: int = 1,
                 own: int = 15, shared: int = 8, max_size: int = 2000) -> None:  # fmt: skip
        super().__init__("soak-churn", rate)
        self.dirs = dirs
        self.rng = random.Random(seed)
        self.own = own
        self.shared = shared
        self.max_size = max_size
        self.expected: dict[str, bytes | None] = {}
        self.ops = 0
        self.kinds = {"create": 0, "edit": 0, "delete": 0, "shared": 0}
        self.lock = threading.Lock()  # held for each change (the model and the file)

    def own_path(self, node: str, i: int) -> str:
        return f"sub-{node}/{node}{i}.conf" if i % 3 == 0 else f"{node}{i}.conf"

    def content(self, node: str, path: str) -> bytes:
        head = f"# {node} write {self.ops} of {path} at {time.time():.6f}\n"
        body = "".join(f"\toption o{j} '{self.rng.getrandbits(32):08x}'\n"
                       for j in range(self.rng.randint(1, self.max_size // 24)))  # fmt: skip
        return (head + body).encode()

    def write(self, node: str, path: str, data: bytes) -> None:
        target = self.dirs[node] / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".churn-{target.name}"  # a dot-file: never synced
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def step(self) -> None:
        node = self.rng.choice(sorted(self.dirs))
        if self.shared and self.rng.random() < 0.25:
            path, kind = f"shared/{self.rng.randrange(self.shared)}", "shared"
        else:
            path = self.own_path(node, self.rng.randrange(self.own))
            if self.expected.get(path) is None:
                kind = "create"
            else:
                kind = "delete" if self.rng.random() < 0.3 else "edit"
        with self.lock:
            target = self.dirs[node] / path
            if kind == "delete":
                target.unlink()  # only its owner deletes it: it is there
                self.expected[path] = None
            else:
                data = self.content(node, path)
                self.write(node, path, data)
                self.expected[path] = data
            self.ops += 1
            self.kinds[kind] += 1

    def want(self) -> dict[str, bytes]:
        with self.lock:
            return {p: d for p, d in self.expected.items() if d is not None}


def differences(want: dict[str, bytes], have: dict[str, bytes]) -> list[str]:
    """What a tree lacks, holds in excess or holds stale, against ``want``."""
    out = [f"missing {p}" for p in sorted(want.keys() - have.keys())]
    out += [f"should be deleted: {p}" for p in sorted(have.keys() - want.keys())]
    out += [f"stale {p}" for p in sorted(want.keys() & have.keys()) if want[p] != have[p]]
    return out


def converge(dirs: dict[str, Path], churn: Churn, timeout: float = 60.0) -> dict[str, list]:
    """Wait until every tree holds exactly the churn's last writes; what differs if not."""
    want = churn.want()
    wait_for(lambda: all(tree(d) == want for d in dirs.values()), timeout, 0.2)
    return {name: differences(want, tree(d)) for name, d in dirs.items()}


# --- figures -----------------------------------------------------------------


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour; 0 with fewer than 2."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 3600.0


def figures(samples: list[dict], t0: float, warmup: float, settled: dict) -> dict:
    """Start (after warm-up), end (settled), max and slope of RSS, fds and threads."""
    kept = [s for s in samples if s["t"] - t0 >= warmup] or samples[-1:]
    head = kept[: max(1, min(3, len(kept)))]
    out = {"samples": len(kept)}
    for key in ("rss_kib", "fds", "threads"):
        out[key] = {
            # a session in flight holds a few descriptors: the least of the first samples
            "start": min(s[key] for s in head) if key != "rss_kib" else kept[0][key],
            "end": settled[key],
            "max": max(settled[key], *(s[key] for s in samples)),
            "slope_per_hour": round(slope_per_hour([(s["t"] - t0, s[key]) for s in kept]), 1),
            # the allocator settles for minutes: a leak keeps its slope in the second half
            "late_slope_per_hour": round(
                slope_per_hour([(s["t"] - t0, s[key]) for s in kept[len(kept) // 2 :]]), 1
            ),
        }
    return out


def settle(pid: int, n: int = 5, step: float = 0.2) -> dict:
    """A daemon at rest: the least descriptor and thread counts over a few samples."""
    got = []
    for _ in range(n):
        got.append(sample(pid))
        time.sleep(step)
    return {
        "rss_kib": got[-1]["rss_kib"],
        "fds": min(s["fds"] for s in got),
        "threads": min(s["threads"] for s in got),
    }


def peer_row(p: dict) -> dict:
    """A peer of the status model, as the soak reports it."""
    return {f: p.get(f) for f in ("address", "state", "last_result", "consecutive_failures")}


def run_soak(
    duration: float = 60.0,
    rate: float = 5.0,
    sample_every: float | None = None,
    warmup: float | None = None,
    seed: int = 1,
    work: Path | None = None,
    keep: bool = False,
    progress=None,
    python: str = sys.executable,
    series: bool = False,
) -> dict:
    """Run the soak; the figures as a dict (see the module's docstring).

    With ``series``, each daemon's samples too: [seconds, RSS KiB, fds, threads].
    """
    sample_every = sample_every or max(1.0, duration / 120)
    warmup = min(120.0, max(5.0, duration * 0.1)) if warmup is None else warmup
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="owsync-soak-")) if own_work else Path(work)
    a, b = SoakDaemon(work, "a"), SoakDaemon(work, "b")
    a.configure([b.addr])
    b.configure([a.addr])
    nodes = [a, b]
    churn = Churn({"a": a.dir, "b": b.dir}, rate=rate, seed=seed)
    samples: dict[str, list[dict]] = {"a": [], "b": []}
    result: dict = {}
    try:
        a.start(python=python)
        b.start(python=python)
        t0 = time.monotonic()
        churn.start()
        next_at = t0
        while time.monotonic() - t0 < duration:
            for n in nodes:
                if not n.alive():
                    raise RuntimeError(f"daemon {n.name} died: {n.text()[-2000:]}")
                samples[n.name].append(n.sample())
            if progress:
                progress(time.monotonic() - t0, churn.ops, samples)
            next_at += sample_every
            time.sleep(max(0.0, min(next_at, t0 + duration) - time.monotonic()))
        elapsed = time.monotonic() - t0
        churn.stop()
        diffs = converge(churn.dirs, churn)
        wait_for(lambda: all(n.idle() for n in nodes), 30, 0.2)
        time.sleep(1.0)  # the sessions that followed the last ones end
        status = {n.name: n.status() for n in nodes}
        ok_a, failed_a = a.sessions(b.addr)
        ok_b, failed_b = b.sessions(a.addr)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores,"
            f" Python {platform.python_version()}",
            "duration": round(elapsed, 1),
            "warmup": warmup,
            "sample_every": sample_every,
            "rate": rate,
            "seed": seed,
            "python": python,
            "ops": churn.ops,
            "kinds": dict(churn.kinds),
            "sessions": ok_a + ok_b,
            "sessions_failed": failed_a + failed_b,
            # between two of our daemons: the live link's changes, both ways
            "updates": sum(
                (p.get("live") or {}).get("updates_received", 0)
                for st in status.values()
                for p in st["peers"]
            ),
            "converged": not any(diffs.values()),
            "differences": {k: v[:20] for k, v in diffs.items() if v},
            "peers": {k: [peer_row(p) for p in st["peers"]] for k, st in status.items()},
            "daemons": {
                n.name: {
                    "pid": n.proc.pid,
                    **figures(samples[n.name], t0, warmup, settle(n.proc.pid)),
                }
                for n in nodes
            },
        }
        for n in nodes:
            d = result["daemons"][n.name]
            d["cpu_seconds"] = round(cpu_seconds(n.proc.pid), 1)
            if series:
                d["series"] = [[round(s["t"] - t0, 1), s["rss_kib"], s["fds"], s["threads"]]
                               for s in samples[n.name]]  # fmt: skip
            d["exit"] = n.stop()
        result["work"] = str(work) if keep else None
        return result
    finally:
        churn.halt.set()
        for n in nodes:
            n.stop()
        if own_work and not keep:
            shutil.rmtree(work, ignore_errors=True)


def table(r: dict) -> str:
    mib = 1024.0
    lines = [
        f"soak {r['date']}, {r['machine']}",
        f"duration {r['duration']:.0f} s (warm-up {r['warmup']:.0f} s left out of the figures),"
        f" {r['ops']} changes at {r['rate']:g}/s {r['kinds']},"
        f" {r['sessions']} sessions ({r['sessions_failed']} failed),"
        f" {r.get('updates', 0)} live updates,"
        f" converged: {'yes' if r['converged'] else 'NO ' + json.dumps(r['differences'])}",
        "",
        "daemon  RSS start/end/max MiB  RSS slope KiB/h (2nd half)  fds start/end/max"
        "  fd slope /h  threads start/end/max  CPU s",
    ]
    for name, d in r["daemons"].items():
        rss, fds, th = d["rss_kib"], d["fds"], d["threads"]
        lines.append(
            f"{name:<7} {rss['start'] / mib:6.1f} {rss['end'] / mib:6.1f} {rss['max'] / mib:6.1f}"
            f"   {rss['slope_per_hour']:7.0f} ({rss['late_slope_per_hour']:7.0f})"
            f"     {fds['start']:5d} {fds['end']:5d} {fds['max']:5d}"
            f"  {fds['slope_per_hour']:11.1f}  {th['start']:5d} {th['end']:5d} {th['max']:5d}"
            f"  {d['cpu_seconds']:6.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds (long setting: 3600)")
    ap.add_argument("--rate", type=float, default=5.0, help="changes per second")
    ap.add_argument("--sample-every", type=float, default=None, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the figures")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--tmp", type=Path, default=None, help="work directory (default: a new one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the daemons")
    ap.add_argument("--series", action="store_true", help="with --json: every sample too")
    opts = ap.parse_args()

    shown = [0]

    def progress(t, ops, samples):
        if not opts.json and t >= shown[0] + 60:
            shown[0] += 60
            a, b = samples["a"][-1], samples["b"][-1]
            print(f"  {t:5.0f} s  {ops} changes  RSS a/b {a['rss_kib'] / 1024:.1f}/"
                  f"{b['rss_kib'] / 1024:.1f} MiB  fds a/b {a['fds']}/{b['fds']}",
                  file=sys.stderr, flush=True)  # fmt: skip

    work = None
    if opts.tmp:
        opts.tmp.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="owsync-soak-", dir=opts.tmp))
    r = run_soak(opts.duration, opts.rate, opts.sample_every, opts.warmup, opts.seed,
                 work=work, keep=opts.keep or work is not None, progress=progress,
                 python=opts.python, series=opts.series)  # fmt: skip
    print(json.dumps(r) if opts.json else table(r))
    if not r["converged"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
