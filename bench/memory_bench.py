"""An idle daemon's resident memory and start-up time, beside owsync 1.2.0's.

    python bench/memory_bench.py [--python /usr/bin/python3] [--files 30] [--idle 10]
                                 [--repeat 1]

Three daemons on loopback, encrypted, each listing the other two as peers
(127.0.0.1, .2 and .3, one port, as owsync 1.2.0 wants it); the first holds a
directory like /etc/config (--files UCI files of 0.2-8 KiB), the others start
empty.  Start-up is the time from spawning the first daemon until its socket
listens; it then syncs the directory to both peers (and, for this owsync,
brings both live links up), sits idle --idle seconds (10: past the heap
trim the daemon makes 5 s after its start), and its VmRSS, RssAnon and
RssFile are read from /proc/PID/status, with its thread count, and
/proc/PID/smaps says where the resident pages are: the interpreter's binary,
libcrypto, the other shared libraries, the C heap ([heap]) and the other
anonymous mappings (pymalloc's arenas, thread stacks).  The same code rests
0.5-1 MiB higher or lower from one run to the next (which pages of the
libraries a run touched, how full its arenas are): --repeat runs the owsync
mesh several times and prints the median beside each run.

The daemons run a copy of this checkout's owsync package, byte-compiled
first, as an installed owsync is (pip compiles at install, Py3Package ships
bytecode only): where nothing is compiled (PYTHONDONTWRITEBYTECODE=1 and a
fresh checkout), every start compiles 13,000 lines, whose garbage leaves the
idle daemon about 1 MiB larger (0.5 MiB more C heap, 0.5 MiB more arenas).
--no-bytecode measures that case.

The same is done with owsync 1.2.0 when OWSYNC_C_BIN names its binary
(`source /tmp/ext/env.sh`), and for a bare interpreter (`python3 -c pass` for
the start-up, a sleeping `python3` for the memory).  The interpreter is
--python: by default Debian's /usr/bin/python3 when it has `cryptography`
(its python3-cryptography links the system libcrypto, as OpenWrt's does),
else this one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, free_port, listening_on, tree

KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
MIB = 1024


def default_python() -> str:
    deb = "/usr/bin/python3"
    if os.access(deb, os.X_OK):
        ok = subprocess.run([deb, "-c", "import cryptography"], capture_output=True)
        if ok.returncode == 0:
            return deb
    return sys.executable


def etc_config(d: Path, files: int, seed: int = 18) -> None:
    """``files`` UCI-like files of 0.2-8 KiB, as /etc/config holds."""
    rnd = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        size = rnd.randint(200, 8192)
        lines, n = [], 0
        while sum(map(len, lines)) < size:
            lines.append(f"\nconfig section{i}_{n} 'name{n}'\n")
            for k in range(rnd.randint(2, 8)):
                lines.append(f"\toption opt{k} '{rnd.getrandbits(48):x}'\n")
            n += 1
        (d / f"conf{i:02d}").write_text("".join(lines))


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB) and Threads of process ``pid``."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
            out[key] = int(value.split()[0])
    return out


def where(pid: int) -> dict[str, int]:
    """Resident KiB of process ``pid`` by kind of mapping, from /proc/PID/smaps."""
    exe = os.path.realpath(f"/proc/{pid}/exe")
    out = {"interpreter": 0, "libcrypto": 0, "other libs": 0, "heap": 0, "other anon": 0}
    kind = "other anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            if name == exe:
                kind = "interpreter"
            elif "libcrypto" in name:
                kind = "libcrypto"
            elif name == "[heap]":
                kind = "heap"
            elif name.startswith("/"):
                kind = "other libs"
            else:
                kind = "other anon"
        elif fields and fields[0] == "Rss:":
            out[kind] += int(fields[1])
    return out


def wait(pred, timeout: float = 60.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(what)
        time.sleep(0.005)


class Mesh:
    """Three daemons of one implementation, the first with the files."""

    def __init__(self, work: Path, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.work = work / name
        self.work.mkdir()
        self.cmd, self.env = cmd, env
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.dirs = [self.work / f"d{i}" for i in range(3)]

    def conf(self, i: int, ours: bool) -> Path:
        c = self.work / f"n{i}.conf"
        lines = [f"bind_host={HOSTS[i]}", f"port={self.port}", f"sync_dir={self.dirs[i]}",
                 f"database={self.work}/n{i}.db", f"encryption_key={KEY}", "log_level=1",
                 "poll_interval=60", "include=*"]  # fmt: skip
        lines += [f"peer={h}" for j, h in enumerate(HOSTS) if j != i]
        if ours:
            lines.append(f"control_socket={self.work}/n{i}.sock")
        c.write_text("\n".join(lines) + "\n")
        c.chmod(0o600)
        return c

    def spawn(self, i: int, ours: bool) -> subprocess.Popen:
        self.dirs[i].mkdir(exist_ok=True)
        log = open(self.work / f"n{i}.log", "w")  # noqa: SIM115 - lives as long as the daemon
        p = subprocess.Popen([*self.cmd, "daemon", "-f", "-c", str(self.conf(i, ours))],
                             env=self.env, stdout=log, stderr=log)  # fmt: skip
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def links_up(python: str, env: dict[str, str], sock: Path) -> bool:
    r = subprocess.run([python, "-m", "owsync", "status", "--json", "--control-socket", str(sock)],
                       env=env, capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        return False
    return all(p["state"] == "connected" for p in json.loads(r.stdout)["peers"])


def run_daemons(work: Path, name: str, cmd: list[str], env, files: int, idle: float, python=None):
    """Start-up seconds and /proc figures of the first daemon, idle after its syncs."""
    m = Mesh(work, name, cmd, env)
    etc_config(m.dirs[0], files)
    try:
        for i in (1, 2):
            m.spawn(i, python is not None)
        for i in (1, 2):
            wait(lambda i=i: listening_on(HOSTS[i], m.port), what=f"{name} peer {i} listening")
        t0 = time.perf_counter()
        a = m.spawn(0, python is not None)
        wait(
            lambda: listening_on(HOSTS[0], m.port) or a.poll() is not None, what=f"{name} listening"
        )
        startup = time.perf_counter() - t0
        if a.poll() is not None:
            raise RuntimeError(f"{name} exited: {(m.work / 'n0.log').read_text()}")
        want = tree(m.dirs[0])
        wait(lambda: tree(m.dirs[1]) == want and tree(m.dirs[2]) == want, what=f"{name} synced")
        if python is not None:
            wait(lambda: links_up(python, env, m.work / "n0.sock"), what=f"{name} links up")
        time.sleep(idle)
        return startup, {**proc_status(a.pid), "where": where(a.pid)}
    except Exception:
        for i in range(3):
            log = m.work / f"n{i}.log"
            print(
                f"--- {name} daemon {i}:\n{log.read_text()[-2000:] if log.exists() else ''}",
                file=sys.stderr,
            )
        raise
    finally:
        m.stop()


def compiled_copy(python: str, work: Path) -> Path:
    """A copy of the owsync package under ``work``/src, byte-compiled by ``python``."""
    src = work / "src"
    shutil.copytree(ROOT / "owsync", src / "owsync", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([python, "-m", "compileall", "-q", str(src / "owsync")], check=True)
    return src


def bare_python(python: str) -> tuple[float, dict[str, int]]:
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True)
    startup = time.perf_counter() - t0
    p = subprocess.Popen([python, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        time.sleep(0.5)
        return startup, {**proc_status(p.pid), "where": where(p.pid)}
    finally:
        p.stdin.close()
        p.wait()


def row(label: str, startup: float, st: dict) -> str:
    return (f"{label:<34} {startup:6.2f} s  {st['VmRSS'] / MIB:6.1f} {st['RssAnon'] / MIB:6.1f}"
            f" {st['RssFile'] / MIB:6.1f}  {st['Threads']:3d}")  # fmt: skip


def where_row(st: dict) -> str:
    return "    (" + ", ".join(f"{k} {v / MIB:.1f}" for k, v in st["where"].items()) + " MiB)"


def median_of(runs: list[tuple[float, dict]]) -> tuple[float, dict]:
    """The run of median VmRSS (an odd count: the middle one; even: the upper)."""
    return sorted(runs, key=lambda r: r[1]["VmRSS"])[len(runs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=None, help="the interpreter (default: see the docstring)")
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs of the owsync mesh (median)")
    ap.add_argument("--no-bytecode", action="store_true", help="run the checkout as it is")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    opts = ap.parse_args()
    python = opts.python or default_python()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWSYNC_")}
    work = Path(tempfile.mkdtemp(prefix="owsync-mem-"))
    env["PYTHONPATH"] = str(ROOT) if opts.no_bytecode else str(compiled_copy(python, work))
    env["PYTHONSAFEPATH"] = "1"  # `-m` must not put the working directory (a checkout?) first
    results = {}
    try:
        results["python3 (bare)"] = bare_python(python)
        runs = [run_daemons(work, f"py{i}", [python, "-m", "owsync"], env, opts.files,
                            opts.idle, python) for i in range(max(1, opts.repeat))]  # fmt: skip
        if len(runs) > 1:
            for i, r in enumerate(runs, 1):
                results[f"owsync daemon, run {i}"] = r
            results["owsync daemon, median"] = median_of(runs)
        else:
            results["owsync daemon"] = runs[0]
        c_bin = os.environ.get("OWSYNC_C_BIN", "")
        if c_bin and os.access(c_bin, os.X_OK):
            results["owsync 1.2.0 daemon"] = run_daemons(work, "c", [c_bin], env, opts.files,
                                                         opts.idle)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if opts.json:
        print(json.dumps({k: {"startup_s": s, **st} for k, (s, st) in results.items()}))
        return
    ver = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    code = "the checkout, no bytecode" if opts.no_bytecode else "byte-compiled"
    print(f"interpreter {python} ({ver}); {opts.files} files; idle {opts.idle:.0f} s after sync;"
          f" owsync {code}")  # fmt: skip
    print(f"{'':<34} start-up   VmRSS RssAnon RssFile (MiB)  threads")
    for label, (startup, st) in results.items():
        print(row(label, startup, st))
        print(where_row(st))
    if "owsync 1.2.0 daemon" not in results:
        print("(owsync 1.2.0 left out: set OWSYNC_C_BIN to its binary)")


if __name__ == "__main__":
    main()
