"""Protocol v2 against v1 (issue 11): prints figures, asserts nothing.

    python bench/v2_bench.py [--size 1G] [--v1-size 64M] [--small 10000] [--many 300000]
                             [--runs 3] [--dir DIR] [--quick]

Real processes on loopback: `owsync listen` on the node that holds the files
(its database brought up to date beforehand by a session that transfers
nothing, as a running daemon's would be), `owsync connect` from an empty
node, a fresh one every run; v1 is the same owsync with
OWSYNC_MAX_PROTOCOL=1 on both sides.  Trees live under
DIR (default: /dev/shm when it has room, so the disk is out of the figures).

1. One large file, v2 plain and encrypted (and v1 with a smaller file, v1
   carrying whole files as hex in one frame): MB/s (10^6 bytes over the wall
   time of the `connect` command, start-up included) and the RSS growth of
   both processes, beside the machine's raw SHA-256 and AES-256-GCM speed.
2. --small files of 1 KiB, first sync, v1 and v2, plain and encrypted:
   seconds, best of --runs.
3. --many files of 100 bytes, first sync over v2: seconds, peak RSS of both
   sides, the count that arrived; then v1 once with the same tree.

RSS growth is the peak (VmHWM) minus the resident size at rest right before
the session.  The listener's is read from /proc while it runs.  `connect`
runs through a wrapper that imports owsync's session code first (and
cryptography, when encrypted: the code a resting listener has loaded), then
reads its VmRSS, runs the command, and reports its VmHWM at exit: so both
sides count the session's data, not the code it loads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, count_files, fill, free_port, listening

OWSYNC = [sys.executable, "-m", "owsync"]
KEY = os.urandom(32).hex()
MiB = 1024 * 1024
GOAL_PLAIN, GOAL_ENC, GOAL_RSS = 500, 300, 16  # MB/s, MB/s, MiB

# Run as `python -c WRAP OUT owsync-args...`: writes "rest_kib peak_kib rc" to OUT.
WRAP = r"""
import os, sys
out = sys.argv.pop(1)
import owsync.cli, owsync.service.engine, owsync.io.net
if os.environ.get("OWSYNC_KEY"):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
rest = vm("VmRSS:")
rc = owsync.cli.main(sys.argv[1:])
with open(out, "w") as f:
    f.write(f"{rest} {vm('VmHWM:')} {rc}\n")
