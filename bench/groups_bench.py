"""What a second and a third sync group cost: resync time and idle memory.

    python bench/groups_bench.py [--files 3000] [--rounds 7] [--idle 10] [--python PY]

Two daemons on loopback (127.0.0.1 and 127.0.0.2, one port), encrypted,
each the other's peer, run twice with the same files:

- one group: main holds three subdirectories of --files/3 files of 2 KiB
  each (``include=*``), the way an admin would cover them without groups;
- three groups: main and two more groups (``group.NAME.dir=``), one
  directory each, the same files.

Once both sides hold every file and their live links are up, the first
daemon is asked for a full reconcile with its peer through its control
socket (what ``owsync sync --wait`` and ``ubus call owsync sync`` do), --rounds
times; the median is printed, and the CPU time both daemons used per
resync (user and system, from /proc: steadier than wall time on a loaded
machine).  Then, idle (--idle seconds past the last round, for the daemon's
heap trim), the first daemon's VmRSS, RssAnon and threads.  Issue 17's
goals: three groups take at most 1.2x the time of one, and each group adds
less than 1 MiB of RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, fill, free_port, tree

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"
HOSTS = ("127.0.0.1", "127.0.0.2")
PARTS = ("a", "b", "c")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon (KiB) and Threads, from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "Threads"):
            out[key] = int(value.split()[0])
    if "VmRSS" not in out:
        raise RuntimeError(f"no VmRSS for {pid}")
    return out


def cpu_s(pid: int) -> float:
    """The CPU seconds (user and system, every thread) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control(sock: Path, req: dict, timeout: float = 120.0) -> dict:
    """One request to a daemon's control socket (a JSON line each way)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def wait(pred, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(what)
        time.sleep(0.02)


def links_up(sock: Path, groups: int) -> bool:
    """Every group of the daemon has its live link with the peer up."""
    try:
        st = control(sock, {"method": "status"}, 5.0)
    except (OSError, ValueError):
        return False
    if not all(p.get("state") == "connected" for p in st.get("peers", [])):
        return False
    rows = st.get("groups") or []
    return len(rows) == groups and all(
        all(v == "synced" for v in row.get("peers", {}).values()) for row in rows
    )


class Pair:
    def __init__(self, work: Path, python: str, env: dict, groups: int) -> None:
        self.work, self.python, self.env, self.groups = work, python, env, groups
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.sessions = 0  # resyncs of a group made as a v2 session, not a live reconcile

    def dirs(self, i: int) -> list[Path]:
        """Where the three parts live on node ``i``."""
        if self.groups == 1:
            return [self.work / f"n{i}" / "main" / p for p in PARTS]
        return [self.work / f"n{i}" / p for p in PARTS]

    def conf(self, i: int) -> Path:
        main = self.work / f"n{i}" / "main" if self.groups == 1 else self.dirs(i)[0]
        lines = [f"bind_host={HOSTS[i]}", f"port={self.port}", f"sync_dir={main}",
                 f"database={self.work}/n{i}.db", f"encryption_key={KEY}", "log_level=1",
                 "poll_interval=3600", "include=*", f"peer={HOSTS[1 - i]}",
                 f"control_socket={self.sock(i)}"]  # fmt: skip
        if self.groups > 1:
            for name, d in zip(PARTS[1:], self.dirs(i)[1:], strict=True):
                lines += [f"group.{name}.dir={d}", f"group.{name}.include=*"]
        c = self.work / f"n{i}.conf"
        c.write_text("\n".join(lines) + "\n")
        c.chmod(0o600)
        return c

    def names(self) -> list[str]:
        return ["main", *PARTS[1 : self.groups]]

    def sock(self, i: int) -> Path:
        return self.work / f"n{i}.sock"

    def start(self, files: int) -> None:
        for i in (0, 1):
            for d in self.dirs(i):
                d.mkdir(parents=True, exist_ok=True)
        for d, tag in zip(self.dirs(0), PARTS, strict=True):
            fill(d, files // len(PARTS), 2048, tag.encode())
        for i in (0, 1):
            log = open(self.work / f"n{i}.log", "w")  # noqa: SIM115 - lives as long as the daemon
            self.procs.append(
                subprocess.Popen(
                    [self.python, "-m", "owsync", "daemon", "-c", str(self.conf(i))],
                    env=self.env,
                    stdout=log,
                    stderr=log,
                )  # fmt: skip
            )
        want = [tree(d) for d in self.dirs(0)]
        wait(lambda: [tree(d) for d in self.dirs(1)] == want, 300, "the peer holds every file")
        for i in (0, 1):
            wait(lambda i=i: links_up(self.sock(i), self.groups), 60, "live links up")

    def resync(self) -> float:
        t0 = time.perf_counter()
        reply = control(self.sock(0), {"method": "sync", "wait": True})
        seconds = time.perf_counter() - t0
        bad = [r for r in reply.get("results", []) if not r.get("ok")]
        if not reply.get("ok") or bad:
            raise RuntimeError(f"resync failed: {reply}")
        if sorted(r.get("group") for r in reply["results"]) != sorted(self.names()):
            raise RuntimeError(f"not every group's reconcile: {reply}")
        moved = sum(r.get("received", 0) + r.get("sent", 0) for r in reply["results"])
        if moved:
            raise RuntimeError(f"a no-change resync moved {moved} files: {reply}")
        self.sessions += sum(1 for r in reply["results"] if not r.get("live"))
        return seconds

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "".join(
            f"--- daemon {i}:\n{(self.work / f'n{i}.log').read_text()[-3000:]}" for i in (0, 1)
        )


def run(work: Path, python: str, env: dict, groups: int, opts) -> tuple[float, list[float], dict]:
    pair = Pair(work / f"g{groups}", python, env, groups)
    pair.work.mkdir()
    try:
        pair.start(opts.files)
        time.sleep(1.0)  # the start's last steps done: the CPU counted is the resyncs'
        cpu0 = sum(cpu_s(p.pid) for p in pair.procs)
        times = [pair.resync() for _ in range(opts.rounds)]
        cpu = (sum(cpu_s(p.pid) for p in pair.procs) - cpu0) / opts.rounds
        time.sleep(opts.idle)  # the idle daemon's heap trim comes HEAP_SETTLE s after a round
        st = proc_status(pair.procs[0].pid)
        st["cpu_ms"] = cpu * 1000
        st["sessions"] = pair.sessions
        return statistics.median(times), times, st
    except Exception:
        print(pair.logs(), file=sys.stderr)
        raise
    finally:
        pair.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--python", default=sys.executable)
    opts = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    work = Path(tempfile.mkdtemp(prefix="owsync-groups-"))
    try:
        one = run(work, opts.python, env, 1, opts)
        three = run(work, opts.python, env, 3, opts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"{opts.files} files of 2 KiB in 3 directories, encrypted, 2 daemons;"
          f" load {load:.1f}; {opts.rounds} no-change resyncs each")  # fmt: skip
    print(f"{'':<28} {'median':>8} {'min':>8} {'max':>8}  CPU/resync"
          "   idle VmRSS  RssAnon  threads  sessions")  # fmt: skip
    for label, (med, times, st) in (("one group (include=*)", one), ("three groups", three)):
        print(f"{label:<28} {med * 1000:6.0f} ms {min(times) * 1000:5.0f} ms"
              f" {max(times) * 1000:5.0f} ms  {st['cpu_ms']:6.1f} ms"
              f"   {st['VmRSS'] / 1024:6.1f} MiB"
              f" {st.get('RssAnon', 0) / 1024:6.1f} MiB  {st.get('Threads', 0):5d}"
              f"  {st['sessions']:8d}")  # fmt: skip
    print(
        f"three groups / one group: {three[0] / one[0]:.2f}x the time (goal <= 1.2x),"
        f" {three[2]['cpu_ms'] / max(0.1, one[2]['cpu_ms']):.2f}x the CPU;"
        f" {(three[2]['VmRSS'] - one[2]['VmRSS']) / 2 / 1024:.2f} MiB per added group"
        " (goal < 1 MiB)"
    )


if __name__ == "__main__":
    main()
