"""The live link's first reconcile of a big tree, beside `owsync connect`.

    python bench/live_bench.py [--files 10000] [--size 2048] [--rounds 3]
                               [--tree DIR ...]

Two daemons: n1 holds --files files of --size bytes, n2 is empty.  n1 is
started and waited for (its first scan done, listening), then n2; the figure
is the wall time from n2's start until its directory holds every file, and
the CPU seconds both daemons spent meanwhile.  Beside it, in the same round,
`owsync connect` (a v2 session) copies the same tree from `owsync listen`
into an empty directory.  Both encrypted.

--tree names owsync checkouts to compare (default: this one); each round
runs every tree in turn, so that figures taken side by side share the
machine's load (printed with each round).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, count_files, cpu_seconds, fill, free_port, listening, scratch, wait_for
from mesh_bench import Node, common_port

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


class TreeNode(Node):
    """A daemon run from the owsync checkout ``tree``."""

    def __init__(self, work: Path, i: int, port: int, key: str, tree: Path) -> None:
        super().__init__(work, i, port, key)
        self.tree = tree

    def start(self) -> None:
        env = {
            k: v for k, v in os.environ.items() if k not in ("OWSYNC_KEY", "OWSYNC_MAX_PROTOCOL")
        }
        env["PYTHONPATH"] = str(self.tree)
        self._logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "owsync", "daemon", "--no-syslog", "-c", str(self.conf)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=self._logf)


def live_round(work: Path, src: Path, files: int, tree: Path) -> tuple[float, float]:
    """(seconds until n2 holds every file, CPU seconds of both daemons meanwhile)."""
    port = common_port(2)
    nodes = [TreeNode(work, i, port, KEY, tree) for i in (1, 2)]
    shutil.copytree(src, nodes[0].dir, dirs_exist_ok=True)
    try:
        for node in nodes:
            node.configure([3 - node.i], True)
        nodes[0].start()
        if not wait_for(nodes[0].started, 120):
            raise RuntimeError("n1 did not start listening")
        t0 = time.monotonic()
        c0 = cpu_seconds(nodes[0].proc.pid)
        nodes[1].start()
        if not wait_for(lambda: count_files(nodes[1].dir) >= files, 600, 0.1):
            raise RuntimeError(f"n2 holds {count_files(nodes[1].dir)} of {files} files")
        took = time.monotonic() - t0
        cpu = cpu_seconds(nodes[0].proc.pid) - c0 + cpu_seconds(nodes[1].proc.pid)
        return took, cpu
    finally:
        for node in nodes:
            node.stop()


def connect_round(work: Path, src: Path, tree: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), OWSYNC_KEY=KEY)
    owsync = [sys.executable, "-m", "owsync"]
    port = free_port()
    args = ["listen", "-H", "127.0.0.1", "-P", str(port), "-d", str(src)]
    args += ["-b", str(work / "listen.db"), "-i", "*", "-q"]
    with open(work / "listen.log", "w") as log:
        lst = subprocess.Popen(owsync + args, env=env, stderr=log)
    try:
        if not wait_for(lambda: listening(port), 60):
            raise RuntimeError("the listener did not start")
        dst = work / "dst"
        dst.mkdir()
        cmd = owsync + ["connect", f"127.0.0.1:{port}", "-d", str(dst)]
        cmd += ["-b", str(work / "dst.db"), "-i", "*", "-q"]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - t
    finally:
        lst.terminate()
        lst.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", type=Path, help="an owsync checkout (repeatable)")
    ap.add_argument("--tmp", type=Path, default=None, help="where the trees go")
    ap.add_argument("--no-connect", action="store_true", help="the live link alone")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    opts = ap.parse_args()
    trees = [t.resolve() for t in (opts.tree or [ROOT])]
    with scratch("owsync-live-bench-", opts.tmp, keep=opts.keep) as base:
        src = base / "src"
        fill(src, opts.files, opts.size)
        figures: dict[Path, dict[str, list[float]]] = {t: {} for t in trees}
        for r in range(opts.rounds):
            for tree in trees:
                load = os.getloadavg()[0]
                work = base / f"r{r}-{tree.name}"
                took, cpu = live_round(work / "live", src, opts.files, tree)
                line = f"round {r + 1} {tree}: live {took:6.2f} s (cpu {cpu:5.2f} s)"
                f = figures[tree]
                f.setdefault("live", []).append(took)
                f.setdefault("cpu", []).append(cpu)
                if not opts.no_connect:
                    (work / "v2").mkdir(parents=True)
                    shutil.copytree(src, work / "v2" / "src")
                    con = connect_round(work / "v2", work / "v2" / "src", tree)
                    f.setdefault("connect", []).append(con)
                    line += f", connect {con:6.2f} s"
                print(f"{line}  [load {load:.2f}]", flush=True)
                if not opts.keep:
                    shutil.rmtree(work, ignore_errors=True)
        print(f"\n{opts.files} files of {opts.size} B, median of {opts.rounds}:")
        for tree, f in figures.items():
            parts = [f"{k} {statistics.median(v):.2f} s" for k, v in f.items()]
            print(f"  {tree}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