sys.exit(rc)
"""

SUMMARY = re.compile(
    r"received (\d+), sent (\d+), deleted (\d+), bytes (\d+), seconds ([\d.]+), protocol (\S+)"
)


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def env(plain: bool, v1: bool) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.pop("OWSYNC_KEY", None)
    e.pop("OWSYNC_MAX_PROTOCOL", None)
    if not plain:
        e["OWSYNC_KEY"] = KEY  # never on the command line
    if v1:
        e["OWSYNC_MAX_PROTOCOL"] = "1"
    return e


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


RUNNING: list = []  # listeners started and not yet stopped: stopped at exit, whatever happens


class Node:
    """A listener on ``src`` and the figures of one `connect` into ``dst``."""

    def __init__(self, work: Path, src: Path, db: Path, plain: bool, v1: bool,
                 conf: Path | None = None) -> None:  # fmt: skip
        self.work, self.plain, self.v1, self.conf = work, plain, v1, conf
        self.port = free_port()
        self.log = work / f"listen-{self.port}.log"
        args = ["listen", "-H", "127.0.0.1", "-P", str(self.port), "-d", str(src), "-b", str(db)]
        args += ["-i", "*", "-q"] + self.common()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(OWSYNC + args, env=env(plain, v1), stderr=log,
                                         stdout=subprocess.DEVNULL)  # fmt: skip
        RUNNING.append(self)
        deadline = time.monotonic() + 30
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"listener did not start: {self.log.read_text()[-400:]}")
            time.sleep(0.02)
        time.sleep(0.2)  # settled at rest

    def common(self) -> list[str]:
        return (["-c", str(self.conf)] if self.conf else []) + (["-p"] if self.plain else [])

    def connect(self, dst: Path, db: Path, filt: list[str] | None = None) -> dict:
        dst.mkdir(parents=True, exist_ok=True)
        out = self.work / f"wrap-{self.port}.out"
        args = ["connect", f"127.0.0.1:{self.port}", "-d", str(dst), "-b", str(db)]
        args += (filt or ["-i", "*"]) + ["-q"] + self.common()
        rest = status_kib(self.proc.pid, "VmRSS")
        t = time.perf_counter()
        cmd = [sys.executable, "-c", WRAP, str(out), *args]
        r = subprocess.run(cmd, env=env(self.plain, self.v1), capture_output=True, text=True)
        wall = time.perf_counter() - t
        c_rest, c_peak, _ = (int(x) for x in out.read_text().split())
        m = SUMMARY.search(r.stdout)
        return {
            "rc": r.returncode,
            "wall": wall,
            "summary": m.groups() if m else None,
            "stderr": r.stderr.strip(),
            "l_rest": rest,
            "l_peak": status_kib(self.proc.pid, "VmHWM"),
            "c_rest": c_rest,
            "c_peak": c_peak,
        }

    def errors(self) -> str:
        return self.log.read_text().strip()

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        self.proc.terminate()
        self.proc.wait(30)


def prime(work: Path, src: Path, db: Path) -> None:
    """Bring the source's database up to date, as a running daemon's is: one
    session from an empty node whose filter takes nothing (`owsync scan`
    saves nothing).  The timed sessions then hash no file at the scan."""
    node = Node(work, src, db, True, False)
    r = node.connect(work / "prime-dst", work / "prime-dst.db", ["-i", "nothing/*"])
    node.stop()
    if r["rc"] != 0:
        sys.exit(f"priming {src} failed: {r['stderr'] or node.errors()}")
    shutil.rmtree(work / "prime-dst")


def mib(kib: int) -> str:
    return f"{kib / 1024:6.1f}"


def raw_crypto(total: int) -> tuple[float, float, float]:
    """MB/s of hashlib.sha256 (1 MiB pieces) and of AESGCM encrypt and decrypt
    (64 KiB chunks, 5 bytes of associated data), one core, ``total`` bytes each."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    piece = os.urandom(MiB)
    h = hashlib.sha256()
    t = time.perf_counter()
    for _ in range(total // MiB):
        h.update(piece)
    h.digest()
    sha = total / (time.perf_counter() - t) / 1e6
    aead, chunk, ad = AESGCM(os.urandom(32)), piece[: 64 * 1024], b"\0\0\1\0\7"
    n = total // len(chunk)
    t = time.perf_counter()
    for i in range(n):
        sealed = aead.encrypt(i.to_bytes(12, "big"), chunk, ad)
    enc = total / (time.perf_counter() - t) / 1e6
    t = time.perf_counter()
    for _ in range(n):
        aead.decrypt((n - 1).to_bytes(12, "big"), sealed, ad)
    dec = total / (time.perf_counter() - t) / 1e6
    return sha, enc, dec


def write_big(p: Path, size: int) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(4 * MiB), fb.read(4 * MiB)
            if x != y:
                return False
            if not x:
                return True


def pick_dir(asked: str | None, need: int) -> Path:
    if asked:
        return Path(asked)
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > need:
            return shm
    return Path(tempfile.gettempdir())


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def fstype(p: Path) -> str:
    r = subprocess.run(["stat", "-f", "-c", "%T", str(p)], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def first_error(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if "error" in line.lower() or "fail" in line.lower() or "refus" in line.lower():
                return line.strip()
    return "(no error line)"


def part_large(work: Path, size: int, v1_size: int, runs: int) -> None:
    print(f"\n== 1. one large file: v2 {size / MiB:g} MiB, v1 {v1_size / MiB:g} MiB"
          f" (v1 carries at most 512 MiB, as hex in one frame); best of {runs} ==")  # fmt: skip
    conf = work / "big.conf"
    conf.write_text(f"max_file_size={max(size, v1_size, 16 * MiB)}\n")  # on both nodes
    print(f"both nodes: -c {conf.name} (max_file_size={max(size, v1_size, 16 * MiB)});"
          " RSS: the largest growth over the runs")  # fmt: skip
    print(f"{'case':14s} {'MB/s':>6s} {'goal':>7s} {'wall s':>6s} {'sess s':>6s}"
          f" {'listener (sender) MiB':>23s} {'connect (receiver) MiB':>23s}"
          "  MB/s of each run")  # fmt: skip
    print(f"{'':14s} {'':>6s} {'':>7s} {'':>6s} {'':>6s} {'rest / peak / growth':>23s}"
          f" {'rest / peak / growth':>23s}")  # fmt: skip
    for v1, n in ((False, size), (True, v1_size)):
        src, db = work / f"big-src-{n}", work / f"big-src-{n}.db"
        write_big(src / "blob", n)
        prime(work, src, db)
        for plain in (True, False):
            mode = "plain" if plain else "encrypted"
            tag = f"{'v1' if v1 else 'v2'} {mode}"
            done = []
            for i in range(runs):
                node = Node(work, src, db, plain, v1, conf)
                dst = work / f"big-dst-{tag.replace(' ', '-')}-{i}"
                r = node.connect(dst, work / f"{dst.name}.db")
                node.stop()
                ok = r["rc"] == 0 and same_content(src / "blob", dst / "blob")
                shutil.rmtree(dst)  # one inode: nothing for a later run to meet
                if ok:
                    done.append(r)
                else:
                    why = first_error(r["stderr"], node.errors())
                    print(f"{tag:14s} run {i} FAILED (rc {r['rc']}): {why}")
            if not done:
                continue
            best = min(done, key=lambda r: r["wall"])
            lr = max(done, key=lambda r: r["l_peak"] - r["l_rest"])
            cr = max(done, key=lambda r: r["c_peak"] - r["c_rest"])
            goal = "" if v1 else f">= {GOAL_PLAIN if plain else GOAL_ENC}"
            each = ", ".join(f"{n / r['wall'] / 1e6:.0f}" for r in done)
            print(
                f"{tag:14s} {n / best['wall'] / 1e6:6.0f} {goal:>7s} {best['wall']:6.2f}"
                f" {float(best['summary'][4]):6.2f}"
                f" {mib(lr['l_rest'])} /{mib(lr['l_peak'])} /{mib(lr['l_peak'] - lr['l_rest'])}"
                f" {mib(cr['c_rest'])} /{mib(cr['c_peak'])} /{mib(cr['c_peak'] - cr['c_rest'])}"
                f"  {each}"
            )
        shutil.rmtree(src)
    print(f"goal for v2: RSS growth < {GOAL_RSS} MiB on each side")


def part_small(work: Path, files: int, runs: int) -> None:
    print(f"\n== 2. {files} files of 1 KiB, first sync into an empty node,"
          f" best of {runs} (wall s of connect) ==")  # fmt: skip
    src, db = work / "small-src", work / "small-src.db"
    fill(src, files, 1024)
    prime(work, src, db)
    cases = [(v1, plain) for plain in (True, False) for v1 in (True, False)]
    times: dict[tuple[bool, bool], list[float]] = {c: [] for c in cases}
    for i in range(runs):  # interleaved; nothing deleted until the end
        for v1, plain in cases:
            node = Node(work, src, db, plain, v1)
            dst = work / f"small-dst-{int(v1)}{int(plain)}-{i}"
            r = node.connect(dst, work / f"{dst.name}.db")
            node.stop()
            got = count_files(dst)
            if r["rc"] != 0 or got != files:
                why = first_error(r["stderr"], node.errors())
                print(f"  run {i} v{1 if v1 else 2} {'plain' if plain else 'encrypted'}:"
                      f" rc {r['rc']}, {got} files: {why}")  # fmt: skip
                continue
            times[(v1, plain)].append(r["wall"])
    print(f"{'mode':10s} {'v1':>7s} {'v2':>7s}   runs v1 / v2")
    for plain in (True, False):
        a, b = times[(True, plain)], times[(False, plain)]
        best = [f"{min(x):7.3f}" if x else "    n/a" for x in (a, b)]
        ra, rb = (", ".join(f"{t:.2f}" for t in x) for x in (a, b))
        print(f"{'plain' if plain else 'encrypted':10s} {best[0]} {best[1]}   {ra} / {rb}")


def part_many(work: Path, files: int) -> None:
    print(f"\n== 3. {files} files of 100 bytes, first sync into an empty node ==")
    src, db = work / "many-src", work / "many-src.db"
    t = time.perf_counter()
    fill(src, files, 100)
    prime(work, src, db)
    print(f"(tree made and recorded in {time.perf_counter() - t:.0f} s)")
    print(f"{'case':14s} {'wall s':>7s} {'arrived':>8s}  {'listener (sender) MiB':>24s}"
          f"  {'connect (receiver) MiB':>24s}")  # fmt: skip
    both = f"{'rest / peak / growth':>24s}"
    print(f"{'':14s} {'':>7s} {'':>8s}  {both}  {both}")
    for v1, plain in ((False, True), (False, False), (True, False)):
        tag = f"{'v1' if v1 else 'v2'} {'plain' if plain else 'encrypted'}"
        node = Node(work, src, db, plain, v1)
        dst = work / f"many-dst-{int(v1)}{int(plain)}"
        r = node.connect(dst, work / f"{dst.name}.db")
        node.stop()
        got = count_files(dst)
        print(f"{tag:14s} {r['wall']:7.2f} {got:8d}  {mib(r['l_rest'])} /{mib(r['l_peak'])} /"
              f"{mib(r['l_peak'] - r['l_rest'])}  {mib(r['c_rest'])} /{mib(r['c_peak'])} /"
              f"{mib(r['c_peak'] - r['c_rest'])}"
              f"  {'converged' if got == files and r['rc'] == 0 else 'NOT converged'}")  # fmt: skip
        if r["rc"] != 0:
            print(f"  connect exit {r['rc']}: {first_error(r['stderr'])}")
            print(f"  listener: {first_error(node.errors())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="the large file over v2 (1G, 512M, bytes)")
    ap.add_argument("--v1-size", default="64M", help="the large file over v1")
    ap.add_argument("--small", type=int, default=10000, help="files of 1 KiB (part 2)")
    ap.add_argument("--many", type=int, default=300000, help="files of 100 bytes (part 3)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the trees go (default /dev/shm)")
    ap.add_argument("--quick", action="store_true", help="64 MiB, 1000 and 20000 files")
    ap.add_argument("--parts", default="0123", help="which parts to run (0: raw crypto)")
    a = ap.parse_args()
    if a.quick:
        a.size, a.v1_size, a.small, a.many, a.runs = "64M", "16M", 1000, 20000, 1
    size, v1_size = parse_size(a.size), parse_size(a.v1_size)
    if v1_size > 512 * MiB:
        sys.exit("--v1-size: v1 carries files of up to 512 MiB")
    # tmpfs takes a page and an inode for each small file; the two sessions
    # of part 3 hold some KiB per file too
    per_file = 6 * 1024
    need = 2 * max(size, v1_size) + per_file * (a.small * (1 + 4 * a.runs) + 2 * a.many)
    need += 4 * 1024 * a.many
    base = pick_dir(a.dir, need)
    work = Path(tempfile.mkdtemp(prefix="owsync-v2bench-", dir=base))
    avail = mem_available()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python"
          f" {platform.python_version()}, MemAvailable {avail / MiB / 1024:.1f} GiB;"
          f" trees in {work} ({fstype(work)})")  # fmt: skip
    if fstype(work) == "tmpfs" and need > avail * 0.8 and "3" in a.parts:
        fit = max(1000, int((avail * 0.8 - (need - per_file * 2 * a.many - 4096 * a.many))
                            / (2 * per_file + 4096)))  # fmt: skip
        print(f"note: about {need / MiB / 1024:.1f} GiB needed; --many lowered to {fit}")
        a.many = min(a.many, fit)
    print("MB/s is 10^6 bytes per second of wall time of the whole `connect` command"
          " (interpreter start-up included); 'sess s' is owsync's own figure. Every"
          " source's database is brought up to date first, so no session hashes at"
          " its scan.")  # fmt: skip
    print(__doc__.split("\n\n")[-1].strip().replace("\n", " ").replace(".  ", ". "))
    try:
        if "0" in a.parts:
            total = min(size, 1024 * MiB)
            sha, enc, dec = raw_crypto(total)
            both = 1 / (1 / sha + 1 / enc)
            print(f"\n== 0. this machine, one core, {total / MiB:g} MiB each ==\n"
                  f"SHA-256 {sha:.0f} MB/s, AES-256-GCM encrypt {enc:.0f} MB/s,"
                  f" decrypt {dec:.0f} MB/s; SHA-256 + encrypt of the same bytes"
                  f" {both:.0f} MB/s (what one encrypted v2 sender does per byte)")  # fmt: skip
        if "1" in a.parts:
            part_large(work, size, v1_size, a.runs)
        if "2" in a.parts:
            part_small(work, a.small, a.runs)
        if "3" in a.parts:
            part_many(work, a.many)
    finally:
        for node in list(RUNNING):
            node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
