"""Daemon benchmarks: change propagation latency, idle memory and CPU.

    python bench/latency_bench.py [--changes 50] [--idle 600]

Two `owsync daemon` processes on loopback (A also lists a second, absent
peer, so it carries two peers).  Each change is made on A (create, modify,
delete in turn); the time is from the write on A until B holds the same
content (or no longer holds the file), polled every millisecond.  Then both
daemons sit idle for --idle seconds and their CPU time is read from /proc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, free_port

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(work: Path, name: str, port: int, peers: list[str]) -> subprocess.Popen:
    d = work / name
    d.mkdir()
    conf = work / f"{name}.conf"
    conf.write_text(
        f"bind_host=127.0.0.1\nport={port}\nsync_dir={d}\ndatabase={work}/{name}.db\n"
        f"encryption_key={KEY}\ncontrol_socket={work}/{name}.sock\nlog_level=1\ninclude=*\n"
        + "".join(f"peer={p}\n" for p in peers)
    )
    conf.chmod(0o600)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(work / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the daemon
    return subprocess.Popen([sys.executable, "-m", "owsync", "daemon", "-f", "-c", str(conf)],
                            env=env, stdout=log, stderr=log)  # fmt: skip


def wait(pred, timeout=10.0) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.001)
    return time.perf_counter()


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--idle", type=float, default=600.0)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="owsync-lat-"))
    pa, pb = free_port(), free_port()
    a = start(work, "a", pa, [f"127.0.0.1:{pb}", f"127.0.0.1:{free_port()}"])
    b = start(work, "b", pb, [f"127.0.0.1:{pa}"])
    try:
        time.sleep(2)
        da, db = work / "a", work / "b"
        lat = []
        for i in range(opts.changes):
            kind = ("create", "modify", "delete")[i % 3]
            f = da / f"f{i // 3}"
            if kind == "delete":
                t0 = time.perf_counter()
                f.unlink()
                t1 = wait(lambda target=db / f.name: not target.exists())
            else:
                data = f"{kind} {i}\n".encode()
                t0 = time.perf_counter()
                f.write_bytes(data)
                t1 = wait(lambda target=db / f.name, want=data: _holds(target, want))
            lat.append(t1 - t0)
            time.sleep(0.2)
        lat.sort()
        p95 = lat[max(0, int(round(0.95 * len(lat))) - 1)]
        print(f"propagation latency over {len(lat)} changes (create, modify, delete):")
        print(f"  median {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms,"
              f" max {lat[-1] * 1000:.0f} ms")  # fmt: skip
        print(
            f"idle daemon RSS: A (two peers) {rss_mib(a.pid):.1f} MiB, B {rss_mib(b.pid):.1f} MiB"
        )
        ca, cb = cpu_seconds(a.pid), cpu_seconds(b.pid)
        time.sleep(opts.idle)
        print(
            f"CPU time over {opts.idle:.0f} idle seconds (A's second peer absent, polls every"
            f" 60 s): A {cpu_seconds(a.pid) - ca:.2f} s, B {cpu_seconds(b.pid) - cb:.2f} s"
        )
    finally:
        for p in (a, b):
            p.terminate()
            p.wait()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
