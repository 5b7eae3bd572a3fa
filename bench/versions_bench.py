"""What keeping versions costs: time and bytes written, store on and off.

    python bench/versions_bench.py [--files 10000] [--size 2048] [--dir /var/tmp] [--repeat 3]

Real `owsync listen` (the receiving node, configured by a key=value file)
and `owsync connect` on loopback, plain mode, on the disk of --dir.  Three
cases, each with the version store at its defaults and with it off
(versions_keep=0), runs alternating:

- first sync of N files into an empty node (nothing is replaced; the store
  takes each received file as its base while there is room);
- first sync onto a node that holds an older version of every file (each is
  replaced: each is kept, up to the size limit);
- one small file changed, then a resync.

Figures: wall-clock seconds of `connect` (median), bytes the receiving process
wrote (/proc/PID/io write_bytes: what reached the block layer, the file
contents, the database and the store), and the store's size on disk.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, fill, free_port, scratch

OWSYNC = [sys.executable, "-m", "owsync"]


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


def run(base: Path, src: Path, case: str, store: bool, args, tag: str) -> tuple[float, int, int]:
    dst, port = base / f"dst-{tag}", free_port()
    db = base / f"dst-{tag}.db"
    if case == "overwrite":
        fill(dst, args.files, args.size, b"old", time.time() - 7200)
    else:
        dst.mkdir()
    conf = base / f"dst-{tag}.conf"
    conf.write_text(
        f"sync_dir={dst}\ndatabase={db}\ninclude=*\nplain_mode=1\nbind_host=127.0.0.1\n"
        f"port={port}\nlog_level=0\n" + ("" if store else "versions_keep=0\n")
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    srcdb = base / f"src-{tag}.db"
    connect = [*OWSYNC, "connect", f"127.0.0.1:{port}", "-p", "-i", "*", "-q", "-d", str(src),
               "-b", str(srcdb)]  # fmt: skip
    listen = subprocess.Popen([*OWSYNC, "listen", "-c", str(conf)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        if case == "one change":  # the first sync, then the change that is timed
            subprocess.run(connect, env=env, check=True, capture_output=True)
            p = src / "d07" / "f00007"
            p.write_bytes(p.read_bytes()[:-1] + b"!")
        os.sync()
        before = write_bytes(listen.pid)
        t = time.perf_counter()
        subprocess.run(connect, env=env, check=True, capture_output=True)
        took = time.perf_counter() - t
        os.sync()
        wrote = write_bytes(listen.pid) - before
    finally:
        listen.terminate()
        listen.wait(10)
        if case == "one change":  # restore the source for the next run
            p = src / "d07" / "f00007"
            p.write_bytes(p.read_bytes()[:-1] + b"\0")
    return took, wrote, du(db.with_suffix(".versions"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with scratch("owsync-versions-", args.dir) as base:
        src = base / "src"
        fill(src, args.files, args.size, b"new", time.time() - 60)
        print(f"{args.files} files of {args.size} B, plain, onto {args.dir};"
              f" median of {args.repeat}; the store at its defaults (1 MiB)")  # fmt: skip
        print(f"{'case':22s} {'store':6s} {'seconds':>8s} {'written':>12s} {'store size':>12s}")
        for case in ("first sync", "overwrite", "one change"):
            res: dict[bool, list] = {True: [], False: []}
            for i in range(args.repeat):
                for store in (True, False):
                    res[store].append(run(base, src, case, store, args, f"{case[:3]}{i}{store}"))
            for store in (True, False):
                rows = res[store]
                took = statistics.median(r[0] for r in rows)
                wrote = statistics.median(r[1] for r in rows)
                size = statistics.median(r[2] for r in rows)
                on = "on" if store else "off"
                print(f"{case:22s} {on:6s} {took:8.2f} {wrote / 1024:9.0f} KiB"
                      f" {size / 1024:9.0f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
