"""First sync onto a real disk: what durability costs, beside owsync 1.2.0.

    python bench/disk_bench.py [--files 10000] [--size 2048] [--dir DIR] [--repeat 3]
    OWSYNC_C_BIN=/path/to/owsync-1.2.0 python bench/disk_bench.py   # side by side
    OWSYNC_C_BIN=... python bench/disk_bench.py --fresh-ext4 [--repeat 5]  # as root

With --fresh-ext4 every run (each program, plain and encrypted) gets a file
system of its own: an image file under --dir, a loop device, mkfs.ext4 and a
mount, all undone after the run, even when it fails.  The receiving node's
directory and both databases live on it; no run pays for another's files or
deletions.  It prints plain and encrypted side by side with the ratios.

One node holds N files; an empty node on DIR (default: a temp directory on
the file system of /var/tmp) receives them: a listener on DIR, and `connect`
from the full node, plain mode, on loopback.  Prints the wall-clock seconds of
the `connect` command (median of --repeat fresh runs) for this owsync and,
with OWSYNC_C_BIN, for the C owsync 1.2.0, in one run.  1.2.0 never fsyncs;
owsync writes every received file durably before it is renamed into place and
makes the renames durable before the database records them.

owsync runs byte-compiled, as installed (a bytecode cache of the bench's own,
written by an untimed warm-up run; --no-bytecode: compiled at every start),
and the source tree is read before each run, so that it is in the page cache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import ROOT, cpu_seconds, fill, free_port, listening, scratch

PY = [sys.executable, "-m", "owsync"]
KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


def run_once(cmd: list[str], base: Path, src: Path, c_style: bool, expected: int, tag: str,
             tree: Path = ROOT, plain: bool = True, db_dir: Path | None = None):  # fmt: skip
    # A fresh destination each run, and nothing deleted until the end: on an
    # ext4 without a journal (this machine's), creating a file skips every
    # inode of its group freed in the last 60 s, one lookup each, so a run
    # right after deleting the previous run's 10,000 files pays for them.
    dst, port = base / f"dst-{tag}", free_port()
    dst.mkdir()
    db_dir = db_dir or base
    src_db = db_dir / f"src-{tag}.db"
    os.sync()  # start from a clean page cache: no writeback left from the previous run
    warm(src)
    # run in ``tree``: ``python -m`` puts the working directory first on
    # sys.path, so run from another checkout it would import that one's owsync
    env = dict(os.environ, PYTHONPATH=str(tree))
    if PYCACHE is not None:  # byte-compiled, as installed (see main)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    mode = ["-p"] if plain else []
    if not plain:
        env["OWSYNC_KEY"] = KEY
    listen = subprocess.Popen(
        [*cmd, "listen", "-H", "127.0.0.1", "-P", str(port), *mode, "-i", "*",
         "-d", str(dst), "-b", str(db_dir / f"dst-{tag}.db")],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)  # no probe connection: 1.2.0's listener serves one at a time
        # the C 1.2.0 build takes the port from -P, not from host:port
        peer = "127.0.0.1" if c_style else f"127.0.0.1:{port}"
        listen_cpu = cpu_seconds(listen.pid)
        t = time.perf_counter()
        connect = subprocess.Popen(
            [*cmd, "connect", peer, "-P", str(port), *mode, "-i", "*", "-d", str(src),
             "-b", str(src_db)],
            env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert connect.stderr is not None
        err = connect.stderr.read()
        _, status, usage = os.wait4(connect.pid, 0)
        connect.returncode = os.waitstatus_to_exitcode(status)
        if connect.returncode != 0:
            return None, err.strip()[-200:], 0.0
        # 1.2.0's connect can return while its peer still writes: time until all arrived
        deadline = time.monotonic() + 120
        while arrived(dst) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        took = time.perf_counter() - t
        listen_cpu = cpu_seconds(listen.pid) - listen_cpu
    finally:
        listen.terminate()
        listen.wait(10)
    return took, arrived(dst), listen_cpu + usage.ru_utime + usage.ru_stime


def warm(src: Path) -> None:
    """Read the source tree, so that every run finds it in the page cache
    (this shared machine evicts it now and then)."""
    for sub in src.iterdir():
        for f in sub.iterdir():
            f.read_bytes()


PYCACHE: str | None = None


def arrived(d: Path) -> int:
    """Files in place (no temporaries: they hold a dot), one scandir per subdirectory."""
    n = 0
    with os.scandir(d) as subs:
        for sub in subs:
            if sub.is_dir(follow_symlinks=False):
                with os.scandir(sub.path) as it:
                    n += sum(1 for e in it if e.name[0] == "f" and "." not in e.name
                             and e.is_file(follow_symlinks=False))  # fmt: skip
    return n


@contextlib.contextmanager
def fresh_ext4(parent: str, size_mib: int) -> Iterator[Path]:
    """A new ext4 on a loop device over an image file under ``parent``, mounted
    for the caller; unmounted, detached and deleted afterwards, whatever happens."""
    fd, img = tempfile.mkstemp(prefix="owsync-disk-", suffix=".img", dir=parent)
    try:
        os.ftruncate(fd, size_mib << 20)
        os.close(fd)
        fd = -1
        loop = subprocess.run(["losetup", "-f", "--show", img], check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        try:
            # inode tables and journal written now: no ext4lazyinit thread
            # zeroing them in the background while the run is timed
            subprocess.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                            loop], check=True)  # fmt: skip
            mnt = Path(tempfile.mkdtemp(prefix="owsync-mnt-", dir=parent))
            try:
                subprocess.run(["mount", "-t", "ext4", loop, str(mnt)], check=True)
                try:
                    yield mnt
                finally:
                    for _ in range(50):  # a listener just killed may still hold it
                        if subprocess.run(["umount", str(mnt)]).returncode == 0:
                            break
                        time.sleep(0.1)
            finally:
                with contextlib.suppress(OSError):
                    mnt.rmdir()
        finally:
            subprocess.run(["losetup", "-d", loop])
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(img)


def fresh_runs(args, nodes, src: Path) -> None:
    """Each run on its own new file system; programs and modes in a rotating order."""
    cases = [(name, cmd, c_style, tree, plain) for plain in (True, False)
             for name, cmd, c_style, tree in nodes]  # fmt: skip
    runs: dict[tuple[str, bool], list[float]] = {(c[0], c[4]): [] for c in cases}
    cpus: dict[tuple[str, bool], list[float]] = {(c[0], c[4]): [] for c in cases}
    for _name, cmd, c_style, tree, plain in cases:  # warm-up, untimed: writes the bytecode
        with fresh_ext4(args.dir, 64) as mnt:
            small = mnt / "src"
            small.mkdir()
            fill(small, 10, 100)
            run_once(cmd, mnt, small, c_style, 10, "warm", tree, plain=plain)  # untimed
    loads = []
    for i in range(args.repeat):
        order = cases[i % len(cases) :] + cases[: i % len(cases)]
        loads.append(os.getloadavg()[0])
        for name, cmd, c_style, tree, plain in order:
            for _ in range(2):
                with fresh_ext4(args.dir, args.image_mib) as mnt:
                    took, got, cpu = run_once(cmd, mnt, src, c_style, args.files, "run",
                                              tree, plain=plain)  # fmt: skip
                if took is not None:
                    break
                print(f"  {name}: a session failed ({got}); run again")
            if got != args.files:
                sys.exit(f"{name}: {got} files arrived, not {args.files}")
            runs[name, plain].append(took)
            cpus[name, plain].append(cpu)
    loads.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"  load average (1 min) at each round: {', '.join(f'{x:.2f}' for x in loads)}")
    print(f"  {'owsync':22s} {'plain':>8s} {'encrypted':>10s}")
    for name, *_ in nodes:
        print(f"  {name:22s} {med[name, True]:6.2f} s {med[name, False]:8.2f} s")
    c = "owsync 1.2.0 (C)"
    if c in [n[0] for n in nodes]:
        for name, *_ in nodes:
            if name != c:
                print(f"  {name + ' / 1.2.0':22s} {med[name, True] / med[c, True]:6.2f}x "
                      f"{med[name, False] / med[c, False]:8.2f}x")  # fmt: skip
    # CPU seconds of both processes in the timed window (the listener's from
    # the connect on, the whole connect): what a loaded machine blurs less
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print("  CPU seconds, listener + connect, median:")
    for name, *_ in nodes:
        print(f"  {name:22s} {cpu[name, True]:6.2f} s {cpu[name, False]:8.2f} s")
    for (name, plain), times in runs.items():
        mode = "plain" if plain else "encrypted"
        print(f"  runs, {name}, {mode}: {', '.join(f'{r:.2f}' for r in times)}"
              f" (CPU {', '.join(f'{c:.2f}' for c in cpus[name, plain])})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tree", action="append", default=[], metavar="DIR",
                    help="also run the owsync of this checkout (an older commit, say)")  # fmt: skip
    ap.add_argument("--fresh-ext4", action="store_true",
                    help="each run on a new ext4 (loop device over an image under --dir;"
                         " root only), plain and encrypted")  # fmt: skip
    ap.add_argument("--image-mib", type=int, default=512, help="with --fresh-ext4")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="run owsync from source, compiled at every start"
                         " (as with PYTHONDONTWRITEBYTECODE and no __pycache__)")  # fmt: skip
    args = ap.parse_args()
    global PYCACHE
    with scratch("owsync-disk-", args.dir) as base:
        if not args.no_bytecode:
            # An installed owsync is byte-compiled (the OpenWrt package is); a
            # checkout run with PYTHONDONTWRITEBYTECODE compiles every module at
            # every start (0.05-0.1 s here).  The bytecode goes to a cache of the
            # bench's own, written by the first run of each program (the warm-up).
            PYCACHE = str(base / "pycache")
        src = base / "src"
        src.mkdir()
        fill(src, args.files, args.size)
        nodes = [("owsync (this)", PY, False, ROOT)]
        nodes += [(f"owsync ({Path(t).name})", PY, False, Path(t)) for t in args.tree]
        if os.environ.get("OWSYNC_C_BIN"):
            nodes.append(("owsync 1.2.0 (C)", [os.environ["OWSYNC_C_BIN"]], True, ROOT))
        if args.fresh_ext4:
            print(f"first sync of {args.files} files of {args.size} B, each run onto a new"
                  f" ext4 of {args.image_mib} MiB (loop device, image under {args.dir}),"
                  f" median of {args.repeat}")  # fmt: skip
            fresh_runs(args, nodes, src)
            return
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(base)], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
        print(f"first sync of {args.files} files of {args.size} B onto {base} ({fs}),"
              f" plain, median of {args.repeat}")  # fmt: skip
        runs: dict[str, list[float]] = {node[0]: [] for node in nodes}
        for i in range(args.repeat):  # interleaved, so that both meet the same disk
            # and in a rotating order: the disk gets faster as the inodes freed
            # before the run age (see bench/README.md), which favours the last
            order = nodes[i % len(nodes) :] + nodes[: i % len(nodes)]
            for j, (name, cmd, c_style, tree) in enumerate(order):
                took, got, _ = run_once(cmd, base, src, c_style, args.files, f"{i}-{j}", tree)
                if took is None:  # a failed session: say so, and run it again
                    print(f"  {name}: a session failed ({got}); run again")
                    took, got, _ = run_once(cmd, base, src, c_style, args.files, f"{i}-{j}-r",
                                            tree)  # fmt: skip
                if got != args.files:
                    sys.exit(f"{name}: {got} files arrived, not {args.files}")
                runs[name].append(took)
        for name, times in runs.items():
            print(f"  {name:22s} {statistics.median(times):6.2f} s"
                  f"  (runs: {', '.join(f'{r:.2f}' for r in times)})")  # fmt: skip


if __name__ == "__main__":
    main()
