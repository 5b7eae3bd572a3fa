"""Sync benchmarks: prints figures, asserts nothing.

    python bench/sync_bench.py [--files 10000] [--size 2048]

Runs real `owsync` processes on loopback: a listener and `owsync connect`.
Times are wall-clock seconds of the whole command (interpreter start-up
included), the median of --repeat runs where a run can be repeated.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, free_port

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"
OWSYNC = [sys.executable, "-m", "owsync"]


def env(plain: bool) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    if not plain:
        e["OWSYNC_KEY"] = KEY
    return e


def timed(cmd: list[str], plain: bool) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env(plain), check=True, capture_output=True)
    return time.perf_counter() - t


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Listener:
    def __init__(self, d: Path, db: Path, plain: bool) -> None:
        self.port = free_port()
        self.log = d.parent / f"{d.name}.log"
        args = ["listen", "-H", "127.0.0.1", "-P", str(self.port), "-d", str(d), "-b", str(db)]
        args += ["-i", "*", "-q"] + (["-p"] if plain else [])
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(OWSYNC + args, env=env(plain), stderr=log)
        while True:  # ready once it accepts
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def connect_cmd(port: int, d: Path, db: Path, plain: bool) -> list[str]:
    args = ["connect", f"127.0.0.1:{port}", "-d", str(d), "-b", str(db), "-i", "*", "-q"]
    return OWSYNC + args + (["-p"] if plain else [])


def make_tree(d: Path, files: int, size: int) -> None:
    for i in range(files):
        sub = d / f"d{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}").write_bytes(os.urandom(size))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", default=None, help="where to build the trees (default: $TMPDIR)")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="owsync-bench-", dir=opts.tmp))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout
    fstype = fs.splitlines()[-1].split()[1] if fs else "?"
    print(f"tree: {opts.files} files of {opts.size} bytes, in {work} ({fstype})\n")
    try:
        src, src_db = work / "src", work / "src.db"
        make_tree(src, opts.files, opts.size)
        t = timed(OWSYNC + ["--version"], True)
        print(f"{'start-up (owsync --version)':40s} {t:7.3f} s")
        for plain in (True, False):
            mode = "plain" if plain else "encrypted"
            lst = Listener(src, src_db, plain)
            print(
                f"{'listener at rest, resident memory':40s} {rss_kib(lst.proc.pid) / 1024:7.1f} MiB"
                f" ({mode})"
            )
            firsts = []
            for r in range(opts.repeat):
                dst, dst_db = work / f"dst-{mode}-{r}", work / f"dst-{mode}-{r}.db"
                dst.mkdir()
                firsts.append(timed(connect_cmd(lst.port, dst, dst_db, plain), plain))
            print(
                f"{'first full sync into an empty peer':40s} {statistics.median(firsts):7.3f} s"
                f" ({mode})"
            )
            resync = [
                timed(connect_cmd(lst.port, dst, dst_db, plain), plain) for _ in range(opts.repeat)
            ]
            print(f"{'no-change resync':40s} {statistics.median(resync):7.3f} s ({mode})")
            print(
                f"{'listener after syncs, resident memory':40s}"
                f" {rss_kib(lst.proc.pid) / 1024:7.1f} MiB ({mode})"
            )
            lst.stop()
        scans = [
            timed(OWSYNC + ["scan", str(src), "-b", str(src_db), "-i", "*"], True)
            for _ in range(opts.repeat)
        ]
        print(f"{'no-change scan (owsync scan)':40s} {statistics.median(scans):7.3f} s")

        big, big_db = work / "big", work / "big.db"
        big.mkdir()
        (big / "blob").write_bytes(os.urandom(16_000_000))
        for plain in (True, False):
            mode = "plain" if plain else "encrypted"
            lst = Listener(big, big_db, plain)
            dst = work / f"bigdst-{mode}"
            dst.mkdir()
            peak_file = work / "peak"
            cmd = connect_cmd(lst.port, dst, work / f"bigdst-{mode}.db", plain)
            t = timed(["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd], plain)
            print(
                f"{'one 16 MB file':40s} {t:7.3f} s ({mode}), peak RSS: sender (listener)"
                f" {peak_kib(lst.proc.pid) / 1024:.1f} MiB,"
                f" receiver {int(peak_file.read_text().split()[-1]) / 1024:.1f} MiB"
            )
            lst.stop()
    finally:
        shutil.rmtree(work)


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
