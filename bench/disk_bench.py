"""First sync onto a real disk: what durability costs, beside owsync 1.2.0.

    python bench/disk_bench.py [--files 10000] [--size 2048] [--dir DIR] [--repeat 3]
    OWSYNC_C_BIN=/path/to/owsync-1.2.0 python bench/disk_bench.py   # side by side

One node holds N files; an empty node on DIR (default: a temp directory on
the file system of /var/tmp) receives them: a listener on DIR, and `connect`
from the full node, plain mode, on loopback.  Prints the wall-clock seconds of
the `connect` command (median of --repeat fresh runs) for this owsync and,
with OWSYNC_C_BIN, for the C owsync 1.2.0, in one run.  1.2.0 never fsyncs;
owsync writes every received file durably before it is renamed into place and
makes the renames durable before the database records them.
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

from benchlib import ROOT, fill, free_port, listening

PY = [sys.executable, "-m", "owsync"]


def run_once(cmd: list[str], base: Path, src: Path, c_style: bool, expected: int, tag: str,
             tree: Path = ROOT):  # fmt: skip
    # A fresh destination each run, and nothing deleted until the end: on an
    # ext4 without a journal (this machine's), creating a file skips every
    # inode of its group freed in the last 60 s, one lookup each, so a run
    # right after deleting the previous run's 10,000 files pays for them.
    dst, port = base / f"dst-{tag}", free_port()
    dst.mkdir()
    src_db = base / f"src-{tag}.db"
    os.sync()  # start from a clean page cache: no writeback left from the previous run
    env = dict(os.environ, PYTHONPATH=str(tree))
    listen = subprocess.Popen(
        [*cmd, "listen", "-H", "127.0.0.1", "-P", str(port), "-p", "-i", "*",
         "-d", str(dst), "-b", str(base / f"dst-{tag}.db")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)  # no probe connection: 1.2.0's listener serves one at a time
        # the C 1.2.0 build takes the port from -P, not from host:port
        peer = "127.0.0.1" if c_style else f"127.0.0.1:{port}"
        t = time.perf_counter()
        r = subprocess.run(
            [*cmd, "connect", peer, "-P", str(port), "-p", "-i", "*", "-d", str(src),
             "-b", str(src_db)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            return None, r.stderr.strip()[-200:]
        # 1.2.0's connect can return while its peer still writes: time until all arrived
        deadline = time.monotonic() + 120
        while arrived(dst) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        took = time.perf_counter() - t
    finally:
        listen.terminate()
        listen.wait(10)
    return took, arrived(dst)


def arrived(d: Path) -> int:
    return sum(1 for p in d.rglob("f*") if p.is_file() and "." not in p.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tree", action="append", default=[], metavar="DIR",
                    help="also run the owsync of this checkout (an older commit, say)")  # fmt: skip
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="owsync-disk-", dir=args.dir))
    try:
        src = base / "src"
        src.mkdir()
        fill(src, args.files, args.size)
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
        print(f"first sync of {args.files} files of {args.size} B onto {base} ({fs}),"
              f" plain, median of {args.repeat}")  # fmt: skip
        nodes = [("owsync (this)", PY, False, ROOT)]
        nodes += [(f"owsync ({Path(t).name})", PY, False, Path(t)) for t in args.tree]
        if os.environ.get("OWSYNC_C_BIN"):
            nodes.append(("owsync 1.2.0 (C)", [os.environ["OWSYNC_C_BIN"]], True, ROOT))
        runs: dict[str, list[float]] = {node[0]: [] for node in nodes}
        for i in range(args.repeat):  # interleaved, so that both meet the same disk
            # and in a rotating order: the disk gets faster as the inodes freed
            # before the run age (see bench/README.md), which favours the last
            order = nodes[i % len(nodes) :] + nodes[: i % len(nodes)]
            for j, (name, cmd, c_style, tree) in enumerate(order):
                took, got = run_once(cmd, base, src, c_style, args.files, f"{i}-{j}", tree)
                if took is None:  # a failed session: say so, and run it again
                    print(f"  {name}: a session failed ({got}); run again")
                    took, got = run_once(cmd, base, src, c_style, args.files, f"{i}-{j}-r", tree)
                if got != args.files:
                    sys.exit(f"{name}: {got} files arrived, not {args.files}")
                runs[name].append(took)
        for name, times in runs.items():
            print(f"  {name:22s} {statistics.median(times):6.2f} s"
                  f"  (runs: {', '.join(f'{r:.2f}' for r in times)})")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
